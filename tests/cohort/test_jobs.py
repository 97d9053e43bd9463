"""Batch jobs on dask.distributed (issue 9): same masks as serial and as
Project.predict, exact geometry, one model load per worker, a failing volume does not
stop the others, a worker that dies mid-job, bad input."""

import os
import shutil
import signal
import time

import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff.cohort import Project
from napari_labeleff.cohort.jobs import job_steps, run_job
from napari_labeleff.io import read_volume

from .scale_synth import project  # noqa: F401 (fixture)
from .scale_synth import make_trained_project, write_images

pytestmark = pytest.mark.slow  # each test starts a Dask cluster (several seconds)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    p, gts = make_trained_project(folder)
    p.close()
    return folder, gts


def _assert_written_like_predict(p, out):
    for rec in p.volumes:
        vol = read_volume(out / f"{rec.id}.nii.gz")
        assert np.array_equal(np.asarray(vol.data), p.predict(rec.id).labels), rec.id
        assert np.allclose(vol.geometry.affine_ras, rec.geometry.affine_ras), rec.id
        assert vol.shape == tuple(rec.shape)


def test_local_cluster_predict_equals_serial_and_project_predict(project, tmp_path):
    local = run_job(project, "predict", out=tmp_path / "dask", scheduler="local", workers=2)
    assert not local.failed, local.failed
    assert set(local.outputs) == set(project.volume_ids)
    assert local.workers == 2 and local.model == str(project.published)
    assert all(r.device for r in local.results.values())
    # every worker loaded the published model once, whatever number of tasks it ran
    per_worker = {}
    for r in local.results.values():
        per_worker.setdefault(r.worker, []).append(r.model_loads)
    assert all(max(loads) == 1 for loads in per_worker.values()), per_worker
    serial = run_job(project, "predict", out=tmp_path / "serial", scheduler="serial")
    for vid in project.volume_ids:
        a = np.asarray(read_volume(local.outputs[vid]).data)
        b = np.asarray(read_volume(serial.outputs[vid]).data)
        assert np.array_equal(a, b), vid
    _assert_written_like_predict(project, tmp_path / "dask")
    # scores were recorded for every volume
    assert all(rec.scores.get("model") == str(project.published) for rec in project.volumes)


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_gpu_worker_uses_its_gpu(project, tmp_path):
    report = run_job(project, "predict", out=tmp_path / "gpu", scheduler="local",
                     workers=1, device="auto")
    assert not report.failed
    assert all(r.device.startswith("cuda") for r in report.results.values())
    _assert_written_like_predict(project, tmp_path / "gpu")


def test_failing_volume_is_reported_and_the_others_finish(project, tmp_path):
    moved = tmp_path / "moved.nii.gz"
    shutil.copy(project.volume("vol02").path, moved)
    project.relocate("vol02", moved)
    moved.unlink()  # now missing
    steps = []
    gen = job_steps(project, "score", out=tmp_path / "scores", scheduler="local", workers=2)
    try:
        while True:
            steps.append(next(gen))
    except StopIteration as stop:
        report = stop.value
    assert [s.step for s in steps] == list(range(len(project.volume_ids) + 1))
    assert set(report.failed) == {"vol02"} and "missing" in report.failed["vol02"]
    assert sum(r.ok for r in report.results.values()) == len(project.volume_ids) - 1
    assert "1 FAILED" in report.summary() and "vol02" in report.summary()
    assert (tmp_path / "scores" / "scores.json").exists()


def test_worker_killed_mid_job_its_volumes_rerun(project, tmp_path):
    from distributed import Client, LocalCluster

    # more volumes so that work is still queued when a worker dies
    for path, _ in write_images(tmp_path / "more", 6, first_seed=900):
        project.add(path)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=40) as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)
        gen = job_steps(project, "predict", out=tmp_path / "out",
                        scheduler=cluster.scheduler_address)
        killed = False
        try:
            while True:
                prog = next(gen)
                if prog.step == 1 and not killed:
                    os.kill(next(iter(pids.values())), signal.SIGKILL)
                    killed = True
        except StopIteration as stop:
            report = stop.value
    assert killed
    assert not report.failed, report.failed
    assert set(report.outputs) == set(project.volume_ids)
    _assert_written_like_predict(project, tmp_path / "out")


def test_export_writes_accepted_masks_and_skips_the_rest(project, trained, tmp_path):
    _, gts = trained
    report = run_job(project, "export", out=tmp_path / "masks", scheduler="serial")
    accepted = [r.id for r in project.volumes if r.status == "accepted"]
    assert sorted(report.outputs) == sorted(accepted)
    assert set(report.skipped) == set(project.volume_ids) - set(accepted)
    for vid in accepted:
        vol = read_volume(tmp_path / "masks" / f"{vid}.nii.gz")
        assert np.array_equal(np.asarray(vol.data), gts[vid])
        assert np.allclose(vol.geometry.affine_ras, project.volume(vid).geometry.affine_ras)


def test_unknown_scheduler_address_fails_fast_with_a_clear_error(project, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(LabelEffError, match=r"could not reach the Dask scheduler at "
                                            r"tcp://127\.0\.0\.1:9 within 2 s"):
        run_job(project, "predict", out=tmp_path / "o", scheduler="127.0.0.1:9",
                connect_timeout=2)
    assert time.monotonic() - t0 < 60  # no hang


def test_no_model_empty_project_and_bad_options(tmp_path):
    images = write_images(tmp_path / "img", 1)
    with Project.create(tmp_path / "empty", class_names=["ball"]) as p:
        with pytest.raises(LabelEffError, match="has no volumes"):
            run_job(p, "score", scheduler="serial")
        p.add(images[0][0])
        with pytest.raises(LabelEffError, match="no published model"):
            run_job(p, "predict", out=tmp_path / "o", scheduler="serial")
        with pytest.raises(LabelEffError, match="kind must be one of"):
            run_job(p, "train", scheduler="serial")
        with pytest.raises(LabelEffError, match="pass out="):
            run_job(p, "predict", scheduler="serial")
        with pytest.raises(LabelEffError, match="workers must be a positive integer"):
            run_job(p, "export", out=tmp_path / "o", workers=0)
        with pytest.raises(LabelEffError, match="volume='nope' is not in project"):
            run_job(p, "export", out=tmp_path / "o", volumes=["nope"], scheduler="serial")
