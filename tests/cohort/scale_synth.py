"""Small synthetic cohort projects with a really trained (tiny) model, for the
cohort-scale tests (batch jobs, volume suggestions, label QA). No /work/shared data.

Volumes come from the learner's test cohort (``learning_synth.make_volume``: a ball,
the target, and a bar of the same intensity). Training goes through the real learner
(``Project.train``) with a tiny network and a step budget, once per test session; each
test gets a copy of the project folder.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_labeleff.cohort import Project
from napari_labeleff.io import Geometry, write_volume

from .learning_synth import make_volume

TINY = {"max_steps": 30, "features": (4, 8, 16, 32, 32, 4), "patch_size": (16, 32, 32),
        "batch_size": 1, "num_threads": 1, "semi": False, "pseudo_labels": False,
        "val_every": 1000}


def write_images(folder, n, *, first_seed=500, spacing=(2.0, 1.0, 1.5)):
    """Write ``n`` synthetic images; returns [(path, gt)]."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        image, gt = make_volume(first_seed + i)
        geo = Geometry.from_spacing(spacing, origin_zyx=(1.0 * i, -3.0, 5.0))
        path = folder / f"vol{i:02d}.nii.gz"
        write_volume(path, image, geo)
        out.append((path, gt))
    return out


def make_trained_project(folder, *, n=6, n_accepted=3, options=None):
    """A project of ``n`` volumes, the first ``n_accepted`` accepted with their
    ground truth, and a published model trained on them. Returns (project, gts)."""
    images = write_images(folder / "images", n)
    p = Project.create(folder / "proj", class_names=["ball"])
    gts = {}
    for path, gt in images:
        vid = p.add(path)
        gts[vid] = gt
    for vid in list(gts)[:n_accepted]:
        p.accept(vid, gts[vid])
    p.train(max_minutes=2, device="cpu", seed=0, **(options or TINY))
    assert p.published is not None
    return p, gts


def copy_project(src_folder, dst_folder) -> Project:
    """Copy a project folder (images stay where they are) and open the copy."""
    shutil.copytree(src_folder / "proj", dst_folder / "proj",
                    ignore=shutil.ignore_patterns("writer.lock"))
    return Project.open(dst_folder / "proj")


def corrupt(mask: np.ndarray, how: str, rng=None) -> np.ndarray:
    """A corrupted copy of a binary mask (the label-QA cases)."""
    from scipy import ndimage as ndi

    m = mask > 0
    if how == "dilated":
        m = ndi.binary_dilation(m, iterations=3)
    elif how == "eroded":
        m = ndi.binary_erosion(m, iterations=3)
    elif how == "shifted":
        m = np.roll(m, 5, axis=2)
    elif how == "half":
        idx = np.argwhere(m)
        mid = int(np.median(idx[:, 1]))
        m[:, mid:, :] = False
    elif how == "extra":
        m = m.copy()
        m[2:6, 2:8, 24:30] = True
    else:
        raise ValueError(how)
    return m.astype(np.uint8)


@pytest.fixture
def project(trained, tmp_path):
    """A writable copy of the test module's ``trained`` project fixture."""
    p = copy_project(trained[0], tmp_path)
    yield p
    p.close()
