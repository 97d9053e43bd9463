"""Screenshot of the Project panel for ``docs/user-guide.md`` ("Projects"), on real data.

Run under a virtual display from a clean checkout (it writes only into ``--work`` and
``docs/images/guide_project*.png``)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_project_screenshots.py

What it does, as a user would (through the Python API for the parts a user does by
hand in the GUI): a project on the left-atrium cohort of ``../shared/data`` (the first
10 volumes), the protocol's initial scribbles (3 axial slices per class,
``benchmarks/annotator.py``) on 6 of them, a short CPU training of the cohort network
(``--minutes``, default 8), then the GUI: the project opened in the panel and an
unannotated volume opened from the table, showing the published model's draft and its
uncertainty. The figure shows the workflow; the quality a longer training reaches is
in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
DATA = ROOT.parent / "shared" / "data"


def settle(rounds: int = 40) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(rounds):
        QApplication.instance().processEvents()
        time.sleep(0.02)


def wait(cond, timeout_s: float = 600.0) -> None:
    from qtpy.QtWidgets import QApplication

    start = time.perf_counter()
    while not cond() and time.perf_counter() - start < timeout_s:
        QApplication.instance().processEvents()
        time.sleep(0.02)
    if not cond():
        raise SystemExit("timed out waiting for the GUI")
    settle()


def build_project(folder: Path, minutes: float, n_volumes: int, n_labelled: int) -> str:
    """The project (headless): volumes, initial scribbles, one training run."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.annotator import initial_scribbles
    from napari_labeleff.cohort import Project
    from napari_labeleff.io import read_volume

    entries = [e for e in json.loads((DATA / "manifest.json").read_text()) if e["dataset"] == "la_mri"]
    with Project.create(folder, class_names=["left atrium"]) as p:
        for i, e in enumerate(entries[:n_volumes]):
            vid = p.add(DATA / e["image"])
            if i < n_labelled:
                gt = np.asarray(read_volume(DATA / e["label"]).data).astype(np.uint8)
                p.set_weak_labels(vid, scribbles=initial_scribbles(gt, 3, seed=i), seconds=60.0)
        report = p.train(max_minutes=minutes, device="cpu")
        print(report.message)
        return p.volume_ids[n_labelled]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget (CPU)")
    ap.add_argument("--labelled", type=int, default=6, help="volumes with initial scribbles")
    ap.add_argument("--work", help="project folder (default: a temporary one)")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="labeleff-project-shots-"))
    os.environ.setdefault("XDG_DATA_HOME", str(work / "xdg"))  # autosave index stays out of ~
    folder = work / "la_project"
    if (folder / "project.json").exists():  # --work of an earlier run: reuse its project
        from napari_labeleff.cohort import Project

        with Project.open(folder, read_only=True) as p:
            vid = next(v.id for v in p.volumes if v.status == "new")
    else:
        vid = build_project(folder, args.minutes, n_volumes=args.labelled + 4,
                            n_labelled=args.labelled)

    import napari

    viewer = napari.Viewer(title="napari-labeleff: project")
    viewer.window.resize(1600, 1000)
    _, widget = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    panel = widget.project_panel
    panel.open_project(folder)
    panel.open_volume(vid)
    wait(lambda: panel.vid == vid)
    wait(lambda: widget.state.prior is not None and not widget.state.busy)
    state = widget.state
    fg = np.argwhere(np.asarray(state.refined_layer.data) > 0)
    z = int(np.median(fg[:, 0])) if len(fg) else state.shape[0] // 2
    viewer.dims.set_point(0, state.refined_layer.data_to_world((z, 0, 0))[0])
    if state.uncertainty_layer is not None:  # the draft itself; the overlay is one click
        state.uncertainty_layer.visible = False
    state.refined_layer.opacity = 0.6
    for row in range(panel.table.rowCount()):
        if panel.table.item(row, 0).text().startswith(vid):
            panel.table.selectRow(row)
    wait(lambda: not panel.next_runner.running)  # the next-volume slot is filled
    settle()
    OUT.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(OUT / "guide_project.png"), canvas_only=False)
    panel.grab().save(str(OUT / "guide_project_panel.png"))
    print(f"wrote {OUT / 'guide_project.png'} and guide_project_panel.png (volume {vid})")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
