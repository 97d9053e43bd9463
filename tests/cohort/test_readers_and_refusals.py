"""Issue 22: re-accepting needs replace, batch outputs need overwrite, and jobs that only
read (predict, export, score, QA, status) run while another process holds the project
for writing, their scores handed to the writer and never lost."""

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff.cli import main
from napari_labeleff.cohort import Project
from napari_labeleff.cohort.jobs import run_job
from napari_labeleff.io import write_labels

from .scale_synth import project  # noqa: F401 (fixture)
from .scale_synth import make_trained_project


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    p, gts = make_trained_project(folder, n=3, n_accepted=2)
    p.close()
    return folder, gts


# ---- re-accepting ---------------------------------------------------------------------------
def test_accept_again_needs_replace(project, trained):  # noqa: F811
    _, gts = trained
    vid = "vol00"
    first = project.labels(vid)["mask"].copy()
    other = np.zeros_like(first)
    other[2:5, 2:5, 2:5] = 1
    with pytest.raises(LabelEffError, match=r"volume 'vol00' already has an accepted mask; .*replace=True"):
        project.accept(vid, other)
    assert np.array_equal(project.labels(vid)["mask"], first)  # nothing changed
    n_log = len(project.annotation_log(vid))
    project.accept(vid, other, replace=True)
    assert np.array_equal(project.labels(vid)["mask"], other)
    assert len(project.annotation_log(vid)) > n_log
    # an imported mask is protected the same way
    path = project.folder.parent / "imported.nii.gz"
    rec = project.volume("vol02")
    write_labels(path, gts["vol02"], rec.geometry)
    project.import_mask("vol02", path)
    with pytest.raises(LabelEffError, match="already has an imported mask"):
        project.accept("vol02", other)


def test_cli_accept_needs_replace(project, trained, tmp_path, capsys):  # noqa: F811
    _, gts = trained
    rec = project.volume("vol00")
    mask_file = tmp_path / "m.nii.gz"
    changed = gts["vol00"].copy()
    changed[0, 0, 0] = 1
    write_labels(mask_file, changed, rec.geometry)
    folder = str(project.folder)
    project.close()
    assert main(["project", "accept", folder, "vol00", "--mask", str(mask_file)]) == 2
    assert "--replace" in capsys.readouterr().err
    assert main(["project", "accept", folder, "vol00", "--mask", str(mask_file), "--replace"]) == 0
    with Project.open(folder, read_only=True) as p:
        assert np.array_equal(p.labels("vol00")["mask"], changed)


# ---- overwriting batch outputs --------------------------------------------------------------
@pytest.mark.parametrize("kind", ["predict", "export"])
def test_batch_outputs_are_not_overwritten_without_asking(project, tmp_path, kind, capsys):  # noqa: F811
    out = tmp_path / "out"
    first = run_job(project, kind, out=out, scheduler="serial", device="cpu")
    written = sorted(first.outputs)
    assert written
    stamps = {v: (out / f"{v}.nii.gz").stat().st_mtime_ns for v in written}
    with pytest.raises(LabelEffError, match=rf"already holds {len(written)} output\(s\) .*"
                                            rf"{written[0]}\.nii\.gz.*overwrite=True"):
        run_job(project, kind, out=out, scheduler="serial", device="cpu")
    assert {v: (out / f"{v}.nii.gz").stat().st_mtime_ns for v in written} == stamps
    folder = str(project.folder)
    project.close()
    args = ["project", kind, folder, "--out", str(out), "--scheduler", "serial", "--device", "cpu"]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert all((out / f"{v}.nii.gz").stat().st_mtime_ns != stamps[v] for v in written)


# ---- readers beside a writer in another process ---------------------------------------------
HOLD = ("import sys\n"
        "from napari_labeleff.cohort import Project\n"
        "p = Project.open(sys.argv[1])\n"
        "print('holding', flush=True)\n"
        "sys.stdin.read()\n"
        "p.close()\n")


def test_reading_jobs_run_beside_a_writer_and_hand_over_their_scores(project, tmp_path, capsys):  # noqa: F811
    folder = project.folder
    version = project.published.version
    assert all(not r.scores for r in project.volumes)
    project.close()
    writer = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "holding"
        with pytest.raises(LabelEffError, match="open in"):
            Project.open(folder)  # the other process is the writer
        out = tmp_path / "out"
        common = ["--scheduler", "serial", "--device", "cpu"]
        assert main(["project", "score", str(folder), "--out", str(out / "s")] + common) == 0
        assert "recorded when it is next opened for writing" in capsys.readouterr().out
        assert main(["project", "predict", str(folder), "--out", str(out / "p")] + common) == 0
        assert main(["project", "export", str(folder), "--out", str(out / "e")] + common) == 0
        assert main(["project", "qa", str(folder), "--folds", "0", "--all", "--device", "cpu"]) == 0
        assert main(["project", "status", str(folder)]) == 0
        assert sorted(p.name for p in (out / "p").glob("*.nii.gz")) == \
            ["vol00.nii.gz", "vol01.nii.gz", "vol02.nii.gz"]
        written = json.loads((out / "s" / "scores.json").read_text())
        assert sorted(written) == ["vol00", "vol01", "vol02"]
        assert len(list((folder / "inbox").glob("scores-*.json"))) == 2  # score + predict
        with Project.open(folder, read_only=True) as view:  # not recorded yet: the writer holds it
            assert all(not r.scores for r in view.volumes)
    finally:
        writer.communicate("", timeout=60)
    assert writer.returncode == 0
    with Project.open(folder) as p:  # the next writer records what the readers left
        assert {r.id: r.scores for r in p.volumes} == {v: {**s} for v, s in written.items()}
        assert all(r.scores["model"] == version for r in p.volumes)
        assert not list((folder / "inbox").glob("scores-*.json"))


def test_a_reader_records_its_scores_at_once_when_no_one_writes(project):  # noqa: F811
    folder = project.folder
    project.close()
    with Project.open(folder, read_only=True) as view:
        report = run_job(view, "score", scheduler="serial", device="cpu")
        assert report.handed_over is None
        assert all(r.scores.get("quality") is not None for r in view.volumes)  # reloaded
    with Project.open(folder, read_only=True) as again:
        assert all(r.scores.get("model") == again.published.version for r in again.volumes)
    assert not list((folder / "inbox").glob("scores-*.json"))


def test_an_open_writer_collects_what_readers_handed_over(project):  # noqa: F811
    """The GUI keeps the project open: its panel collects handed-over scores on refresh."""
    with Project.open(project.folder, read_only=True) as view:
        report = run_job(view, "score", scheduler="serial", device="cpu")
    assert report.handed_over is not None  # `project` (this process) holds the writer lock
    assert all(not r.scores for r in project.volumes)
    assert project.collect_scores() == ["vol00", "vol01", "vol02"]
    assert {r.id: r.scores for r in project.volumes} == \
        {v: r.scores for v, r in report.results.items()}
    assert project.collect_scores() == []
