"""The history of the user's work: generations, restore, limits, and the durability gaps
it closes (missing files, damaged generations kept, session.json after a recovery)."""

import hashlib
import json
import os
import shutil
import warnings

import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff._history import BLOB_DIR, HISTORY_DIR
from napari_labeleff.io import Geometry
from napari_labeleff.session import (
    META_NAME,
    PREV_NAME,
    AnnotationSession,
    Generation,
    RecoveredStoreWarning,
)

GEOM = Geometry.from_spacing((2.0, 1.0, 1.0))


@pytest.fixture
def image(rng):
    return rng.normal(size=(20, 70, 28)).astype(np.float32)  # 2 scribble chunks along Y


def state(s):
    """Everything restore must bring back, as comparable bytes."""
    h = hashlib.sha256()
    h.update(json.dumps([[c.name, list(c.color)] for c in s.classes]).encode())
    h.update(json.dumps([list(b) for b in s.boxes]).encode())
    h.update(json.dumps(s.reviewed, sort_keys=True).encode())
    h.update(np.ascontiguousarray(s.scribbles, np.uint8).tobytes())
    for name in sorted(s.masks):
        h.update(name.encode() + np.ascontiguousarray(s.masks[name], np.uint8).tobytes())
    return h.hexdigest()


def edit_script(s, rng):
    """A varied series of saves; returns [(generation id, state digest)] after each."""
    seen = [(s.history()[0].id, state(s))]
    liver = s.add_class("liver")
    seen.append((s.history()[0].id, state(s)))
    for k in range(4):
        z = int(rng.integers(0, 20))
        s.scribbles[z, 5 + 10 * k: 20 + 10 * k, 3:20] = liver + 1
        s.save_scribbles((slice(z, z + 1),))
        seen.append((s.history()[0].id, state(s)))
    s.scribbles[2, 60:66, 1:5] = 1
    s.save_scribbles()
    seen.append((s.history()[0].id, state(s)))
    s.save_mask("refined", (rng.random(s.shape) > 0.5).astype(np.uint8))
    seen.append((s.history()[0].id, state(s)))
    s.set_boxes([(liver, 1, 2, 3, 9, 30, 20)])
    seen.append((s.history()[0].id, state(s)))
    s.add_reviewed({"kind": "slice", "index": 3}, "confirmed")
    seen.append((s.history()[0].id, state(s)))
    s.save_mask("final", s.masks["refined"] * 1)
    seen.append((s.history()[0].id, state(s)))
    s.scribbles[:] = 0  # a wrong "clear"
    s.save_scribbles()
    seen.append((s.history()[0].id, state(s)))
    return seen


def test_every_generation_restores_bit_exactly_after_a_restart(tmp_path, image, rng):
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    seen = edit_script(s, rng)
    assert len({g for g, _ in seen}) == len(seen)  # one generation per save
    s.close()
    r = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    assert [g.id for g in r.history()] == [g for g, _ in reversed(seen)]  # survives the restart
    assert r.history()[0].current and not any(g.current for g in r.history()[1:])
    for gid, digest in seen:
        r.restore(gid)
        assert state(r) == digest, f"generation {gid}"
    r.close()
    again = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    assert state(again) == seen[-1][1]  # the last restore is what reopens


def test_history_says_what_changed(tmp_path, image):
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    liver = s.add_class("liver")
    s.scribbles[3, 4:9, 5] = liver + 1  # 5 voxels
    s.save_scribbles((slice(3, 4),))
    s.scribbles[3, 4:6, 5] = 1  # 2 of them become background
    s.save_scribbles((slice(3, 4),))
    s.save_mask("refined", np.ones(s.shape, np.uint8))
    s.rename_class(liver, "hepar")
    s.set_boxes([(liver, 0, 0, 0, 2, 2, 2)])
    s.remove_class(liver, force=True)
    changes = [g.change for g in reversed(s.history())]
    assert changes == [
        "session created",
        "class 'liver' added",
        "scribbles: +5 voxels of class 'liver'",
        "scribbles: +2 voxels of class 'background', -2 of 'liver'",
        "mask 'refined' saved",
        "class 'liver' renamed to 'hepar'",
        "boxes: 0 -> 1",
        "class 'hepar' removed (3 scribbled voxels erased)",
    ]
    g = s.history()[0]
    assert isinstance(g, Generation) and g.time.tzinfo is not None and "hepar" in str(g)


def test_restore_is_undoable_and_the_current_state_becomes_a_generation(tmp_path, image):
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    c = s.add_class("liver")
    s.scribbles[1, 1:5, 1:5] = c + 1
    s.save_scribbles()
    painted = state(s)
    target = s.history()[0].id
    s.remove_class(c, force=True)  # a wrong class removal
    removed = state(s), s.history()[0].id
    new = s.restore(target)
    assert state(s) == painted and [k.name for k in s.classes] == ["background", "liver"]
    assert new.current and new.id == removed[1] + 1
    assert new.change.startswith(f"restored generation #{target} of ")
    s.restore(removed[1])  # undo the restore
    assert state(s) == removed[0]
    with pytest.raises(LabelEffError, match=r"generation=999 is not in the history .*kept: 1\.\."):
        s.restore(999)
    with pytest.raises(LabelEffError, match="must be a generation id"):
        s.restore("3")
    s.close()
    ro = AnnotationSession.open(image, GEOM, store_dir=tmp_path, read_only=True)
    assert [g.id for g in ro.history()] == [g.id for g in s.history()]  # read-only lists too
    with pytest.raises(LabelEffError, match="open read-only"):
        ro.restore(target)


def test_history_limit_is_respected_and_bounds_the_disk(tmp_path, image, monkeypatch):
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    assert s.history_limit == 20
    s.set_history_limit(5)
    c = s.add_class("liver")
    for k in range(12):
        s.scribbles[k, :, :] = c + 1  # each stroke rewrites one chunk column with new content
        s.save_scribbles((slice(k, k + 1),))
    ids = [g.id for g in s.history()]
    assert len(ids) == 5 and ids == list(range(ids[0], ids[0] - 5, -1))
    records = sorted(p.name for p in (s.store_path / HISTORY_DIR).glob("*.json"))
    assert len(records) == 5
    # every blob is named by a kept generation (nothing the pruned ones alone named is left)
    named = set()
    for path in (s.store_path / HISTORY_DIR).glob("*.json"):
        rec = json.loads(path.read_text())
        for entry in [rec["arrays"]["scribbles"], *rec["arrays"]["masks"].values()]:
            named.update(entry["files"].values())
    assert {p.name for p in (s.store_path / BLOB_DIR).iterdir()} == named
    s.close()
    monkeypatch.setenv("LABELEFF_HISTORY_LIMIT", "3")
    r = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    assert r.history_limit == 5  # the session's own limit beats the user default
    r.close()
    other = image + 1
    t = AnnotationSession.open(other, GEOM, store_dir=tmp_path)
    assert t.history_limit == 3  # the user default
    for k in range(5):
        t.add_class(f"c{k}")
    assert len(t.history()) == 3
    with pytest.raises(LabelEffError, match="history_limit=0 must be a whole number >= 1"):
        t.set_history_limit(0)


def test_a_stroke_stores_only_the_chunks_it_changed(tmp_path, image):
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    c = s.add_class("liver")
    s.scribbles[:] = c + 1
    s.save_scribbles()  # all 4 chunks
    blobs = s.store_path / BLOB_DIR
    before = {p.name for p in blobs.iterdir()}
    s.scribbles[0, 0, 0] = 1
    s.save_scribbles((slice(0, 1), slice(0, 1), slice(0, 1)))
    assert len({p.name for p in blobs.iterdir()} - before) == 1  # one new chunk, no copy
    # the array's chunk file and its blob are one file on disk (hard link)
    chunk = s.store_path / "scribbles" / "c" / "0" / "0" / "0"
    assert chunk.stat().st_nlink == 2 and (blobs / hashlib.sha256(chunk.read_bytes()).hexdigest()).exists()


def _chunks(store, array):
    return sorted(p for p in (store / array).rglob("*") if p.is_file() and p.name != "zarr.json")


def test_deleted_scribble_chunk_is_reported_and_recovered_from_the_history(tmp_path, image):
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    c = s.add_class("liver")
    s.scribbles[1:3, 1:60, 2:9] = c + 1
    s.save_scribbles()
    expected = state(s)
    s.close()
    chunk = _chunks(s.store_path, "scribbles")[0]
    chunk.unlink()  # by hand
    with pytest.warns(RecoveredStoreWarning, match=r"scribbles is missing 1 file\(s\) the history lists "
                                                   r"as written \(c/0/0/0\).*would show as unannotated.*"
                                                   r"restored from history generation #3"):
        r = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    assert state(r) == expected  # nothing read as "unannotated"
    assert "scribbles" in r.damaged  # the damaged array is kept


def test_deleted_chunk_without_history_is_damage_not_unannotated(tmp_path, image):
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    c = s.add_class("liver")
    s.scribbles[1:3, 1:60, 2:9] = c + 1
    s.save_scribbles()
    s.close()
    _chunks(s.store_path, "scribbles")[0].unlink()
    shutil.rmtree(s.store_path / BLOB_DIR)  # the blobs are gone too: nothing to recover from
    with pytest.raises(LabelEffError, match=r"is damaged: .*scribbles is missing 1 file\(s\) .*c/0/0/0"):
        AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    with pytest.raises(LabelEffError, match=r"scribbles is missing 1 file"):
        AnnotationSession.open(image, GEOM, store_dir=tmp_path, read_only=True)


def test_deleted_mask_chunk_recovers_the_previous_generation(tmp_path, image):
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    s.add_class("liver")
    s.save_mask("final", np.ones(s.shape, np.uint8))
    s.save_mask("final", (image > 0).astype(np.uint8))
    key = s._mask_keys["final"]
    s.close()
    _chunks(s.store_path, key)[-1].unlink()
    with pytest.warns(RecoveredStoreWarning, match=rf"{key} is missing 1 file.*restored from {PREV_NAME}"):
        r = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    assert np.all(r.masks["final"] == 1)


def _recover(image, folder, damage_meta=True):
    """A store whose newest mask array is damaged, opened once (recovering)."""
    s = AnnotationSession.open(image, GEOM, store_dir=folder)
    s.add_class("liver")
    s.save_mask("final", np.ones(s.shape, np.uint8))
    s.save_mask("final", (image > 0).astype(np.uint8))
    newest = s._mask_keys["final"]
    s.close()
    for chunk in _chunks(s.store_path, newest):
        chunk.write_bytes(b"garbage")  # in place: its blob is damaged too
    with pytest.warns(RecoveredStoreWarning, match="until you discard it"):
        r = AnnotationSession.open(image, GEOM, store_dir=folder)
    return r, newest


def test_damaged_generation_is_kept_until_discarded(tmp_path, image):
    r, newest = _recover(image, tmp_path)
    assert newest in r.damaged and any(d.startswith(f"{META_NAME}.damaged-") for d in r.damaged)
    aside = [d for d in r.damaged if d.startswith(META_NAME)][0]
    r.set_boxes([])  # saves (and collects garbage) ...
    r.close()
    for _ in range(2):  # ... and later opens keep the damaged arrays
        with warnings.catch_warnings():
            warnings.simplefilter("error", RecoveredStoreWarning)
            again = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
        assert (again.store_path / newest / "zarr.json").exists() and (again.store_path / aside).exists()
        assert newest in again.damaged
        again.close()
    again = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    gone = again.discard_damaged()
    assert newest in gone and aside in gone and again.damaged == []
    assert not (again.store_path / newest).exists() and not (again.store_path / aside).exists()
    assert np.all(again.masks["final"] == 1)  # the recovered work stays
    again.close()
    assert AnnotationSession.open(image, GEOM, store_dir=tmp_path).damaged == []


def test_session_json_is_written_after_a_recovery(tmp_path, image):
    # Before: recover, save_meta(), reopen -> "restored from session.json.prev" again,
    # because save_meta returned early (the text had not changed).
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    s.add_class("liver")
    s.add_class("spleen")
    s.close()
    (s.store_path / META_NAME).unlink()
    with pytest.warns(RecoveredStoreWarning, match=f"restored from {PREV_NAME}"):
        r = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    assert (r.store_path / META_NAME).is_file()  # written by the recovery itself
    r.save_meta()
    r.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RecoveredStoreWarning)
        again = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    assert again.recovered is None and [c.name for c in again.classes] == ["background", "liver"]


def test_both_session_json_generations_lost_recovers_from_the_history(tmp_path, image):
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    s.set_history_limit(7)
    c = s.add_class("liver")
    s.scribbles[4, 10:20, 3:7] = c + 1
    s.save_scribbles()
    s.save_mask("final", np.full(s.shape, c, np.uint8))
    expected = state(s)
    s.close()
    (s.store_path / META_NAME).write_bytes(b"\x00garbage")
    (s.store_path / PREV_NAME).unlink()
    with pytest.warns(RecoveredStoreWarning, match=r"restored from history generation #4"):
        r = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    assert state(r) == expected and r.history_limit == 7
    r.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RecoveredStoreWarning)
        assert state(AnnotationSession.open(image, GEOM, store_dir=tmp_path)) == expected


def test_work_saved_before_a_crash_but_not_recorded_is_recorded_at_open(tmp_path, image, monkeypatch):
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    c = s.add_class("liver")
    monkeypatch.setattr(type(s), "_commit", lambda self, note=None: None)  # "crash" before the record
    s.scribbles[2, 2:4, 2:4] = c + 1
    s.save_scribbles()
    monkeypatch.undo()
    s.close()
    r = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    assert r.history()[0].change == "scribbles: +4 voxels of class 'liver'"
    assert r.scribbles[2, 3, 3] == c + 1


def test_an_old_store_without_history_starts_one(tmp_path, image):
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    c = s.add_class("liver")
    s.scribbles[0, 0, 0] = c + 1
    s.save_scribbles()
    expected = state(s)
    s.close()
    shutil.rmtree(s.store_path / HISTORY_DIR)  # as written by format 2
    for name in (META_NAME, PREV_NAME):
        meta = json.loads((s.store_path / name).read_text())
        meta["version"] = 2
        (s.store_path / name).write_text(json.dumps(meta))
    r = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    assert [g.change for g in r.history()] == ["history started"] and state(r) == expected
    assert json.loads((r.store_path / META_NAME).read_text())["version"] == 2  # untouched until a save
    r.add_class("spleen")
    r.restore(r.history()[1].id)
    assert state(r) == expected


def test_reopen_does_not_add_generations(tmp_path, image):
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    s.add_class("liver")
    s.close()
    for _ in range(3):
        AnnotationSession.open(image, GEOM, store_dir=tmp_path).close()
    assert len(AnnotationSession.open(image, GEOM, store_dir=tmp_path).history()) == 2
    assert os.path.isdir(s.store_path / BLOB_DIR)


def test_an_unreadable_record_is_skipped_and_its_id_not_reused(tmp_path, image, caplog):
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    s.add_class("liver")
    s.add_class("spleen")
    s.close()
    newest = sorted((s.store_path / HISTORY_DIR).glob("*.json"))[-1]
    newest.write_text("{not json")
    with caplog.at_level("WARNING"):
        r = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    assert f"{HISTORY_DIR}/{newest.name} cannot be read" in caplog.text
    # the state it recorded is recorded again, under a new id
    assert r.history()[0].id == int(newest.stem) + 1
    assert r.history()[0].change == "class 'spleen' added"
    assert newest.read_text() == "{not json"  # left for a look, never overwritten
