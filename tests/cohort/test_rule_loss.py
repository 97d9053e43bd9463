"""The rule penalty of network training (issue 21): ``training._rule_loss`` on hand-made
probability maps, the ``rules`` / ``rule_weight`` options in a real (tiny) run, and the
project's rules in the spec that ``prepare_training`` builds."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_labeleff._errors import LabelEffError
from napari_labeleff.cohort import Project
from napari_labeleff.cohort.training import check_options, train_steps
from napari_labeleff.cohort.training._options import fingerprint
from napari_labeleff.cohort.training._rule_loss import rule_penalty
from napari_labeleff.rules import Rules

from .learning_synth import make_spec
from .project_fakes import make_volume

SHAPE = (3, 20, 20)  # (Z, Y, X)
IN_PLANE_8 = np.array([[[1, 1, 1], [1, 1, 1], [1, 1, 1]]], bool)  # the 3 x 3 window


def ring_map(leak=False):
    """(Z, Y, X) labels: a cavity (1, radius 3) in a ring (2, radii 3..6), background
    outside; ``leak``: on slice 1 the cavity runs along row 10 through the ring into the
    background."""
    _, y, x = np.indices(SHAPE)
    r = np.hypot(y - 10, x - 10)
    m = np.zeros(SHAPE, np.uint8)
    m[r <= 6] = 2
    m[r <= 3] = 1
    if leak:
        m[1, 10, 10:19] = 1
    return m


def one_hot(labels, k):
    """(1, K+1, Z, Y, X) float probabilities that are 1 on each voxel's class."""
    lab = torch.from_numpy(labels.astype(np.int64))
    return torch.nn.functional.one_hot(lab, k + 1).permute(3, 0, 1, 2)[None].float()


def expected(labels, inner, allowed):
    """Share of voxels of ``inner`` with a 3 x 3 in-plane neighbour outside ``allowed``."""
    other = ~np.isin(labels, allowed)
    return float((np.isin(labels, inner) & ndi.binary_dilation(other, IN_PLANE_8)).mean())


# ---- the penalty on hard maps -------------------------------------------------------------------
@pytest.mark.parametrize("relation", ["inside", "part_of"])
def test_a_cavity_sealed_by_its_ring_costs_nothing(relation):
    probs = one_hot(ring_map(), 2)
    assert float(rule_penalty(probs, [(relation, 1, 2)])) == 0.0


@pytest.mark.parametrize("relation", ["inside", "part_of"])
def test_a_cavity_leaking_to_the_background_is_penalised_at_the_leak(relation):
    labels = ring_map(leak=True)
    value = float(rule_penalty(one_hot(labels, 2), [(relation, 1, 2)]))
    # exactly the cavity voxels that see background in their 3 x 3 window, as a mean
    assert value > 0 and value == pytest.approx(expected(labels, [1], [1, 2]), rel=1e-6)
    # the gradient with respect to the logits lowers p_cavity at the leak
    logits = (4.0 * one_hot(labels, 2)).requires_grad_(True)
    rule_penalty(torch.softmax(logits, 1), [(relation, 1, 2)]).backward()
    leak = (0, 1, 1, 10, 17)  # a cavity voxel in the background, beside background
    assert logits.grad[leak] > 0
    with torch.no_grad():
        before = torch.softmax(logits, 1)[leak]
        after = torch.softmax(logits - 50.0 * logits.grad, 1)[leak]
    assert after < before


def test_classes_nested_in_the_cavity_are_no_leak():
    """A class inside the cavity borders the cavity only: inside(3, 1) makes that
    allowed; without it the cavity next to class 3 counts as a leak."""
    labels = ring_map()
    labels[:, 9:12, 9:12] = 3
    probs = one_hot(labels, 3)
    assert float(rule_penalty(probs, [("inside", 1, 2), ("inside", 3, 1)])) == 0.0
    assert float(rule_penalty(probs, [("inside", 1, 2)])) == pytest.approx(
        expected(labels, [1], [1, 2]), rel=1e-6)


def test_excludes_is_zero_when_apart_and_positive_when_touching():
    apart = np.zeros(SHAPE, np.uint8)
    apart[:, 5:15, 2:6] = 1
    apart[:, 5:15, 7:11] = 2  # one background column (x = 6) between them
    assert float(rule_penalty(one_hot(apart, 2), [("excludes", 1, 2)])) == 0.0
    touching = apart.copy()
    touching[:, 5:15, 6] = 2
    value = float(rule_penalty(one_hot(touching, 2), [("excludes", 1, 2)]))
    both_ways = expected(touching, [1], [0, 1]) + expected(touching, [2], [0, 2])
    assert value > 0 and value == pytest.approx(both_ways, rel=1e-6)
    # the gradient pushes both classes off the contact
    logits = (4.0 * one_hot(touching, 2)).requires_grad_(True)
    rule_penalty(torch.softmax(logits, 1), [("excludes", 1, 2)]).backward()
    assert logits.grad[0, 1, 1, 10, 5] > 0 and logits.grad[0, 2, 1, 10, 6] > 0


def test_relations_without_a_local_form_add_nothing():
    probs = one_hot(ring_map(leak=True), 2)
    rules = [("touches", 1, 2), ("within", 1, 2, 5.0), ("one_piece", 1), ("n_pieces", 2, 2),
             ("volume", 1, 1.0, None), ("left_of", 1, 2)]
    assert float(rule_penalty(probs, rules)) == 0.0


def test_the_penalty_is_a_mean_comparable_across_patch_sizes():
    small = one_hot(ring_map(leak=True), 2)
    tiled = small.repeat(2, 1, 2, 1, 1)  # twice the batch, twice the slices
    rule = [("inside", 1, 2)]
    assert float(rule_penalty(tiled, rule)) == pytest.approx(float(rule_penalty(small, rule)), rel=1e-6)


@pytest.mark.parametrize("rule", [("inside", 1, 3), ("excludes", 0, 2), ("inside", "cavity", "ring"),
                                  ("inside", 1, 1), ("surrounds", 1, 2), ("inside", 1)])
def test_bad_rules_are_refused(rule):
    with pytest.raises(LabelEffError):
        rule_penalty(one_hot(ring_map(), 2), [rule])


# ---- options ------------------------------------------------------------------------------------
def test_options_are_checked_and_enter_the_fingerprint(tmp_path):
    spec = make_spec(tmp_path, n_labelled=1, n_val=0, class_names=("ball", "plate"))
    opts = check_options(spec)
    assert opts["rules"] == () and opts["rule_weight"] == 0.0
    ruled = make_spec(tmp_path, n_labelled=1, n_val=0, class_names=("ball", "plate"),
                      options={"rules": [["excludes", 1, 2]], "rule_weight": 1})
    ropts = check_options(ruled)
    assert ropts["rules"] == (("excludes", 1, 2),) and ropts["rule_weight"] == 1.0
    base = fingerprint(ruled, {**ropts, "rules": (), "rule_weight": 0.0})
    assert fingerprint(ruled, ropts) != base
    assert fingerprint(ruled, {**ropts, "rules": (("inside", 1, 2),)}) != fingerprint(ruled, ropts)
    # rules without a weight change no training, so no fingerprint (a run still resumes)
    assert fingerprint(ruled, {**ropts, "rule_weight": 0.0}) == base
    for bad in ({"rules": [("excludes", 1, 3)]}, {"rule_weight": -1.0}, {"rule_weight": float("nan")},
                {"rules": "excludes 1 2"}):
        with pytest.raises(LabelEffError):
            check_options(make_spec(tmp_path, n_labelled=1, n_val=0, class_names=("ball", "plate"),
                                    options=bad))


def _drain(gen):
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


@pytest.mark.parametrize("weight", [10.0, 0.0])
def test_training_adds_the_rule_term_only_with_a_weight(tmp_path, weight):
    """A real (interactive) run of 2 steps: the logged loss is the supervised term plus
    ``rule_weight`` x the rule term, and there is no rule term with weight 0."""
    spec = make_spec(tmp_path, n_labelled=1, n_val=0, class_names=("ball", "plate"),
                     options={"max_steps": 2, "semi": False, "val_every": 100,
                              "rules": [("excludes", 1, 2), ("inside", 1, 2)], "rule_weight": weight})
    report = _drain(train_steps(spec))
    assert report.steps == 2
    first = next(e for e in report.log if e.get("stage") == "train")
    if weight:
        assert first["rule"] > 0  # the untrained network spreads both classes everywhere
        assert first["loss"] == pytest.approx(first["sup"] + weight * first["rule"], abs=1e-3)
    else:
        assert "rule" not in first
        assert first["loss"] == pytest.approx(first["sup"], abs=1e-4)


# ---- a project's rules --------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path):
    p = Project.create(tmp_path / "proj", class_names=["cavity", "ring"])
    for i in range(2):
        p.add(make_volume(tmp_path, f"v{i}", seed=i))
    mask = np.zeros((8, 12, 14), np.uint8)
    mask[2:6, 2:10, 2:12] = 2
    mask[2:6, 4:8, 4:10] = 1
    p.accept(p.volume_ids[0], mask)
    yield p
    p.close()


def test_prepare_training_passes_the_projects_pair_rules(project):
    assert "rules" not in project.prepare_training(max_minutes=1, device="cpu").spec.options
    project.set_rules(Rules([("inside", "cavity", "ring"), ("one_piece", "ring"),
                             ("within", "cavity", "ring", 10.0)], class_names=["cavity", "ring"]))
    # without a weight the rules stay out of the spec (editing them keeps a run resumable)
    assert "rules" not in project.prepare_training(max_minutes=1, device="cpu").spec.options
    plan = project.prepare_training(max_minutes=1, device="cpu", rule_weight=0.5)
    assert plan.spec.options["rules"] == [("inside", 1, 2)]  # ids; non-pair rules left out
    assert plan.spec.options["rule_weight"] == 0.5
    assert check_options(plan.spec)["rules"] == (("inside", 1, 2),)  # the learner accepts them
    # the caller's rules win (() = none)
    assert project.prepare_training(max_minutes=1, device="cpu", rules=()).spec.options["rules"] == ()
