"""The latency budget of the graph method (issue 20): a first result streamed before the
final one, choices made on a coarse grid, and a pinned number of full-resolution solves
per call, so that it cannot silently grow again. Counts, not seconds: speed is measured
in benchmarks/bench_refine.py."""

import numpy as np
import pytest

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
    return make_phantom(shape=(24, 64, 64), spacing=SPACING, n_structures=n_structures)


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
    # boxes: one structure (a box inside another's is a case of its own, test_boxes.py)
    image, gt, scr = _phantom(2 if prompt == "scribbles" else 1)
    boxes = None if prompt == "scribbles" else _boxes(gt)
    strokes = scr if "scribbles" in prompt else np.zeros_like(scr)
    res = refine(image, strokes, spacing=SPACING, boxes=boxes, method="randomwalk",
                 roi=False)
    solves = res.info["solves"]
    assert solves["full_resolution"] == 1
    assert solves["by_stage"]["final"] == 1
    assert solves["by_stage"]["preview"] >= 1 and solves["by_stage"]["decide"] >= 1
    assert res.info["decided_on"]["shape"] != list(image.shape)
    classes = range(1, int(gt.max()) + 1)
    assert np.mean([dice(res.labels == c, gt == c) for c in classes]) > 0.9
    # the same call without stages makes its choices with full-resolution solves
    flat = refine(image, strokes, spacing=SPACING, boxes=boxes, method="randomwalk",
                  roi=False, staged=False)
    assert flat.info["solves"]["full_resolution"] > 1


def test_the_first_result_is_streamed_before_the_final_one(small_budget):
    image, gt, scr = _phantom()
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
    image, gt, scr = _phantom()
    prev = refine(image, scr, spacing=SPACING, method="randomwalk")
    before = prev.state.payload["probabilities"].copy()
    scr2 = scr.copy()
    scr2[12, 40:44, 20:40] = 1
    snapshot = scr2.copy()
    gen = refine_steps(image, scr2, spacing=SPACING, method="randomwalk", state=prev.state)
    for report in gen:
        if report.preview is not None:
            break
    gen.close()
    np.testing.assert_array_equal(scr2, snapshot)
    np.testing.assert_array_equal(prev.state.payload["probabilities"], before)


def test_a_correction_keeps_the_choices_and_solves_locally(small_budget):
    image, gt, scr = _phantom()
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
