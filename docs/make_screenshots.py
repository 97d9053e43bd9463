"""Take the screenshots of ``docs/user-guide.md`` and the README in a real napari window.

Run under a virtual display (the viewer must be shown for screenshots)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py

It does what a user does, through the LabelEff dock widget: opens the shipped MNI152
brain sample with the plugin's reader, names the classes, puts in the sample's example
scribbles, refines (in the background worker), shows the uncertainty overlay, asks for
suggestions and selects one, accepts the mask, exports it, and shows the mask in 3D.
Autosave goes to a temporary folder, so the repository stays clean. Writes
``docs/images/guide_*.png`` and ``docs/images/readme_screenshot.png``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
BACKGROUND_RGB = (0.35, 0.44, 0.55)


def wait_idle(state, timeout_s: float = 600.0) -> None:
    """Run the Qt event loop until the background task of ``state`` has finished."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    start = time.perf_counter()
    while state.busy and time.perf_counter() - start < timeout_s:
        app.processEvents()
        time.sleep(0.01)
    if state.busy:
        raise SystemExit("the background task did not finish in time")
    settle()


def settle(rounds: int = 30) -> None:
    """Let Qt lay out and draw everything before a screenshot."""
    from qtpy.QtWidgets import QApplication

    for _ in range(rounds):
        QApplication.instance().processEvents()
        time.sleep(0.01)


def show_panel(panel) -> None:
    """Scroll the dock so that ``panel`` is in view (public Qt API only)."""
    from qtpy.QtWidgets import QScrollArea

    parent = panel.parentWidget()
    while parent is not None and not isinstance(parent, QScrollArea):
        parent = parent.parentWidget()
    if parent is not None:
        parent.ensureWidgetVisible(panel, 0, 0)
        parent.verticalScrollBar().setValue(panel.y())


def shot(viewer, name: str, out: Path) -> Path:
    settle()
    path = out / name
    viewer.screenshot(str(path), canvas_only=False)
    print("wrote", path)
    return path


def main(argv=None) -> int:
    import napari

    sys.path.insert(0, str(ROOT))
    from benchmarks.annotator import stroke
    from napari_labeleff.io import load_sample
    from napari_labeleff.io._samples import sample_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="labeleff-shots-"))
    os.environ["XDG_DATA_HOME"] = str(tmp)  # autosave index: do not restore older runs

    sample = load_sample("brain")
    viewer = napari.Viewer(show=True, title="napari-labeleff")
    viewer.window.resize(1600, 1000)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    dock.setMinimumWidth(440)
    widget.autosave.store_dir = tmp  # keep autosave stores out of sample_data/
    viewer.open(str(sample_dir() / "brain_image.nii.gz"), plugin="napari-labeleff")
    state = widget.state

    # classes and example scribbles, as a user would set them up
    classes = widget.classes_panel
    classes.rename_class(1, sample.class_names[1])
    classes.recolor_class(1, sample.colors[1])
    classes.add_class(sample.class_names[2], sample.colors[2])
    classes.recolor_class(0, BACKGROUND_RGB)  # black background strokes would not show
    # the sample's example scribbles, plus one stroke per class on one more slice, drawn
    # the way the benchmark's simulated annotator draws them
    z = sample.scribbles.shape[0] // 2
    scribbles = sample.scribbles.copy()
    for c in range(len(sample.class_names)):
        scribbles[z][stroke(sample.labels[z] == c) & (scribbles[z] == 0)] = c + 1
    state.scribbles_layer.data[...] = scribbles  # in place: shared with autosave
    state.scribbles_layer.refresh()
    centre = (np.array(sample.scribbles.shape) - 1) / 2
    viewer.dims.set_point(range(3), state.image_layer.data_to_world((z, *centre[1:])))
    viewer.reset_view()
    state.refined_layer.visible = False
    state.final_layer.visible = False
    shot(viewer, "guide_scribbles.png", args.out)

    # refine in the background worker, then show the mask and its uncertainty
    refine = widget.refine_panel
    refine.run_refine()
    wait_idle(state)
    state.refined_layer.visible = True
    shot(viewer, "guide_refined.png", args.out)
    refine.show_uncertainty.setChecked(True)
    state.refined_layer.visible = False
    shot(viewer, "guide_uncertainty.png", args.out)
    state.refined_layer.visible = True

    # suggestions: rank slices and jump to the first one
    review = widget.review_panel
    review.request_suggestions()
    wait_idle(state)
    state.refined_layer.visible = False
    review.select(0)
    show_panel(review)
    shot(viewer, "guide_review.png", args.out)
    shot(viewer, "readme_screenshot.png", args.out)

    # accept everything into the final mask and export it with its label tables
    viewer.reset_view()
    refine.accept("all classes")
    state.uncertainty_layer.visible = False
    state.refined_layer.visible = False
    state.final_layer.visible = True
    widget.export_panel.path.setText(str(tmp / "brain_mask.nii.gz"))
    widget.export_panel.save()
    show_panel(widget.export_panel)
    shot(viewer, "guide_export.png", args.out)

    # the final mask's white matter in 3D
    for layer in viewer.layers:
        # ==, not "is": the widget's viewer (so its layers) are napari's public proxies
        layer.visible = layer == state.final_layer
    state.final_layer.contour = 0
    state.final_layer.selected_label = 2  # white matter alone shows its shape
    state.final_layer.show_selected_label = True
    viewer.layers.selection.active = state.final_layer
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    viewer.scene.camera.angles = (15.0, -35.0, 110.0)
    shot(viewer, "guide_3d.png", args.out)
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
