"""``labeleff suggest``: ranked JSON and the uncertainty NIfTI, through the engine."""

import json

import nibabel as nib
import numpy as np
import pytest

from napari_labeleff.cli import main
from napari_labeleff.io import Geometry, write_volume


@pytest.fixture
def files(tmp_path, sphere_volume, oblique_geometry):
    image, mask = sphere_volume
    scribbles = np.zeros(mask.shape, np.uint8)
    scribbles[6, 1:3, 2:18] = 1  # background
    scribbles[6, 7:9, 8:12] = 2  # the ball
    img = write_volume(tmp_path / "img.nii.gz", image, oblique_geometry)
    scr = write_volume(tmp_path / "scr.nii.gz", scribbles, oblique_geometry)
    return img, scr, image.shape, oblique_geometry


def test_suggest_writes_ranked_json_and_uncertainty(files, tmp_path, capsys):
    img, scr, shape, geometry = files
    out, unc = tmp_path / "s.json", tmp_path / "u.nii.gz"
    assert main(["suggest", str(img), "--scribbles", str(scr), "--n", "4",
                 "--method", "randomwalk", "--json", str(out),
                 "--uncertainty", str(unc)]) == 0
    data = json.loads(out.read_text())
    ranked = data["suggestions"]
    assert [s["rank"] for s in ranked] == [1, 2, 3, 4]
    assert all(s["kind"] == "slice" and s["axis"] == 0 and s["index"] != 6
               and 0 <= s["index"] < shape[0] for s in ranked)
    assert data["refine_method"] == "randomwalk" and "wrote 4 suggestions" in capsys.readouterr().out
    nii = nib.load(unc)
    np.testing.assert_allclose(nii.affine, geometry.affine_ras, atol=1e-5)
    u = np.asarray(nii.dataobj).transpose(2, 1, 0)
    assert u.shape == shape and 0 <= u.min() and u.max() <= 1 and u.max() > 0


def test_suggest_regions_along_another_axis(files, tmp_path):
    img, scr, shape, _ = files
    out = tmp_path / "r.json"
    assert main(["suggest", str(img), "--scribbles", str(scr), "--n", "3",
                 "--method", "randomwalk", "--granularity", "region", "--axis", "2", "--json", str(out)]) == 0
    for s in json.loads(out.read_text())["suggestions"]:
        z0, y0, x0, z1, y1, x1 = s["bbox"]
        assert s["kind"] == "region" and x0 <= s["index"] < x1 and z1 <= shape[0]


@pytest.mark.parametrize("extra, match", [
    (["--n", "0"], "n must be a positive integer, got 0"),
    (["--axis", "3"], "axis must be 0"),
    (["--strategy", "magic"], "strategy must be one of"),
])
def test_suggest_bad_input_exits_2(files, tmp_path, capsys, extra, match):
    img, scr, _, _ = files
    assert main(["suggest", str(img), "--scribbles", str(scr), "--json",
                 str(tmp_path / "x.json"), *extra]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_suggest_scribbles_of_another_grid_exit_2(files, tmp_path, capsys):
    img, _, shape, _ = files
    other = write_volume(tmp_path / "o.nii.gz", np.zeros(shape, np.uint8),
                         Geometry.from_spacing((1.0, 1.0, 1.0)))
    assert main(["suggest", str(img), "--scribbles", str(other), "--json",
                 str(tmp_path / "x.json")]) == 2
    assert "not on the image's voxel grid" in capsys.readouterr().err
