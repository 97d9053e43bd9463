"""AnnotationSession durability: damaged stores, generations, one writer, atomic transitions."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff._lock import LOCK_NAME, StoreLockedError
from napari_labeleff.io import Geometry
from napari_labeleff.session import (
    FORMAT_VERSION,
    META_NAME,
    PREV_NAME,
    AnnotationSession,
    DurableLocalStore,
    RecoveredStoreWarning,
)

GEOM = Geometry.from_spacing()


@pytest.fixture
def image(rng):
    return rng.normal(size=(20, 70, 28)).astype(np.float32)  # 2 scribble chunks along Y


def _digest(store):
    """{relative path: sha256} of every file in the store except the writer lock."""
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


def _annotated(image, folder):
    """A closed store with two generations: classes, strokes, boxes, two mask saves."""
    s = AnnotationSession.open(image, GEOM, store_dir=folder)
    a = s.add_class("liver")
    s.scribbles[3, 4:9, 5] = a + 1
    s.scribbles[15, 66, 2:20] = 1
    s.save_scribbles()
    s.set_boxes([(a, 1, 2, 3, 10, 12, 14)])
    s.save_mask("final", np.full(s.shape, 1, np.uint8))  # generation kept in .prev
    s.save_mask("final", (image > 0).astype(np.uint8))
    s.close()
    return s


def _chunk(store, array):
    return sorted(p for p in (store / array).rglob("*") if p.is_file() and p.name != "zarr.json")[0]


def test_damaged_meta_without_previous_generation_is_reported_and_nothing_erased(tmp_path, image):
    # Today's bug: a truncated session.json made open() start afresh with mode="w",
    # erasing the saved scribbles.
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    s.scribbles[2, 3, 4] = 1
    s.save_scribbles()
    s.close()
    meta = s.store_path / META_NAME
    meta.write_text(meta.read_text()[:40])  # truncated
    assert not (s.store_path / PREV_NAME).exists()
    shutil.rmtree(s.store_path / "history")  # else it recovers (tests/test_history.py)
    before = _digest(s.store_path)
    with pytest.raises(LabelEffError, match=rf"is damaged: {META_NAME} is not valid JSON.*{PREV_NAME} is missing.*"
                                            r"Nothing was changed\. Move the store away"):
        AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    assert _digest(s.store_path) == before
    assert not (s.store_path / LOCK_NAME).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [s.store_path.name]  # no new store


def _truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _garbage(path):
    path.write_bytes(b"\x00\xff garbage \x13" * 7)


def _empty(path):
    path.write_bytes(b"")


def _remove(path):
    path.unlink()


def _wrong_content(path):
    path.write_text(json.dumps({"version": 1, "checksum": 3}))


DAMAGE = {"truncated": _truncate, "garbage": _garbage, "empty": _empty,
          "missing": _remove, "wrong content": _wrong_content}


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_damaged_meta_is_recovered_from_previous_generation(tmp_path, image, how):
    s = _annotated(image, tmp_path)
    prev = json.loads((s.store_path / PREV_NAME).read_text())
    before = _digest(s.store_path)
    DAMAGE[how](s.store_path / META_NAME)
    with pytest.warns(RecoveredStoreWarning, match=f"restored from {PREV_NAME}"):
        r = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    # the previous generation: everything but the last mask save
    np.testing.assert_array_equal(r.scribbles, s.scribbles)
    assert r.boxes == s.boxes and [c.name for c in r.classes] == ["background", "liver"]
    assert np.all(r.masks["final"] == 1)
    assert r._mask_keys == prev["masks"]
    # nothing deleted: every file of the damaged store is still there, unchanged,
    # except session.json (moved aside, not deleted) and the new generation's files
    after = _digest(r.store_path)
    for name, digest in before.items():
        if name != META_NAME:
            assert after.get(name) == digest, name
    if how != "missing":
        aside = [n for n in after if n.startswith(f"{META_NAME}.damaged-")]
        assert len(aside) == 1
    r.set_boxes([])  # and it keeps working
    r.close()
    assert AnnotationSession.open(image, GEOM, store_dir=tmp_path).boxes == []


def test_damaged_current_mask_array_is_recovered_from_previous_generation(tmp_path, image):
    s = _annotated(image, tmp_path)
    current = json.loads((s.store_path / META_NAME).read_text())["masks"]["final"]
    _garbage(_chunk(s.store_path, current))
    with pytest.warns(RecoveredStoreWarning, match=f"array .*{current}.* cannot be read"):
        r = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    assert np.all(r.masks["final"] == 1)
    np.testing.assert_array_equal(r.scribbles, s.scribbles)


@pytest.mark.parametrize(
    "part, damage",
    [
        ("scribbles chunk", _garbage),
        ("scribbles chunk", _truncate),
        ("scribbles/zarr.json", _garbage),
        ("scribbles/zarr.json", _remove),
        ("both generations", _garbage),
        ("newer format", None),
    ],
)
def test_unrecoverable_damage_is_a_clear_error_and_changes_nothing(tmp_path, image, part, damage):
    s = _annotated(image, tmp_path)
    store = s.store_path
    if part == "scribbles chunk":
        target, match = _chunk(store, "scribbles"), r"array .*scribbles cannot be read"
    elif part == "scribbles/zarr.json":
        target, match = store / "scribbles" / "zarr.json", r"array .*scribbles cannot be read"
    elif part == "both generations":
        damage(store / PREV_NAME)
        target, match = store / META_NAME, rf"{META_NAME} is not valid JSON.*{PREV_NAME} is not valid JSON"
    else:
        meta = json.loads((store / META_NAME).read_text())
        meta["version"] = FORMAT_VERSION + 1
        (store / META_NAME).write_text(json.dumps(meta))
        target, match = None, rf"newer napari-labeleff .*format version {FORMAT_VERSION + 1}"
    if target is not None:
        damage(target)
    shutil.rmtree(store / "history")  # else it recovers (tests/test_history.py)
    before = _digest(store)
    with pytest.raises(LabelEffError, match=match + r".*[Nn]othing was changed"):
        AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    with pytest.raises(LabelEffError, match=match):
        AnnotationSession.open(image, GEOM, store_dir=tmp_path, read_only=True)
    assert _digest(store) == before
    assert not (store / LOCK_NAME).exists()
    assert [p.name for p in tmp_path.iterdir()] == [store.name]


def test_damaged_previous_generation_alone_is_harmless(tmp_path, image):
    s = _annotated(image, tmp_path)
    _garbage(s.store_path / PREV_NAME)
    r = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    assert r.recovered is None
    np.testing.assert_array_equal(r.masks["final"], image > 0)


def test_adjacent_store_with_unreadable_meta_is_not_replaced(tmp_path, image):
    path = tmp_path / "ct.nii.gz"
    s = AnnotationSession.open(image, GEOM, image_path=path)
    s.scribbles[1, 1, 1] = 1
    s.save_scribbles()
    s.close()
    _garbage(s.store_path / META_NAME)
    shutil.rmtree(s.store_path / "history")  # else it recovers (tests/test_history.py)
    before = _digest(s.store_path)
    with pytest.raises(LabelEffError, match="is damaged"):
        AnnotationSession.open(image, GEOM, image_path=path)
    assert _digest(s.store_path) == before


# ---- one writer per store --------------------------------------------------------------
_HOLDER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from napari_labeleff.io import Geometry
    from napari_labeleff.session import AnnotationSession
    image = np.load(sys.argv[1])
    s = AnnotationSession.open(image, Geometry.from_spacing(), store_dir=sys.argv[2])
    s.add_class("liver")
    s.scribbles[2, 2, 2] = 2
    s.save_scribbles()
    print("open", flush=True)
    sys.stdin.read()
    """
)


def test_second_process_is_refused_unless_read_only(tmp_path, image):
    np.save(tmp_path / "image.npy", image)
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / "image.npy"), str(tmp_path / "s")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        store = next((tmp_path / "s").iterdir())
        # an in-progress mask write of the holder must survive our attempts
        in_progress = store / "masks" / "final.0123abcd"
        in_progress.mkdir()
        (in_progress / "zarr.json").write_text("{}")
        (store / "scribbles" / "x.1234.partial").write_bytes(b"being written")
        with pytest.raises(StoreLockedError, match=rf"open in process {proc.pid} on host .*read_only=True"):
            AnnotationSession.open(image, GEOM, store_dir=tmp_path / "s")
        ro = AnnotationSession.open(image, GEOM, store_dir=tmp_path / "s", read_only=True)
        assert ro.read_only and ro.scribbles[2, 2, 2] == 2 and ro.classes[1].name == "liver"
        for save in (ro.save_scribbles, ro.save_meta, lambda: ro.add_class("x"),
                     lambda: ro.save_mask("final", np.zeros(ro.shape, np.uint8)),
                     lambda: ro.set_boxes([]), lambda: ro.remove_class(1, force=True)):
            with pytest.raises(LabelEffError, match="open read-only"):
                save()
        assert in_progress.is_dir() and (store / "scribbles" / "x.1234.partial").exists()
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    # the holder exited: its lock is gone and we may write
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path / "s")
    assert not in_progress.exists()  # our own open cleans leftovers, under the lock
    s.close()


def test_read_only_without_store_writes_nothing(tmp_path, image):
    s = AnnotationSession.open(image, GEOM, image_path=tmp_path / "x.nii", read_only=True)
    assert s.store_path is None and not s.restored
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(LabelEffError, match="read-only"):
        s.add_class("a")


def test_close_releases_and_later_saves_raise(tmp_path, image):
    with AnnotationSession.open(image, GEOM, store_dir=tmp_path) as s:
        assert (s.store_path / LOCK_NAME).exists()
        with pytest.raises(StoreLockedError, match="in this process"):
            AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    assert not (s.store_path / LOCK_NAME).exists()
    with pytest.raises(LabelEffError, match="is closed; reopen it"):
        s.add_class("late")
    s.close()  # idempotent


# ---- atomic transitions ----------------------------------------------------------------
class _Crash(BaseException):
    """Stands in for a SIGKILL in the middle of a save."""


def _crash_after(monkeypatch, n):
    """Make the n-th file write (chunks, zarr.json, session.json...) 'kill' the process."""
    import napari_labeleff.io.atomic as atomic

    count = {"n": 0}
    real_put, real_replace = atomic.durable_put, os.replace

    def tick():
        count["n"] += 1
        if count["n"] > n:
            raise _Crash()

    def put(*a, **k):
        tick()
        return real_put(*a, **k)

    def replace(*a, **k):
        tick()
        return real_replace(*a, **k)

    monkeypatch.setattr("napari_labeleff.session.durable_put", put)
    monkeypatch.setattr("napari_labeleff._history.durable_put", put)
    monkeypatch.setattr(atomic.os, "replace", replace)
    return count


def test_removing_a_class_is_one_atomic_transition(tmp_path, image, monkeypatch):
    def variant(n):  # own content per store (the user index finds stores by checksum)
        out = image.copy()
        out[0, 0, 0] = n
        return out

    def build(folder, n):
        s = AnnotationSession.open(variant(n), GEOM, store_dir=folder)
        a, b, c = (s.add_class(n) for n in ("kidney", "spleen", "liver"))
        s.scribbles[1, 1, 1:4] = [a + 1, b + 1, c + 1]
        s.scribbles[19, 69, 27] = c + 1
        s.save_scribbles()
        s.set_boxes([(b, 0, 0, 0, 2, 2, 2), (c, 0, 0, 0, 3, 3, 3)])
        s.save_mask("final", np.full(s.shape, c, np.uint8))
        return s

    def state(s):
        return ([k.name for k in s.classes], s.scribbles.tobytes(), s.boxes,
                {k: v.tobytes() for k, v in s.masks.items()})

    ref = build(tmp_path / "ref", -1)
    old = state(ref)
    ref.remove_class(2, force=True)
    new = state(ref)
    ref.close()
    seen = set()
    for n in range(200):
        folder = tmp_path / f"crash{n}"
        s = build(folder, n)
        with monkeypatch.context() as m:
            count = _crash_after(m, n)
            try:
                s.remove_class(2, force=True)
            except _Crash:
                crashed = True
            else:
                crashed = False
        s._lock.release()
        with __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore", RecoveredStoreWarning)
            r = AnnotationSession.open(variant(n), GEOM, store_dir=folder)
        got = state(r)
        r.close()
        assert got in (old, new), f"crash after {n} writes left a mixed state"
        seen.add(got == new)
        if not crashed:
            assert got == new
            break
    assert seen == {False, True} and count["n"] > 3


def test_chunk_writes_do_not_rely_on_zarr_internals(tmp_path, image, monkeypatch):
    # Simulate a zarr release whose LocalStore writes chunks in place: a crash in the
    # middle leaves a torn chunk. Our store must not go through it.
    import zarr.storage._local as zlocal

    def torn_put(path, value, exclusive=False):
        data = value.to_bytes()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise _Crash()

    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    s.scribbles[0:16, 0:64, 0:28] = 1
    s.save_scribbles()
    monkeypatch.setattr(zlocal, "_put", torn_put)
    s.scribbles[0:16, 0:64, 0:28] = 2
    s.save_scribbles()  # must not raise _Crash
    s.close()
    monkeypatch.undo()
    np.testing.assert_array_equal(AnnotationSession.open(image, GEOM, store_dir=tmp_path).scribbles,
                                  s.scribbles)


def test_saves_are_fsynced(tmp_path, image, monkeypatch):
    s = AnnotationSession.open(image, GEOM, store_dir=tmp_path)
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else fd)
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    s.scribbles[0, 0, 0] = 1
    s.save_scribbles((slice(0, 1),))
    if sys.platform.startswith("linux"):
        # the chunk's bytes (written once, as its history blob, then linked into the array)
        assert any(".partial" in str(p) and "history/blobs" in str(p) for p in synced)
        assert str(s.store_path / "scribbles" / "c" / "0" / "0") in map(str, synced)  # its folder
        assert str(s.store_path / "history" / "blobs") in map(str, synced)
        assert any(str(p).startswith(str(s.store_path / "history" / "0")) for p in synced)  # record
    synced.clear()
    s.add_class("a")
    if sys.platform.startswith("linux"):
        assert any(META_NAME in str(p) for p in synced)
        assert str(s.store_path) in map(str, synced)
    assert isinstance(s._store, DurableLocalStore)
