"""Each relation is enforced on class probabilities, strokes win, conflicts are reported;
and ``engine.refine(rules=...)`` applies them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_labeleff import LabelEffError, engine
from napari_labeleff.io import Geometry
from napari_labeleff.rules import Rules, _enforce
from napari_labeleff.rules._enforce import enforce_labels, labels_to_probabilities

from .conftest import NAMES, heart, onehot_probs

SP = (4.0, 1.0, 1.0)


def _run(rules, labels, strokes=None, k1=4, p=None):
    p = onehot_probs(labels, k1) if p is None else p
    strokes = np.zeros(labels.shape, np.uint8) if strokes is None else strokes
    out, rep = enforce_labels(rules, p, strokes, SP)
    return out, rep


def test_inside_closes_a_gap_in_the_ring():
    m = heart()
    ref = m.copy()
    m[2, 18:23, 33:40] = np.where(m[2, 18:23, 33:40] == 2, 3, m[2, 18:23, 33:40])  # gap
    m[2, 18:23, 40:44] = 3  # the cavity leaks out through it
    rules = Rules([("inside", "LV cavity", "myocardium")], class_names=NAMES)
    assert rules.violations(m)
    out, rep = _run(rules, m)
    assert rules.violations(out) == []
    assert rep["changed_voxels"]["LV cavity inside myocardium"] > 0
    # the ring is closed around the cavity by growing the myocardium into the background
    assert (out[2] == 2).sum() > (m[2] == 2).sum()
    assert (out[ref == m] == m[ref == m]).mean() > 0.97  # the rest is left alone


def test_inside_fills_holes_of_the_ring_with_the_inner_class():
    m = heart()
    m[1, 19:22, 29:32] = 0  # background hole in the cavity
    rules = Rules([("inside", 3, 2)], class_names=NAMES)
    out, _ = _run(rules, m)
    assert (out[1, 19:22, 29:32] == 3).all()


def test_excludes_separates_touching_classes():
    m = heart()
    m[2, 18:22, 20:33] = 1  # RV across the septum into the cavity
    rules = Rules([("excludes", "RV cavity", "LV cavity")], class_names=NAMES)
    assert rules.violations(m)
    out, _ = _run(rules, m)
    assert rules.violations(out) == []


def test_within_cuts_what_lies_too_far():
    m = heart()
    m[2][m[2] == 0] = 2  # the myocardium floods the whole slice
    rules = Rules([("within", "myocardium", "LV cavity", 5.0)], class_names=NAMES)
    assert rules.violations(m, spacing=SP)
    out, _ = _run(rules, m)
    assert rules.violations(out, spacing=SP) == []
    assert (heart()[2] == 2).sum() <= (out[2] == 2).sum() < (m[2] == 2).sum() / 4


def test_one_piece_keeps_the_stroked_piece():
    m = heart()
    m[0, 2:6, 2:6] = 1  # a small second RV piece
    strokes = np.zeros(m.shape, np.uint8)
    rules = Rules([("one_piece", "RV cavity")], class_names=NAMES)
    out, _ = _run(rules, m, strokes)
    assert (out[0, 2:6, 2:6] != 1).all() and (out == 1).sum() == (heart() == 1).sum()
    # a stroke in the small piece: it wins, the other piece is reported, not dropped
    strokes[0, 3, 3] = 2
    out, rep = _run(rules, m, strokes)
    assert out[0, 3, 3] == 1
    assert any("RV cavity" in c for c in rep["conflicts"]) or (out == 1).sum() < 20


def test_touches_bridges_a_small_gap():
    m = heart()
    rv = m == 1
    m[rv] = 0
    m[np.roll(rv, -3, axis=2) & (m == 0)] = 1  # RV moved 3 voxels away from the ring
    rules = Rules([("touches", "RV cavity", "myocardium")], class_names=NAMES)
    assert rules.violations(m)
    out, _ = _run(rules, m)
    assert rules.violations(out) == []


def test_volume_upper_bound_drops_the_least_probable_voxels():
    m = heart()
    p = onehot_probs(m)
    lv = m == 3
    n = int(lv.sum())
    hi = (n - 40) * np.prod(SP)
    rules = Rules([("volume", "LV cavity", None, hi)], class_names=NAMES)
    out, _ = _run(rules, m, p=p)
    assert (out == 3).sum() * np.prod(SP) <= hi
    assert rules.violations(out, spacing=SP) == []
    lo_rules = Rules([("volume", "LV cavity", (n + 30) * np.prod(SP), None)], class_names=NAMES)
    out, _ = _run(lo_rules, m, p=p)
    assert (out == 3).sum() >= n + 30


def test_side_rule_drops_a_piece_on_the_wrong_side():
    g = Geometry.from_spacing(SP)  # world L grows with x
    m = heart()
    m[3, 18:22, 44:47] = 1  # an RV piece on the patient's left of the LV
    rules = Rules([("right_of", "RV cavity", "LV cavity")], class_names=NAMES, geometry=g)
    # the whole RV's centroid is still on the right: only the piece is on the wrong side
    out, _ = _run(rules, m)
    assert (out[3, 18:22, 44:47] != 1).all()
    assert (out == 1).sum() == (heart() == 1).sum()


def test_stroke_against_a_rule_wins_and_is_reported():
    m = heart()
    strokes = np.zeros(m.shape, np.uint8)
    strokes[4, 3:6, 3:6] = 4  # a stroke of LV cavity far outside the ring
    m[4, 3:6, 3:6] = 3
    rules = Rules([("inside", "LV cavity", "myocardium")], class_names=NAMES)
    out, rep = _run(rules, m, strokes)
    assert (out[strokes == 4] == 3).all()
    assert "stroke of LV cavity outside the myocardium at slice 4" in rep["conflicts"]


def test_hierarchy_decides_nested_regions_first(monkeypatch):
    rules = Rules([("part_of", 3, 2), ("part_of", 2, 1)], class_names=["wt", "tc", "et"])
    p = np.zeros((4, 1, 1, 3), np.float32)
    p[:, 0, 0, 0] = [0.4, 0.2, 0.1, 0.3]  # tumour region 0.6 > 0.4: enhancing (0.3)
    p[:, 0, 0, 1] = [0.6, 0.2, 0.1, 0.1]
    p[:, 0, 0, 2] = [0.3, 0.36, 0.14, 0.2]  # region 0.7; within: wt 0.36 > core 0.34
    out, _ = enforce_labels(rules, p, np.zeros((1, 1, 3), np.uint8), SP)
    assert out[0, 0].tolist() == [3, 0, 1]
    monkeypatch.setattr(_enforce, "HIERARCHY", False)
    out, _ = enforce_labels(rules, p, np.zeros((1, 1, 3), np.uint8), SP)
    assert out[0, 0].tolist() == [0, 0, 1]


def test_labels_to_probabilities_keeps_argmax_equal_to_labels():
    rng = np.random.default_rng(0)
    p = rng.random((4, 3, 5, 5)).astype(np.float32)
    p /= p.sum(0)
    labels = rng.integers(0, 4, (3, 5, 5)).astype(np.uint8)
    q = labels_to_probabilities(p, labels)
    assert (q.argmax(0) == labels).all()
    np.testing.assert_allclose(q.sum(0), 1, atol=1e-5)
    same = p.argmax(0) == labels
    np.testing.assert_array_equal(q[:, same], p[:, same])


# ---- through the engine ------------------------------------------------------------------
def _ring_phantom():
    """A bright cavity in a ring that looks like the background on one side (the
    graph method alone misses that part of the ring)."""
    gt = heart(shape=(6, 40, 48))
    rng = np.random.default_rng(0)
    levels = np.array([0.0, 0.8, 0.4, 1.0], np.float32)
    img = levels[gt]
    yy, xx = np.mgrid[:40, :48]
    faint = (gt == 2) & (xx[None] > 32)
    img[faint] = 0.0
    img = img + rng.normal(0, 0.05, gt.shape).astype(np.float32)
    scr = np.zeros(gt.shape, np.uint8)
    scr[3][gt[3] == 0] = 0
    scr[3, 2:4, 2:46] = 1
    scr[3, 20, 28:32] = 4
    scr[3, 20, 16:19] = 2
    scr[3, 12:14, 30] = 3
    return img, gt, scr


def test_refine_enforces_the_cardiac_rules():
    img, gt, scr = _ring_phantom()
    rules = Rules.template("cardiac", NAMES)
    plain = engine.refine(img, scr, spacing=SP, method="randomwalk", device="cpu")
    ruled = engine.refine(img, scr, spacing=SP, method="randomwalk", device="cpu", rules=rules)
    assert rules.violations(plain.labels)  # the graph method alone breaks a rule here
    assert rules.violations(ruled.labels) == []
    info = ruled.info["rules"]
    assert info["rules"] and info["conflicts"] == [] and info["unresolved"] == []
    assert info["seconds"] >= 0
    assert (ruled.probabilities.argmax(0) == ruled.labels).all()
    assert (ruled.labels[scr > 0] == scr[scr > 0] - 1).all()  # strokes win


def test_refine_rules_bad_input_and_skipped_classes():
    img, gt, scr = _ring_phantom()
    with pytest.raises(LabelEffError, match="rules has type list"):
        engine.refine(img, scr, spacing=SP, rules=[("inside", 3, 2)])
    two = scr.copy()
    two[two == 4] = 0  # no LV cavity strokes: K = 2 in this call
    r = Rules.template("cardiac", NAMES)
    res = engine.refine(img, two, spacing=SP, method="randomwalk", device="cpu", rules=r)
    assert "LV cavity inside myocardium" in res.info["rules"]["skipped"]
    assert "RV cavity touches myocardium" in res.info["rules"]["rules"]


def test_apply_to_a_network_prediction():
    from napari_labeleff.rules import apply

    m = heart()
    m[0, 2:5, 2:5] = 3  # a stray LV piece in the prediction
    rules = Rules.template("cardiac", NAMES)
    probs, rep = apply(rules, onehot_probs(m), SP)
    assert rules.violations(probs.argmax(0), spacing=SP) == []
    assert rep["rules"] and rep["conflicts"] == []
    with pytest.raises(LabelEffError, match="K \\+ 1, Z, Y, X"):
        apply(rules, np.zeros((4, 4)), SP)


def test_leftovers_after_the_rounds_go_to_the_background(monkeypatch):
    m = heart()
    m[0, 2:5, 2:5] = 3
    m[5, 30:33, 2:5] = 1
    rules = Rules.template("cardiac", NAMES)
    monkeypatch.setattr(_enforce, "MAX_ROUNDS", 0)  # no regular round: only the last pass
    out, rep = _run(rules, m)
    assert rules.violations(out, spacing=SP) == [] and rep["unresolved"] == []
    assert (out[0, 2:5, 2:5] == 0).all() and (out[5, 30:33, 2:5] == 0).all()
