"""Label QA: which accepted or imported masks of a project look wrong?

Every mask is compared with a model that did **not** train on it, and with the image:

* **k-fold models** (default ``folds=2``): the masks are split into folds; for each
  fold a network is trained (the learner's ``train_steps``, from scratch, small
  budget) on the other folds' masks and predicts this fold's volumes. The models are
  kept in ``<project>/qa/<key>/`` (key = hash of the masks and classes), so QA run
  again on unchanged masks reuses them. They are a cache beside the project's record
  (``project.json`` is not touched), so QA also runs on a project open read-only
  while napari holds it for writing. ``folds=0`` uses the published model instead
  (cheaper; it may have trained on the masks, which hides their errors).
* **Features** per mask (per structure, worst structure kept):

  - ``disagreement``: 1 - Dice between the mask and the model's labels (argmax),
    over the voxels where the model is confident (max probability >= 0.8): what the
    model is unsure about says little about the mask;
  - ``unsupported``: the largest mask component the model does not support (its mean
    probability of the class below 0.5), as a fraction of the structure (a false
    extra component), with its box;
  - ``missing``: fraction of the model's confident structure (p >= 0.9) outside the
    mask (half a structure left out), with the box of that region;
  - ``excess``: fraction of the mask where the model is confident the structure is
    absent (probability <= 0.1), with the box of the largest such part;
  - ``slice``: 1 - Dice of the worst axial slice among the slices holding at least a
    quarter of the mask's largest slice area, with the slice's box;
  - ``boundary`` (image only): where the image's strongest edge lies relative to the
    mask's surface: mean gradient magnitude on voxel shells -6..6 around the surface,
    signed sub-voxel offset of its peak (positive = outside). What is typical depends
    on the modality and on how the cohort was delineated, so it is judged against the
    cohort's median in both directions: a dilated mask has its edge further inside, an
    eroded one further outside.

* **Score**: each feature becomes a robust z-score over the project's masks
  ((value - median) / max(1.4826 x MAD, floor)), so what is normal for this cohort
  and this model is not flagged; the score of a mask is its largest z (higher = more
  doubtful), the reason names that feature. Doubtful = score >= ``threshold``
  (default :data:`QA_THRESHOLD`). With fewer than :data:`MIN_FOR_ROBUST` masks the
  medians are replaced by fixed references (:data:`REFERENCE`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..._errors import LabelEffError

#: Model probability from which a voxel's label counts as the model's firm opinion.
CONFIDENT = 0.8
#: Default threshold on the robust z-score.
QA_THRESHOLD = 3.5
#: Below this many masks, fixed references replace the cohort's medians.
MIN_FOR_ROBUST = 6
#: feature -> (reference value of a good mask, smallest scale) for the z-scores.
REFERENCE = {"disagreement": (0.2, 0.06), "unsupported": (0.0, 0.02),
             "missing": (0.05, 0.05), "excess": (0.02, 0.03), "slice": (0.4, 0.12),
             "boundary": (0.5, 0.5)}
#: Features whose deviation counts both ways (the others: only upwards).
TWO_SIDED = ("boundary",)
FEATURES = tuple(REFERENCE)
_SHELLS = np.arange(-6, 7)


@dataclass
class QAItem:
    """One mask's QA result.

    Attributes
    ----------
    volume_id : str
    score : float
        Largest robust z-score of its features (higher = more doubtful).
    bbox : tuple of int or None
        (z0, y0, x0, z1, y1, x1) of the doubtful region, None for a whole-mask issue.
    reason : str
    doubtful : bool
        score >= threshold.
    features : dict
        Raw feature values (see the module docstring) and their z-scores.
    """

    volume_id: str
    score: float
    bbox: tuple | None
    reason: str
    doubtful: bool = False
    features: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bbox"] = list(self.bbox) if self.bbox is not None else None
        return d


# ---- per-mask features -------------------------------------------------------------------
def _box(mask: np.ndarray):
    idx = np.argwhere(mask)
    if not len(idx):
        return None
    return tuple(int(v) for v in (*idx.min(0), *(idx.max(0) + 1)))


def boundary_profile(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean gradient magnitude of ``image`` on shells at signed distance -4..4 voxels
    from the surface of the binary ``mask`` (negative = inside). Shape (9,)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 4:
        img = img.mean(0)
    lo, hi = np.percentile(img, [1, 99])
    img = (img - lo) / max(hi - lo, 1e-6)
    grad = ndi.gaussian_gradient_magnitude(img, sigma=1.0)
    m = mask.astype(bool)
    # shell 0: the mask's own surface voxels, -k: k voxels deeper inside, +k: the k-th
    # layer of voxels outside (the surface lies between shells 0 and 1)
    shell = np.where(m, 1 - ndi.distance_transform_edt(m),
                     ndi.distance_transform_edt(~m)).round().astype(int)
    prof = np.full(len(_SHELLS), np.nan)
    for k, off in enumerate(_SHELLS):
        sel = shell == off
        if sel.sum() >= 10:
            prof[k] = float(grad[sel].mean())
    return prof


def _boundary_feature(prof: np.ndarray) -> float:
    """Signed offset (voxels, sub-voxel by a parabola through the peak and its
    neighbours) of the strongest image edge from the mask's surface: the surface lies
    between shells 0 and 1, so offset = peak shell - 0.5; positive = outside."""
    if np.all(np.isnan(prof)):
        return 0.0
    k = int(np.nanargmax(prof))
    shift = 0.0
    if 0 < k < len(prof) - 1 and not np.isnan(prof[k - 1]) and not np.isnan(prof[k + 1]):
        den = prof[k - 1] - 2 * prof[k] + prof[k + 1]
        if den < 0:
            shift = float(np.clip(0.5 * (prof[k - 1] - prof[k + 1]) / den, -0.5, 0.5))
    return float(_SHELLS[k] + shift - 0.5)


def mask_features(image: np.ndarray, mask: np.ndarray, probs: np.ndarray) -> dict:
    """Raw QA features of one mask (worst structure) and the boxes that go with them.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X) or (C, Z, Y, X)
    mask : ndarray of int, shape (Z, Y, X)
        0..K.
    probs : ndarray, shape (K + 1, Z, Y, X)
        Probabilities of a model that did not train on ``mask``.

    Returns
    -------
    dict
        ``values`` (feature -> float), ``boxes`` (feature -> bbox or None),
        ``notes`` (feature -> short text).
    """
    mask = np.asarray(mask)
    values = dict.fromkeys(FEATURES, 0.0)
    boxes: dict = dict.fromkeys(FEATURES)
    notes: dict = dict.fromkeys(FEATURES, "")
    full = np.ones((3, 3, 3), bool)
    top = np.argmax(probs, axis=0)
    confident = np.max(probs, axis=0) >= CONFIDENT
    for c in range(1, probs.shape[0]):
        m = mask == c
        p = np.asarray(probs[c], dtype=np.float32)
        n_m = int(m.sum())
        if n_m == 0 and not (p >= 0.5).any():
            continue
        y = top == c
        sure = confident  # voxels where the model is sure of its label
        dice = 2 * float((m & y & sure).sum()) / max(float((y & sure).sum())
                                                       + float((m & sure).sum()), 1.0)
        if 1 - dice > values["disagreement"]:
            values["disagreement"] = 1 - dice
            notes["disagreement"] = (f"the model's Dice with the mask is {dice:.2f} "
                                     "where the model is confident")
        if n_m:
            comp, n = ndi.label(m, structure=full)
            sizes = np.bincount(comp.ravel(), minlength=n + 1)[1:]
            support = ndi.mean(p, comp, index=np.arange(1, n + 1))
            weak = [(sizes[j] / n_m, j) for j in range(n) if support[j] < 0.5]
            if weak:
                frac, j = max(weak)
                if frac > values["unsupported"]:
                    values["unsupported"] = float(frac)
                    boxes["unsupported"] = _box(comp == j + 1)
                    notes["unsupported"] = (f"a component of {100 * frac:.0f}% of the "
                                            f"structure has mean model probability "
                                            f"{support[j]:.2f}")
        conf = p >= 0.9
        if conf.any():
            miss = conf & ~m
            frac = float(miss.sum()) / float(conf.sum())
            if frac > values["missing"]:
                values["missing"] = frac
                comp, n = ndi.label(miss, structure=full)
                if n:
                    big = 1 + int(np.argmax(np.bincount(comp.ravel())[1:]))
                    boxes["missing"] = _box(comp == big)
                notes["missing"] = (f"{100 * frac:.0f}% of what the model confidently "
                                    "calls this structure is outside the mask")
        area_m = m.reshape(m.shape[0], -1).sum(1)
        area_y = y.reshape(y.shape[0], -1).sum(1)
        per = np.flatnonzero((area_m >= 0.25 * area_m.max(initial=0))
                             & (area_m + area_y >= 20))
        if per.size:
            inter = (m & y).reshape(m.shape[0], -1).sum(1)[per]
            tot = m.reshape(m.shape[0], -1).sum(1)[per] + y.reshape(y.shape[0], -1).sum(1)[per]
            sd = 1 - 2 * inter / np.maximum(tot, 1)
            k = int(np.argmax(sd))
            if sd[k] > values["slice"]:
                values["slice"] = float(sd[k])
                z = int(per[k])
                b = _box((m | y)[z])
                boxes["slice"] = (z, b[0], b[1], z + 1, b[2], b[3]) if b else None
                notes["slice"] = f"axial slice {z}: Dice with the model {1 - sd[k]:.2f}"
        if n_m:
            off = _boundary_feature(boundary_profile(image, m))
            if c == 1 or abs(off) > abs(values["boundary"]):
                values["boundary"] = off
                notes["boundary"] = (f"the strongest image edge lies {abs(off):.1f} voxels "
                                     f"{'outside' if off > 0 else 'inside'} the mask's "
                                     "surface")
            excess = float((m & (p <= 0.1)).sum()) / n_m
            if excess > values["excess"]:
                values["excess"] = excess
                comp, n = ndi.label(m & (p <= 0.1), structure=full)
                if n:
                    big = 1 + int(np.argmax(np.bincount(comp.ravel())[1:]))
                    boxes["excess"] = _box(comp == big)
                notes["excess"] = (f"{100 * excess:.0f}% of the mask lies where the model "
                                   "is confident there is no such structure")
    return {"values": values, "boxes": boxes, "notes": notes}


def score_features(per_volume: dict, threshold: float = QA_THRESHOLD) -> list[QAItem]:
    """Robust z-scores of the features over the project's masks -> ranked items."""
    vids = list(per_volume)
    robust = len(vids) >= MIN_FOR_ROBUST
    z, centres = {}, {}
    for f in FEATURES:
        x = np.array([per_volume[v]["values"][f] for v in vids], dtype=float)
        ref, floor = REFERENCE[f]
        centre = float(np.median(x)) if robust else ref
        mad = 1.4826 * float(np.median(np.abs(x - centre))) if robust else 0.0
        z[f] = (x - centre) / max(mad, floor)
        centres[f] = centre
        if f in TWO_SIDED:
            z[f] = np.abs(z[f])
    items = []
    for i, v in enumerate(vids):
        zs = {f: float(z[f][i]) for f in FEATURES}
        worst = max(FEATURES, key=lambda f: zs[f])
        feat = per_volume[v]
        score = zs[worst]
        if feat["notes"][worst]:
            note = feat["notes"][worst]
            if worst == "boundary":
                c = centres["boundary"]
                note += (f" (typical {'in this project' if robust else 'value'}: "
                         f"{abs(c):.1f} {'outside' if c > 0 else 'inside'})")
            reason = (f"{note} ({worst} z = {score:.1f}"
                      f"{'' if robust else ', against fixed references: few masks'})")
        else:
            reason = "nothing doubtful: the mask agrees with the model and the image edges"
        items.append(QAItem(v, score, feat["boxes"][worst], reason, score >= threshold,
                            {"values": dict(feat["values"]), "z": zs}))
    items.sort(key=lambda it: -it.score)
    return items


# ---- k-fold models -----------------------------------------------------------------------
def _qa_key(project, vids) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(project.class_names).encode())
    for v in sorted(vids):
        mask = project.labels(v)["mask"]
        h.update(v.encode())
        h.update(hashlib.sha256(np.ascontiguousarray(mask)).digest())
    return h.hexdigest()[:16]


def fold_models(project, vids, folds: int, *, device: str = "auto",
                max_minutes: float = 3.0, seed: int = 0, train_options: dict | None = None,
                progress=None) -> dict:
    """Train (or reuse) one model per fold; returns volume id -> checkpoint folder of a
    model that did not train on that volume's mask."""
    from .. import training
    from ..training import TrainCase, TrainSpec, write_labels_snapshot

    key = _qa_key(project, vids)
    root = project.folder / "qa" / key
    order = sorted(vids)
    assign = {v: i % folds for i, v in enumerate(order)}
    snaps = root / "labels"
    out = {}
    for k in range(folds):
        ckpt = root / f"fold{k}"
        held = [v for v in order if assign[v] == k]
        for v in held:
            out[v] = str(ckpt)
        if (ckpt / "model.pt").exists() and (ckpt / "config.json").exists():
            continue
        snaps.mkdir(parents=True, exist_ok=True)
        cases = []
        for v in order:
            if assign[v] == k:
                continue
            lab = project.labels(v)
            path = write_labels_snapshot(snaps / f"{v}.npz", np.zeros_like(lab["mask"]),
                                         mask=lab["mask"])
            cases.append(TrainCase(v, str(project.image_path(v)), str(path), "labelled"))
        opts = {"max_minutes": float(max_minutes), "device": device, "seed": seed + k,
                "semi": False, "pseudo_labels": False}
        opts.update(train_options or {})
        spec = TrainSpec(cases=tuple(cases), class_names=tuple(project.class_names),
                         out_dir=str(ckpt), run_dir=str(root / f"run{k}"),
                         init_checkpoint=None, options=opts)
        gen = training.train_steps(spec)
        try:
            while True:
                step = next(gen)
                if progress is not None:
                    progress(k, folds, step)
        except StopIteration:
            pass
        finally:
            gen.close()
    return out


def label_qa(project, *, threshold: float = QA_THRESHOLD, folds: int = 2,
             include_all: bool = False, device: str = "auto", max_minutes: float = 3.0,
             train_options: dict | None = None, seed: int = 0, progress=None
             ) -> list[QAItem]:
    """Score every accepted or imported mask of a project (see the module docstring).

    Parameters
    ----------
    project : Project
    threshold : float
        Robust z-score from which a mask is doubtful.
    folds : int
        k of the k-fold models (>= 2), or 0 for the published model.
    include_all : bool
        Return every mask (ranked), not only the doubtful ones.
    device : str
    max_minutes : float
        Training budget of each fold model.
    train_options : dict, optional
        Further learner options of the fold models (``cohort.training``).
    seed : int
    progress : callable, optional
        ``progress(fold, folds, TrainProgress)`` while fold models train.

    Returns
    -------
    list of QAItem
        Highest score first; only ``doubtful`` ones unless ``include_all``.

    Raises
    ------
    LabelEffError
        No accepted or imported mask, folds invalid or larger than the masks, no
        published model with ``folds=0``.
    """
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 0 \
            or folds == 1:
        raise LabelEffError(f"folds must be 0 (published model) or >= 2, got {folds!r}")
    if not np.isfinite(threshold):
        raise LabelEffError(f"threshold must be a finite number, got {threshold!r}")
    vids = [r.id for r in project.volumes if r.status in ("accepted", "imported")]
    if not vids:
        raise LabelEffError(f"project {project.folder.name} has no accepted or imported "
                            "mask to check")
    from ..prediction import cached_model

    if folds == 0:
        version = project.require_published().version
        ckpts = {v: str(project.model_dir(version)) for v in vids}
    else:
        if len(vids) < folds:
            raise LabelEffError(f"{len(vids)} masks cannot be split into {folds} folds; "
                                "use fewer folds, or folds=0 for the published model")
        ckpts = fold_models(project, vids, int(folds), device=device,
                            max_minutes=max_minutes, seed=seed,
                            train_options=train_options, progress=progress)
    per_volume = {}
    for v in vids:
        vol = project.read_image(v, verify=False)
        image = np.asarray(vol.data, dtype=np.float32)
        model = cached_model(ckpts[v], device)
        # the network's raw opinion: keeping only the largest component would cut a
        # fragmented prediction and blame the mask for it
        probs = np.asarray(model.predict(image, vol.spacing, keep_largest=False),
                           dtype=np.float32)
        mask = project.labels(v)["mask"]
        img = np.moveaxis(image, vol.channel_axis, 0) if vol.channel_axis is not None \
            else image
        per_volume[v] = mask_features(img, mask, probs)
    items = score_features(per_volume, threshold)
    return items if include_all else [it for it in items if it.doubtful]


def write_qa(path, items) -> Path:
    """Write QA items as JSON."""
    path = Path(path)
    path.write_text(json.dumps([it.to_dict() for it in items], indent=1))
    return path
