"""Viewer responsiveness while a refinement runs (issue 3 item 4; see micro-sam#740).

Opens a volume in a real napari viewer (needs a display: run under Xvfb), adds the
LabelEff dock widget, loads protocol scribbles (``benchmarks/annotator.py``), then steps
through slices the way a user scrolls (``viewer.dims.set_point`` on a timer, one step
every ``--interval-ms``) and records, per step, the time from ``set_point`` to the end of
the canvas draw that shows the new slice. Two phases with the same stepping:

* ``idle``: no task running;
* ``refine``: a refinement started through the Refine panel (the worker seam, thread
  mode) runs in the background; stepping lasts until the worker finishes.

A step whose previous one has not been drawn yet is skipped (counted as ``skipped``);
``stall_max_ms`` is the longest gap between two consecutive timer callbacks, i.e. the
longest time the GUI thread could not react at all.

Usage::

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_gui_responsiveness.py \
        [--case mni1] [--interval-ms 50] [--idle-steps 80] [--method auto] \
        [--json benchmarks/results/gui_responsiveness.json] [--update-docs]

``--case`` is a benchmark case from ``benchmarks/cases.py`` (``mni1`` = MNI152 at 1 mm,
197 x 233 x 189; ``ct512:scribbles`` = the full-size CT, 512 x 512 x 300) read through
the plugin's reader, so the layers carry the real geometry. ``--update-docs`` rewrites
the "Responsiveness" section of ``docs/user-guide.md`` between its markers (for the
full-size CT: its section of ``docs/benchmarks.md``, with the peak RSS and Dice);
``--from-json`` regenerates that text from an earlier ``--json`` file.

napari has no public hook for "a frame was drawn", so this script listens to the vispy
canvas draw event through ``viewer.window._qt_viewer`` (a private attribute; benchmark
only, the package itself uses only public API).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.annotator import initial_scribbles  # noqa: E402
from benchmarks.bench_refine import machine_info  # noqa: E402
from benchmarks.cases import DATA, load_case, manifest  # noqa: E402

GUIDE = ROOT / "docs" / "user-guide.md"
MARK_START, MARK_END = "<!-- responsiveness:start -->", "<!-- responsiveness:end -->"


class FrameTimer:
    """Steps the viewer through slices on a Qt timer and times each step's draw."""

    def __init__(self, viewer, axis: int, interval_ms: int):
        from qtpy.QtCore import QTimer

        self.viewer = viewer
        self.axis = axis
        self.latencies: list[float] = []
        self.gaps: list[float] = []
        self.skipped = 0
        self._t0 = None
        self._last_tick = None
        self._pos = 0
        self._n_slices = int(viewer.dims.nsteps[axis])
        canvas = viewer.window._qt_viewer.canvas._scene_canvas  # see module docstring
        canvas.events.draw.connect(self._on_draw, position="last")
        self._canvas = canvas
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def _on_draw(self, _event=None):
        if self._t0 is not None:
            self.latencies.append(time.perf_counter() - self._t0)
            self._t0 = None

    def _tick(self):
        now = time.perf_counter()
        if self._last_tick is not None:
            self.gaps.append(now - self._last_tick)
        self._last_tick = now
        if self._t0 is not None:  # previous step not drawn yet
            self.skipped += 1
            return
        # ping-pong through the middle half of the volume, one slice per step
        lo, hi = self._n_slices // 4, 3 * self._n_slices // 4
        self._pos = (self._pos + 1) % (2 * (hi - lo))
        index = lo + (self._pos if self._pos < hi - lo else 2 * (hi - lo) - self._pos)
        world = self.viewer.dims.range[self.axis]
        self._t0 = time.perf_counter()
        self.viewer.dims.set_point(self.axis, world.start + index * world.step)

    def run(self, until, timeout_s: float = 600.0) -> dict:
        """Step until ``until()`` is true; return the statistics of this phase."""
        from qtpy.QtWidgets import QApplication

        app = QApplication.instance()
        self.latencies, self.gaps, self.skipped = [], [], 0
        self._t0 = self._last_tick = None
        start = time.perf_counter()
        self._timer.start()
        while not until() and time.perf_counter() - start < timeout_s:
            app.processEvents()
            time.sleep(0.001)
        self._timer.stop()
        wall = time.perf_counter() - start
        for _ in range(20):  # let the last step draw
            app.processEvents()
        return summarise(self.latencies, self.gaps, self.skipped, wall)

    def close(self):
        self._canvas.events.draw.disconnect(self._on_draw)


def summarise(latencies, gaps, skipped, wall) -> dict:
    lat = np.asarray(latencies) * 1000.0
    gap = np.asarray(gaps) * 1000.0
    return {
        "steps_drawn": int(lat.size),
        "skipped": int(skipped),
        "median_ms": float(np.median(lat)) if lat.size else None,
        "p95_ms": float(np.percentile(lat, 95)) if lat.size else None,
        "max_ms": float(lat.max()) if lat.size else None,
        "stall_max_ms": float(gap.max()) if gap.size else None,
        "wall_s": float(wall),
    }


def case_path(name: str) -> Path:
    """NIfTI file of a benchmark case (the reader opens it with its geometry): the MNI
    file at 1 mm, or the full-size CT (``ct512:*``), written once as an uncompressed
    NIfTI next to its ``.npy`` cache (``benchmarks/cases.py``)."""
    if name.startswith("ct512:"):
        from benchmarks.cases import CACHE

        from napari_labeleff.io import Geometry, write_volume

        path = CACHE / "labeleff_ct512_image.nii"
        if not path.exists():
            case = load_case(name)
            write_volume(path, case.image, Geometry.from_spacing(case.spacing))
        return path
    if not name.startswith("mni1"):
        raise SystemExit("--case must be an MNI case at 1 mm (mni1 or mni1wm) or a "
                         "ct512 case: the viewer opens the file itself")
    (entry,) = [e for e in manifest() if e["dataset"] == "mni152"]
    return DATA / entry["image"]


def build_viewer(case_name: str, method: str):
    """Viewer with the volume, the LabelEff widget, protocol scribbles and classes."""
    import napari

    case = load_case(case_name)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 1000)
    _, widget = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    store = tempfile.mkdtemp(prefix="labeleff-bench-")
    os.environ["XDG_DATA_HOME"] = store  # the autosave index: do not restore other runs
    widget.autosave.store_dir = store  # and do not write next to the shared data
    viewer.open(str(case_path(case_name)), plugin="napari-labeleff")
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    t0 = time.perf_counter()
    while widget.binding and time.perf_counter() - t0 < 600:  # large volumes bind in the
        app.processEvents()  # background (checksum, autosave store)
        time.sleep(0.01)
    state = widget.state
    if state.shape != case.image.shape:
        raise SystemExit(f"reader shape {state.shape} != case shape {case.image.shape}")
    for c in range(state.n_structures + 1, case.n_structures + 1):
        widget.classes_panel.add_class(case.label_names[c])
    scribbles = state.scribbles_layer
    # in place: the layer shares its array with the autosave session
    scribbles.data[...] = initial_scribbles(case.gt)
    scribbles.refresh()
    widget.refine_panel.method.setCurrentText(method)
    return viewer, widget, case


def measure(case_name: str, interval_ms: int, idle_steps: int, method: str,
            screenshot: Path | None = None) -> dict:
    from qtpy.QtWidgets import QApplication

    viewer, widget, case = build_viewer(case_name, method)
    rss_open = _peak_rss_gb()
    app = QApplication.instance()
    for _ in range(50):
        app.processEvents()
    timer = FrameTimer(viewer, axis=0, interval_ms=interval_ms)
    idle = timer.run(lambda: len(timer.latencies) >= idle_steps)
    state = widget.state
    t0 = time.perf_counter()
    widget.refine_panel.refine_btn.click()
    busy = timer.run(lambda: not state.busy)
    refine_s = time.perf_counter() - t0
    timer.close()
    result = state.result
    if screenshot is not None:
        for _ in range(50):
            app.processEvents()
        viewer.screenshot(str(screenshot), canvas_only=False)
    dice = None
    if result is not None:
        from benchmarks.annotator import dice_per_class

        dice = [round(float(v), 4) for v in dice_per_class(case.gt, result.labels,
                                                           case.n_structures)]
    return {
        "case": case_name,
        "shape_zyx": list(case.image.shape),
        "spacing_zyx_mm": list(case.spacing),
        "interval_ms": interval_ms,
        "refine": {"method": result.method if result else None,
                   "device": result.device if result else None,
                   "wall_s": refine_s, "worker_mode": widget.runner.mode,
                   "status": widget.refine_panel.status.text(), "dice": dice},
        "peak_rss_gb": {"after_open": rss_open, "end": _peak_rss_gb()},
        "idle": idle,
        "during_refine": busy,
    }


def _peak_rss_gb() -> float:
    """Peak resident memory of this process (viewer, layers and the refine worker
    thread) so far, GB."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def machine() -> dict:
    import psutil
    import torch

    return {
        "date": datetime.date.today().isoformat(),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "torch_threads": torch.get_num_threads(),
        "display": "Xvfb, Mesa llvmpipe (software OpenGL)",
        "python": platform.python_version(),
        "loadavg_before": list(os.getloadavg()),
        **{k: v for k, v in machine_info("cpu").items() if k in ("git_commit", "git_dirty")},
    }


def markdown(report: dict) -> str:
    m, r = report["machine"], report["result"]
    rows = []
    for phase, key in (("idle (no task)", "idle"), ("during refine", "during_refine")):
        s = r[key]
        rows.append(f"| {phase} | {s['steps_drawn']} | {s['median_ms']:.1f} | "
                    f"{s['p95_ms']:.1f} | {s['max_ms']:.1f} | {s['stall_max_ms']:.1f} | "
                    f"{s['skipped']} |")
    ref = r["refine"]
    return "\n".join([
        MARK_START,
        "## Responsiveness",
        "",
        "Frame times while stepping through axial slices (one step every "
        f"{r['interval_ms']} ms, as a fast mouse-wheel scroll) on {r['case']} "
        f"({' x '.join(map(str, r['shape_zyx']))} voxels), measured from "
        "`viewer.dims.set_point` to the end of the canvas draw that shows the slice. "
        f"The refine ran `{ref['method']}` on `{ref['device']}` in the background worker "
        f"({ref['wall_s']:.1f} s). Measured by `benchmarks/bench_gui_responsiveness.py` "
        f"on {m['date']}: {m['cores']} CPU cores, {m['ram_gb']} GB RAM, no GPU, "
        f"{m['display']}, load average before the run "
        f"{', '.join(f'{v:.2f}' for v in m['loadavg_before'])} (1, 5, 15 min; the "
        "machine was shared, so treat the numbers as indicative).",
        "",
        "| phase | steps drawn | median ms | p95 ms | max ms | longest stall ms | "
        "steps skipped |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "*longest stall*: the longest gap between two timer callbacks, i.e. the longest "
        "time the viewer could not react at all; *skipped*: steps dropped because the "
        "previous slice had not been drawn yet. If scrolling feels slow while refining "
        "on your machine, untick live update and refine on demand.",
        MARK_END,
    ])


FULL_START, FULL_END = "<!-- gui_fullsize:start -->", "<!-- gui_fullsize:end -->"
BENCH_DOC = ROOT / "docs" / "benchmarks.md"


def markdown_fullsize(report: dict, json_path: str) -> str:
    """The full-size CT section of docs/benchmarks.md (issue 10: the GUI refines a
    full-size CT without freezing or running out of memory)."""
    m, r = report["machine"], report["result"]
    ref, rss, busy = r["refine"], r["peak_rss_gb"], r["during_refine"]
    dice = ref.get("dice") or []
    return "\n".join([
        FULL_START,
        "### Full-size CT in the viewer",
        "",
        f"`{r['case']}` ({' x '.join(map(str, r['shape_zyx']))} voxels, float32 NIfTI) "
        "opened through the plugin's reader in a real napari viewer (Xvfb), the protocol's "
        "initial scribbles painted into the Scribbles layer, Refine clicked in the LabelEff "
        "panel while the viewer stepped through axial slices every "
        f"{r['interval_ms']} ms. Measured by `benchmarks/bench_gui_responsiveness.py "
        f"--case {r['case']}` on {m['date']}, commit {m['git_commit'][:10]}"
        f"{' (dirty tree)' if m['git_dirty'] else ''}: {m['cores']} CPU cores, "
        f"{m['ram_gb']} GB RAM, no GPU; load average before "
        f"{', '.join(f'{v:.1f}' for v in m['loadavg_before'])}; raw results in "
        f"`{json_path}`.",
        "",
        "| refine wall s | peak RSS GB (viewer open / end) | Dice per structure | "
        "frames drawn during refine | median / max frame ms | longest stall ms |",
        "|---|---|---|---|---|---|",
        f"| {ref['wall_s']:.0f} | {rss['after_open']:.2f} / {rss['end']:.2f} | "
        f"{' / '.join(f'{d:.3f}' for d in dice)} | {busy['steps_drawn']} | "
        f"{busy['median_ms']:.0f} / {busy['max_ms']:.0f} | {busy['stall_max_ms']:.0f} |",
        "",
        f"Status line after the refine: \"{ref.get('status', '')}\". Peak RSS is that of "
        "the whole viewer process (napari, the layers and the refine worker thread).",
        "",
        "Issue 10 targets for a first call on this volume (2 CPU cores): <= 30 s: "
        f"{'met' if ref['wall_s'] <= 30 else '**not met**'} ({ref['wall_s']:.0f} s, with "
        "the viewer drawing on the same cores); peak RAM <= 4 GB: "
        f"{'met' if rss['end'] <= 4 else '**not met**'} ({rss['end']:.2f} GB for the "
        "whole viewer); the viewer kept drawing during the refine (longest stall "
        f"{busy['stall_max_ms'] / 1000:.1f} s).",
        "",
        "![The viewer after refining the full-size CT](images/gui_ct512.png)",
        FULL_END,
    ])


def update_docs(text: str, doc: Path = GUIDE, start_mark: str = MARK_START,
                end_mark: str = MARK_END) -> None:
    guide = doc.read_text()
    start, end = guide.index(start_mark), guide.index(end_mark) + len(end_mark)
    doc.write_text(guide[:start] + text + guide[end:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="mni1")
    p.add_argument("--interval-ms", type=int, default=50)
    p.add_argument("--idle-steps", type=int, default=80)
    p.add_argument("--method", default="auto")
    p.add_argument("--json", type=Path,
                   default=ROOT / "benchmarks" / "results" / "gui_responsiveness.json")
    p.add_argument("--update-docs", action="store_true")
    p.add_argument("--screenshot", type=Path, help="save the viewer after the refine")
    p.add_argument("--from-json", action="store_true",
                   help="only regenerate the docs section from --json")
    args = p.parse_args(argv)
    if args.from_json:
        report = json.loads(args.json.read_text())
    else:
        report = {"machine": machine(),
                  "result": measure(args.case, args.interval_ms, args.idle_steps,
                                    args.method, args.screenshot)}
        report["machine"]["loadavg_after"] = list(os.getloadavg())
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    full = report["result"]["case"].startswith("ct512")
    rel = os.path.relpath(args.json, ROOT)
    text = markdown_fullsize(report, rel) if full else markdown(report)
    print(text)
    if args.update_docs:
        if full:
            update_docs(text, BENCH_DOC, FULL_START, FULL_END)
        else:
            update_docs(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
