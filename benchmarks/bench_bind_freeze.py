"""Largest viewer freeze while binding and autosaving a 512 x 512 x 300 volume (issue 8).

A real napari viewer (run under Xvfb) with the LabelEff dock widget. A Qt timer ticks
every ``--tick-ms`` on the GUI thread; the longest gap between two ticks, minus the
tick interval, is the longest time the viewer could not react at all ("freeze").
Phases, each with its own ticker:

* ``napari_add_image``: napari alone adds the volume (no plugin docked): napari's own
  cost, for reference;
* ``bind``: a (300, 512, 512) int16 CT-like volume is added to the viewer; the widget
  binds it (checksum of the whole volume, opening its autosave store, creating the
  annotation layers) until the layers are there;
* ``strokes``: ``--strokes`` brush strokes (5 x 40 x 40 voxels each, one every 100 ms)
  on the Scribbles layer, each autosaved (only the chunks it touched);
* ``mask saves``: ``--accepts`` changes of the whole Final mask (as "Accept into final
  mask" does), each saved as a new 512 x 512 x 300 mask array, plus painting on the
  Final mask (debounced save);
* ``switch``: binding another image, which first flushes pending saves (a deliberate
  wait: the work must be on disk before its layers go).

Run twice: ``background`` (the product: the worker seam's IOQueue does the checksum,
store opening and mask saves in a thread) and ``gui_thread`` (the same work in the GUI
thread, as before issue 8), so the table shows what moving it off the GUI thread buys.

Usage::

    OMP_NUM_THREADS=1 xvfb-run -a -s "-screen 0 1600x1000x24" \\
        python benchmarks/bench_bind_freeze.py [--json benchmarks/results/bind_freeze.json] \\
        [--update-docs]

Expected wall time on 2 cores: ~2-4 minutes. Needs ~2 GB RAM.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPE = (300, 512, 512)
GUIDE = ROOT / "docs" / "formats.md"
MARK_START, MARK_END = "<!-- bind-freeze:start -->", "<!-- bind-freeze:end -->"


class Ticker:
    """Records the gaps between ticks of a GUI-thread timer."""

    def __init__(self, tick_ms: int):
        from qtpy.QtCore import QTimer

        self.tick_ms = tick_ms
        self.gaps: list[float] = []
        self._last = None
        self._timer = QTimer()
        self._timer.setInterval(tick_ms)
        self._timer.timeout.connect(self._tick)

    def _tick(self):
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append(now - self._last)
        self._last = now

    def run(self, action, until, timeout_s: float = 600.0) -> dict:
        """Start ticking, call ``action()``, pump events until ``until()``; stats."""
        from qtpy.QtWidgets import QApplication

        app = QApplication.instance()
        self.gaps, self._last = [], None
        self._timer.start()
        for _ in range(5):
            app.processEvents()
            time.sleep(self.tick_ms / 1000)
        start = time.perf_counter()
        action()
        while not until() and time.perf_counter() - start < timeout_s:
            app.processEvents()
            time.sleep(0.001)
        wall = time.perf_counter() - start
        for _ in range(5):
            app.processEvents()
            time.sleep(self.tick_ms / 1000)
        self._timer.stop()
        gaps = np.asarray(self.gaps) * 1000.0
        freeze = np.maximum(gaps - self.tick_ms, 0.0)
        return {
            "wall_s": round(float(wall), 3),
            "ticks": int(gaps.size),
            "freeze_max_ms": round(float(freeze.max()), 1) if gaps.size else None,
            "freeze_p99_ms": round(float(np.percentile(freeze, 99)), 1) if gaps.size else None,
            "frames_over_50ms": int(np.count_nonzero(freeze > 50.0)),
            "timed_out": bool(not until()),
        }


def _volume(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    body = ((y - 256) / 220.0) ** 2 + ((x - 256) / 180.0) ** 2 < 1
    vol = np.broadcast_to(np.where(body, 40, -1000).astype(np.int16), SHAPE).copy()
    vol += rng.integers(-20, 21, size=SHAPE, dtype=np.int16)
    vol[:, 200:260, 220:300] += 150  # an "organ"
    return vol


def measure(mode: str, tick_ms: int, n_strokes: int, n_accepts: int) -> dict:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_labeleff._napari import _main_widget

    app = QApplication.instance() or QApplication([])
    store = tempfile.mkdtemp(prefix="labeleff-bind-freeze-")
    os.environ["XDG_DATA_HOME"] = store
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 1000)
    first, second = _volume(0), _volume(1)
    ticker = Ticker(tick_ms)
    for _ in range(20):
        app.processEvents()
    # napari's own cost of showing the volume, before the plugin is there
    out = {"mode": mode}
    out["napari_add_image"] = ticker.run(lambda: viewer.add_image(first, name="plain"),
                                         lambda: True)
    viewer.layers.clear()
    _, widget = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    widget.autosave.store_dir = store
    if mode == "gui_thread":
        _main_widget.BIND_IN_BACKGROUND_BYTES = 2**62  # checksum + store opening inline
        widget.io.mode = "sync"  # mask saves inline
    state = widget.state
    for _ in range(20):
        app.processEvents()
    out["bind"] = ticker.run(lambda: viewer.add_image(first, name="ct"),
                             lambda: state.scribbles_layer is not None)

    strokes = {"i": 0, "next": 0.0}

    def stroke_step():
        now = time.perf_counter()
        if strokes["i"] >= n_strokes or now < strokes["next"]:
            return strokes["i"] >= n_strokes
        i = strokes["i"]
        z = 100 + 5 * (i % 20)
        idx = np.mgrid[z:z + 5, 200:240, 150 + 10 * i:190 + 10 * i].reshape(3, -1)
        state.scribbles_layer.data_setitem(tuple(idx), 2 if i % 2 else 1)
        strokes["i"], strokes["next"] = i + 1, now + 0.1
        return False

    out["strokes"] = ticker.run(lambda: None, stroke_step)
    out["strokes"]["n"] = n_strokes

    accepts = {"i": 0, "next": 0.0}

    def accept_step():
        now = time.perf_counter()
        if accepts["i"] >= n_accepts:
            return widget.io.pending == 0 and not widget.autosave._final_timer.isActive()
        if now < accepts["next"]:
            return False
        i = accepts["i"]
        mask = np.zeros(SHAPE, np.uint8)
        mask[50 + 10 * i:250, 150:300, 150:350] = 1
        state.final_layer.data = mask
        state.final_changed.emit()  # what accepting does
        idx = np.mgrid[120:121, 100:140, 100:140].reshape(3, -1)
        state.final_layer.data_setitem(tuple(idx), 1)  # painting: debounced save
        accepts["i"], accepts["next"] = i + 1, now + 0.5
        return False

    out["mask_saves"] = ticker.run(lambda: None, accept_step)
    out["mask_saves"]["n"] = n_accepts

    saved = state.session.masks.get("final")
    out["final_saved_matches"] = bool(saved is not None and np.array_equal(saved, state.final_layer.data))
    out["switch"] = ticker.run(lambda: viewer.add_image(second, name="ct2") and widget.bind(viewer.layers["ct2"]),
                               lambda: state.scribbles_layer is not None
                               and getattr(state.image_layer, "name", None) == "ct2")
    viewer.close()
    return out


def machine() -> dict:
    import psutil

    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                     "--untracked-files=no"], capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "dirty_tree": dirty,
        "host": platform.node(),
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "display": "Xvfb, Mesa llvmpipe (software OpenGL)",
        "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "loadavg_before": [round(v, 2) for v in os.getloadavg()],
    }


def markdown(report: dict) -> str:
    m = report["machine"]
    rows = []
    labels = {"napari_add_image": "napari adds the image layer (no plugin)",
              "bind": "add image + bind (checksum, store, 4 annotation layers)", "strokes": "brush strokes (autosaved)",
              "mask_saves": "final-mask saves (accept + painting)", "switch": "switch image (flushes saves)"}
    for phase, label in labels.items():
        cells = []
        for mode in ("background", "gui_thread"):
            r = report["runs"].get(mode, {}).get(phase)
            cells.append("n/a" if r is None else f"{r['freeze_max_ms']:.0f}")
        bg = report["runs"]["background"][phase]
        rows.append(f"| {label} | {cells[0]} | {cells[1]} | {bg['frames_over_50ms']} | {bg['wall_s']:.1f} |")
    return "\n".join([
        f"Measured by `benchmarks/bench_bind_freeze.py` on a {' x '.join(map(str, SHAPE[::-1]))} "
        f"(X x Y x Z) int16 volume, commit `{(m['commit'] or 'unknown')[:10]}`, {m['date'][:10]}: "
        f"{m['cores']} CPU cores (shared; load average before the run "
        f"{', '.join(f'{v:.1f}' for v in m['loadavg_before'])}), {m['display']}. *Longest "
        "freeze*: the longest time the viewer's GUI thread could not react (gap between "
        f"ticks of a {report['tick_ms']} ms timer, minus the interval).",
        "",
        "| phase | longest freeze ms (background I/O) | longest freeze ms (same work on the GUI thread, as before) | freezes > 50 ms (background) | wall s (background) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        _verdict(report),
    ])


def _verdict(report: dict) -> str:
    """One generated sentence: is the "a frame or two" (~33 ms) target met?"""
    bg = report["runs"]["background"]
    worst = max(bg[p]["freeze_max_ms"] for p in ("bind", "strokes", "mask_saves"))
    if worst <= 33.0:
        return "Target met: no freeze longer than two frames (33 ms) while binding and autosaving."
    return (
        f"Target (no freeze longer than a frame or two, ~33 ms) **not met** on this machine: "
        f"the longest freeze while binding and autosaving was {worst:.0f} ms. napari alone "
        f"froze {bg['napari_add_image']['freeze_max_ms']:.0f} ms adding the image layer; the "
        "bind's remaining freeze is napari creating the four annotation layers, which must "
        "happen on the GUI thread. What moved to the background (checksum, store opening, "
        "mask saves) shows in the difference between the two freeze columns."
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tick-ms", type=int, default=5)
    p.add_argument("--strokes", type=int, default=20)
    p.add_argument("--accepts", type=int, default=4)
    p.add_argument("--modes", default="background,gui_thread")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--from-json", help="only regenerate the docs from this report")
    p.add_argument("--update-docs", action="store_true")
    args = p.parse_args(argv)
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
    else:
        report = {"machine": machine(), "tick_ms": args.tick_ms, "shape_zyx": list(SHAPE), "runs": {}}
        for mode in args.modes.split(","):
            # each mode in a fresh process: no warm caches or leftover threads
            if os.environ.get("_BIND_FREEZE_CHILD") == mode:
                print(json.dumps(measure(mode, args.tick_ms, args.strokes, args.accepts)))
                return 0
            env = {**os.environ, "_BIND_FREEZE_CHILD": mode}
            run = subprocess.run([sys.executable, __file__, "--modes", mode, "--tick-ms", str(args.tick_ms),
                                  "--strokes", str(args.strokes), "--accepts", str(args.accepts)],
                                 capture_output=True, text=True, env=env, timeout=1800)
            if run.returncode != 0:
                print(run.stderr[-4000:], file=sys.stderr)
                return run.returncode
            report["runs"][mode] = json.loads(run.stdout.strip().splitlines()[-1])
            print(mode, json.dumps(report["runs"][mode], indent=1))
        report["machine"]["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.update_docs:
        from benchmarks.report import write_section

        write_section(markdown(report), doc=GUIDE, start=MARK_START, end=MARK_END)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
