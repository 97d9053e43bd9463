"""``labeleff refine``: geometry preserved, boxes, probabilities, clear errors."""

import json

import nibabel as nib
import numpy as np
import pytest

from napari_labeleff.cli import main
from napari_labeleff.io import Geometry, write_volume

from .conftest import dice, make_phantom


@pytest.fixture
def files(tmp_path):
    image, gt, scr = make_phantom(n_structures=1)
    affine = np.array([[0.0, -1.0, 0.0, 10.0],  # oblique-free but axis-swapped, anisotropic
                       [0.9, 0.0, 0.1, -5.0],
                       [0.0, 0.0, 2.0, 3.0],
                       [0.0, 0.0, 0.0, 1.0]])
    geometry = Geometry(affine)
    img_path = write_volume(tmp_path / "img.nii.gz", image, geometry)
    scr_path = write_volume(tmp_path / "scr.nii.gz", scr, geometry)
    return tmp_path, img_path, scr_path, gt, geometry


def test_refine_writes_mask_with_image_geometry(files, capsys):
    tmp, img, scr, gt, geometry = files
    out, prob = tmp / "mask.nii.gz", tmp / "prob.nii.gz"
    rc = main(["refine", str(img), "--scribbles", str(scr), "--out", str(out),
               "--method", "randomwalk", "--device", "cpu", "--probabilities", str(prob)])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    nii = nib.load(out)
    np.testing.assert_allclose(nii.affine, nib.load(img).affine, atol=1e-4)
    mask = np.asarray(nii.dataobj).T  # (i, j, k) -> (Z, Y, X)
    assert dice(mask == 1, gt == 1) > 0.9
    p = np.asarray(nib.load(prob).dataobj)
    assert p.shape[:3] == mask.T.shape and p.shape[3] == 2


def test_refine_boxes_only(files):
    tmp, img, scr, gt, geometry = files
    idx = np.nonzero(gt)
    box = [1, *(int(i.min()) - 1 for i in idx), *(int(i.max()) + 2 for i in idx)]
    (tmp / "boxes.json").write_text(json.dumps([box]))
    out = tmp / "mask.nii.gz"
    rc = main(["refine", str(img), "--boxes", str(tmp / "boxes.json"), "--out", str(out),
               "--device", "cpu"])
    assert rc == 0
    mask = np.asarray(nib.load(out).dataobj).T
    assert dice(mask == 1, gt == 1) > 0.85


def test_refine_warns_about_assumed_background(files, capsys):
    tmp, img, scr, gt, geometry = files
    only = write_volume(tmp / "only.nii.gz",
                        np.where(np.asarray(nib.load(scr).dataobj).T == 2, 2, 0).astype(np.uint8),
                        geometry)
    rc = main(["refine", str(img), "--scribbles", str(only), "--out", str(tmp / "m.nii.gz"),
               "--method", "randomwalk"])
    assert rc == 0
    assert "warning: no background scribbles" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--method", "magic"], "method='magic' is unknown"),
    (["--device", "tpu"], "device='tpu' is unknown"),
    (["--scribbles", "MISSING"], "MISSING"),
    ([], "refine needs --scribbles, --boxes or both"),
])
def test_refine_errors(files, capsys, extra, message):
    tmp, img, scr, gt, geometry = files
    args = ["refine", str(img), "--out", str(tmp / "m.nii.gz")]
    if extra[:1] != ["--scribbles"] and extra:
        args += ["--scribbles", str(scr)]
    rc = main(args + extra)
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp / "m.nii.gz").exists()


def test_refine_rejects_scribbles_on_another_grid(files, capsys):
    tmp, img, scr, gt, geometry = files
    other = write_volume(tmp / "other.nii.gz", np.zeros((4, 5, 6), np.uint8), geometry)
    rc = main(["refine", str(img), "--scribbles", str(other), "--out", str(tmp / "m.nii.gz")])
    assert rc == 2
    assert "has shape (4, 5, 6)" in capsys.readouterr().err
