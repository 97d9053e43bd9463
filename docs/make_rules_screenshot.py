"""Screenshot of the rules box (docs/rules.md) in a real napari window.

Run under a virtual display::

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_rules_screenshot.py

A synthetic short-axis phantom (LV cavity in a myocardium ring that is faint on one
side, RV beside it) is opened with the plugin's reader; the classes are named, example
strokes painted, the volume refined through the refine panel (graph method, no rules),
the cardiac template picked in the rules box, and the violations of the refined mask
listed; the first one is jumped to. Writes ``docs/images/rules_box.png``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))

from make_screenshots import shot, show_panel, wait_idle


def phantom(shape=(8, 72, 88), seed=0):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    cy, cx = shape[1] // 2, shape[2] // 2 + 10
    d2 = (y - cy) ** 2 + (x - cx) ** 2
    gt = np.zeros(shape, np.uint8)
    gt[:] = np.where(d2 <= 17 ** 2, 2, 0)
    gt[:] = np.where(d2 <= 11 ** 2, 3, gt)
    rv = ((y - cy) ** 2 / 18 ** 2 + (x - (cx - 26)) ** 2 / 9 ** 2 <= 1) & (gt == 0)
    gt[np.broadcast_to(rv, shape)] = 1
    levels = np.array([0.15, 0.8, 0.35, 1.0], np.float32)
    img = levels[gt]
    faint = (gt == 2) & (np.broadcast_to(x, shape) > cx + 8)
    img[faint] = 0.15
    img = img + np.random.default_rng(seed).normal(0, 0.05, shape).astype(np.float32)
    scr = np.zeros(shape, np.uint8)
    for k in (2, 5):
        scr[k, 4:7, 4:-4] = 1
        scr[k, cy - 1:cy + 2, cx - 5:cx + 5] = 4
        scr[k, cy - 2:cy + 3, cx - 15:cx - 13] = 3
        scr[k, cy - 8:cy + 8, cx - 26] = 2
    return img, gt, scr


def main() -> int:
    import napari
    import nibabel as nib

    tmp = Path(tempfile.mkdtemp(prefix="labeleff-rules-shot-"))
    os.environ["XDG_DATA_HOME"] = str(tmp)
    img, gt, scr = phantom()
    path = tmp / "cine_phantom.nii.gz"
    nib.save(nib.Nifti1Image(img.T, np.diag([1.5, 1.5, 8.0, 1.0])), path)
    viewer = napari.Viewer(show=True, title="napari-labeleff")
    viewer.window.resize(1600, 1000)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-labeleff", "LabelEff")
    dock.setMinimumWidth(460)
    widget.autosave.store_dir = tmp
    viewer.open(str(path), plugin="napari-labeleff")
    state = widget.state
    classes = widget.classes_panel
    for c, name in enumerate(["RV cavity", "myocardium", "LV cavity"], start=1):
        if c < len(state.classes):
            classes.rename_class(c, name)
        else:
            classes.add_class(name)
    for value in np.unique(scr[scr > 0]):
        state.scribbles_layer.data_setitem(np.nonzero(scr == value), int(value))
    widget.refine_panel.method.setCurrentText("randomwalk")
    widget.refine_panel.run_refine()
    wait_idle(state)
    box = classes.rules_box
    box.use_template("cardiac")
    found = box.check()
    print(f"{len(found)} violations:", [v.message for v in found])
    if found:
        box.violations.setCurrentRow(0)
        box.jump_to(0)
    show_panel(box)
    shot(viewer, "rules_box.png", ROOT / "docs" / "images")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
