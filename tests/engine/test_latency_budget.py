"""The latency budget of the graph method (issue 20): a first result streamed before the
final one, choices made on a coarse grid, and a pinned number of full-resolution solves
per call, so that it cannot silently grow again. Counts, not seconds: speed is measured
in benchmarks/bench_refine.py."""

import numpy as np
import pytest
from scipy import ndimage

from napari_labeleff.engine import _randomwalk, refine, refine_steps

from .conftest import dice, make_phantom

SPACING = (2.0, 1.0, 1.0)


@pytest.fixture
def small_budget(monkeypatch):
    """The stage budgets scaled down to the phantoms' size (98 k voxels): choices on a
    grid pooled about twice per axis, as the real budgets (2^16 / 2^17 / 2^18 voxels)
    pool a 2-3 M voxel scan."""
    monkeypatch.setattr(_randomwalk, "STAGED_MIN_VOXELS", 1 << 12)
    monkeypatch.setattr(_randomwalk, "PREVIEW_VOXELS", 1 << 12)
    monkeypatch.setattr(_randomwalk, "DECIDE_VOXELS", 1 << 15)


def _phantom(n_structures=2):
    """The engine phantom with strokes as a user draws them on a scan: a row through
    each class (eroded by 3 voxels) on three slices spread over its extent."""
    image, gt, _ = make_phantom(shape=(24, 64, 64), spacing=SPACING,
                                n_structures=n_structures)
    scr = np.zeros(gt.shape, np.uint8)
    for c in range(n_structures + 1):
        inner = ndimage.binary_erosion(gt == c, iterations=3)
        zs = np.nonzero(inner.any(axis=(1, 2)))[0]
        for z in zs[[len(zs) // 4, len(zs) // 2, 3 * len(zs) // 4]]:
            ys, xs = np.nonzero(inner[z])
            y = int(np.median(ys))
            scr[z, y, xs[ys == y]] = c + 1
    return image, gt, scr


def _drive(gen):
    """Run a refine generator; returns (reports, result)."""
    reports = []
    while True:
        try:
            reports.append(next(gen))
        except StopIteration as stop:
            return reports, stop.value


def _boxes(gt):
    out = []
    for c in range(1, int(gt.max()) + 1):
        idx = np.nonzero(gt == c)
        out.append((c, *[int(i.min()) for i in idx], *[int(i.max()) + 1 for i in idx]))
    return out


@pytest.mark.parametrize("prompt", ["scribbles", "boxes", "boxes+scribbles"])
def test_a_first_call_solves_once_at_full_resolution(small_budget, prompt):
    # one structure: the sphere inside the ellipsoid is small enough (16 mm) that its
    # strokes keep the choices at full resolution (test_short_strokes_...)
    image, gt, scr = _phantom(1)
    boxes = None if prompt == "scribbles" else _boxes(gt)
    strokes = scr if "scribbles" in prompt else np.zeros_like(scr)
    res = refine(image, strokes, spacing=SPACING, boxes=boxes, method="randomwalk",
                 roi=False)
    solves = res.info["solves"]
    # boxes: a second, warm-started solve when the first one leaves box slices empty
    # (tightness seeds, _rw_boxes.BoxSolve.solve_decided)
    budget = 1 if prompt == "scribbles" else 2
    assert 1 <= solves["full_resolution"] <= budget
    assert solves["by_stage"]["final"] == solves["full_resolution"]
    assert solves["by_stage"]["preview"] >= 1 and solves["by_stage"]["decide"] >= 1
    assert res.info["decided_on"]["shape"] != list(image.shape)
    classes = range(1, int(gt.max()) + 1)
    assert np.mean([dice(res.labels == c, gt == c) for c in classes]) > 0.9
    # the same call without stages makes its choices with full-resolution solves
    flat = refine(image, strokes, spacing=SPACING, boxes=boxes, method="randomwalk",
                  roi=False, staged=False)
    assert flat.info["solves"]["full_resolution"] > 1


def test_the_first_result_is_streamed_before_the_final_one(small_budget):
    image, gt, scr = _phantom(1)
    reports, res = _drive(refine_steps(image, scr, spacing=SPACING, method="randomwalk"))
    with_preview = [i for i, r in enumerate(reports) if r.preview is not None]
    assert with_preview, "no first result was yielded"
    first = reports[with_preview[0]].preview
    assert first.shape == image.shape and first.dtype == np.uint8
    final_stage = next(i for i, r in enumerate(reports)
                       if r.message == "solving at full resolution")
    assert with_preview[0] < final_stage  # shown before the full-resolution solve runs
    assert dice(first == 1, gt == 1) > 0.7  # usable: the structure, coarsely
    assert 0 < res.info["timings"]["first_result_s"] < res.info["timings"]["total_s"]


def test_closing_after_the_first_result_cancels_and_keeps_the_state(small_budget):
    """The next stroke cancels what is still running: closing the generator at the
    first result leaves the inputs and the previous state as they were."""
    image, gt, scr = _phantom(1)
    prev = refine(image, scr, spacing=SPACING, method="randomwalk")
    before = prev.state.payload["probabilities"].copy()
    scr2 = scr.copy()
    scr2[12, 58:60, 20:40] = 1
    snapshot = scr2.copy()
    gen = refine_steps(image, scr2, spacing=SPACING, method="randomwalk", state=prev.state)
    for report in gen:
        if report.preview is not None:
            break
    gen.close()
    np.testing.assert_array_equal(scr2, snapshot)
    np.testing.assert_array_equal(prev.state.payload["probabilities"], before)


def test_a_correction_keeps_the_choices_and_solves_locally(small_budget):
    image, gt, scr = _phantom(1)
    first = refine(image, scr, spacing=SPACING, method="randomwalk")
    scr2 = scr.copy()
    scr2[12, 30:34, 8:12] = 1  # a short background stroke near the ellipsoid's edge
    res = refine(image, scr2, spacing=SPACING, method="randomwalk", state=first.state)
    solves = res.info["solves"]
    assert "decide" not in solves["by_stage"] and "preview" not in solves["by_stage"]
    assert solves["full_resolution"] <= 1 and solves["total"] <= 3
    assert res.info["unary"] == first.info["unary"]
    # a one-stage call yields its final labels as its first result
    reports, again = _drive(refine_steps(image, scr2, spacing=SPACING, method="randomwalk",
                                         state=first.state))
    previews = [r.preview for r in reports if r.preview is not None]
    assert len(previews) == 1
    np.testing.assert_array_equal(previews[0], again.labels)


def test_boxes_decided_on_the_coarse_grid_scale_back_to_the_users_faces(small_budget):
    """Faces the choice stage did not move stay where the user drew them."""
    image, gt, scr = _phantom(1)
    boxes = _boxes(gt)
    res = refine(image, np.zeros_like(scr), spacing=SPACING, boxes=boxes,
                 method="randomwalk", roi=False)
    moved = {(f[0], f[1], f[2]) for f in res.info["box_faces_moved"]}
    for i, (b, solved) in enumerate(zip(boxes, res.info["boxes_solved"])):
        for axis in range(3):
            if not any(m[0] == i and m[1] == axis for m in moved):
                assert solved[1 + axis] == b[1 + axis] and solved[4 + axis] == b[4 + axis]


def test_short_strokes_keep_the_choices_at_full_resolution(small_budget):
    """A small noisy lesion drawn with 3-voxel strokes: pooled twice in-plane, the
    choice stage lost the watershed (Dice 0.31); the strokes' span limits the pooling,
    so the choices are made on the full grid and the lesion is found."""
    from .test_watershed_select import LEAKY, _noisy_lesions

    image, (lesion, _), scr = _noisy_lesions()
    assert _randomwalk._stroke_pooling_limit(scr, 2) == (1, 1, 1)
    res = refine(image, scr, spacing=SPACING, method="randomwalk", **LEAKY)
    assert "decided_on" not in res.info and res.info["unary"] == "watershed"
    assert dice(res.labels == 1, lesion) > 0.9


def test_the_watershed_claim_check_runs_on_a_finer_grid():
    """On the shipped CT the coarse stage's held-out check prefers the watershed; how
    much it claims is counted on a grid of at most CLAIMS_VOXELS, here the full grid
    (the count equals the full-resolution flood's), against the walker's share."""
    from napari_labeleff.engine import _watershed
    from napari_labeleff.engine._api import normalise
    from napari_labeleff.io import load_sample

    s = load_sample("ct")
    image = np.asarray(s.volume.data, np.float32)
    res = refine(image, s.scribbles, spacing=s.volume.spacing, method="randomwalk")
    assert res.info["decided_on"]["shape"] != list(image.shape)
    scores = res.info["prior_select_scores"]
    assert scores["watershed"] > max(v for k, v in scores.items() if k != "watershed")
    flood = _watershed.labels(normalise(image[None]), s.scribbles.astype(np.int64) - 1,
                              s.volume.spacing)
    ws, walker = res.info["watershed_claims"]
    assert ws == int((flood > 0).sum())
    assert res.info["unary"] == ("watershed" if ws <= walker else "none")
    assert res.info["solves"]["full_resolution"] == 1
