"""``labeleff project create|add|status|train|accept|import|relocate|remove`` (issue 7)."""

import json

import numpy as np
import pytest

from napari_labeleff.cli import main
from napari_labeleff.cohort import Project
from napari_labeleff.io import Geometry, read_volume, write_labels

from .project_fakes import SHAPE, FakeLearner, ball, make_volume, scribbles_for


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cohort(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(3):
        make_volume(folder, f"scan{i}", seed=i)
    (folder / "readme.txt").write_text("not a scan")
    (folder / "bad.nii.gz").write_bytes(b"not gzip")
    return folder


def test_create_add_status(tmp_path, cohort, capsys):
    proj = tmp_path / "proj"
    code, out, _ = run(capsys, "project", "create", proj, "--classes", "left atrium", "appendage")
    assert code == 0 and "left atrium, appendage" in out
    code, out, err = run(capsys, "project", "add", proj, cohort)
    assert code == 0
    assert "added 3 volume(s): scan0, scan1, scan2; skipped 1; the project has 3" in out
    assert "skipped " in err and "bad.nii.gz" in err
    code, out, _ = run(capsys, "project", "status", proj)
    assert code == 0
    assert "published: none (train first)" in out
    assert "3 (3 new, 0 weak, 0 accepted, 0 imported)" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("id"))
    assert lines[header].split() == ["id", "status", "role", "shape", "time", "interactions",
                                     "voxels", "quality", "uncertainty"]
    assert lines[header + 1].split()[:4] == ["scan0", "new", "auto", "8x12x14"]
    code, out, _ = run(capsys, "project", "status", proj, "--json")
    data = json.loads(out)
    assert [v["id"] for v in data["volumes"]] == ["scan0", "scan1", "scan2"]
    assert data["classes"] == ["left atrium", "appendage"] and data["published"] is None


def test_train_accept_import(tmp_path, cohort, capsys, monkeypatch):
    fake = FakeLearner(scores=[0.75])
    fake.install(monkeypatch)
    proj = tmp_path / "proj"
    run(capsys, "project", "create", proj, "--classes", "left atrium")
    run(capsys, "project", "add", proj, cohort / "scan0.nii.gz", cohort / "scan1.nii.gz")
    code, _, err = run(capsys, "project", "train", proj)
    assert code == 2 and err.count("\n") == 1 and "no labels to train on" in err
    with Project.open(proj) as p:
        p.set_weak_labels("scan0", scribbles=scribbles_for())
    code, out, err = run(capsys, "project", "train", proj, "--max-minutes", "1", "--device", "cpu",
                         "--self-training", "0.5")
    assert code == 0, err
    assert fake.calls[-1].options["self_training"] == 0.5
    assert "published model v0001 (validation 0.7500" in out
    assert "train" in err and "fake step" in err  # the progress bar
    geom = read_volume(cohort / "scan1.nii.gz").geometry
    mask = tmp_path / "m.nii.gz"
    write_labels(mask, ball().astype(np.uint8), geom)
    code, out, err = run(capsys, "project", "accept", proj, "scan1", "--mask", mask)
    assert code == 0, err
    code, out, err = run(capsys, "project", "import", proj, "scan0", mask)
    assert code == 0, err
    code, out, _ = run(capsys, "project", "status", proj)
    assert "published: v0001 (validation score 0.7500)" in out
    assert "(0 new, 0 weak, 1 accepted, 1 imported)" in out
    with Project.open(proj, read_only=True) as p:
        assert np.array_equal(p.labels("scan1")["mask"], ball())


def test_errors_are_one_line_with_status_2(tmp_path, cohort, capsys):
    proj = tmp_path / "proj"
    code, _, err = run(capsys, "project", "status", tmp_path / "nothing")
    assert code == 2 and "is not a napari-labeleff project" in err and err.count("\n") == 1
    run(capsys, "project", "create", proj, "--classes", "a")
    run(capsys, "project", "add", proj, cohort / "scan0.nii.gz")
    code, _, err = run(capsys, "project", "add", proj, cohort / "scan0.nii.gz")
    assert code == 2 and "already in the project as volume 'scan0'" in err
    wrong = tmp_path / "wrong.nii.gz"
    write_labels(wrong, np.zeros(SHAPE, np.uint8), Geometry.from_spacing((3.0, 1.0, 1.0)))
    code, _, err = run(capsys, "project", "import", proj, "scan0", wrong)
    assert code == 2 and "spacing (3.0, 1.0, 1.0) mm vs the image's (2.0, 1.0, 1.0)" in err
    code, _, err = run(capsys, "project", "accept", proj, "scan0", "--mask", wrong)
    assert code == 2 and "not on the voxel grid of volume 'scan0'" in err
    code, _, err = run(capsys, "project", "accept", proj, "scan0")
    assert code == 2 and "no saved 'final' mask" in err
    code, _, err = run(capsys, "project", "accept", proj, "nope")
    assert code == 2 and "volume='nope' is not in project" in err
    with Project.open(proj):  # another writer holds the project
        code, _, err = run(capsys, "project", "add", proj, cohort / "scan1.nii.gz")
        assert code == 2 and "project" in err and "is open in process" in err
        code, out, _ = run(capsys, "project", "status", proj)  # reading still works
        assert code == 0 and "scan0" in out


def test_relocate_and_remove(tmp_path, cohort, capsys):
    proj = tmp_path / "proj"
    run(capsys, "project", "create", proj, "--classes", "a")
    run(capsys, "project", "add", proj, cohort / "scan0.nii.gz")
    moved = tmp_path / "moved.nii.gz"
    (cohort / "scan0.nii.gz").rename(moved)
    code, out, _ = run(capsys, "project", "status", proj)
    assert "scan0 (missing!)" in out
    code, _, err = run(capsys, "project", "relocate", proj, "scan0", cohort / "scan1.nii.gz")
    assert code == 2 and "its content differs" in err
    code, out, _ = run(capsys, "project", "relocate", proj, "scan0", moved)
    assert code == 0 and str(moved) in out
    code, out, _ = run(capsys, "project", "remove", proj, "scan0")
    assert code == 0 and "trash" in out


def test_curve(tmp_path, cohort, capsys, monkeypatch):
    """``project curve``: one line per accepted volume in the order accepted (the model's
    Dice before it trained on the mask, or "-" without a model), then the lead line."""
    FakeLearner(scores=[0.75]).install(monkeypatch)
    proj = tmp_path / "proj"
    run(capsys, "project", "create", proj, "--classes", "ball")
    run(capsys, "project", "add", proj, cohort)
    code, out, err = run(capsys, "project", "curve", proj)
    assert code == 0, err
    assert out.splitlines()[0].startswith("no accepted volume yet")
    assert out.splitlines()[-1] == "lead 0.00: no published model: the graph method alone"
    geom = read_volume(cohort / "scan0.nii.gz").geometry
    mask = tmp_path / "m.nii.gz"
    write_labels(mask, ball().astype(np.uint8), geom)
    with Project.open(proj) as p:  # work on scan1 before its accept: 2 interactions, 30 s
        p.log_annotation("scan1", "scribble", class_name="ball", voxels=3, seconds=10.0)
        p.log_annotation("scan1", "scribble", class_name="background", voxels=5, seconds=20.0)
    assert run(capsys, "project", "accept", proj, "scan0", "--mask", mask)[0] == 0  # no model yet
    assert run(capsys, "project", "train", proj, "--max-minutes", "1")[0] == 0  # v0001, on scan0
    for vid in ("scan1", "scan2"):
        assert run(capsys, "project", "accept", proj, vid, "--mask", mask)[0] == 0
    with Project.open(proj, read_only=True) as p:
        items, (lead, reason) = p.curve(), p.network_lead()
    assert [it.volume_id for it in items] == ["scan0", "scan1", "scan2"]
    assert items[0].model_dice_before is None and items[1].model_dice_before > 0.5
    assert items[1].seconds == 30.0 and items[1].interactions > items[2].interactions

    code, out, err = run(capsys, "project", "curve", proj)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["#", "volume", "model", "Dice", "before", "interactions", "seconds", "model"]
    rows = [line.split() for line in lines[1:-1]]
    assert rows == [[str(i), it.volume_id, "-" if it.model_dice_before is None else
                     f"{it.model_dice_before:.4f}", str(it.interactions), f"{it.seconds:.1f}",
                     it.model or "-"] for i, it in enumerate(items, 1)]
    assert rows[0][2] == rows[0][5] == "-" and rows[1][4] == "30.0" and rows[2][5] == "v0001"
    assert lines[-1] == f"lead {lead:.2f}: {reason}" and "v0001" in reason

    code, out, err = run(capsys, "project", "curve", proj, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [(c["order"], c["volume_id"], c["model_dice_before"], c["interactions"], c["seconds"],
             c["model"]) for c in data["curve"]] == [
        (i, it.volume_id, it.model_dice_before, it.interactions, it.seconds, it.model)
        for i, it in enumerate(items, 1)]
    assert data["lead"] == lead and data["lead_reason"] == reason

    code, out, err = run(capsys, "project", "curve", tmp_path / "nothing")
    assert code == 2 and out == "" and err.count("\n") == 1 and "is not a napari-labeleff project" in err
