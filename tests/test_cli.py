"""labeleff CLI: info, convert, gui argument handling, shared helpers, error exits."""

import json
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_labeleff import LabelEffError, cli
from napari_labeleff.cli import _common, _volume
from napari_labeleff.engine import Progress
from napari_labeleff.io import Geometry, read_volume, write_labels, write_volume


@pytest.fixture
def image_file(tmp_path, sphere_volume, oblique_geometry):
    image = sphere_volume[0].copy()
    image[0, 0, 0] = np.nan
    return write_volume(tmp_path / "img.nii.gz", image, oblique_geometry)


def test_info(image_file, capsys):
    assert cli.main(["info", str(image_file)]) == 0
    out = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    assert out["shape"].strip() == "12 x 16 x 20 (Z x Y x X)"
    assert out["spacing"].strip() == "2.5 x 0.9 x 0.7 mm (Z x Y x X)"
    assert out["orientation"].strip().endswith("(oblique)")
    assert out["dtype"].strip() == "float32" and out["format"].strip() == "nifti"
    assert out["channels"].strip() == "1"
    assert out["NaN/Inf"].strip().startswith("1 voxels")
    lo, hi = (float(v) for v in out["intensity"].split(".."))
    assert lo < 0 < 90 < hi


def test_convert_keeps_geometry_and_values(tmp_path, sphere_volume, capsys):
    itk = sitk.GetImageFromArray(sphere_volume[0])
    itk.SetSpacing((0.5, 0.6, 2.0))
    itk.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))
    sitk.WriteImage(itk, str(tmp_path / "in.nrrd"))
    assert cli.main(["convert", str(tmp_path / "in.nrrd"), str(tmp_path / "out.nii.gz")]) == 0
    assert "wrote" in capsys.readouterr().out
    src, out = read_volume(tmp_path / "in.nrrd"), read_volume(tmp_path / "out.nii.gz")
    np.testing.assert_array_equal(out.data, src.data)
    assert out.geometry.allclose(src.geometry, atol=1e-4)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["info", "{tmp}/missing.nii.gz"], "does not exist"),
        (["info", "{tmp}/notes.txt"], "is not a supported format"),
        (["convert", "{img}", "{tmp}/out.mha"], "must end with one of .nii, .nii.gz"),
        (["convert", "{img}", "{img}"], "refusing to overwrite the source image"),
        (["gui", "{img}", "--sample", "ct"], "either FILE or --sample, not both"),
        (["gui", "{tmp}/notes.txt"], "is not a supported format"),
    ],
)
def test_errors_are_one_line_exit_2(tmp_path, image_file, capsys, argv, match):
    (tmp_path / "notes.txt").write_text("x")
    before = image_file.read_bytes()
    argv = [a.format(tmp=tmp_path, img=image_file) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("labeleff: error: ") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert re.search(match, err)
    assert image_file.read_bytes() == before


def test_oserror_and_ctrl_c(monkeypatch, capsys, tmp_path):
    def fail(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr(_volume, "_cmd_info", fail)
    assert cli.main(["info", "x"]) == 2
    assert capsys.readouterr().err.strip() == f"labeleff: error: Permission denied: {tmp_path / 'x'}"

    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(_volume, "_cmd_info", interrupt)
    assert cli.main(["info", "x"]) == 130


def test_usage_errors_and_version(capsys):
    assert cli.main([]) == 2
    assert cli.main(["frobnicate"]) == 2
    assert cli.main(["--version"]) == 0
    assert "labeleff 0." in capsys.readouterr().out


def test_load_label_volume(tmp_path, image_file, oblique_geometry):
    like = read_volume(image_file)
    labels = np.zeros(like.shape, np.uint8)
    labels[2, 3, 4] = 3
    write_labels(tmp_path / "s.nii.gz", labels, oblique_geometry)
    loaded = _common.load_label_volume(tmp_path / "s.nii.gz", like)
    assert loaded.dtype == np.uint8 and loaded[2, 3, 4] == 3 and loaded.sum() == 3

    write_labels(tmp_path / "small.nii.gz", labels[:5], oblique_geometry)
    with pytest.raises(LabelEffError, match=r"scribbles .* has shape \(5, 16, 20\) .* image has \(12, 16, 20\)"):
        _common.load_label_volume(tmp_path / "small.nii.gz", like)
    write_labels(tmp_path / "moved.nii.gz", labels, Geometry.from_spacing())
    with pytest.raises(LabelEffError, match="mask .* is not on the image's voxel grid"):
        _common.load_label_volume(tmp_path / "moved.nii.gz", like, what="mask")
    write_volume(tmp_path / "frac.nii.gz", labels + 0.5, oblique_geometry)
    with pytest.raises(LabelEffError, match="non-integer values"):
        _common.load_label_volume(tmp_path / "frac.nii.gz", like)


def test_load_boxes(tmp_path):
    good = tmp_path / "b.json"
    good.write_text(json.dumps([[1, 0, 1, 2, 5, 6, 7],
                                {"class": 2, "z0": 1, "y0": 1, "x0": 1, "z1": 2, "y1": 3, "x1": 4}]))
    assert _common.load_boxes(good) == [(1, 0, 1, 2, 5, 6, 7), (2, 1, 1, 1, 2, 3, 4)]
    for content, match in [
        ("{", "is not valid JSON"),
        ('{"a": 1}', "must hold a JSON list, got dict"),
        ("[[1, 2, 3]]", "box 0 = .* must be 7 integers"),
        ('[{"class": 1}]', "must be 7 integers"),
        ("[[0, 0, 0, 0, 1, 1, 1]]", "needs c >= 1"),
        ("[[1, 5, 0, 0, 5, 1, 1]]", "0 <= start < stop"),
    ]:
        good.write_text(content)
        with pytest.raises(LabelEffError, match=match):
            _common.load_boxes(good)


def test_drive_returns_value_and_closes_on_interrupt(capsys):
    def work():
        for i in range(3):
            yield Progress(i + 1, 3, f"step {i}")
        return "done"

    assert _common.drive(work(), "refining") == "done"
    assert "refining" in capsys.readouterr().err

    closed = []

    def interrupted():
        try:
            yield Progress(1, 2, "first")
            raise KeyboardInterrupt
        finally:
            closed.append(True)

    with pytest.raises(KeyboardInterrupt):
        _common.drive(interrupted(), "x")
    assert closed == [True]


def test_headless_import_has_no_qt():
    code = ("import sys, napari_labeleff.cli, napari_labeleff.session, napari_labeleff.io; "
            "bad = [m for m in ('qtpy', 'napari', 'magicgui', 'PyQt6', 'PyQt5', 'PySide6') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_nifti_header_of_converted_volume(tmp_path, image_file):
    assert cli.main(["convert", str(image_file), str(tmp_path / "c.nii")]) == 0
    hdr = nib.load(str(tmp_path / "c.nii")).header
    assert int(hdr["sform_code"]) == 1 and int(hdr["qform_code"]) == 1


@pytest.mark.gui
def test_gui_opens_the_file_and_docks_the_panel(image_file, monkeypatch):
    import napari

    seen = {}

    def fake_run():
        viewer = napari.current_viewer()
        seen["layers"] = [layer.name for layer in viewer.layers]
        seen["docks"] = list(viewer.window.dock_widgets)
        seen["affine"] = viewer.layers[0].affine.affine_matrix
        viewer.close()

    monkeypatch.setattr(napari, "run", fake_run)
    assert cli.main(["gui", str(image_file)]) == 0
    assert seen["layers"][0] == "img"
    assert any("LabelEff" in name for name in seen["docks"])
    np.testing.assert_allclose(seen["affine"], read_volume(image_file).geometry.napari_affine, atol=1e-6)


@pytest.mark.gui
def test_gui_sample_shows_a_scribbled_slice(monkeypatch):
    import napari

    seen = {}

    def fake_run():
        viewer = napari.current_viewer()
        scribbles = next(lay for lay in viewer.layers if lay.name == "Scribbles")
        z = int(round(scribbles.world_to_data(viewer.dims.point)[0]))
        seen["painted"] = int(np.count_nonzero(np.asarray(scribbles.data)[z]))
        seen["docks"] = list(viewer.window.dock_widgets)
        viewer.close()

    monkeypatch.setattr(napari, "run", fake_run)
    assert cli.main(["gui", "--sample", "brain"]) == 0
    assert seen["painted"] > 0
    assert any("LabelEff" in name for name in seen["docks"])
