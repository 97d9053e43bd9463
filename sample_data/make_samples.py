"""Build the shipped samples in ``sample_data/`` from the shared data (not run by tests).

Usage (from the repository root, with the project's venv)::

    python sample_data/make_samples.py            # reads $LABELEFF_DATA or /work/shared/data

Writes, next to this script:

* ``brain_image.nii.gz``, ``brain_labels.nii.gz`` (+ label tables), ``brain_scribbles.nii.gz``:
  MNI152 2009a T1 at 2 mm (2x2x2 block mean of the 1 mm template, labels by block
  mode, as the benchmark's ``mni2`` case), cropped to the non-zero brain + 2 voxels;
  1 = gray matter, 2 = white matter.
* ``ct_image.nii.gz``, ``ct_labels.nii.gz`` (+ tables), ``ct_scribbles.nii.gz``,
  ``ct_boxes.json``: the TotalSegmentator example CT cropped around liver, spleen and
  both kidneys (+ 4 voxels); labels remapped to 1 = liver, 2 = spleen,
  3 = kidney_right, 4 = kidney_left (the benchmark's ``ct`` cases' numbering).
* ``LICENSE_TotalSegmentator_Apache-2.0.txt``: copied with the CT (Apache-2.0 asks
  redistributions to carry the licence).
* ``samples.json``: what :func:`napari_labeleff.io.load_sample` reads.

Example scribbles and boxes come from the benchmark's simulated annotator
(``benchmarks/annotator.py``: ``initial_scribbles(gt, n_slices=3, seed=0)``,
``box_prompts(gt, seed=0)``), so the samples reproduce the benchmark's first step.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.annotator import box_prompts, initial_scribbles  # noqa: E402
from benchmarks.cases import DATA, downsample2, manifest  # noqa: E402
from napari_labeleff.io import Geometry, read_volume, write_labels, write_volume  # noqa: E402
from napari_labeleff.io._labeltable import default_color  # noqa: E402

CT_ORGANS = ("liver", "spleen", "kidney_right", "kidney_left")


def _regrid(geometry: Geometry, scale: float = 1.0, offset_zyx=(0.0, 0.0, 0.0)) -> Geometry:
    """Geometry of a grid whose voxel (z, y, x) lies at old index scale * (z, y, x) + offset."""
    m = np.eye(4)
    m[:3, :3] *= scale
    m[:3, 3] = np.asarray(offset_zyx, dtype=float)[::-1]  # (z, y, x) -> (i, j, k)
    return Geometry(geometry.affine_ras @ m)


def _crop(mask: np.ndarray, margin: int):
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + 1 + margin, mask.shape)
    return tuple(slice(a, b) for a, b in zip(lo, hi)), lo


def _entry(dataset: str) -> dict:
    (entry,) = [e for e in manifest() if e["dataset"] == dataset]
    return entry


def _write(key: str, image, labels, geometry, names, *, boxes=None, info: dict) -> dict:
    image_file, labels_file = f"{key}_image.nii.gz", f"{key}_labels.nii.gz"
    scribbles_file = f"{key}_scribbles.nii.gz"
    colors = [default_color(c) for c in range(len(names))]
    write_volume(HERE / image_file, image, geometry)
    write_labels(HERE / labels_file, labels, geometry, label_names=names, colors=colors)
    scribbles = initial_scribbles(labels, n_slices=3, seed=0).astype(np.uint8)
    write_volume(HERE / scribbles_file, scribbles, geometry)
    entry = {
        **info,
        "image": image_file,
        "labels": labels_file,
        "scribbles": scribbles_file,
        "boxes": None,
        "classes": [{"name": n, "color": list(c)} for n, c in zip(names, colors)],
        "shape": list(image.shape),
        "spacing": list(geometry.spacing),
    }
    if boxes is not None:
        (HERE / f"{key}_boxes.json").write_text(json.dumps([list(b) for b in boxes]) + "\n")
        entry["boxes"] = f"{key}_boxes.json"
    return entry


def make_brain() -> dict:
    entry = _entry("mni152")
    t1 = read_volume(DATA / entry["image"])
    gt = np.asarray(read_volume(DATA / entry["label"]).data)
    image, labels = downsample2(np.asarray(t1.data, dtype=np.float32), gt, 3)
    geometry = _regrid(t1.geometry, 2.0, (0.5, 0.5, 0.5))
    box, lo = _crop((image > 0) | (labels > 0), margin=2)
    image = np.round(image[box]).astype(np.int16)
    return _write(
        "brain", image, labels[box], _regrid(geometry, 1.0, lo),
        ["background", "gray matter", "white matter"],
        info={
            "title": "MNI152 2009a brain T1, 2 mm, gray/white matter",
            "modality": "MRI T1 (brain template)",
            "ground_truth": "derived",
            "source": entry["source"],
        },
    )


def make_ct() -> dict:
    entry = _entry("ct_abdomen_example")
    ct = read_volume(DATA / entry["image"])
    src = np.asarray(read_volume(DATA / entry["label"]).data)
    ids = {name: int(k) for k, name in json.loads((DATA / entry["label"]).parent.joinpath(
        "label_names.json").read_text()).items()}
    labels = np.zeros(src.shape, np.uint8)
    for new, name in enumerate(CT_ORGANS, start=1):
        labels[src == ids[name]] = new
    box, lo = _crop(labels > 0, margin=4)
    labels = labels[box]
    licence = "LICENSE_TotalSegmentator_Apache-2.0.txt"
    shutil.copyfile(DATA / "ct_abdomen_example" / licence, HERE / licence)
    return _write(
        "ct", np.asarray(ct.data)[box].astype(np.int16), labels, _regrid(ct.geometry, 1.0, lo),
        ["background", *CT_ORGANS], boxes=box_prompts(labels, seed=0),
        info={
            "title": "Abdominal CT (3 mm): liver, spleen, kidneys",
            "modality": "CT (abdomen)",
            "ground_truth": "model",
            "source": entry["source"],
        },
    )


def main() -> None:
    samples = {"brain": make_brain(), "ct": make_ct()}
    (HERE / "samples.json").write_text(json.dumps(samples, indent=1) + "\n")
    total = sum(p.stat().st_size for p in HERE.iterdir() if p.is_file())
    for key, s in samples.items():
        print(f"{key}: shape {s['shape']}, spacing {s['spacing']}")
    print(f"sample_data/ total {total / 2**20:.2f} MB")


if __name__ == "__main__":
    main()
