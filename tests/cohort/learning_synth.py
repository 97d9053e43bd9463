"""Tiny synthetic cohorts for the learner's tests (no /work/shared data).

Every volume holds two objects of the SAME intensity: the target, a ball in the left
half, and a distractor, a thin plate in the right half with more voxels than the ball
(random sizes/positions per volume, seeded). A threshold marks both (Dice ~0.4), so
only shape/position tell them apart.
"""

from __future__ import annotations

import numpy as np

from napari_labeleff.cohort.training import TrainCase, TrainSpec, write_labels_snapshot
from napari_labeleff.io import Geometry, write_volume

SHAPE = (16, 32, 32)


def make_volume(seed: int, shape=SHAPE):
    """(image float32, gt uint8 0/1) of one synthetic volume."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    cz, cy = rng.uniform(6, 10), rng.uniform(11, 21)
    cx = rng.uniform(7, 10)
    r = rng.uniform(3.5, 5)
    ball = ((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) <= r * r
    bx = rng.uniform(21, 27)
    bar = (np.abs(x - bx) <= 1) & (y >= 4) & (y < 28) & (z >= 3) & (z < 13)  # a thin plate
    image = 100.0 * (ball | bar) + rng.normal(0.0, 12.0, shape)
    return image.astype(np.float32), ball.astype(np.uint8)


def slice_scribbles(gt: np.ndarray, z: int | None = None) -> np.ndarray:
    """Scribbles on one axial slice: a 3x3 patch in the ball's centre (label 2) and a
    line of background (label 1) through the slice, off the ball."""
    s = np.zeros(gt.shape, np.uint8)
    zz = int(np.argwhere(gt).mean(axis=0)[0]) if z is None else z
    cy, cx = np.argwhere(gt[zz]).mean(axis=0).astype(int)
    s[zz, cy - 1: cy + 2, cx - 1: cx + 2] = 2
    s[zz, 2, :] = 1
    s[zz, :, 30] = 1
    plane = s[zz]
    plane[(gt[zz] > 0) & (plane == 1)] = 0
    return s


def write_case(folder, name, seed, *, kind="mask", spacing=(1.0, 1.0, 1.0), channels=1):
    """Write image (+ labels snapshot) for one case; returns (image_path, labels_path, gt).

    kind: "mask" (full mask), "scribbles", "boxes", "none" (no snapshot).
    """
    image, gt = make_volume(seed)
    if channels > 1:
        image = np.stack([image] * channels)
    img_path = folder / f"{name}.nii.gz"
    write_volume(img_path, image, Geometry.from_spacing(spacing))
    lab_path = None
    if kind == "mask":
        lab_path = write_labels_snapshot(folder / f"{name}.npz", np.zeros(gt.shape, np.uint8), mask=gt)
    elif kind == "scribbles":
        lab_path = write_labels_snapshot(folder / f"{name}.npz", slice_scribbles(gt))
    elif kind == "boxes":
        idx = np.argwhere(gt)
        box = (1, *idx.min(axis=0).tolist(), *(idx.max(axis=0) + 1).tolist())
        lab_path = write_labels_snapshot(folder / f"{name}.npz", np.zeros(gt.shape, np.uint8), boxes=[box])
    return str(img_path), lab_path, gt


def make_spec(tmp_path, *, n_labelled=3, n_unlabeled=0, n_val=1, kind="mask", options=None,
              out="models/v1", run="runs/r1", init=None, class_names=("ball",)):
    """A TrainSpec over a freshly written synthetic cohort in ``tmp_path/data``."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    cases = []
    for i in range(n_labelled):
        img, lab, _ = write_case(data, f"lab{i}", 100 + i, kind=kind)
        cases.append(TrainCase(f"lab{i}", img, lab, "labelled"))
    for i in range(n_unlabeled):
        img, _, _ = write_case(data, f"unl{i}", 200 + i, kind="none")
        cases.append(TrainCase(f"unl{i}", img, None, "unlabeled"))
    for i in range(n_val):
        img, lab, _ = write_case(data, f"val{i}", 300 + i, kind="mask")
        cases.append(TrainCase(f"val{i}", img, lab, "validation"))
    opts = {"device": "cpu", "seed": 0, "max_minutes": 5, "num_threads": 1, "patch_size": (16, 32, 32),
            "features": (4, 8, 16, 32, 32, 4), "batch_size": 1}
    opts.update(options or {})
    return TrainSpec(cases=tuple(cases), class_names=tuple(class_names), out_dir=str(tmp_path / out),
                     run_dir=str(tmp_path / run), init_checkpoint=init, options=opts)
