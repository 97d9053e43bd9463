"""Screenshots of the Project panel for ``docs/user-guide.md`` ("Projects"), on real data.

Run under a virtual display from a clean checkout (it writes only into ``--work`` and
``docs/images/guide_project*.png``)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_project_screenshots.py

What it does, as a user would (through the Python API for the parts a user does by
hand in the GUI): a project on the left-atrium cohort of ``../shared/data`` (the first
10 volumes), the protocol's initial scribbles (3 axial slices per class,
``benchmarks/annotator.py``) on 6 of them, a short CPU training of the cohort network
(``--minutes``, default 8); then the dataset's reference masks of the next volumes
are accepted (standing in for masks a user corrected; each accept scores the published
model on the mask first: the running score of the learning curve). The GUI: the project
opened in the panel and the last volume opened from the table, showing the published
model's draft and its uncertainty; then, in a second window, that volume's reference
mask accepted with the panel's button, which records its running score and starts the
fine-tune after accept. The figures show the workflow; the quality a longer training
reaches is in docs/benchmarks.md.

Images: ``guide_project.png`` (the window), ``guide_project_panel.png`` (the panel),
``guide_project_curve.png`` (the panel's training rows and its learning curve).
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


def wait(cond, timeout_s: float = 600.0, *, required: bool = True) -> bool:
    """Run the event loop until ``cond()``; on timeout exit (``required``) or return False."""
    from qtpy.QtWidgets import QApplication

    start = time.perf_counter()
    while not cond() and time.perf_counter() - start < timeout_s:
        QApplication.instance().processEvents()
        time.sleep(0.02)
    if not cond():
        if required:
            raise SystemExit("timed out waiting for the GUI")
        return False
    settle()
    return True


def la_entries() -> list[dict]:
    """The left-atrium cases of ``../shared/data``, in manifest order."""
    return [e for e in json.loads((DATA / "manifest.json").read_text()) if e["dataset"] == "la_mri"]


def reference_mask(entry: dict) -> np.ndarray:
    from napari_labeleff.io import read_volume

    return np.asarray(read_volume(DATA / entry["label"]).data).astype(np.uint8)


def build_project(folder: Path, minutes: float, n_volumes: int, n_labelled: int) -> None:
    """The project (headless): volumes, initial scribbles, one training run."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.annotator import initial_scribbles
    from napari_labeleff.cohort import Project

    with Project.create(folder, class_names=["left atrium"]) as p:
        for i, e in enumerate(la_entries()[:n_volumes]):
            vid = p.add(DATA / e["image"])
            if i < n_labelled:
                p.set_weak_labels(vid, scribbles=initial_scribbles(reference_mask(e), 3, seed=i),
                                  seconds=60.0)
        report = p.train(max_minutes=minutes, device="cpu")
        print(report.message)


def open_with_draft(panel, vid: str) -> None:
    """Open ``vid`` in the panel and wait for the published model's draft."""
    state = panel.widget.state
    panel.open_volume(vid)
    wait(lambda: panel.vid == vid)
    wait(lambda: state.prior is not None and not state.busy)


def accept_headless(folder: Path, ids: list[str], entries: list[dict]) -> None:
    """Accept the reference masks of ``ids`` (as ``labeleff project accept`` would): each
    accept scores the published model on the mask first (the running score)."""
    from napari_labeleff.cohort import Project

    with Project.open(folder) as p:
        for vid, entry in zip(ids, entries):
            if p.volume(vid).status != "accepted":
                p.accept(vid, reference_mask(entry))
        for c in p.curve():
            print(f"curve: {c.volume_id} model {c.model} Dice before {c.model_dice_before}")


def open_viewer(folder: Path):
    """A napari window with the LabelEff dock and the project open in its panel.

    One volume per window: opening a second project volume in the same window crashed
    in the GL driver (``glDrawArrays``) under Xvfb's software rendering."""
    import napari

    viewer = napari.Viewer(title="napari-labeleff: project")
    viewer.window.resize(1600, 1000)
    _, widget = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    panel = widget.project_panel
    panel.open_project(folder)
    return viewer, panel


def draft_window(folder: Path, vid: str) -> None:
    """guide_project.png and guide_project_panel.png: the draft on an unannotated volume."""
    viewer, panel = open_viewer(folder)
    open_with_draft(panel, vid)
    state = panel.widget.state
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
    panel.close_project()
    viewer.close()
    settle()


def curve_window(folder: Path, vid: str, mask: np.ndarray, step_wait: float) -> None:
    """guide_project_curve.png: ``mask`` accepted for ``vid`` with the panel's button (the
    running score, then the fine-tune after accept), the panel from the model line to
    the learning curve's end while the fine-tune runs."""
    from qtpy.QtCore import QPoint, QRect

    viewer, panel = open_viewer(folder)
    open_with_draft(panel, vid)
    if panel.project.volume(vid).status != "accepted":
        panel.widget.state.refined_layer.data = mask
        if not panel.accept_current():
            raise SystemExit(f"accepting {vid} failed")
    wait(lambda: not panel.train_runner.running or "step" in panel.train_status.text(),
         step_wait, required=False)
    wait(lambda: not panel.next_runner.running)
    settle()
    top = panel.model_label.mapTo(panel, QPoint(0, 0)).y() - 4
    bottom = panel.curve.mapTo(panel, QPoint(0, panel.curve.height())).y() + 4
    panel.grab(QRect(0, top, panel.width(), bottom - top)).save(str(OUT / "guide_project_curve.png"))
    print(f"wrote {OUT / 'guide_project_curve.png'}; status: {panel.train_status.text()}; "
          f"{panel.curve.lead_label.text()}")
    runner = panel.train_runner
    viewer.close()  # cancels the fine-tune (its resume state stays in --work)
    wait(lambda: not runner.running, 120, required=False)  # its process is gone before exit


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget (CPU)")
    ap.add_argument("--labelled", type=int, default=6, help="volumes with initial scribbles")
    ap.add_argument("--accepted", type=int, default=4,
                    help="volumes then accepted with their reference masks (default 4; the "
                         "last one in the panel)")
    ap.add_argument("--step-wait", type=float, default=300.0,
                    help="seconds to wait for the fine-tune to report a step before the curve "
                         "screenshot (default 300)")
    ap.add_argument("--work", help="project folder (default: a temporary one)")
    args = ap.parse_args(argv)
    if args.accepted < 1:
        ap.error("--accepted must be at least 1 (the volume accepted in the panel)")
    work = Path(args.work or tempfile.mkdtemp(prefix="labeleff-project-shots-"))
    os.environ.setdefault("XDG_DATA_HOME", str(work / "xdg"))  # autosave index stays out of ~
    folder = work / "la_project"
    n_volumes = args.labelled + args.accepted
    if not (folder / "project.json").exists():  # else --work of an earlier run: reuse it
        build_project(folder, args.minutes, n_volumes=n_volumes, n_labelled=args.labelled)
    from napari_labeleff.cohort import Project

    with Project.open(folder, read_only=True) as p:
        ids = p.volume_ids[:n_volumes]
    entries = la_entries()[:n_volumes]
    accept_headless(folder, ids[args.labelled:-1], entries[args.labelled:-1])
    draft_window(folder, ids[-1])
    curve_window(folder, ids[-1], reference_mask(entries[-1]), args.step_wait)
    return 0


if __name__ == "__main__":
    sys.exit(main())
