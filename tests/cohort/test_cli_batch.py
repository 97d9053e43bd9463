"""``labeleff project predict|score|export|suggest|qa`` (issue 9)."""

import json

import numpy as np
import pytest

from napari_labeleff.cli import main
from napari_labeleff.io import read_volume

from .scale_synth import copy_project, make_trained_project

pytestmark = pytest.mark.slow  # trains a tiny model once for the module


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained_cli")
    p, gts = make_trained_project(folder)
    p.close()
    return folder, gts


@pytest.fixture
def folder(trained, tmp_path):
    copy_project(trained[0], tmp_path).close()
    return tmp_path / "proj"


def test_predict_on_a_local_cluster_with_progress(folder, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["project", "predict", str(folder), "--out", str(out), "--workers", "2"]) == 0
    cap = capsys.readouterr()
    assert "project predict" in cap.err and "6/6" in cap.err  # the progress bar
    assert "predict: 6 of 6 volumes done" in cap.out and "local" in cap.out
    from napari_labeleff.cohort import Project

    with Project.open(folder, read_only=True) as p:
        for rec in p.volumes:
            vol = read_volume(out / f"{rec.id}.nii.gz")
            assert np.array_equal(np.asarray(vol.data), p.predict(rec.id).labels)


def test_score_export_suggest_qa(folder, tmp_path, capsys):
    assert main(["project", "score", str(folder), "--scheduler", "serial",
                 "--out", str(tmp_path / "s")]) == 0
    scores = json.loads((tmp_path / "s" / "scores.json").read_text())
    assert len(scores) == 6 and all("uncertainty" in s for s in scores.values())
    assert main(["project", "export", str(folder), "--scheduler", "serial",
                 "--out", str(tmp_path / "m")]) == 0
    assert len(list((tmp_path / "m").glob("*.nii.gz"))) == 3
    assert "3 skipped" in capsys.readouterr().out
    assert main(["project", "suggest", str(folder), "--n", "2",
                 "--json", str(tmp_path / "next.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1. vol0") and "model uncertainty" in out
    assert len(json.loads((tmp_path / "next.json").read_text())) == 2
    assert main(["project", "qa", str(folder), "--folds", "0", "--all",
                 "--json", str(tmp_path / "qa.json")]) == 0
    out = capsys.readouterr().out
    assert "doubtful mask(s) at threshold 3.5" in out
    assert len(json.loads((tmp_path / "qa.json").read_text())) == 3


def test_unreachable_scheduler_is_a_clear_error(folder, tmp_path, capsys):
    code = main(["project", "predict", str(folder), "--out", str(tmp_path / "o"),
                 "--scheduler", "tcp://127.0.0.1:9", "--timeout", "1"])
    assert code == 2
    assert "could not reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err
