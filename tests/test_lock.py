"""One writer per store: napari_labeleff._lock.StoreLock (contract C1)."""

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from napari_labeleff import LabelEffError
from napari_labeleff._lock import LOCK_NAME, StaleLockWarning, StoreLock, _proc_start

HOLD = textwrap.dedent(
    """
    import sys, time
    from napari_labeleff._lock import StoreLock
    lock = StoreLock.acquire(sys.argv[1], what="project")
    print("locked", flush=True)
    if sys.argv[2] == "hold":
        time.sleep(60)
    """
)


def _start_holder(folder, mode="hold"):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), mode], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_acquire_writes_holder_and_release_removes_it(tmp_path):
    lock = StoreLock.acquire(tmp_path, what="annotation store")
    info = json.loads((tmp_path / LOCK_NAME).read_text())
    assert info["pid"] == os.getpid()
    assert info["host"] == socket.gethostname()
    assert info["what"] == "annotation store"
    assert info["proc_start"] == _proc_start(os.getpid())
    assert "started" in info
    assert StoreLock.holder(tmp_path) == info
    assert lock.held
    lock.release()
    lock.release()  # idempotent
    assert not (tmp_path / LOCK_NAME).exists()
    assert StoreLock.holder(tmp_path) is None
    assert not lock.held


def test_second_writer_in_same_process_is_refused(tmp_path):
    with StoreLock.acquire(tmp_path, what="project"):
        with pytest.raises(LabelEffError, match=rf"open in process {os.getpid()}.*read-only"):
            StoreLock.acquire(tmp_path, what="project")
    with StoreLock.acquire(tmp_path):  # free again after the with block
        pass


def test_garbage_collected_lock_is_released(tmp_path):
    StoreLock.acquire(tmp_path)
    gc.collect()
    assert not (tmp_path / LOCK_NAME).exists()


def test_live_holder_in_other_process_is_named(tmp_path):
    proc = _start_holder(tmp_path)
    try:
        with pytest.raises(LabelEffError, match=rf"project .* is open in process {proc.pid} on host"):
            StoreLock.acquire(tmp_path, what="project")
        assert StoreLock.holder(tmp_path)["pid"] == proc.pid
        assert not StoreLock.is_stale(tmp_path)
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_killed_process_is_taken_over(tmp_path):
    proc = _start_holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert StoreLock.holder(tmp_path)["pid"] == proc.pid  # left behind
    assert StoreLock.is_stale(tmp_path)
    with pytest.warns(StaleLockWarning, match=f"process {proc.pid} no longer runs"):
        lock = StoreLock.acquire(tmp_path)
    assert StoreLock.holder(tmp_path)["pid"] == os.getpid()
    lock.release()


def test_lock_released_at_interpreter_exit(tmp_path):
    proc = _start_holder(tmp_path, mode="exit")
    proc.wait(timeout=30)
    assert not (tmp_path / LOCK_NAME).exists()


def test_reused_pid_is_stale(tmp_path):
    # A live process (our parent) whose start time differs from the recorded one.
    ppid = os.getppid()
    if _proc_start(ppid) is None:
        pytest.skip("no /proc start times on this platform")
    info = {"pid": ppid, "host": socket.gethostname(), "started": "2020-01-01T00:00:00+00:00",
            "proc_start": _proc_start(ppid) + 12345, "what": "project", "token": "x"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(info))
    with pytest.warns(StaleLockWarning, match="now belongs to another program"):
        StoreLock.acquire(tmp_path).release()
    # ... and with the matching start time the same pid is a live holder.
    info["proc_start"] = _proc_start(ppid)
    (tmp_path / LOCK_NAME).write_text(json.dumps(info))
    with pytest.raises(LabelEffError, match=f"process {ppid}"):
        StoreLock.acquire(tmp_path)


def test_lock_from_other_host_is_never_taken_over(tmp_path):
    info = {"pid": 999999, "host": "another-host.example", "started": "2020-01-01T00:00:00",
            "proc_start": None, "what": "project", "token": "x"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(info))
    with pytest.raises(LabelEffError, match=rf"another-host.example.*delete .*{LOCK_NAME}"):
        StoreLock.acquire(tmp_path)
    assert json.loads((tmp_path / LOCK_NAME).read_text()) == info  # untouched


def test_unreadable_lock_is_stale_only_when_old(tmp_path, monkeypatch):
    import napari_labeleff._lock as lockmod

    (tmp_path / LOCK_NAME).write_bytes(b"\x00garbage")
    monkeypatch.setattr(lockmod.time, "sleep", lambda s: None)
    with pytest.raises(LabelEffError, match="keeps changing"):
        StoreLock.acquire(tmp_path)  # fresh: maybe being written right now
    old = time.time() - 3600
    os.utime(tmp_path / LOCK_NAME, (old, old))
    with pytest.warns(StaleLockWarning, match="unreadable"):
        StoreLock.acquire(tmp_path).release()


def test_not_a_folder(tmp_path):
    with pytest.raises(LabelEffError, match="not a folder"):
        StoreLock.acquire(tmp_path / "missing", what="project")


RACE = textwrap.dedent(
    """
    import sys, time
    from napari_labeleff import LabelEffError
    from napari_labeleff._lock import StoreLock
    while time.time() < float(sys.argv[2]):
        pass
    try:
        lock = StoreLock.acquire(sys.argv[1])
    except LabelEffError:
        print("refused", flush=True)
    else:
        print("won", flush=True)
        sys.stdin.read()  # hold until the test has heard from everyone
    """
)


def test_only_one_of_concurrent_writers_wins(tmp_path):
    start = time.time() + 2.0
    procs = [
        subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), str(start)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    try:
        outs = [p.stdout.readline().strip() for p in procs]
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(timeout=60)
    assert sorted(outs) == ["refused"] * 3 + ["won"]
