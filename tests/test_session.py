"""AnnotationSession: autosave, restore by content, crash safety, class editing."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import dask.array as da
import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff._lock import StaleLockWarning
from napari_labeleff.active import Suggestion
from napari_labeleff.io import Geometry
from napari_labeleff.session import (
    SCRIBBLE_CHUNKS,
    AnnotationSession,
    LabelClass,
    user_store_dir,
    volume_checksum,
)


@pytest.fixture
def image(rng):
    return rng.normal(size=(20, 24, 28)).astype(np.float32)


def test_checksum_depends_on_content_shape_dtype_not_layout(image):
    ref = volume_checksum(image)
    assert len(ref) == 64
    assert volume_checksum(image.copy()) == ref
    assert volume_checksum(da.from_array(image, chunks=(3, 7, 28))) == ref
    assert volume_checksum(np.asfortranarray(image)) == ref
    assert volume_checksum(image.astype(">f4")) == ref
    changed = image.copy()
    changed[5, 5, 5] += 1
    assert volume_checksum(changed) != ref
    assert volume_checksum(image.astype(np.float64)) != ref
    assert volume_checksum(image.reshape(20, 28, 24)) != ref
    with pytest.raises(LabelEffError, match="data must be an array, got list"):
        volume_checksum([1, 2, 3])


def test_reopen_same_content_at_another_path_restores_everything(tmp_path, image, oblique_geometry):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    s = AnnotationSession.open(image, oblique_geometry, image_path=tmp_path / "a" / "ct.nii.gz")
    assert not s.restored and s.store_path == tmp_path / "a" / "ct.nii.gz.labeleff.zarr"
    liver = s.add_class("liver", (1.0, 0.0, 0.0))
    s.scribbles[3, 4:9, 5] = liver + 1
    s.scribbles[15, 2, 2:20] = 1
    s.save_scribbles((slice(3, 4), slice(4, 9), slice(5, 6)))
    s.save_scribbles((slice(15, 16),))
    s.set_boxes([(liver, 1, 2, 3, 10, 12, 14)])
    s.save_mask("refined", (image > 0).astype(np.uint8))
    s.add_reviewed(Suggestion("slice", 0.5, "uncertain", (1,), axis=0, index=7, rank=1), "confirmed")
    s.close()

    again = AnnotationSession.open(image.copy(), oblique_geometry, image_path=tmp_path / "b" / "copy.nii.gz")
    assert again.restored and again.store_path == s.store_path
    np.testing.assert_array_equal(again.scribbles, s.scribbles)
    assert again.classes == [LabelClass("background", (0.0, 0.0, 0.0)), LabelClass("liver", (1.0, 0.0, 0.0))]
    assert again.boxes == [(1, 1, 2, 3, 10, 12, 14)]
    np.testing.assert_array_equal(again.masks["refined"], image > 0)
    assert again.reviewed == [{"kind": "slice", "score": 0.5, "reason": "uncertain", "classes": [1], "axis": 0,
                               "index": 7, "bbox": None, "rank": 1, "status": "confirmed"}]

    other = AnnotationSession.open(image + 1, oblique_geometry, image_path=tmp_path / "b" / "copy.nii.gz")
    assert not other.restored and not other.scribbles.any()


def test_store_dir_and_user_dir_fallback(tmp_path, image, monkeypatch):
    chosen = AnnotationSession.open(image, Geometry.from_spacing(), image_path=tmp_path / "x.nii",
                                    store_dir=tmp_path / "stores")
    assert chosen.store_path.parent == tmp_path / "stores"

    real_mkstemp = __import__("tempfile").mkstemp

    def read_only_image_folder(*args, dir=None, **kwargs):
        if dir is not None and os.fspath(dir) == os.fspath(tmp_path / "ro"):
            raise PermissionError(13, "Permission denied", os.fspath(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr("tempfile.mkstemp", read_only_image_folder)
    s = AnnotationSession.open(image * 2, Geometry.from_spacing(), image_path=tmp_path / "ro" / "x.nii")
    assert s.store_path.parent == user_store_dir()
    assert not (tmp_path / "ro" / "x.nii.labeleff.zarr").exists()


def test_save_scribbles_writes_only_touched_chunks(tmp_path, image):
    s = AnnotationSession.open(image, Geometry.from_spacing(), store_dir=tmp_path)
    s.scribbles[:] = 2  # in memory only
    s.save_scribbles((slice(17, 18), slice(0, 3), slice(0, 3)))
    chunk_files = [p for p in (s.store_path / "scribbles").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(chunk_files) == 1
    s.close()
    restored = AnnotationSession.open(image, Geometry.from_spacing(), store_dir=tmp_path).scribbles
    z0 = 17 // SCRIBBLE_CHUNKS[0] * SCRIBBLE_CHUNKS[0]
    assert np.all(restored[z0:, : SCRIBBLE_CHUNKS[1], : SCRIBBLE_CHUNKS[2]] == 2)
    assert restored.sum() == 2 * restored[z0:, :24, :28].size
    with pytest.raises(LabelEffError, match="region=.* must be a tuple of up to 3 slices"):
        s.save_scribbles([slice(0, 1)])


def test_class_editing(tmp_path, image):
    s = AnnotationSession.open(image, Geometry.from_spacing(), store_dir=tmp_path)
    a = s.add_class("kidney")
    b = s.add_class("spleen", (0.0, 0.5, 1.0))
    c = s.add_class("liver")
    s.scribbles[1, 1, 1:4] = [a + 1, b + 1, c + 1]
    s.set_boxes([(b, 0, 0, 0, 2, 2, 2), (c, 0, 0, 0, 3, 3, 3)])
    s.save_mask("final", np.full(s.shape, c, np.uint8))
    s.rename_class(a, "left kidney")
    s.recolor_class(a, (0.1, 0.2, 0.3))
    with pytest.raises(LabelEffError, match="index=0 is the background class"):
        s.remove_class(0)
    with pytest.raises(LabelEffError, match="'spleen' has 1 scribbled voxels; erase them first or pass force=True"):
        s.remove_class(b)
    with pytest.raises(LabelEffError, match="name='Liver' is already used"):
        s.add_class("Liver")
    with pytest.raises(LabelEffError, match="index=9 must be a class index 0..3"):
        s.rename_class(9, "x")
    with pytest.raises(LabelEffError, match="color=.* must be 3 RGB floats"):
        s.add_class("bad", (255, 0, 0))
    s.remove_class(b, force=True)
    assert [k.name for k in s.classes] == ["background", "left kidney", "liver"]
    assert list(s.scribbles[1, 1, 1:4]) == [a + 1, 0, c]  # liver moved down to scribble value 3
    assert s.boxes == [(c - 1, 0, 0, 0, 3, 3, 3)]
    assert np.all(s.masks["final"] == c - 1)
    s.close()
    again = AnnotationSession.open(image, Geometry.from_spacing(), store_dir=tmp_path)
    assert [k.name for k in again.classes] == ["background", "left kidney", "liver"]
    assert again.classes[1].color == (0.1, 0.2, 0.3)
    np.testing.assert_array_equal(again.scribbles, s.scribbles)
    assert np.all(again.masks["final"] == c - 1)
    # the current mask array and the one of the previous generation (for recovery)
    assert len(list((again.store_path / "masks").glob("final.*"))) == 2


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s: s.set_boxes([(1, 0, 0, 0, 30, 2, 2)]), "is empty or outside the volume"),
        (lambda s: s.set_boxes([(5, 0, 0, 0, 1, 1, 1)]), "class 5 is not a structure"),
        (lambda s: s.set_boxes([(1, 0, 0)]), "must be 7 integers"),
        (lambda s: s.save_mask("a/b", np.zeros((20, 24, 28), np.uint8)), "name='a/b' must be"),
        (lambda s: s.save_mask("m", np.zeros((2, 2, 2), np.uint8)), "mask has shape"),
        (lambda s: s.save_mask("m", np.zeros((20, 24, 28), np.float32)), "mask must hold integers"),
        (lambda s: s.add_class("  "), "name must be a non-empty string"),
        (lambda s: s.recolor_class(1, "red"), "color='red' must be 3 RGB floats"),
        (lambda s: s.add_reviewed(3, "confirmed"), "suggestion must be a Suggestion or a dict, got int"),
        (lambda s: s.add_reviewed({"kind": "slice"}, None), "status=None must be a non-empty string"),
    ],
)
def test_session_bad_input(tmp_path, image, call, match):
    s = AnnotationSession.open(image, Geometry.from_spacing(), store_dir=tmp_path)
    s.add_class("organ")
    with pytest.raises(LabelEffError, match=match):
        call(s)


def test_damaged_store_is_reported_not_overwritten(tmp_path, image):
    s = AnnotationSession.open(image, Geometry.from_spacing(), store_dir=tmp_path)
    s.close()
    shutil.rmtree(s.store_path / "scribbles")
    shutil.rmtree(s.store_path / "history")  # else the history recovers it (test_history.py)
    with pytest.raises(LabelEffError, match="autosave store .* is damaged: .*scribbles.*Nothing was changed. Move"):
        AnnotationSession.open(image, Geometry.from_spacing(), store_dir=tmp_path)
    assert (s.store_path / "session.json").is_file()


def test_open_bad_input(image):
    with pytest.raises(LabelEffError, match="geometry must be a Geometry"):
        AnnotationSession.open(image, None)
    with pytest.raises(LabelEffError, match=r"data must be a \(Z, Y, X\) or \(C, Z, Y, X\) array"):
        AnnotationSession.open(image[0], Geometry.from_spacing())


_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from napari_labeleff.io import Geometry
    from napari_labeleff.session import AnnotationSession

    store_dir, log = sys.argv[1], sys.argv[2]
    image = np.arange(32 * 64 * 64, dtype=np.float32).reshape(32, 64, 64)
    s = AnnotationSession.open(image, Geometry.from_spacing(), store_dir=store_dir)
    with open(log, "a") as fh:
        for i in range(32 * 64):
            z, y = i % 32, i // 32
            s.scribbles[z, y, :] = i % 3 + 1
            s.save_scribbles((slice(z, z + 1), slice(y, y + 1)))
            fh.write(f"{i}\\n")
            fh.flush()
    """
)


def test_sigkill_during_autosave_keeps_every_completed_stroke(tmp_path):
    log = tmp_path / "done.log"
    log.touch()
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "stores"), str(log)])
    try:
        deadline = time.monotonic() + 90
        while len(log.read_text().split()) < 60 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert child.poll() is None, "the autosaving child exited before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    done = [int(v) for v in log.read_text().split()]
    assert len(done) >= 60
    image = np.arange(32 * 64 * 64, dtype=np.float32).reshape(32, 64, 64)
    with pytest.warns(StaleLockWarning, match=f"process {child.pid} no longer runs"):
        s = AnnotationSession.open(image, Geometry.from_spacing(), store_dir=tmp_path / "stores")
    assert s.restored
    for i in done:
        assert np.all(s.scribbles[i % 32, i // 32, :] == i % 3 + 1), f"stroke {i} lost"
    assert json.loads((s.store_path / "session.json").read_text())["checksum"] == s.checksum
    assert not list(s.store_path.rglob("*.partial"))
