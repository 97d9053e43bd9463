"""Box prompts with the graph method (issue 10): a box never hurts, inexact boxes
(too large, too small, shifted), boxes of structures without scribbles, and the
messages for bad boxes (no object inside, cutting the object, nested/overlapping)."""

import warnings

import numpy as np
import pytest

from napari_labeleff.engine import _boxes, refine

from .conftest import dice, make_phantom

SPACING = (2.0, 1.0, 1.0)


def _shell_case(seed=0, pad=3):
    """A bright hollow sphere (structure 1) around a mid-grey core (background).

    The box's central part is the core, not the structure: a box-core intensity
    model learns the core as "structure" (GrabCut's failure on non-convex organs).
    """
    rng = np.random.default_rng(seed)
    shape = (24, 64, 64)
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, SPACING)), indexing="ij")
    r2 = (z - 24) ** 2 + (y - 32) ** 2 + (x - 32) ** 2
    gt = ((r2 <= 13**2) & (r2 > 7**2)).astype(np.uint8)
    image = np.zeros(shape, np.float32)
    image[r2 <= 7**2] = 0.5
    image[gt == 1] = 1.0
    image += rng.normal(0, 0.15, shape).astype(np.float32)
    scr = np.zeros(shape, np.uint8)
    scr[12, 20:23, 28:37] = 2
    scr[12, 31:34, 29:36] = 1
    scr[12, 3:6, 5:60] = 1
    idx = np.nonzero(gt)
    box = (1, *[max(int(i.min()) - pad, 0) for i in idx], *[int(i.max()) + 1 + pad for i in idx])
    return image, gt, scr, box


def test_loose_box_never_hurts_scribbles():
    """Scribbles + a loose box >= scribbles alone (the box-core model made it 0.89
    vs 0.98 here before: the box's centre, the core, entered the structure model)."""
    image, gt, scr, box = _shell_case()
    alone = dice(refine(image, scr, spacing=SPACING, method="randomwalk").labels == 1, gt == 1)
    res = refine(image, scr, spacing=SPACING, boxes=[box], method="randomwalk")
    both = dice(res.labels == 1, gt == 1)
    assert both >= alone - 0.005 and both > 0.95
    assert res.info["box_mode"] == "scribble intensity model + box constraints"


@pytest.mark.slow  # > 20 s on the loaded 2-core machine
def test_box_only_on_a_non_convex_structure():
    image, gt, _, box = _shell_case()
    res = refine(image, np.zeros(gt.shape, np.uint8), spacing=SPACING, boxes=[box],
                 method="randomwalk")
    assert res.info["box_mode"].startswith("box-core")
    assert set(res.info["box_weight_scores"]) == {0.0, 0.05, 0.2}
    assert dice(res.labels == 1, gt == 1) > 0.85


def _variant(gt, c, kind):
    idx = np.nonzero(gt == c)
    lo = np.array([int(i.min()) for i in idx])
    hi = np.array([int(i.max()) + 1 for i in idx])
    ext = hi - lo
    if kind == "exact":
        pass
    elif kind == "+20%":
        lo, hi = lo - np.ceil(0.2 * ext).astype(int), hi + np.ceil(0.2 * ext).astype(int)
    elif kind == "-20%":
        lo, hi = lo + np.round(0.1 * ext).astype(int), hi - np.round(0.1 * ext).astype(int)
    elif kind == "shifted":
        shift = np.round(0.2 * ext).astype(int) * np.array([0, 1, 1])
        lo, hi = lo + shift, hi + shift
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, gt.shape)
    return (c, *map(int, lo), *map(int, hi))


@pytest.mark.parametrize("kind, drop", [("+20%", 0.02), ("-20%", 0.04), ("shifted", 0.04)])
def test_inexact_boxes(binary_phantom, kind, drop):
    image, gt, scr = binary_phantom
    exact = refine(image, scr, spacing=SPACING, boxes=[_variant(gt, 1, "exact")],
                   method="randomwalk")
    d_exact = dice(exact.labels == 1, gt == 1)
    box = _variant(gt, 1, kind)
    if kind == "+20%":
        res = refine(image, scr, spacing=SPACING, boxes=[box], method="randomwalk")
        assert res.info["box_faces_moved"] == []
    else:
        with pytest.warns(UserWarning, match=r"box 0 \(structure 1\) cuts the object"):
            res = refine(image, scr, spacing=SPACING, boxes=[box], method="randomwalk")
        # moved by the probe, or loosened as the box left out strokes of its structure
        assert res.info["box_faces_moved"] or res.info["boxes_loosened"] == [0]
    assert dice(res.labels == 1, gt == 1) >= d_exact - drop


def test_box_without_object_says_so(binary_phantom):
    image, gt, scr = binary_phantom
    empty_box = (1, 2, 2, 2, 6, 8, 8)  # a corner of pure background
    with pytest.warns(UserWarning, match=r"box 1 \(structure 1, .*\) holds no voxel of "
                                         r"structure 1: is the box on the object"):
        res = refine(image, scr, spacing=SPACING, method="randomwalk",
                     boxes=[_variant(gt, 1, "exact"), empty_box])
    assert dice(res.labels == 1, gt == 1) > 0.95
    # box only, on background: its inside looks like its surroundings
    with pytest.warns(UserWarning, match=r"box 0 \(structure 1\): its inside looks like "
                                         r"its surroundings"):
        refine(image, np.zeros_like(scr), spacing=SPACING, boxes=[empty_box],
               method="randomwalk")


@pytest.mark.slow  # > 20 s on the loaded 2-core machine
def test_nested_boxes_of_different_structures(phantom):
    image, gt, scr = phantom
    outer, inner = _variant(gt, 1, "exact"), _variant(gt, 2, "exact")
    res = refine(image, scr, spacing=SPACING, boxes=[outer, inner], method="randomwalk")
    assert any("are nested" in m for m in res.info["box_report"])
    assert dice(res.labels == 1, gt == 1) > 0.9 and dice(res.labels == 2, gt == 2) > 0.85


@pytest.mark.slow  # > 20 s on the loaded 2-core machine
def test_boxes_of_structures_without_scribbles(phantom):
    """Structure 2 has a box but no scribble: its model comes from the box."""
    image, gt, scr = phantom
    no2 = np.where(scr == 3, 0, scr).astype(np.uint8)
    res = refine(image, no2, spacing=SPACING,
                 boxes=[_variant(gt, 1, "exact"), _variant(gt, 2, "exact")],
                 method="randomwalk")
    assert res.info["box_mode"].startswith("box-core")
    assert dice(res.labels == 2, gt == 2) > 0.8


def test_fit_score_prefers_the_truth(binary_phantom):
    _, gt, _ = binary_phantom
    box = _variant(gt, 1, "exact")
    leaked = np.zeros_like(gt)
    leaked[tuple(slice(a, b) for a, b in zip(box[1:4], box[4:7]))] = 1
    assert _boxes.fit_score([box], gt) < 0.1 < _boxes.fit_score([box], leaked)
    assert _boxes.fit_score([box], np.zeros_like(gt)) > 0.9


def test_box_that_leaves_out_scribbles_is_grown_to_cover_them():
    scr = np.zeros((10, 20, 20), np.uint8)
    scr[5, 2:4, 2:6] = 2  # a stroke of structure 1 left of its box
    boxes, grown = _boxes.cover_scribbles([(1, 3, 5, 5, 8, 15, 15)], scr)
    assert grown == [0] and boxes == [(1, 3, 2, 2, 8, 15, 15)]
    same, none = _boxes.cover_scribbles([(1, 3, 1, 1, 8, 15, 15)], scr)
    assert none == [] and same == [(1, 3, 1, 1, 8, 15, 15)]


def test_box_that_cuts_a_noisy_object_is_probed():
    """A box 20% too small pins hard background against its object, which then drains
    away from the faces (0.16 Dice here without the probe): the probe solve with the
    box grown finds the faces that cut the object and moves them."""
    rng = np.random.default_rng(0)
    shape = (28, 64, 64)
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, SPACING)), indexing="ij")
    gt = (((z - 28) / 18) ** 2 + ((y - 32) / 18) ** 2 + ((x - 30) / 14) ** 2 <= 1)
    image = (gt + rng.normal(0, 0.3, shape)).astype(np.float32)
    scr = np.zeros(shape, np.uint8)
    scr[14, 30:34, 24:36] = 2
    scr[14, 2:5, 4:60] = 1
    box = _variant(gt.astype(np.uint8), 1, "-20%")
    exact = _variant(gt.astype(np.uint8), 1, "exact")
    with pytest.warns(UserWarning, match=r"box 0 \(structure 1\) cuts the object"):
        res = refine(image, scr, spacing=SPACING, boxes=[box], method="randomwalk")
    assert res.info["box_probe_faces"] and res.info["box_faces_moved"]
    assert dice(res.labels == 1, gt) > 0.75
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        without = refine(image, scr, spacing=SPACING, boxes=[box], method="randomwalk",
                         box_probe=False)
    assert dice(without.labels == 1, gt) < 0.5
    # an exact box: no face cuts the object, the probe changes nothing
    res = refine(image, scr, spacing=SPACING, boxes=[exact], method="randomwalk")
    assert res.info["box_probe_faces"] == [] and dice(res.labels == 1, gt) > 0.95


def test_incremental_calls_start_from_the_boxes_the_first_call_ended_with():
    """The probe runs once: a later call keeps the moved faces (and says so) without
    probing again."""
    image, gt, scr = make_phantom(n_structures=1)
    box = _variant(gt, 1, "-20%")
    with pytest.warns(UserWarning, match="cuts the object"):
        first = refine(image, scr, spacing=SPACING, boxes=[box], method="randomwalk")
    assert first.info["box_faces_moved"]
    more = scr.copy()
    more[12, 2:4, 2:8] = 1
    with pytest.warns(UserWarning, match="cuts the object"):
        again = refine(image, more, spacing=SPACING, boxes=[box], method="randomwalk",
                       state=first.state)
    assert again.info["warm_start"] and "box_probe_faces" not in again.info
    assert again.info["boxes_solved"] == first.info["boxes_solved"] != [list(box)]
    assert again.info["box_faces_moved"][: len(first.info["box_faces_moved"])] == \
        first.info["box_faces_moved"]
    assert dice(again.labels == 1, gt == 1) >= dice(first.labels == 1, gt == 1) - 0.01


def test_box_only_incremental_call_keeps_the_chosen_weight(binary_phantom):
    """The intensity-model weight of box-only structures is chosen once (three solves);
    later calls reuse it."""
    image, gt, _ = binary_phantom
    box = _variant(gt, 1, "exact")
    empty = np.zeros(gt.shape, np.uint8)
    first = refine(image, empty, spacing=SPACING, boxes=[box], method="randomwalk")
    assert len(first.info["box_weight_scores"]) == 3
    more = empty.copy()
    more[12, 0:3, 0:10] = 1  # a background stroke: structure 1 still has only its box
    again = refine(image, more, spacing=SPACING, boxes=[box], method="randomwalk",
                   state=first.state)
    assert again.info["warm_start"] and "box_weight_scores" not in again.info
    assert again.info["prior_weight"] == first.info["prior_weight"]


@pytest.mark.slow  # ~10 s: two solves of the CT sample
def test_a_loose_box_on_ct_takes_the_watershed_unary():
    """On the shipped CT excerpt (organs of look-alike intensities: the intensity model
    gets no weight), boxes 40% too large let the walker alone fill them toward their
    faces (mean Dice 0.81; 0.76 before the latency budget dropped the tightness re-solve
    at full resolution); the marker watershed of the strokes stops at the organs' edges,
    fits the boxes better and wins the check (0.84)."""
    from napari_labeleff.io._samples import load_sample

    s = load_sample("ct")
    image, gt = np.asarray(s.volume.data, np.float32), s.labels
    loose = _boxes.grown([_variant(gt, c, "exact") for c in range(1, 5)], gt.shape, 0.4)

    def mean_dice(res):
        return np.mean([dice(res.labels == c, gt == c) for c in range(1, 5)])

    res = refine(image, s.scribbles, spacing=s.volume.spacing, boxes=loose,
                 method="randomwalk")
    assert res.info["unary"] == "watershed"
    assert set(res.info["box_weight_scores"]) == {0.0, "watershed"}
    walker = refine(image, s.scribbles, spacing=s.volume.spacing, boxes=loose,
                    method="randomwalk", watershed_select=False)
    assert walker.info["unary"] == "none"
    assert mean_dice(res) > 0.83 > mean_dice(walker) + 0.02


def test_box_that_leaves_out_its_strokes_is_loosened(binary_phantom):
    """A shifted box that leaves out part of its structure's strokes is wrong by an
    unknown amount on every face: all its faces are loosened, so even without the
    probe solve the object is found (0.64 Dice here when only the faces needed to
    cover the strokes moved)."""
    image, gt, scr = binary_phantom
    exact = _variant(gt, 1, "exact")
    shifted = (1, exact[1], exact[2] + 8, exact[3] + 10, exact[4], exact[5] + 8,
               exact[6] + 10)
    inside = np.zeros(gt.shape, bool)
    inside[tuple(slice(a, b) for a, b in zip(shifted[1:4], shifted[4:7]))] = True
    assert (scr == 2).any() and not inside[scr == 2].all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = refine(image, scr, spacing=SPACING, boxes=[shifted], method="randomwalk",
                     box_probe=False, box_grow_rounds=0)
    assert res.info["boxes_loosened"] == [0]
    solved = res.info["boxes_solved"][0]
    assert all(s < a for s, a in zip(solved[1:4], shifted[1:4]) if a > 0)
    assert dice(res.labels == 1, gt == 1) > 0.9
    assert any("moved out: all, by a quarter of the box, as it left out strokes" in m
               for m in res.info["box_report"])
