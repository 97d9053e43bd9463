"""The worker seam: progress, results, errors and cancel in thread and sync modes."""

import threading
import time

import pytest

from napari_labeleff import LabelEffError
from napari_labeleff._napari._state import ViewerState
from napari_labeleff._napari._worker import Runner
from napari_labeleff.engine import Progress

pytestmark = pytest.mark.gui


def counting(n, *, fail=None):
    for i in range(n):
        yield Progress(i + 1, n, f"step {i + 1}")
    if fail is not None:
        raise fail
    return n * 10


def _run(qtbot, mode, fn, *args, **kwargs):
    state = ViewerState(viewer=None)
    runner = Runner(state, mode=mode)
    got = {"progress": [], "returned": [], "failed": [], "finished": []}
    runner.start(
        fn,
        *args,
        desc="Task",
        on_progress=got["progress"].append,
        on_returned=got["returned"].append,
        on_failed=got["failed"].append,
        on_finished=got["finished"].append,
        **kwargs,
    )
    qtbot.waitUntil(lambda: bool(got["finished"]), timeout=10000)
    assert not state.busy and not runner.running
    return got


@pytest.mark.parametrize("mode", ["thread", "sync"])
def test_progress_and_result(qtbot, mode):
    got = _run(qtbot, mode, counting, 3)
    assert [p.step for p in got["progress"]] == [1, 2, 3]
    assert got["returned"] == [30]
    assert got["finished"] == [False]


@pytest.mark.parametrize("mode", ["thread", "sync"])
def test_plain_function_result(qtbot, mode):
    got = _run(qtbot, mode, lambda a, b=0: a + b, 2, b=5)
    assert got["returned"] == [7] and got["progress"] == []


@pytest.mark.parametrize("mode", ["thread", "sync"])
def test_labeleff_error_becomes_one_line_notification(qtbot, notes, mode):
    got = _run(qtbot, mode, counting, 2, fail=LabelEffError("scribbles: need a class"))
    assert got["returned"] == [] and len(got["failed"]) == 1
    assert ("error", "Task: scribbles: need a class") in notes


def test_unexpected_error_is_named_and_logged(qtbot, notes, caplog):
    got = _run(qtbot, "thread", counting, 1, fail=KeyError("boom"))
    assert isinstance(got["failed"][0], KeyError)
    assert any(s == "error" and "Task failed: KeyError" in m for s, m in notes)
    assert "Traceback" in caplog.text


def test_cancel_closes_generator_and_skips_result(qtbot, notes):
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                i += 1
                time.sleep(0.01)
                yield Progress(i, 0, "working")
        finally:
            closed.set()

    state = ViewerState(viewer=None)
    runner = Runner(state)
    got = {"returned": [], "finished": [], "progress": []}
    runner.start(
        endless,
        desc="Refine",
        on_progress=got["progress"].append,
        on_returned=got["returned"].append,
        on_finished=got["finished"].append,
    )
    assert state.busy
    qtbot.waitUntil(lambda: len(got["progress"]) >= 2, timeout=5000)
    assert not runner.start(endless, desc="Refine")  # one task at a time
    runner.cancel()
    qtbot.waitUntil(lambda: bool(got["finished"]), timeout=5000)
    assert got["finished"] == [True] and got["returned"] == []
    assert closed.is_set() and not state.busy
    assert any("cancelled" in m for _, m in notes)


def test_sync_mode_relays_warnings(qtbot, notes):
    import warnings

    def warns():
        warnings.warn("GPU out of memory; falling back to CPU", RuntimeWarning)
        yield Progress(1, 1, "done")
        return 1

    got = _run(qtbot, "sync", warns)
    assert got["returned"] == [1]
    assert ("warning", "GPU out of memory; falling back to CPU") in notes


def test_bad_mode_is_rejected():
    with pytest.raises(ValueError, match="mode must be one of"):
        Runner(ViewerState(viewer=None), mode="process")
