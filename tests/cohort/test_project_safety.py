"""Project store under failure: damaged project.json, a full disk, SIGKILL during saves,
two processes (issue 7, "nothing lost")."""

import errno
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff._lock import StaleLockWarning
from napari_labeleff.cohort import Project
from napari_labeleff.io._atomic import TMP_MARK

from .project_fakes import SHAPE, ball, make_volume, scribbles_for


@pytest.fixture
def project(tmp_path):
    p = Project.create(tmp_path / "proj", class_names=["left atrium"])
    for i in range(2):
        p.add(make_volume(tmp_path, f"case{i}", seed=i))
    yield p
    p.close()


def _disk_full(monkeypatch, target):
    """Make every atomic write of the file named ``target`` fail with ENOSPC."""
    real = pathlib.Path.write_text
    pattern = re.compile(rf"^\.{re.escape(target)}\.[^.]+{re.escape(TMP_MARK)}")

    def write_text(self, *args, **kwargs):
        if pattern.match(self.name):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)


@pytest.mark.parametrize("target", ["project.json", "project.json.prev"])
def test_disk_full_while_saving_loses_nothing(project, monkeypatch, tmp_path, target):
    folder = project.folder
    before = (folder / "project.json").read_text()
    _disk_full(monkeypatch, target)
    with pytest.raises(LabelEffError, match="No space left on device; nothing was written"):
        project.add(make_volume(tmp_path, "case9", seed=9))
    with pytest.raises(LabelEffError, match="No space left on device"):
        project.set_role("case0", "validation")
    # neither the file nor the object changed; no temporary file is left behind
    assert (folder / "project.json").read_text() == before
    assert project.volume_ids == ["case0", "case1"] and project.volume("case0").role == "auto"
    assert not [p for p in folder.iterdir() if TMP_MARK in p.name]
    monkeypatch.undo()
    project.set_role("case0", "validation")  # works again once there is space
    with Project.open(folder, read_only=True) as again:
        assert again.volume("case0").role == "validation"


def test_disk_full_while_logging_leaves_no_torn_line(project, monkeypatch):
    project.log_annotation("case0", "scribble", voxels=5)
    log = project.folder / "annotations.jsonl"
    before = log.read_bytes()
    real_write = os.write

    def short_write(fd, data):  # half the line reaches the disk, then the disk is full
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", short_write)
    with pytest.raises(LabelEffError, match="nothing was logged"):
        project.log_annotation("case0", "scribble", voxels=7)
    monkeypatch.undo()
    assert log.read_bytes() == before
    project.log_annotation("case0", "scribble", voxels=9)
    assert [e["voxels"] for e in project.annotation_log()] == [5, 9]


def test_damaged_project_json_is_restored_from_prev(project):
    folder = project.folder
    project.set_weak_labels("case0", scribbles=scribbles_for())  # status change: a new generation
    project.close()
    good = json.loads((folder / "project.json").read_text())
    (folder / "project.json").write_text('{"format": "napari-labeleff project", "volu')  # torn
    with pytest.warns(UserWarning, match="restored its previous generation"):
        p = Project.open(folder)
    with p:
        assert p.volume_ids == ["case0", "case1"]
        assert p._data["generation"] == good["generation"] - 1
        # the annotations themselves live in the volume stores: nothing drawn is lost
        assert np.array_equal(p.labels("case0")["scribbles"], scribbles_for())
    aside = [f for f in folder.iterdir() if f.name.startswith("project.json.damaged-")]
    assert len(aside) == 1 and aside[0].read_text().endswith('"volu')  # kept, not overwritten
    assert json.loads((folder / "project.json").read_text())["volumes"]


def test_damaged_project_json_and_prev_is_a_clear_error_touching_nothing(project):
    folder = project.folder
    project.close()
    for name in ("project.json", "project.json.prev"):
        (folder / name).write_text("garbage")
    with pytest.raises(LabelEffError, match=r"project.json is not valid JSON .* project.json.prev is not valid JSON"):
        Project.open(folder)
    assert (folder / "project.json").read_text() == "garbage"
    assert (folder / "project.json.prev").read_text() == "garbage"
    assert not (folder / "writer.lock").exists()  # the lock was released again


def test_read_only_open_of_a_damaged_file_writes_nothing(project):
    folder = project.folder
    project.close()
    (folder / "project.json").write_text("{")
    with pytest.warns(UserWarning, match="reading its previous generation"):
        ro = Project.open(folder, read_only=True)
    assert ro.volume_ids == ["case0"]  # the generation before the last add
    assert (folder / "project.json").read_text() == "{"


SECOND_WRITER = textwrap.dedent("""
    import sys
    from napari_labeleff import LabelEffError
    from napari_labeleff.cohort import Project
    try:
        Project.open(sys.argv[1])
    except LabelEffError as err:
        print("REFUSED", err)
    else:
        print("OPENED")
    p = Project.open(sys.argv[1], read_only=True)
    print("READ", ",".join(p.volume_ids))
""")


def test_second_process_gets_a_clear_error(project):
    out = subprocess.run([sys.executable, "-c", SECOND_WRITER, str(project.folder)],
                         capture_output=True, text=True, timeout=120)
    assert "REFUSED project" in out.stdout, out.stdout + out.stderr
    assert f"process {os.getpid()}" in out.stdout
    assert "READ case0,case1" in out.stdout


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from napari_labeleff.cohort import Project
    folder, images = sys.argv[1], sys.argv[2:]
    p = Project.open(folder)
    for i, image in enumerate(images):
        vid = p.add(image)
        print("added", vid, flush=True)
        s = np.zeros(p.volume(vid).shape, np.uint8)
        s[i % s.shape[0]] = 1
        p.set_weak_labels(vid, scribbles=s, seconds=1.0)
        print("weak", vid, flush=True)
        p.accept(vid, (s > 0).astype(np.uint8))
        print("accepted", vid, flush=True)
""")


@pytest.mark.parametrize("delay", [0.3, 0.9])
def test_sigkill_during_saves_keeps_every_completed_operation(tmp_path, delay):
    folder = tmp_path / "proj"
    Project.create(folder, class_names=["left atrium"]).close()
    images = [str(make_volume(tmp_path, f"img{i:02d}", seed=i)) for i in range(40)]
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), *images],
                            stdout=subprocess.PIPE, text=True)
    done = []
    start = None
    while True:
        line = proc.stdout.readline()
        if not line:
            break
        done.append(line.split())
        start = start or time.monotonic()
        if time.monotonic() - start > delay:  # the writer is in the middle of its loop
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the writer finished before it was killed"
    assert done, "the writer never got going"
    with pytest.warns(StaleLockWarning, match="no longer runs"):
        p = Project.open(folder)  # the dead writer's lock is taken over
    with p:
        status = {v.id: v.status for v in p.volumes}
        for what, vid in done:
            assert vid in status
            if what in ("weak", "accepted"):
                assert np.any(p.labels(vid)["scribbles"]), vid
            if what == "accepted":
                assert status[vid] == "accepted"
                assert p.labels(vid)["mask"] is not None
        logged = {e["volume"] for e in p.annotation_log()}
        assert {vid for what, vid in done if what == "weak"} <= logged
        p.add(make_volume(tmp_path, "after", seed=99))  # and it keeps working


def test_mask_is_checked_before_anything_is_written(project):
    gen = project._data["generation"]
    with pytest.raises(LabelEffError):
        project.accept("case0", np.full(SHAPE, 5, np.uint8))
    assert project._data["generation"] == gen
    project.accept("case0", ball().astype(np.uint8))
    assert project._data["generation"] == gen + 1
