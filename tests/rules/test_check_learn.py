"""Checking masks (violations, QA) and learning rules from masks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff.io import Geometry
from napari_labeleff.rules import Rule, Rules, qa

from .conftest import NAMES, heart


@pytest.fixture
def cardiac():
    return Rules.template("cardiac", NAMES)


def test_reference_heart_breaks_no_rule(cardiac):
    assert cardiac.violations(heart(), spacing=(8.0, 1.5, 1.5)) == []


def test_leak_through_the_ring_is_found_with_its_slice(cardiac):
    m = heart()
    m[3, 20, 30:] = np.where(m[3, 20, 30:] == 2, 3, m[3, 20, 30:])  # cut the ring
    m[3, 20, 30:45] = 3
    (v,) = cardiac.violations(m)
    assert v.rule == Rule("inside", 3, 2)
    assert v.slice == 3 and v.bbox[0] == 3 and v.bbox[3] == 4
    assert "LV cavity is not inside myocardium" in v.message and "slice 3" in v.message


def test_second_piece_overlap_and_no_contact_are_found(cardiac):
    m = heart()
    m[0, 2:5, 2:5] = 1  # a second RV piece
    (v,) = cardiac.violations(m)
    assert v.rule == Rule("n_pieces", 1, n=1) and "2 pieces" in v.message
    assert v.bbox == (0, 2, 2, 1, 5, 5) and v.voxels == 9
    m = heart()
    m[2, 18:22, 20:33] = 1  # RV painted across the septum into the LV cavity
    found = {x.rule.relation for x in cardiac.violations(m)}
    assert "excludes" in found
    m = heart()
    m[m == 1] = 0
    m[:, 18:22, 2:6] = 1  # RV away from the myocardium
    (v,) = cardiac.violations(m)
    assert v.rule.relation == "touches" and "does not touch" in v.message


def test_within_rule_measures_millimetres():
    m = heart()  # ring 3 voxels thick around the cavity
    r = Rules([("within", "myocardium", "LV cavity", 4.0)], class_names=NAMES)
    assert r.violations(m, spacing=(8.0, 1.0, 1.0)) == []
    (v,) = r.violations(m, spacing=(8.0, 2.0, 2.0))  # the same wall is 6 mm thick
    assert "farther than 4 mm from LV cavity" in v.message


def test_volume_and_side_rules():
    m = heart()
    vol = float((m == 3).sum()) * 2.0
    r = Rules([("volume", "LV cavity", None, vol - 1)], class_names=NAMES)
    (v,) = r.violations(m, spacing=(2.0, 1.0, 1.0))
    assert "outside 0.." in v.message
    assert Rules([("volume", 3, vol - 1, vol + 1)], class_names=NAMES).violations(
        m, spacing=(2.0, 1.0, 1.0)) == []
    with pytest.raises(LabelEffError, match="whole volume holds"):
        Rules([("volume", 3, 1e9, None)], class_names=NAMES).violations(m)
    # napari world (S, P, L): with the default geometry larger x = patient left
    g = Geometry.from_spacing((1.0, 1.0, 1.0))
    left = Rules([("left_of", "LV cavity", "RV cavity")], class_names=NAMES, geometry=g)
    right = Rules([("right_of", "LV cavity", "RV cavity")], class_names=NAMES, geometry=g)
    assert left.violations(m) == [] and len(right.violations(m)) == 1


def test_violations_bad_input(cardiac):
    with pytest.raises(LabelEffError, match="(Z, Y, X)"):
        cardiac.violations(np.zeros((4, 4), np.uint8))
    with pytest.raises(LabelEffError, match="dtype"):
        cardiac.violations(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(LabelEffError, match="spacing"):
        cardiac.violations(heart(), spacing=(1, 1))


def test_qa_lists_only_the_broken_masks(cardiac):
    good, bad = heart(), heart()
    bad[0, 2:5, 2:5] = 3
    items = qa(cardiac, {"a": good, "b": lambda: bad}, {"a": (1, 1, 1), "b": (1, 1, 1)})
    assert {i["id"] for i in items} == {"b"}
    assert {i["rule"] for i in items} == {("one_piece", "LV cavity"),
                                          ("inside", "LV cavity", "myocardium")}
    assert all(i["slice"] == 0 and i["bbox"] == (0, 2, 2, 1, 5, 5) for i in items)


def _masks():
    out = []
    for i, (r_in, r_out) in enumerate([(5, 8), (6, 9), (6, 10), (7, 10), (5, 9), (6, 8)]):
        out.append(heart(shape=(5 + i % 2, 40, 48), r_in=r_in, r_out=r_out))
    return out


def test_learning_proposes_the_true_relations_and_nothing_false():
    props = Rules.learn(_masks(), NAMES, [(8.0, 1.5, 1.5)] * 6)
    got = {p.rule: p.support for p in props}
    true = {Rule("inside", 3, 2), Rule("touches", 2, 3), Rule("touches", 1, 2),
            Rule("excludes", 1, 3), Rule("n_pieces", 1, n=1), Rule("n_pieces", 2, n=1),
            Rule("n_pieces", 3, n=1)}
    assert set(got) == true
    assert all(s == (6, 6) for s in got.values())
    assert any(p.text == "LV cavity inside myocardium: 6 of 6 masks" for p in props)
    # the proposals make a valid rule set
    assert len(Rules([p.rule for p in props], class_names=NAMES)) == 7


def test_learning_support_counts_exceptions():
    masks = _masks()
    masks[0][0, 2:5, 2:5] = 2  # a second myocardium piece in one mask
    full = {p.rule for p in Rules.learn(masks, NAMES)}
    assert Rule("n_pieces", 2, n=1) not in full
    near = {p.rule: p.support for p in Rules.learn(masks, NAMES, min_support=0.8)}
    assert near[Rule("n_pieces", 2, n=1)] == (5, 6)


def test_learning_bad_input():
    with pytest.raises(LabelEffError, match="masks is empty"):
        Rules.learn([], NAMES)
    with pytest.raises(LabelEffError, match="min_support"):
        Rules.learn(_masks(), NAMES, min_support=0)
    with pytest.raises(LabelEffError, match="spacings has 1 entries"):
        Rules.learn(_masks(), NAMES, [(1, 1, 1)])
