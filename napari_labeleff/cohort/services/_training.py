"""Training a project's model: snapshot the store's labels, run the learner, publish.

Split so that the training itself can run in another process without the writer lock:
:func:`prepare_training` (writer: snapshot labels, build the learner's ``TrainSpec``),
:func:`run_training` (the learner's ``train_steps`` + validation of the new and the
published checkpoint; a plain generator over picklable values) and
:func:`finish_training` (writer: record the version; publish it only when its
validation score is not worse).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..._errors import LabelEffError
from ..store import VolumeRecord, next_version, now
from ._rules import project_rules

#: With "auto" roles, every n-th labelled volume (in the order added) is held out for
#: validation once at least VALIDATION_MIN labelled volumes exist.
VALIDATION_EVERY = 5
VALIDATION_MIN = 5


@dataclass(frozen=True)
class TrainPlan:
    """Everything a training run needs, picklable (runs in another process).

    Attributes
    ----------
    spec : TrainSpec
        The learner's spec (``cohort/training/_spec.py``).
    version : str
        Version the new checkpoint gets (``spec.out_dir`` = ``models/<version>``).
    run : str
        Run folder name (``spec.run_dir`` = ``runs/<run>``).
    validation : tuple of TrainCase
        Cases both checkpoints are evaluated on before publishing.
    validation_independent : bool
        False when no volume is held out and the labelled cases stand in.
    previous : str or None
        Published version when the plan was made.
    previous_dir : str or None
    resumed : bool
        True when an interrupted run with the same snapshot is continued.
    """

    spec: Any
    version: str
    run: str
    validation: tuple
    validation_independent: bool
    previous: str | None
    previous_dir: str | None
    resumed: bool = False


@dataclass
class TrainOutcome:
    """What :func:`run_training` returns: the learner's report and both scores."""

    plan: TrainPlan
    report: Any
    score: float | None
    previous_score: float | None
    error: str | None = None
    previous_error: str | None = None
    #: Dice of the new model on the validation volumes with full masks (None: none).
    mask_score: float | None = None


@dataclass
class ProjectTrainReport:
    """Result of :meth:`Project.train`: the learner's report plus the publish decision.

    Attributes not listed here (``val_score``, ``epochs``, ``seconds``, ``log``...) are
    read from the learner's ``TrainReport`` (``report.train``).

    Attributes
    ----------
    version : str
        The new checkpoint's version.
    published : bool
        Whether it became the published model.
    score, previous_score : float or None
        Validation scores of the new and of the previously published model.
    previous : str or None
        Previously published version.
    message : str
        One line saying what happened and why.
    train : TrainReport
    """

    version: str
    published: bool
    score: float | None
    previous_score: float | None
    previous: str | None
    message: str
    train: Any = None

    def __getattr__(self, name):
        if name.startswith("__") or name == "train":
            raise AttributeError(name)
        return getattr(self.train, name)


# ---- prepare ---------------------------------------------------------------------------------
def _check_request(store, max_minutes, device) -> None:
    if not isinstance(max_minutes, (int, float)) or not max_minutes > 0:
        raise LabelEffError(f"max_minutes={max_minutes!r} must be a number > 0")
    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise LabelEffError(f"device={device!r} must be auto, cpu, cuda or cuda:N")
    if not store.volumes.ids:
        raise LabelEffError("the project has no volumes; add some first (Project.add)")
    for vid in store.volumes.ids:
        store.volumes.image_path(vid)  # every image must be there (clear message otherwise)


def validation_ids(labelled: list[VolumeRecord]) -> set[str]:
    """Volumes held out for validation: role "validation", plus every
    :data:`VALIDATION_EVERY`-th "auto" one from :data:`VALIDATION_MIN` labelled volumes
    on; at least one labelled volume stays for training."""
    explicit = {v.id for v in labelled if v.role == "validation"}
    auto = [v for v in labelled if v.role == "auto"]
    if len(labelled) >= VALIDATION_MIN:
        explicit |= {v.id for i, v in enumerate(auto) if i % VALIDATION_EVERY == VALIDATION_EVERY - 1}
    if len(explicit) == len(labelled):  # keep at least one volume to train on
        explicit -= {labelled[0].id}
    return explicit


def _digest(store, stored: dict, held: set, seed: int, options: dict) -> str:
    """What a run depends on: a rerun with the same digest resumes the pending run."""
    published = store.models.published
    digest = hashlib.sha256(json.dumps(
        {"classes": store.class_names, "held": sorted(held), "seed": seed,
         "options": {k: repr(v) for k, v in sorted(options.items())},
         "published": published.version if published else None}).encode())
    for vid in store.volumes.ids:
        digest.update(vid.encode())
        for key in ("scribbles", "mask"):
            arr = stored[vid][key]
            digest.update(b"-" if arr is None else hashlib.sha256(arr.tobytes()).digest())
        digest.update(json.dumps(stored[vid]["boxes"]).encode())
    return digest.hexdigest()


def _run_names(store, digest: str) -> tuple[str, str, bool]:
    """(version, run folder, resumed) of the run to make."""
    pending = store.models.pending_run()
    models = store.models.records
    resumed = bool(pending and pending.get("digest") == digest
                   and (store.folder / "runs" / pending["run"]).is_dir()
                   and not any(m["version"] == pending["version"] for m in models))
    if resumed:
        return pending["version"], pending["run"], True
    taken = models + ([{"version": pending["version"]}] if pending else [])
    version = next_version(taken, store.folder / "models")
    return version, f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{version}", False


def _snapshot_cases(store, stored: dict, held: set, run_dir, resumed: bool):
    """(cases, validation cases): labels snapshots written in ``run_dir/labels``."""
    from ..training import TrainCase, write_labels_snapshot

    cases, validation = [], []
    for rec in store.volumes.records:
        s = stored[rec.id]
        if rec.status == "new":
            cases.append(TrainCase(rec.id, rec.path, None, "unlabeled"))
            continue
        npz = run_dir / "labels" / f"{rec.id}.npz"
        if not (resumed and npz.exists()):
            try:
                write_labels_snapshot(npz, s["scribbles"], mask=s["mask"], boxes=s["boxes"] or None)
            except OSError as err:
                raise LabelEffError(f"cannot write {npz}: {err.strerror or err}") from err
        role = "validation" if rec.id in held else "labelled"
        case = TrainCase(rec.id, rec.path, str(npz), role)
        cases.append(case)
        if role == "validation":
            validation.append(case)
    return cases, validation


def _project_rule_option(store) -> dict:
    """``{"rules": [(relation, a, b), ...]}``: the project's pair rules (``rules.json``)
    with 1-based class ids, for the learner's rule penalty (``rule_weight``); ``{}``
    without rules. A rules file that cannot be read raises, as in refine."""
    rules = project_rules(store)
    if rules is None:
        return {}
    # the pair relations: a second class and nothing else (within also has a distance)
    pairs = [(r.relation, r.a, r.b) for r in rules if r.b is not None and r.relation != "within"]
    return {"rules": pairs} if pairs else {}


def prepare_training(store, *, max_minutes: float = 10.0, device: str = "auto", seed: int = 0,
                     **options) -> TrainPlan:
    """See :meth:`Project.prepare_training` (``store``: a writer's ProjectStore).

    With ``rule_weight`` > 0 (the caller's or the learner's default) and no ``rules``
    option, the project's pair rules go into the spec's options (the learner penalises
    them); with no weight they stay out, so editing the rules does not change the run's
    digest (an interrupted run still resumes)."""
    from ..training import TrainSpec

    store.file.writer("train")
    _check_request(store, max_minutes, device)
    stored = {vid: store.labels.read(vid) for vid in store.volumes.ids}
    for vid, s in stored.items():
        store.labels.refresh(vid, s["scribbles"], s["boxes"])
        store.labels.adopt_classes(s["classes"], vid=vid)  # no session needed (the GUI may hold it)
    labelled = [v for v in store.volumes.records if v.status != "new"]
    if not labelled:
        raise LabelEffError(
            "no labels to train on: draw scribbles or boxes on at least one volume "
            "(set_weak_labels), or accept / import a mask"
        )
    held = validation_ids(labelled)
    from ..training import DEFAULTS

    weighted = float(options.get("rule_weight", DEFAULTS["rule_weight"])) > 0
    if weighted and "rules" not in options:  # the call's rules (() = none), else the project's
        options = {**options, **_project_rule_option(store)}
    digest = _digest(store, stored, held, seed, options)
    version, run, resumed = _run_names(store, digest)
    run_dir = store.folder / "runs" / run
    (run_dir / "labels").mkdir(parents=True, exist_ok=True)
    (store.folder / "models").mkdir(exist_ok=True)
    cases, validation = _snapshot_cases(store, stored, held, run_dir, resumed)
    independent = bool(validation)
    if not independent:
        validation = [c for c in cases if c.role == "labelled"]
    published = store.models.published
    if published is not None and list(published.class_names) != store.class_names:
        published = None  # other classes: neither a warm start nor a comparison
    previous_dir = str(store.models.folder(published)) if published else None
    spec = TrainSpec(
        cases=tuple(cases), class_names=tuple(store.class_names),
        out_dir=str(store.models.folder(version)), run_dir=str(run_dir),
        init_checkpoint=previous_dir,
        options={"max_minutes": float(max_minutes), "device": device, "seed": int(seed), **options},
    )
    store.models.start_run(run, version, digest)
    return TrainPlan(spec, version, run, tuple(validation), independent,
                     published.version if published else None, previous_dir, resumed)


# ---- run --------------------------------------------------------------------------------------
def run_training(plan: TrainPlan, *, background: bool = False):
    """Train (the learner's ``train_steps(plan.spec)``) and validate both checkpoints.

    Needs no :class:`Project` and no lock, so it can run anywhere (a worker thread);
    pass its return value to :meth:`Project.finish_training`.

    Parameters
    ----------
    plan : TrainPlan
    background : bool
        Train in a spawned child process (``training.train_in_background``): the
        caller's process (the viewer) keeps its memory and GIL. Validation runs here.

    Yields
    ------
    TrainProgress, then engine Progress for the validation step.

    Returns
    -------
    TrainOutcome or None
        None when the background process reported a cancel.
    """
    from ...engine import Progress
    from .. import prediction, training

    train_steps = training.train_in_background if background else training.train_steps
    report = yield from train_steps(plan.spec)
    if report is None:
        return None
    cases = list(plan.validation)
    yield Progress(0, 2, f"validating {plan.version} on {len(cases)} volume(s)")
    score, mask_score, error = _evaluate(prediction.evaluate, plan.spec.out_dir, cases)
    previous_score = previous_error = None
    if plan.previous_dir is not None:
        yield Progress(1, 2, f"validating the published {plan.previous}")
        previous_score, _, previous_error = _evaluate(prediction.evaluate, plan.previous_dir, cases)
    yield Progress(2, 2, "validated")
    return TrainOutcome(plan, report, score, previous_score, error, previous_error,
                        mask_score)


def _evaluate(evaluate, folder, cases):
    """(score, score on full masks only or None, error or None) of one checkpoint."""
    try:
        score, mask_score = evaluate(folder, cases, with_mask_score=True)
        score = float(score)
    except Exception as err:  # noqa: BLE001 - a damaged checkpoint is reported, not raised
        return None, None, f"{type(err).__name__}: {err}"
    if not math.isfinite(score):
        return None, None, f"score {score}"
    return score, mask_score, None


# ---- finish -----------------------------------------------------------------------------------
def _fmt(score) -> str:
    return "n/a" if score is None else f"{score:.4f}"


def publish_decision(outcome: TrainOutcome, current: str | None) -> tuple[str, bool, str]:
    """(status, published, message) of a finished run; ``current``: the version
    published now (possibly another than when the plan was made)."""
    plan = outcome.plan
    if outcome.error is not None:
        status, published = "damaged", False
        message = (f"model {plan.version} was not published: its checkpoint could not be "
                   f"evaluated ({outcome.error}); {current or 'no model'} stays published")
    elif current is not None and current != plan.previous and plan.previous is not None:
        status, published = "kept", False
        message = (f"model {plan.version} was not published: {current} was published "
                   "meanwhile; train again to compare them")
    elif plan.previous is None or outcome.previous_score is None or (
            outcome.score is not None and outcome.score >= outcome.previous_score):
        status, published = "published", True
        against = ("no comparable model was published" if plan.previous is None else
                   f"{plan.previous} could not be evaluated ({outcome.previous_error})"
                   if outcome.previous_score is None else
                   f"{plan.previous} scored {outcome.previous_score:.4f}")
        message = f"published model {plan.version} (validation {_fmt(outcome.score)}; {against})"
    else:
        status, published = "kept", False
        message = (f"model {plan.version} was not published: validation {_fmt(outcome.score)} "
                   f"< {outcome.previous_score:.4f} of the published {plan.previous}")
    if not plan.validation_independent:
        message += " [validated on training volumes: no volume is held out]"
    return status, published, message


def finish_training(store, outcome: TrainOutcome) -> ProjectTrainReport:
    """See :meth:`Project.finish_training` (``store``: a writer's ProjectStore)."""
    store.file.writer("finish training")
    if not isinstance(outcome, TrainOutcome):
        raise LabelEffError(
            f"outcome must be the TrainOutcome of run_training, got {type(outcome).__name__} "
            "(a cancelled run has none: train again to resume it)"
        )
    plan = outcome.plan
    status, published, message = publish_decision(outcome, store.file.data.get("published"))
    entry = {
        "version": plan.version, "created": now(), "score": outcome.score,
        "mask_score": outcome.mask_score,
        "status": status, "reason": message, "run": plan.run,
        "class_names": list(plan.spec.class_names),
        "validation": [c.volume_id for c in plan.validation],
        "validation_independent": plan.validation_independent,
        # volumes whose masks it trained on: its Dice on them is no running score
        "trained_on": [c.volume_id for c in plan.spec.cases if c.role == "labelled"],
    }
    store.models.record_version(entry, published)
    return ProjectTrainReport(plan.version, published, outcome.score, outcome.previous_score,
                              plan.previous, message, outcome.report)
