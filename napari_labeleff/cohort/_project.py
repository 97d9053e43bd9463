"""The cohort project: a thin facade over the store and the services.

:class:`Project` is what users, the CLI and the GUI hold. It keeps no state of its
own beyond the rooms it puts together:

* ``store/``     the project folder (persistence only): ``project.json``, volumes,
                 per-volume annotation stores, the annotation log, model versions;
* ``services/``  training orchestration and publishing, prediction with scores,
                 refine with the model as prior, label QA, volume suggestions;
* ``training/``, ``prediction/`` the learner and the trained model (used by services);
* ``jobs/``      batch jobs on Dask (``napari_labeleff.cohort.jobs``).

Crash safety: ``project.json`` is replaced atomically after its current content was
copied to ``project.json.prev``; in-memory state changes only after a successful write.
Per-volume annotations go through :class:`~napari_labeleff.session.AnnotationSession`,
whose chunk and metadata writes are atomic too (see ``store/``).
"""

from __future__ import annotations

from pathlib import Path

from .._steps import drain
from . import services
from .services import (PRIOR_MIN_DICE, ProjectTrainReport, TrainOutcome, TrainPlan, prior_gate,
                       run_training)
from .store import STATUSES, ProjectStore, PublishedModel, VolumeRecord, check_class_names
from .prediction import Prediction

__all__ = ["PRIOR_MIN_DICE", "STATUSES", "Prediction", "Project", "ProjectTrainReport",
           "PublishedModel", "TrainOutcome", "TrainPlan", "VolumeRecord", "prior_gate",
           "run_training"]


class Project:
    """A cohort project folder (see ``store/__init__.py`` for the layout).

    Create with :meth:`create`, open with :meth:`open`; :meth:`close` (or ``with``)
    releases the writer lock. Every mutating method needs a writer
    (``read_only=False``) and saves at once. One object is used from one thread at a
    time (a worker thread that only reads can open its own ``read_only=True`` view).
    """

    def __init__(self, store: ProjectStore):
        self.store = store
        self._predictor = services.Predictor(store)
        self._work = services.WorkLog()

    # ---- create / open / close -------------------------------------------------------------
    @classmethod
    def create(cls, folder, class_names) -> "Project":
        """Create a new project in ``folder`` (absent or empty) and open it for writing.

        Parameters
        ----------
        folder : str or Path
        class_names : sequence of str
            Structures (background excluded), e.g. ``["left atrium"]``.
        """
        return cls(ProjectStore.create(folder, class_names))

    @classmethod
    def open(cls, folder, read_only: bool = False) -> "Project":
        """Open an existing project.

        Parameters
        ----------
        folder : str or Path
        read_only : bool
            Do not take the writer lock (another process may be writing); every
            mutating method then raises. Reading jobs (predict, export, score, QA,
            status) work this way beside a writer. A writer records, when it opens,
            the scores such readers left in the inbox (:meth:`hand_over_scores`).

        Raises
        ------
        LabelEffError
            Not a project; another process holds the writer lock; ``project.json`` and
            its previous generation are both unreadable.
        """
        return cls(ProjectStore.open(folder, read_only, stacklevel=3))

    def reload(self) -> None:
        """Re-read ``project.json`` (a read-only view following another writer)."""
        before = self.store.file.data.get("published")
        self.store.file.reload(stacklevel=3)
        if self.store.file.data.get("published") != before:
            self._predictor.forget()
        self._predictor.last = None

    def close(self) -> None:
        """Release the writer lock (idempotent). The object stays readable."""
        self.store.file.close()
        self._predictor.forget()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (f"Project({str(self.folder)!r}, {len(self.volumes)} volumes, "
                f"classes={self.class_names}, published={self.published!r})")

    @property
    def folder(self) -> Path:
        return self.store.folder

    @property
    def read_only(self) -> bool:
        return self.store.read_only

    @property
    def _data(self) -> dict:
        """The current ``project.json`` content (read it; tests and debugging)."""
        return self.store.file.data

    # ---- classes ---------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        """Structures (background excluded); structure c is ``class_names[c - 1]``."""
        return self.store.class_names

    def add_class(self, name: str) -> int:
        """Append a structure; returns its index c. Models trained before it need retraining."""
        file = self.store.file
        file.writer("add a class")
        names = check_class_names([*self.class_names, name])
        data = file.edit()
        data["class_names"] = names
        file.commit(data)
        return len(names)

    def adopt_classes(self, names, *, vid: str | None = None) -> None:
        """Check a volume's structure list against the project's: the project adopts
        structures appended at the end (e.g. added in the GUI); a volume may lack the
        project's newest ones (added after its store was made). Anything else (renamed,
        removed, reordered) is an error naming both lists."""
        self.store.labels.adopt_classes(names, vid=vid)

    # ---- volumes -------------------------------------------------------------------------------
    @property
    def volumes(self) -> list[VolumeRecord]:
        """All volumes, in the order added."""
        return self.store.volumes.records

    @property
    def volume_ids(self) -> list[str]:
        return self.store.volumes.ids

    def volume(self, vid: str) -> VolumeRecord:
        """The record of volume ``vid``."""
        return self.store.volumes.get(vid)

    def add(self, path, *, series: str | None = None, volume_id: str | None = None) -> str:
        """Add one volume (a file, a DICOM series folder or a zarr store); return its id.

        Parameters
        ----------
        path : str or Path
            Anything :func:`~napari_labeleff.io.read_volume` reads. A folder of several
            files goes through :meth:`add_folder`.
        series : str, optional
            DICOM Series Instance UID (default: the folder's largest series).
        volume_id : str, optional
            Id to use instead of the one made from the file name.

        Raises
        ------
        LabelEffError
            Unreadable file; content already in the project; a channel count that
            differs from the project's. A spacing far from the project's median warns.
        """
        return self.store.volumes.add(path, series=series, volume_id=volume_id, stacklevel=3)

    def add_folder(self, folder, *, recursive: bool = False) -> tuple[list[str], list[str]]:
        """Add every readable volume in ``folder`` (files, DICOM series and zarr stores
        in it; with ``recursive`` also in subfolders). A folder that is itself one DICOM
        series or zarr store is added as one volume.

        Returns
        -------
        added : list of str
            Volume ids, in file-name order.
        skipped : list of str
            ``"<path>: <reason>"`` for entries that could not be added (unreadable,
            already present, wrong channel count...). Other entries (not volumes) are
            ignored silently.
        """
        return self.store.volumes.add_folder(folder, recursive=recursive, stacklevel=3)

    def remove(self, vid: str) -> None:
        """Remove a volume from the project. Its annotation store is moved to
        ``<project>/trash/`` (nothing drawn is deleted)."""
        self.store.volumes.remove(vid)

    def relocate(self, vid: str, new_path) -> None:
        """Point volume ``vid`` at a moved image; refuses a file with other content."""
        self.store.volumes.relocate(vid, new_path)

    def set_role(self, vid: str, role: str) -> None:
        """``"validation"`` (held out of training, used to decide publishing),
        ``"train"`` (never held out) or ``"auto"`` (the store decides)."""
        self.store.volumes.set_role(vid, role)

    def _update_volume(self, vid: str, **changes) -> None:
        self.store.volumes.update(vid, **changes)

    def image_path(self, vid: str) -> Path:
        """The image path of ``vid``; a clear error when the file is gone."""
        return self.store.volumes.image_path(vid)

    def read_image(self, vid: str, *, verify: bool = True):
        """Read the image of ``vid`` (a :class:`~napari_labeleff.io.Volume`).

        With ``verify`` its content checksum must equal the one recorded at :meth:`add`
        (a different file at the same path is refused).
        """
        return self.store.volumes.read_image(vid, verify=verify)

    # ---- per-volume annotation stores -------------------------------------------------------------
    def store_path(self, vid: str) -> Path:
        """The volume's AnnotationSession store (``volumes/<vid>/<checksum>.labeleff.zarr``)."""
        return self.store.labels.store_path(vid)

    def store_dir(self, vid: str) -> Path:
        """Folder to pass as ``store_dir`` to ``AnnotationSession.open`` for ``vid``."""
        return self.store_path(vid).parent

    def session(self, vid: str):
        """Open the volume's annotation session for writing (close it when done, or use
        ``with``); its classes are brought in line with the project's first. While it is
        open, nobody else can write this volume."""
        return self.store.labels.session(vid)

    def labels(self, vid: str) -> dict:
        """What is stored for ``vid`` (read now from disk, without the writer lock).

        Returns
        -------
        dict
            ``scribbles`` (Z, Y, X) uint8, ``boxes`` list of 7-tuples, ``mask``
            (Z, Y, X) uint8 or None (the accepted or imported mask, by status),
            ``masks`` (name -> array: every saved mask, e.g. the GUI's ``"final"``),
            ``classes`` (structure names stored with the volume).
        """
        return self.store.labels.read(vid)

    # ---- weak labels, masks, status ---------------------------------------------------------------
    def set_weak_labels(self, vid: str, scribbles=None, boxes=None, *, seconds: float = 0.0,
                        session=None) -> None:
        """Store scribbles and/or boxes of ``vid`` (engine conventions) and log the change.

        Parameters
        ----------
        vid : str
        scribbles : array, shape (Z, Y, X), optional
            0 unannotated, 1 background, c + 1 structure c (c = 1..K). Replaces the
            stored scribbles; None keeps them.
        boxes : sequence of (c, z0, y0, x0, z1, y1, x1), optional
            Replaces the stored boxes; None keeps them.
        seconds : float
            Annotation time to log for this change.
        session : AnnotationSession, optional
            The volume's session when the caller holds it open (the GUI); else one is
            opened and closed here.
        """
        self.store.labels.set_weak(vid, scribbles, boxes, seconds=seconds, session=session)

    def log_scribble_change(self, vid: str, old, new, *, seconds: float = 0.0) -> int:
        """Log one interaction that changed scribbles ``old`` -> ``new`` (same shape:
        the whole volume or the touched region): voxels per class drawn / erased.
        Returns the number of voxels changed (0: nothing logged)."""
        self.store.file.writer("log annotations")
        self.volume(vid)
        entries = self.store.labels.scribble_entries(old, new)
        if entries:
            self.store.log_entries(vid, entries, seconds)
        return sum(e["voxels"] for e in entries)

    def refresh_status(self, vid: str | None = None, *, scribbles=None, boxes=None) -> None:
        """Re-derive "new"/"weak" from the stored scribbles and boxes (after they were
        edited through the session directly, e.g. in the GUI), or from the given
        in-memory ``scribbles`` / ``boxes`` of ``vid``. Accepted and imported volumes
        keep their status."""
        self.store.labels.refresh_status(vid, scribbles=scribbles, boxes=boxes)

    def accept(self, vid: str, mask, *, seconds: float = 0.0, session=None,
               replace: bool = False, score: bool = True) -> None:
        """Accept ``mask`` ((Z, Y, X) integers 0..K) as the volume's label; status
        "accepted". ``session``: as in :meth:`set_weak_labels`.

        A volume that has an accepted (or imported) mask already keeps it unless
        ``replace=True``: without it this raises a :class:`LabelEffError` and nothing
        changes.

        With ``score`` (default) the published model's draft is first scored against
        the mask, before any model trains on it: the running score of :meth:`curve`
        (a model prediction, ~1 s on CPU for a 2 M voxel volume)."""
        self.store.file.writer("accept a mask")
        version, dice = services.score_before_accept(self, vid, mask) if score else (None, None)
        logged = self.annotation_totals().get(vid, {})  # the work before this accept
        entry = services.curve_entry(self, version, dice, self._work.get(vid), logged)
        self.store.labels.accept(vid, mask, seconds=seconds, session=session, replace=replace,
                                 curve=entry)
        self._work.pop(vid)  # counted once the accept is saved

    # ---- the network in the loop (issue 19) --------------------------------------------------
    def curve(self) -> list:
        """The learning curve: one :class:`~.services.CurveItem` per accepted volume in
        the order accepted (``volume_id``, ``model_dice_before``, ``interactions``,
        ``seconds``, ``model``, ``accepted``)."""
        return services.curve(self)

    def network_lead(self) -> tuple[float, str]:
        """How much the published network leads refine (0: the graph method alone;
        1: fully), from the running score, and why."""
        return services.network_lead(self)

    def network_session(self, vid: str, device: str = "auto"):
        """The published interactive network's session on ``vid``
        (:class:`~.prediction.InteractiveSession`; one kept, for the open volume)."""
        return self._predictor.session(vid, device)

    def log_refine(self, vid: str, seconds: float) -> None:
        """Count one refine call on ``vid`` (folded into :meth:`curve` at accept)."""
        self._work.add(vid, seconds)

    def import_mask(self, vid: str, path, *, session=None) -> None:
        """Import a mask file (NIfTI or any readable format) on the volume's grid;
        status "imported". Shape and geometry must match the image, saying which not."""
        self.store.labels.import_mask(vid, path, session=session)

    # ---- annotation log ------------------------------------------------------------------------
    def log_annotation(self, vid: str, kind: str, *, class_name: str | None = None,
                       voxels: int = 0, seconds: float = 0.0) -> None:
        """Append one interaction to ``annotations.jsonl`` (with the published model version).

        Parameters
        ----------
        vid : str
        kind : str
            What was done: ``"scribble"``, ``"erase"``, ``"box"``, ``"correction"``...
        class_name : str, optional
            Structure (or ``"background"``) it was drawn for.
        voxels : int
            Voxels drawn or changed.
        seconds : float
            Time spent.
        """
        from .._errors import LabelEffError

        self.store.file.writer("log annotations")
        self.volume(vid)
        if not isinstance(kind, str) or not kind.strip():
            raise LabelEffError(f"kind={kind!r} must be a non-empty string")
        if class_name is not None and class_name not in ("background", *self.class_names):
            raise LabelEffError(
                f"class_name={class_name!r} is not one of background, {', '.join(self.class_names)}"
            )
        self.store.log_entries(vid, [{"kind": kind, "class": class_name, "voxels": voxels}], seconds)

    def annotation_log(self, vid: str | None = None) -> list[dict]:
        """Entries of ``annotations.jsonl`` (for one volume, or all); a torn last line
        (a crash mid-write) is skipped."""
        return self.store.log.entries(vid)

    def annotation_totals(self) -> dict[str, dict]:
        """Per volume: ``seconds`` spent, ``interactions`` (operations), ``voxels`` drawn."""
        return self.store.log.totals(self.volume_ids)

    def table(self) -> list[dict]:
        """One row per volume for status displays: id, status, role, shape, spacing,
        seconds, interactions, voxels, uncertainty and quality (model estimates or
        None), path, and whether the image file is present."""
        totals = self.annotation_totals()
        published = self.published
        rows = []
        for rec in self.volumes:
            scores = rec.scores if published and rec.scores.get("model") == published.version else {}
            rows.append({
                "id": rec.id, "status": rec.status, "role": rec.role, "shape": tuple(rec.shape),
                "spacing": tuple(rec.spacing), **totals[rec.id],
                "uncertainty": scores.get("uncertainty"), "quality": scores.get("quality"),
                "path": rec.path, "present": Path(rec.path).exists(),
            })
        return rows

    # ---- models -------------------------------------------------------------------------------------
    @property
    def models(self) -> list[dict]:
        """Model versions trained in this project (oldest first): ``version``, ``score``,
        ``status`` ("published", "kept": worse than the published one, "damaged"),
        ``reason``, ``class_names``, ``created``, ``run``."""
        return self.store.models.records

    @property
    def published(self) -> PublishedModel | None:
        """Published model (``.version``, e.g. ``"v0002"``, ``.score``...), or None.
        ``str(published)`` is the version and it compares equal to it."""
        return self.store.models.published

    def require_published(self) -> PublishedModel:
        """The published model, or a clear error (none yet; the classes changed since)."""
        return self.store.models.require_published()

    def model_dir(self, version) -> Path:
        return self.store.models.folder(version)

    def load_model(self, device: str = "auto"):
        """The published model (``cohort.prediction.load_model``), cached per version."""
        return self._predictor.load_model(device)

    def predict(self, vid: str, *, device: str = "auto", record: bool = True) -> Prediction:
        """The published model's prediction for ``vid`` (cached for the last volume).

        Also records the model-estimated quality and uncertainty of the volume (see
        :attr:`VolumeRecord.scores`) when the project is open for writing and
        ``record`` (pass False from a worker thread; then call :meth:`record_scores`).
        """
        return self._predictor.predict(vid, device=device, record=record)

    def record_scores(self, vid: str, **scores) -> None:
        """Store model-estimated scores of ``vid`` (e.g. from a batch job):
        ``model`` (version) plus floats such as ``uncertainty`` and ``quality``."""
        self.store.models.record_scores(vid, scores)

    def hand_over_scores(self, scores: dict) -> str | None:
        """Record scores (volume id -> scores) from a read-only view: they go to the
        project's inbox and are recorded at once if no process holds the project for
        writing, else when a writer next opens it. Returns the inbox file (None when
        there was nothing to hand over, or it was recorded at once)."""
        from .._lock import StoreLockedError

        path = self.store.models.hand_over_scores(scores)
        if path is None:
            return None
        try:
            writer = ProjectStore.open(self.folder)  # merges the inbox when it opens
        except StoreLockedError:
            return str(path)
        writer.file.close()
        self.reload()
        return None

    def collect_scores(self) -> list[str]:
        """Record the scores read-only processes handed over since this writer opened
        the project (opening does it too); returns the volume ids updated."""
        return self.store.models.merge_inbox()

    # ---- refine with the model -------------------------------------------------------------------
    def prior_use(self) -> tuple[bool, str]:
        """Whether the published model serves as refine's prior, and why (see
        :meth:`refine`); (False, reason) without a published model."""
        return services.prior_use(self.published)

    def refine_steps(self, vid: str, scribbles, boxes=None, *, method: str = "auto",
                     device: str = "auto", state=None, use_prior: bool | None = None,
                     mode: str = "auto", adapt_steps: int | None = None, **options):
        """Generator form of :meth:`refine` (yields engine ``Progress``)."""
        return services.refine_steps(self, vid, scribbles, boxes, method=method, device=device,
                                     state=state, use_prior=use_prior, mode=mode,
                                     adapt_steps=adapt_steps, **options)

    def refine(self, vid: str, scribbles, boxes=None, **kwargs):
        """Refine volume ``vid`` from the strokes (and boxes); returns a ``RefineResult``.
        Pass ``state=res.state`` of the previous call for a correction.

        ``mode`` (default ``"auto"``; ``info["project_mode"]`` says which ran):

        * ``"fused"``: the published interactive network with the strokes, boxes and
          previous result as its prompt channels (a correction re-predicts a window
          around the new strokes), then ``engine.fuse``: the strokes and the image's
          edges decide where the network is unsure. "auto" picks it when the running
          score (:meth:`curve`, :meth:`network_lead`) lets the network lead;
        * ``"graph"``: ``engine.refine`` alone ("auto" with no model, a model of other
          classes, or a running score below ``LEAD_MIN``);
        * ``"prior"``: ``engine.refine`` with the model's draft as ``prior`` (gated by
          :func:`prior_gate` unless ``use_prior=True``);
        * ``"network"``: the network's answer with the strokes pasted, no graph step.

        ``adapt_steps`` (default ``services.ADAPT_STEPS``; 0: off) fits this volume's copy
        of the network's output layer to its strokes before predicting (per-volume
        adaptation, milliseconds: ``prediction.InteractiveSession``).

        ``rules`` (a :class:`~napari_labeleff.rules.Rules`; default: the project's,
        :meth:`rules`) act on the result in every mode."""
        return drain(self.refine_steps(vid, scribbles, boxes, **kwargs))

    # ---- training ---------------------------------------------------------------------------------
    def prepare_training(self, *, max_minutes: float = 10.0, device: str = "auto",
                         seed: int = 0, **options) -> TrainPlan:
        """Snapshot the labels and build the learner's ``TrainSpec`` (writer only).

        An interrupted run whose snapshot and options are unchanged is resumed (same
        version and run folder).
        """
        return services.prepare_training(self.store, max_minutes=max_minutes, device=device,
                                         seed=seed, **options)

    def finish_training(self, outcome: TrainOutcome) -> ProjectTrainReport:
        """Record the new version; publish it when its validation score is not worse
        than the published model's (a damaged or unscorable checkpoint never is)."""
        report = services.finish_training(self.store, outcome)
        self._predictor.forget()
        return report

    def train_steps(self, *, max_minutes: float = 10.0, device: str = "auto", seed: int = 0,
                    **options):
        """Train a new model version (generator: yields the learner's progress, then a
        validation step); returns :class:`ProjectTrainReport`. Closing it cancels
        training; the next call with unchanged labels resumes it."""
        plan = self.prepare_training(max_minutes=max_minutes, device=device, seed=seed, **options)
        outcome = yield from run_training(plan)
        return self.finish_training(outcome)

    def train(self, *, max_minutes: float = 10.0, device: str = "auto", seed: int = 0,
              **options) -> ProjectTrainReport:
        """Blocking :meth:`train_steps`."""
        return drain(self.train_steps(max_minutes=max_minutes, device=device, seed=seed,
                                      **options))

    # ---- cohort-scale services ------------------------------------------------------------------
    def suggest_volumes(self, n: int = 3, **kwargs):
        """Rank volumes to annotate next (``cohort.services.suggest_volumes``): items
        with ``volume_id``, ``score``, ``reason``."""
        return services.suggest_volumes(self, n=n, **kwargs)

    # ---- anatomical rules (issue 21) -------------------------------------------------------------
    def rules(self):
        """The project's :class:`~napari_labeleff.rules.Rules` (``rules.json``), or None."""
        return services.project_rules(self)

    def set_rules(self, rules) -> None:
        """Store the project's rules (None removes them); needs the writer."""
        services.set_project_rules(self, rules)

    def propose_rules(self, *, min_support: float = 0.8):
        """Relations that hold in the accepted masks, with their support (k of n)."""
        return services.propose_rules(self, min_support=min_support)

    def accept_rule_proposals(self, proposals):
        """Add the chosen proposals (or rule tuples) to the project's rules; those it
        already holds are skipped, contradictions refused. Returns the new rules."""
        return services.accept_proposals(self, proposals)

    def rule_qa(self, rules=None) -> list[dict]:
        """Rule violations of the accepted or imported masks (``services.rule_qa``)."""
        return services.rule_qa(self, rules)

    def label_qa(self, **kwargs):
        """Doubtful accepted/imported masks (``cohort.services.label_qa``): items with
        ``volume_id``, ``score`` (higher = more doubtful), ``bbox`` or None, ``reason``."""
        return services.label_qa(self, **kwargs)
