"""Batch jobs over a cohort project on ``dask.distributed``: predict, score, export.

The client (the process holding the project) sends each worker small task
descriptions: the volume's record (image path, series, shape, checksum, geometry), the
published checkpoint folder and the output path, never arrays. A worker reads the
image itself, loads the published model once (a cache in the worker process keyed by
checkpoint folder, device and the weights file's modification time), predicts, and
writes its output atomically with the volume's exact geometry
(:func:`napari_labeleff.io.write_labels`). The client collects results with
``as_completed`` (progress), records scores into the project (a read-only client,
beside napari holding the project, hands them to the writer through the project's
inbox and writes them to ``OUT/scores.json``), and reports every
volume that failed (missing or changed file, unreadable, out of memory) while the
others finish. A worker that dies has its tasks rerun by the scheduler on another
worker (Dask's ``allowed_failures``); a task that keeps killing workers is reported as
failed.

``scheduler="local"`` starts a :class:`distributed.LocalCluster` (processes, one thread
each); an address (``tcp://host:8786``) runs the same job on an existing cluster
(dask-jobqueue, Kubernetes...), whose workers must see the same paths;
``"serial"`` runs the same task function in this process, one volume after the other
(the reference the Dask runs are compared with).

Kinds
-----
``predict``  ``OUT/<volume id>.nii.gz``: the published model's labels, equal to
             ``Project.predict(volume_id).labels``; the volume's scores are recorded
             (and written to ``OUT/scores.json``).
``score``    the model's scores of every volume (mean uncertainty, foreground
             uncertainty, estimated quality) recorded in the project; with ``out``
             also ``OUT/scores.json``.
``export``   ``OUT/<volume id>.nii.gz``: the accepted or imported mask (no model
             needed); volumes without one are skipped (listed, not failed).

Existing ``OUT/<volume id>.nii.gz`` files are never replaced without ``overwrite``.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..._errors import LabelEffError
from ..._steps import drain
from ...engine import Progress
from ...io.atomic import atomic_write_text
from ..prediction import cached_model, model_loads, summarise
from ..store import ProjectStore, VolumeRecord

JOB_KINDS = ("predict", "score", "export")
#: Jobs that write OUT/<volume id>.nii.gz files.
WRITING_KINDS = ("predict", "export")
#: Seconds a connection to a scheduler address may take before the job gives up.
CONNECT_TIMEOUT = 10.0


@dataclass
class VolumeResult:
    """What one task did.

    Attributes
    ----------
    volume_id : str
    ok : bool
    output : str or None
        Written file (predict/export).
    scores : dict
        Model scores (predict/score).
    error : str or None
        Why it failed (or why it was skipped, with ``skipped``).
    skipped : bool
    worker : str
        Worker address (or ``"serial"``).
    seconds : float
    model_loads : int
        Models this worker process had loaded when the task finished (cache check).
    device : str
        Torch device the model ran on ("" for export).
    """

    volume_id: str
    ok: bool
    output: str | None = None
    scores: dict = field(default_factory=dict)
    error: str | None = None
    skipped: bool = False
    worker: str = "serial"
    seconds: float = 0.0
    model_loads: int = 0
    device: str = ""


@dataclass
class JobReport:
    """Outcome of a batch job.

    Attributes
    ----------
    kind : str
    results : dict of str to VolumeResult
        Per volume id.
    model : str or None
        Published model version used (predict/score).
    scheduler : str
        ``"serial"``, ``"local"`` or the scheduler's address.
    workers : int
        Workers the job ran on.
    seconds : float
        Wall time of the whole job (cluster start included for ``"local"``).
    out : str or None
    handed_over : str or None
        The inbox file through which a read-only job handed its scores to the writer
        (None when they were recorded directly, or there were none).
    """

    kind: str
    results: dict
    model: str | None
    scheduler: str
    workers: int
    seconds: float
    out: str | None = None
    #: Inbox file through which a read-only job handed its scores to the writer.
    handed_over: str | None = None

    @property
    def failed(self) -> dict:
        """volume id -> error message of the volumes that failed."""
        return {v: r.error for v, r in self.results.items() if not r.ok and not r.skipped}

    @property
    def skipped(self) -> dict:
        """volume id -> why it was skipped (export of a volume without a mask)."""
        return {v: r.error for v, r in self.results.items() if r.skipped}

    @property
    def outputs(self) -> dict:
        """volume id -> written file."""
        return {v: r.output for v, r in self.results.items() if r.output}

    def summary(self) -> str:
        done = sum(r.ok for r in self.results.values())
        text = (f"{self.kind}: {done} of {len(self.results)} volumes done in "
                f"{self.seconds:.1f} s on {self.workers} worker(s) ({self.scheduler})")
        if self.skipped:
            text += f"; {len(self.skipped)} skipped"
        if self.handed_over:
            text += f"; scores handed to the project's writer ({Path(self.handed_over).name})"
        if self.failed:
            text += f"; {len(self.failed)} FAILED: " + "; ".join(
                f"{v}: {e}" for v, e in self.failed.items())
        return text


# ---- worker side ------------------------------------------------------------------------
def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "serial"


def _read_checked(record: dict):
    """Read the volume as ``Project.read_image`` does (same reader, same checks)."""
    from ...io import read_volume
    from ...session import volume_checksum

    path = Path(record["path"])
    if not path.exists():
        raise LabelEffError(f"image {path} is missing (moved or deleted)")
    vol = read_volume(path, series=record.get("series"))
    if tuple(vol.shape) != tuple(record["shape"]) or vol.n_channels != record["channels"]:
        raise LabelEffError(f"{path} now has shape {vol.shape} and {vol.n_channels} "
                            f"channel(s); the project recorded {tuple(record['shape'])}")
    if volume_checksum(vol.data) != record["checksum"]:
        raise LabelEffError(f"the content of {path} changed since it was added")
    return vol


def _geometry(record: dict):
    return VolumeRecord.from_dict(record).geometry


def run_task(kind: str, record: dict, *, checkpoint: str | None, out_path: str | None,
             class_names: tuple, device: str = "auto", project: str | None = None,
             threads: int = 1) -> VolumeResult:
    """One volume of a job (runs on a worker; also the serial path).

    Exceptions are caught and returned as a failed :class:`VolumeResult`, except
    those that kill the process (the scheduler reruns its tasks elsewhere).
    """
    t0 = time.perf_counter()
    vid = record["id"]
    res = VolumeResult(vid, ok=False, worker=_worker_name())
    try:
        if kind == "export":
            _export(res, record, project, out_path, class_names)
        else:
            import torch

            if threads:
                torch.set_num_threads(int(threads))
            vol = _read_checked(record)
            model = cached_model(checkpoint, device)
            res.device = str(model.device)
            probs = np.asarray(model.predict(np.asarray(vol.data), vol.spacing),
                               dtype=np.float32)
            k1 = len(class_names) + 1
            if probs.shape != (k1, *record["shape"]):
                raise LabelEffError(f"model returned probabilities of shape {probs.shape}; "
                                    f"expected {(k1, *record['shape'])}")
            labels, _, scores = summarise(probs)
            res.scores = {"model": model.version, **scores}
            if kind == "predict":
                from ...io import write_labels

                written = write_labels(out_path, labels, vol.geometry,
                                       label_names=["background", *class_names],
                                       source_path=record["path"])
                res.output = str(written[0])
            res.ok = True
    except MemoryError:
        res.error = "out of memory"
    except Exception as err:  # noqa: BLE001 - reported per volume; others go on
        msg = str(err).splitlines()[0] if str(err) else ""
        res.error = f"{type(err).__name__}: {msg}" if not isinstance(err, LabelEffError) else msg
        if not isinstance(err, (LabelEffError, OSError)):
            res.error += " | " + traceback.format_exc(limit=2).splitlines()[-1]
    res.seconds = time.perf_counter() - t0
    res.model_loads = model_loads()
    return res


def _export(res: VolumeResult, record: dict, project: str, out_path: str,
            class_names: tuple) -> None:
    from ...io import write_labels

    store = ProjectStore.open(project, read_only=True)
    try:
        mask = store.labels.read(record["id"]).get("mask")
    finally:
        store.file.close()
    if mask is None:
        res.skipped, res.error = True, f"no accepted or imported mask (status {record['status']})"
        return
    written = write_labels(out_path, np.asarray(mask, np.uint8), _geometry(record),
                           label_names=["background", *class_names],
                           source_path=record["path"])
    res.output, res.ok = str(written[0]), True


# ---- client side ------------------------------------------------------------------------
def _check(kind, workers, scheduler, out) -> None:
    if kind not in JOB_KINDS:
        raise LabelEffError(f"kind must be one of {JOB_KINDS}, got {kind!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise LabelEffError(f"workers must be a positive integer, got {workers!r}")
    if not isinstance(scheduler, str) or not scheduler:
        raise LabelEffError(
            f"scheduler must be 'local', 'serial' or a scheduler address such as "
            f"'tcp://host:8786', got {scheduler!r}")
    if kind in ("predict", "export") and out is None:
        raise LabelEffError(f"a {kind} job writes files: pass out= (a folder)")


def _connect(scheduler: str, workers: int, timeout: float, threads: int):
    """(client, cluster or None)."""
    from distributed import Client, LocalCluster

    if scheduler == "local":
        cluster = LocalCluster(n_workers=int(workers), threads_per_worker=int(threads),
                               processes=True, dashboard_address=None, silence_logs=40)
        return Client(cluster), cluster
    address = scheduler if "://" in scheduler else f"tcp://{scheduler}"
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError) as err:
        raise LabelEffError(
            f"could not reach the Dask scheduler at {address} within {timeout:g} s "
            f"({type(err).__name__}); start it (dask scheduler) or use --scheduler local"
        ) from err
    return client, None


def job_steps(project, kind: str, *, out=None, scheduler: str = "local", workers: int = 2,
              volumes=None, device: str = "auto", threads_per_worker: int = 1,
              connect_timeout: float = CONNECT_TIMEOUT, overwrite: bool = False
              ) -> Generator[Progress, None, JobReport]:
    """Run a batch job over a project's volumes, yielding progress.

    Parameters
    ----------
    project : Project
        An open project. Jobs only read it, so it may be open read-only while another
        process (napari) holds it for writing. The model's scores of the volumes
        (predict, score) are recorded at once in a writer; a read-only project hands
        them to the writer (:meth:`Project.hand_over_scores`: recorded now if no one
        holds the project, else when it is next opened for writing), and with ``out``
        they are also written to ``OUT/scores.json``.
    kind : {"predict", "score", "export"}
        See the module docstring.
    out : str or Path, optional
        Output folder (created); required for predict and export.
    scheduler : str
        ``"local"`` (a new LocalCluster: ``workers`` processes, ``threads_per_worker``
        threads each), ``"serial"`` (this process) or a scheduler address.
    workers : int
        Workers of the local cluster.
    volumes : sequence of str, optional
        Volume ids (default: every volume of the project).
    device : str
        Torch device on the workers (``"auto"`` uses each worker's GPU when it has one).
    threads_per_worker : int
        Threads per worker process (also torch's thread count there).
    connect_timeout : float
        Seconds to reach a scheduler address before a clear error.
    overwrite : bool
        Replace ``OUT/<volume id>.nii.gz`` files of an earlier run (predict, export);
        without it such files stop the job before it starts, named.

    Yields
    ------
    Progress
        One per finished volume (``step`` volumes of ``total`` done).

    Returns
    -------
    JobReport

    Raises
    ------
    LabelEffError
        Bad kind/workers/scheduler, missing ``out``, an empty project, unknown volume
        ids, no published model (predict/score), an unreachable scheduler, outputs
        that exist already (without ``overwrite``).
    """
    _check(kind, workers, scheduler, out)
    ids = list(project.volume_ids) if volumes is None else [str(v) for v in volumes]
    if not ids:
        raise LabelEffError(f"project {project.folder.name} has no volumes: add some first "
                            "(Project.add / labeleff project add)")
    records = {v: project.volume(v).to_dict() for v in ids}  # unknown ids raise here
    checkpoint, version = None, None
    if kind in ("predict", "score"):
        version = project.require_published().version
        checkpoint = str(project.model_dir(version))
    out_dir = None if out is None else Path(out).expanduser().absolute()
    if kind in WRITING_KINDS:
        _refuse_overwrite(kind, out_dir, records, overwrite)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    common = dict(checkpoint=checkpoint, class_names=tuple(project.class_names),
                  device=device, project=str(project.folder), threads=threads_per_worker)
    tasks = {v: (kind, records[v], None if out_dir is None or kind == "score"
                 else str(out_dir / f"{v}.nii.gz")) for v in ids}
    t0 = time.perf_counter()
    results: dict = {}
    yield Progress(0, len(ids), f"{kind}: starting ({scheduler})")
    run = _run_serial if scheduler == "serial" else _run_dask
    n_workers = yield from run(project, tasks, common, results, scheduler=scheduler,
                               workers=workers, timeout=connect_timeout, threads=threads_per_worker)
    report = JobReport(kind, {v: results[v] for v in ids}, version, scheduler, n_workers,
                       time.perf_counter() - t0, None if out_dir is None else str(out_dir))
    scores = {v: r.scores for v, r in report.results.items() if r.ok and r.scores}
    if kind in ("predict", "score") and out_dir is not None:
        atomic_write_text(out_dir / "scores.json", json.dumps(scores, indent=1))
    if project.read_only and scores:
        report.handed_over = project.hand_over_scores(scores)
    return report


def _refuse_overwrite(kind: str, out_dir: Path | None, records: dict, overwrite: bool) -> None:
    """Raise when ``out_dir`` holds outputs this job would replace (unless ``overwrite``)."""
    if overwrite or out_dir is None or not out_dir.is_dir():
        return
    writes = [v for v, r in records.items() if kind == "predict" or r.get("status") in ("accepted", "imported")]
    existing = [f"{v}.nii.gz" for v in writes if (out_dir / f"{v}.nii.gz").exists()]
    if existing:
        shown = ", ".join(existing[:10]) + (f" and {len(existing) - 10} more" if len(existing) > 10 else "")
        raise LabelEffError(
            f"{out_dir} already holds {len(existing)} output(s) this {kind} job would replace: "
            f"{shown}; pass overwrite=True (labeleff project {kind} --overwrite) to replace them, "
            "or choose another output folder"
        )


def _run_serial(project, tasks: dict, common: dict, results: dict, **_):
    """Generator: every task in this process, in order; returns the worker count (1)."""
    for i, (v, (kind, record, out_path)) in enumerate(tasks.items(), start=1):
        results[v] = run_task(kind, record, out_path=out_path, **common)
        _record(project, results[v])
        yield Progress(i, len(tasks), _message(kind, results[v]))
    return 1


def _run_dask(project, tasks: dict, common: dict, results: dict, *, scheduler, workers,
              timeout, threads):
    """Generator: the tasks on a Dask cluster, as they finish; returns the worker count."""
    from distributed import as_completed

    client, cluster = _connect(scheduler, workers, timeout, threads)
    try:
        n_workers = len(client.scheduler_info().get("workers", {})) or int(workers)
        futures = {client.submit(run_task, kind, record, out_path=out_path,
                                 key=f"labeleff-{kind}-{v}-{time.time_ns()}",
                                 pure=False, **common): v
                   for v, (kind, record, out_path) in tasks.items()}
        for i, fut in enumerate(as_completed(futures), start=1):
            v = futures[fut]
            try:
                results[v] = fut.result()
            except Exception as err:  # noqa: BLE001 - e.g. KilledWorker: reported
                results[v] = VolumeResult(v, ok=False, error=(
                    f"worker failed ({type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else 'no message'})"))
            _record(project, results[v])
            yield Progress(i, len(tasks), _message(tasks[v][0], results[v]))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return n_workers


def _message(kind: str, r: VolumeResult) -> str:
    state = "done" if r.ok else ("skipped" if r.skipped else "FAILED")
    return f"{kind} {r.volume_id}: {state}"


def _record(project, r: VolumeResult) -> None:
    if r.ok and r.scores and not project.read_only:
        project.record_scores(r.volume_id, **r.scores)


def run_job(project, kind: str, **kwargs) -> JobReport:
    """Blocking :func:`job_steps` (same arguments); returns the :class:`JobReport`."""
    return drain(job_steps(project, kind, **kwargs))
