"""CLI outputs never destroy work: refine --out refuses its own inputs, suggest --json
is written atomically."""

import errno
import hashlib
from pathlib import Path

import numpy as np
import pytest

from napari_labeleff.cli import main
from napari_labeleff.io import write_volume


@pytest.fixture
def files(tmp_path, sphere_volume, oblique_geometry):
    image, mask = sphere_volume
    scribbles = np.zeros(mask.shape, np.uint8)
    scribbles[6, 1:3, 2:18] = 1
    scribbles[6, 7:9, 8:12] = 2
    img = write_volume(tmp_path / "img.nii.gz", image, oblique_geometry)
    scr = write_volume(tmp_path / "scr.nii.gz", scribbles, oblique_geometry)
    boxes = tmp_path / "boxes.json"
    boxes.write_text("[[1, 4, 4, 4, 9, 12, 16]]")
    return img, scr, boxes


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("target", ["scribbles", "scribbles via another spelling", "boxes"])
def test_refine_out_refuses_to_overwrite_its_inputs(files, tmp_path, capsys, target):
    img, scr, boxes = files
    out = {"scribbles": str(scr), "boxes": str(boxes).replace(".json", ".nii.gz"),
           "scribbles via another spelling": str(tmp_path / "." / "scr.nii.gz")}[target]
    if target == "boxes":  # a mask whose label table would land on an input
        boxes = boxes.rename(tmp_path / "boxes.ctbl")
    before = {p: _sha(p) for p in (img, scr, boxes)}
    argv = ["refine", str(img), "--scribbles", str(scr), "--boxes", str(boxes), "--out", out,
            "--method", "randomwalk"]
    if target == "boxes":
        argv[argv.index("--boxes") + 1] = str(boxes)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "would overwrite" in err and "choose another output path" in err
    assert {p: _sha(p) for p in before} == before


def test_refine_probabilities_may_not_be_the_mask(files, tmp_path, capsys):
    img, scr, _ = files
    out = tmp_path / "m.nii.gz"
    assert main(["refine", str(img), "--scribbles", str(scr), "--out", str(out),
                 "--probabilities", str(out)]) == 2
    assert "--probabilities" in capsys.readouterr().err and not out.exists()


def test_suggest_json_refuses_inputs(files, capsys):
    img, scr, _ = files
    before = _sha(scr)
    assert main(["suggest", str(img), "--scribbles", str(scr), "--json", str(scr)]) == 2
    assert "--json" in capsys.readouterr().err and _sha(scr) == before


def test_suggest_json_is_written_atomically(files, tmp_path, monkeypatch, capsys):
    img, scr, _ = files
    out = tmp_path / "s.json"
    out.write_text('{"previous": "ranking"}')
    real_write_text = Path.write_text

    def disk_full(self, text, *args, **kwargs):  # half the text, then ENOSPC
        if self.name.startswith(".s.json") or self == out:
            real_write_text(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full)
    code = main(["suggest", str(img), "--scribbles", str(scr), "--n", "2",
                 "--method", "randomwalk", "--json", str(out)])
    assert code != 0
    assert out.read_text() == '{"previous": "ranking"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boxes.json", "img.nii.gz", "s.json", "scr.nii.gz"]


def test_refine_enforces_rules_and_writes_them_beside_the_mask(files, tmp_path, capsys):
    """``--rules FILE --classes``: the rules reach refine (a stray stroke breaking "one
    piece" stays, as strokes always win, and the conflict is reported) and travel beside
    the exported mask. What each rule does to the labels: tests/rules."""
    from napari_labeleff.io import read_volume
    from napari_labeleff.rules import Rules, rules_path
    from scipy import ndimage

    img, scr, _ = files
    vol = read_volume(img)
    scribbles = np.asarray(read_volume(scr).data).copy()
    scribbles[1, 1, 1] = 2  # a stray stroke of the structure far from the sphere
    stray = write_volume(tmp_path / "stray.nii.gz", scribbles, vol.geometry)
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(Rules([("one_piece", "ball")], class_names=["ball"]).to_json())
    out = tmp_path / "mask.nii.gz"
    argv = ["refine", str(img), "--scribbles", str(stray), "--out", str(out),
            "--method", "randomwalk"]
    assert main(argv + ["--rules", str(rules_file)]) == 2
    assert "--classes" in capsys.readouterr().err
    assert main(argv + ["--rules", str(rules_file), "--classes", "ball"]) == 0
    captured = capsys.readouterr()
    assert "rules enforced: 1" in captured.out and "rule conflict" in captured.err
    comps, n = ndimage.label(np.asarray(read_volume(out).data) == 1)
    assert n == 2  # the stray stroke stays (strokes win) and is reported as a conflict
    assert Rules.from_json(rules_path(out).read_text(), class_names=["ball"]) == \
        Rules([("one_piece", "ball")], class_names=["ball"])
