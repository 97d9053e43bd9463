"""The refine panel under the latency budget (issue 20): the first result is drawn at
once and replaced by the final one; in live mode the next stroke cancels the refinement
still running and a new one starts after the quiet time."""

import time

import numpy as np
import pytest

from napari_labeleff.engine import Progress

from test_main_widget import open_with_widget, paint_scribbles

pytestmark = pytest.mark.gui


def test_the_first_result_is_drawn_before_the_final_one(make_napari_viewer, qtbot, ball_nifti,
                                                       monkeypatch, notes):
    from napari_labeleff.engine import _randomwalk

    # stage budgets scaled to the test ball (as the real ones are to a scan)
    monkeypatch.setattr(_randomwalk, "STAGED_MIN_VOXELS", 1 << 10)
    monkeypatch.setattr(_randomwalk, "PREVIEW_VOXELS", 1 << 10)
    monkeypatch.setattr(_randomwalk, "DECIDE_VOXELS", 1 << 12)
    path, truth, scribbles = ball_nifti
    viewer = make_napari_viewer()
    _, widget = open_with_widget(viewer, path)
    state, panel = widget.state, widget.refine_panel
    # the worker seam's sync mode hands every report to the panel (the thread mode
    # drops a report that arrives while a slot is still drawing the previous one)
    widget.runner.mode = "sync"
    paint_scribbles(state.scribbles_layer, scribbles)
    panel.method.setCurrentText("randomwalk")
    drawn = []  # (what the layer showed, whether the final result had arrived)

    def record(_event):
        drawn.append((np.array(state.refined_layer.data), state.result is not None))

    state.refined_layer.events.data.connect(record)
    assert panel.run_refine()
    qtbot.waitUntil(lambda: not state.busy, timeout=60000)
    state.refined_layer.events.data.disconnect(record)
    assert state.result is not None, notes
    assert state.result.info["solves"]["by_stage"].get("preview") == 1
    before_final = [d for d, done in drawn if not done]
    assert before_final, "the first result was never drawn"
    assert not np.array_equal(before_final[0], state.result.labels)  # coarse, then final
    np.testing.assert_array_equal(state.refined_layer.data, state.result.labels)
    assert "first result after" in panel.status.text()


def test_a_new_stroke_cancels_a_live_refinement(make_napari_viewer, qtbot, ball_nifti,
                                                monkeypatch, notes):
    path, truth, scribbles = ball_nifti
    viewer = make_napari_viewer()
    _, widget = open_with_widget(viewer, path)
    state, panel = widget.state, widget.refine_panel
    from napari_labeleff._napari import _refine_panel

    real = _refine_panel.engine.refine_steps
    calls = []

    def slow_then_real(image, scr, **kwargs):
        calls.append(np.array(scr))
        if len(calls) == 1:
            for i in range(1000):
                yield Progress(i, 1000, "slow", preview=np.ones(scr.shape, np.uint8))
                time.sleep(0.02)
            raise AssertionError("never cancelled")
        return (yield from real(image, scr, **kwargs))

    monkeypatch.setattr(_refine_panel.engine, "refine_steps", slow_then_real)
    panel._timer.setInterval(50)
    panel.method.setCurrentText("randomwalk")
    panel.live.setChecked(True)
    paint_scribbles(state.scribbles_layer, scribbles)  # starts a live refinement
    qtbot.waitUntil(lambda: len(calls) == 1 and state.busy, timeout=10000)
    qtbot.waitUntil(lambda: np.all(state.refined_layer.data == 1), timeout=10000)
    z, y, x = np.argwhere(truth == 0)[0]
    state.scribbles_layer.paint((z, y, x), 1)  # the next stroke
    qtbot.waitUntil(lambda: len(calls) == 2 and not state.busy and state.result is not None,
                    timeout=60000)
    assert calls[1][z, y, x] == 1  # the new refinement saw the new stroke
    np.testing.assert_array_equal(state.refined_layer.data, state.result.labels)
    assert not any("cancelled" in m for _, m in notes)  # superseded quietly
