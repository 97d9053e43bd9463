"""The seeded graph method ``"randomwalk"``: random walker with intensity priors.

Solver: ``engine/_rw_solver.py`` (torch, GPU or CPU). This module adds what the product
needs around it: priors from the scribbles' intensity histograms (``_likelihood``), box
prompts (``_boxes``), and incremental updates from ``state``:

* same boxes and options as the previous call: warm start from its solution;
* the changed scribbles fit in a padded sub-box (at most ``local_max_fraction`` of the
  volume): re-solve only inside that sub-box, with the previous solution as Dirichlet
  boundary on its faces (``info["local"]``), growing it while the changed labels reach
  its faces (``info["local_growths"]``);
* a stroke that moves the intensity model a lot updates it everywhere, unless held-out
  earlier strokes say it is a local exception (``_stroke_generalizes``,
  ``info["prior_kept"]``);
* label changes that form islands away from the edited strokes are reverted
  (``_scope_correction``).

Without boxes or a model prior, the first call chooses the unary term by held-out
strokes (``_select_weight``): the intensity model at its trusted weight, none (the pure
walker), or the marker watershed of the strokes (``_watershed``), which cures the
intensity model's over-reach on small structures; incremental calls keep the choice.
"""

from __future__ import annotations

import hashlib
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .._errors import LabelEffError
from . import _boxes, _watershed
from ._likelihood import Histograms, fit_histograms, posterior
from ._registry import MethodOutput, RefineContext, as_numpy, register_method
from ._rw_solver import Problem, binomial_smooth, contrast_scale, solve
from ._types import Progress

#: Options of ``refine(method="randomwalk", **options)`` and their defaults.
DEFAULTS = {
    "smooth": 0,  # binomial smoothing passes before edge weights and likelihoods
    "beta": 8.0,  # edge sensitivity (intensity differences in units of their RMS)
    "prior_weight": 0.1,  # weight of the scribble-histogram prior (0 = pure walker)
    # the prior is used in full when the histograms classify the scribbled voxels of
    # every class with mean posterior >= prior_trust_high, not at all below
    # prior_trust_low (intensity-separable tissues vs. look-alike structures)
    "prior_trust_low": 0.9,
    "prior_trust_high": 0.97,
    "box_prior_weight": 0.2,  # prior weight when boxes are given (GrabCut-style)
    "tol": 1e-3,  # relative preconditioned residual at which CG stops
    "max_iter": 200,  # CG iterations on the finest grid (coarser grids: 4x)
    "local": True,  # allow local re-solves on incremental calls
    "local_pad_mm": 20.0,  # padding around the changed scribbles, in mm
    "local_max_fraction": 0.3,  # largest sub-box (fraction of the volume) for local mode
    "local_prior_tol": 0.05,  # largest 99th-percentile prior change outside the sub-box
    "box_rounds": 2,  # GrabCut rounds (likelihoods refitted from the segmentation)
    "box_margin": 3,  # slack (voxels) at each box face for the tightness prior
    "box_core": 0.5,  # fraction of each box extent used as the structure sample
    "box_shell": 8,  # thickness (voxels) of the background sample shell around boxes
    "box_grow_rounds": 2,  # times a face that cuts its structure may move outward
    "box_centre_seeds": True,  # seed box centres of structures without scribbles
    "box_select": True,  # choose box_prior_weight per scan among BOX_PRIOR_WEIGHTS
    "box_probe": True,  # probe solve with grown boxes to find faces that cut the object
    # an incremental call keeps only the label changes connected to the edited strokes
    "correction_scope": True,
    # choose the intensity-model weight (0 or the trusted one) on the first call by
    # how well each predicts the user's held-out strokes
    "prior_select": True,
    # let the marker watershed of the scribbles (``_watershed``) compete in that check;
    # when it wins, its labels are the walker's unary term at this weight
    "watershed_select": True,
    "watershed_prior_weight": 0.05,
    # prior= (model probabilities): weight of its unary term, and the distance (mm)
    # over which a scribble that disagrees with it releases it (0 at the stroke, full
    # weight from this distance on)
    "model_prior_weight": 0.5,
    "prior_release_mm": 15.0,
    # check the model prior against the user's own strokes: mix it with this scan's
    # intensity model at the share (of PRIOR_SHARES) that best predicts held-out strokes
    "prior_check": True,
}
_KEY_OPTIONS = ("smooth", "beta", "prior_weight", "prior_trust_low", "prior_trust_high",
                "box_prior_weight", "box_margin", "box_core", "box_shell", "box_grow_rounds",
                "box_centre_seeds", "box_select", "box_probe", "prior_select",
                "watershed_select", "watershed_prior_weight",
                "model_prior_weight", "prior_release_mm", "prior_check")
#: Shares of the model prior (vs. the scan's intensity model) tried by ``prior_check``.
PRIOR_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)
_PRIOR_CHECK_SAMPLES = 1 << 16
#: Intensity-model weights tried for boxed structures without scribbles (the one whose
#: result fits the boxes best is kept; ``_boxes.fit_score``).
BOX_PRIOR_WEIGHTS = (0.0, 0.05, 0.2)


def _options(options: dict) -> dict:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise LabelEffError(
            f"unknown option(s) {unknown} for method 'randomwalk'; allowed: "
            f"{', '.join(sorted(DEFAULTS))}"
        )
    opts = {**DEFAULTS, **options}
    for name, default in DEFAULTS.items():
        value = opts[name]
        if isinstance(default, bool):
            ok = isinstance(value, (bool, np.bool_))
            allowed = "True or False"
        elif isinstance(default, int):
            ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0
            allowed = "an integer >= 0"
        else:
            ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) \
                and math.isfinite(value) and value >= 0
            allowed = "a finite number >= 0"
        if not ok:
            raise LabelEffError(f"option {name}={value!r} for method 'randomwalk'; "
                                f"allowed: {allowed}")
    if opts["max_iter"] < 1:
        raise LabelEffError(f"option max_iter={opts['max_iter']!r}; allowed: an integer >= 1")
    if not 0 < opts["box_core"] <= 1:
        raise LabelEffError(f"option box_core={opts['box_core']!r}; allowed: 0 < box_core <= 1")
    return opts


def _progress(gen, counter: list):
    """Turn the solver's messages into Progress reports; returns the solver's value."""
    while True:
        try:
            msg = next(gen)
        except StopIteration as stop:
            return stop.value
        counter[0] += 1
        yield Progress(counter[0], counter[0] + 1, msg)


def _onehot_init(seeds: torch.Tensor, n_classes: int, fill: torch.Tensor | None):
    x = fill.clone() if fill is not None else torch.full(
        (n_classes, *seeds.shape), 1.0 / n_classes, device=seeds.device)
    return _set_seeds(x, seeds)


def _set_seeds(x: torch.Tensor, seeds: torch.Tensor):
    fixed = seeds >= 0
    onehot = F.one_hot(seeds.clamp_min(0), x.shape[0]).movedim(-1, 0).to(x.dtype)
    return torch.where(fixed, onehot, x)


def _hist_payload(hist: Histograms) -> dict:
    return {k: getattr(hist, k).cpu().numpy() for k in ("lo", "hi", "log_density")}


def _hist_from_payload(d: dict, device) -> Histograms:
    return Histograms(*(torch.from_numpy(d[k]).to(device) for k in ("lo", "hi", "log_density")))


def _usable_previous(ctx: RefineContext, opts: dict):
    """The previous payload when it can warm-start this call, else None."""
    if ctx.state is None:
        return None
    prev = ctx.state.payload
    if "probabilities" not in prev or prev.get("options") != {k: opts[k] for k in _KEY_OPTIONS}:
        return None
    if prev.get("boxes") != list(ctx.boxes):
        return None
    if prev.get("prior_key") != _prior_key(ctx.prior):
        return None
    return prev


def _prior_key(prior):
    """Cheap fingerprint of a model prior (None without one)."""
    if prior is None:
        return None
    flat = prior.reshape(-1)
    sample = flat[:: max(1, flat.size // 4096)]
    return (prior.shape, hashlib.sha1(sample.tobytes()).hexdigest())


def _model_prior(ctx, image: torch.Tensor, seeds: torch.Tensor, opts: dict, info: dict):
    """The model prior as the walker's unary term, released around disagreeing strokes.

    Returns (K + 1, Z, Y, X) float32 on ``seeds.device`` summing to 1 per voxel. Where a
    scribble disagrees with the prior (the prior gives its class < 0.5) the prior is
    shown wrong locally: within ``prior_release_mm`` of such strokes it is blended
    (weight rising linearly from 0 at the stroke to 1 at that distance) with an
    intensity model fitted to this scan (scribbles, plus the prior's confident voxels
    outside the released zone for classes that have no scribbles). So a corrective
    stroke wins in its neighbourhood, following the image, while the prior keeps the
    rest of the volume.
    """
    lam = raw = torch.from_numpy(ctx.prior).to(seeds.device)
    known = seeds >= 0
    n_disagree = 0
    if bool(known.any()):
        own = lam.gather(0, seeds.clamp_min(0)[None])[0]
        disagree = known & (own < 0.5)
        n_disagree = int(disagree.sum())
    radius = float(opts["prior_release_mm"])
    released = 0
    if n_disagree and radius > 0:
        dist = ndimage.distance_transform_edt(~disagree.cpu().numpy(), sampling=ctx.spacing)
        weight = torch.from_numpy(np.minimum(dist / radius, 1.0).astype(np.float32))
        weight = weight.to(seeds.device)
        zone = weight < 1
        released = int(zone.sum())
        conf, arg = lam.max(dim=0)
        trusted = (conf > 0.9) & ~zone
        samples = [(seeds == k) | (trusted & (arg == k)) for k in range(lam.shape[0])]
        local = posterior(fit_histograms(image, samples), image)
        lam = lam * weight[None] + local * (1 - weight)[None]
    share, scores = 1.0, None
    if opts["prior_check"]:
        share, scores = _prior_share(ctx, image, seeds, raw)
    weight = float(opts["model_prior_weight"])
    if share < 1.0:
        # the scan's own intensity model (fitted on every stroke) takes the rest, at
        # the weight the scribble-only path would give it (its trust ramp)
        hist = fit_histograms(image, [seeds == k for k in range(lam.shape[0])])
        own_weight = _trusted_weight(opts, float(opts["prior_weight"]),
                                     _prior_trust(hist, image, seeds))
        lam = share * lam + (1.0 - share) * posterior(hist, image)
        weight = share * weight + (1.0 - share) * own_weight
    info["prior"] = {"used_as": "unary term of the random walker (replaces the intensity "
                                "model)", "weight": weight, "share": share,
                     "share_scores": scores,
                     "disagreeing_scribbled_voxels": n_disagree,
                     "released_voxels": released, "release_mm": radius}
    return lam, weight


def _stroke_folds(scribbles: np.ndarray, n_classes: int):
    """Two folds of the user's strokes, per class: alternate connected strokes (or the
    two halves of a single stroke). Returns a (Z, Y, X) int8 array: -1 unscribbled,
    else fold 0/1; None when some scribbled class cannot be split."""
    folds = np.full(scribbles.shape, -1, np.int8)
    for k in range(n_classes):
        mask = scribbles == k + 1
        if not mask.any():
            continue
        comp, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
        if n >= 2:
            folds[mask] = (comp[mask] - 1) % 2
            continue
        idx = np.flatnonzero(mask)
        if idx.size < 2:
            return None
        half = np.zeros(idx.size, np.int8)
        half[idx.size // 2:] = 1
        folds.reshape(-1)[idx] = half
    return folds


def _prior_share(ctx, image: torch.Tensor, seeds: torch.Tensor, lam: torch.Tensor):
    """Share of the model prior, against an intensity model fitted on this scan, that
    best predicts the user's held-out strokes (2 folds, class-balanced mean
    log-likelihood). A model that explains the strokes worse than the scan's own
    intensities is trusted less, so a weak model cannot pull the result below what
    the scribbles alone give. Returns (share, {share: score}) or (1.0, None) when the
    strokes cannot be split, or some class has no strokes (only the prior knows it, so
    the intensity model cannot stand in for the prior)."""
    k1 = lam.shape[0]
    scr = np.asarray(ctx.scribbles)
    present = [k for k in range(k1) if (scr == k + 1).any()]
    if len(present) < k1:
        return 1.0, None
    folds = _stroke_folds(scr, k1)
    if folds is None:
        return 1.0, None
    folds_t = torch.from_numpy(folds).to(seeds.device)
    truth = torch.from_numpy(scr.astype(np.int64) - 1).to(seeds.device)
    flat = image.reshape(image.shape[0], -1)
    scores = {a: 0.0 for a in PRIOR_SHARES}
    for f in (0, 1):
        train = [(truth == k) & (folds_t == 1 - f) for k in range(k1)]
        if any(bool((truth == k).any()) and not bool(t.any()) for k, t in enumerate(train)):
            return 1.0, None
        hist = fit_histograms(image, train)
        for k in present:
            idx = torch.nonzero(((truth == k) & (folds_t == f)).reshape(-1)).flatten()
            if idx.numel() == 0:
                continue
            idx = idx[:: max(1, idx.numel() // _PRIOR_CHECK_SAMPLES)]
            own = posterior(hist, flat[:, idx])[k]
            model = lam.reshape(k1, -1)[k, idx]
            for a in PRIOR_SHARES:
                mix = (a * model + (1.0 - a) * own).clamp_min(1e-4)
                scores[a] += float(torch.log(mix).mean()) / (2 * len(present))
    best = max(PRIOR_SHARES, key=lambda a: (round(scores[a], 6), a))
    return best, {a: round(v, 4) for a, v in scores.items()}


#: Largest grid (voxels) on which ``prior_select`` compares weights (block means above).
_SELECT_MAX_VOXELS = 1 << 20
#: How much better (held-out balanced accuracy, 0..1) the watershed must predict the
#: held-out strokes than the walker to replace the intensity model as unary term.
WATERSHED_MARGIN = 0.01
#: Largest share of a structure's voxels that may lie in components holding none of its
#: strokes when the first call's intensity model is kept (``island_share``).
ISLAND_MAX = 0.15
#: Share of the held-out structure strokes found in islands (``_select_weight``) from
#: which islands count as real parts of the structure.
ISLAND_CONFIRM = 0.25
#: The watershed candidate among the box path's unary terms (``_solve_boxes``).
WATERSHED = "watershed"


def _select_weight(ctx, image: torch.Tensor, seeds: torch.Tensor, kw: dict, gamma: float,
                   counter, watershed: bool = False):
    """Choose the unary term, by held-out strokes: the intensity model at weight 0 or
    ``gamma``, or (``watershed``) the marker watershed's labels (``_watershed``).

    How much to trust the scribbles' intensity model differs from scan to scan (a
    lesion core whose intensities the background shares wants the pure walker; a
    bright tumour in FLAIR wants the model). The trust ramp measures the model on the
    strokes it was fitted on; here each half of the user's strokes (``_stroke_folds``)
    is left out in turn, the walker is solved from the other half on a grid of at
    most ``_SELECT_MAX_VOXELS`` (block means), and the weight whose labels agree best
    with the left-out strokes (class-balanced accuracy) is kept; ties keep ``gamma``.
    The watershed, flooded from the other half on the same grid, wins the check when it
    beats both weights by more than :data:`WATERSHED_MARGIN` (the caller then compares
    how much of the volume it claims, at full resolution). Seeds that are not strokes
    (the assumed border background) stay in both halves.

    Returns
    -------
    (weight, {choice: score}, confirmed, watershed_wins) or (gamma, None, 0.0, False)
    when the strokes cannot be split; ``confirmed`` is the share of the held-out
    structure strokes predicted right by the intensity model that lie in its islands
    (components holding none of the training half's strokes of their class): evidence
    that the structure really has parts away from the strokes.
    """
    from . import _multiscale

    k1 = ctx.n_classes
    scr = np.asarray(ctx.scribbles)
    folds = _stroke_folds(scr, k1)
    if folds is None:
        return gamma, None, 0.0, False
    shape = tuple(seeds.shape)
    f = 1
    while math.prod(math.ceil(n / f) for n in shape) > _SELECT_MAX_VOXELS:
        f += 1
    fac = (f, f, f)
    img = torch.from_numpy(_multiscale._pool_mean(image.cpu().numpy(), fac)).to(image.device)
    spacing = tuple(h * f for h in ctx.spacing)
    seeds_np = seeds.cpu().numpy()
    candidates = sorted({0.0, float(gamma)})
    scores = dict.fromkeys(candidates + (["watershed"] if watershed else []), 0.0)
    hits = [0, 0]  # held-out structure strokes the intensity model gets: in islands, all
    grad = _watershed.gradient(img.cpu().numpy(), spacing) if watershed else None
    for fold in (0, 1):
        train = np.where(folds == fold, -1, seeds_np)
        train_c = torch.from_numpy(_multiscale._pool_seeds(train, fac, k1).astype(np.int64))
        train_c = train_c.to(image.device)
        if any(bool((train == k).any()) and not bool((train_c == k).any())
               for k in range(k1)):
            return gamma, None, 0.0, False  # a class vanished on the coarse grid
        held = np.nonzero(folds == fold)
        truth = scr[held].astype(np.int64) - 1
        idx = tuple(h // f for h in held)  # the held-out voxels on the check's grid
        train_np = train_c.cpu().numpy()
        hist = fit_histograms(img, [train_c == k for k in range(k1)])
        prior = posterior(hist, img)
        for g in candidates:
            p = Problem(img, train_c >= 0, _onehot_init(train_c, k1, prior), spacing, prior)
            yield from _progress(solve(p, coarse_to_fine=True, **{**kw, "gamma": g}), counter)
            lab = p.x.argmax(dim=0).cpu().numpy()
            scores[g] += _balanced_accuracy(lab[idx], truth) / 2
            if g > 0:
                right = (lab[idx] == truth) & (truth > 0)
                hits[0] += int((right & _islands(lab, train_np)[idx]).sum())
                hits[1] += int(right.sum())
        if watershed:
            lab = _watershed.labels(None, train_np, spacing, grad)
            scores["watershed"] += _balanced_accuracy(lab[idx], truth) / 2
    best = max(candidates, key=lambda g: (round(scores[g], 3), g == gamma))
    ws_wins = watershed and scores["watershed"] > scores[best] + WATERSHED_MARGIN
    return best, {g: round(v, 4) for g, v in scores.items()}, hits[0] / max(hits[1], 1), \
        ws_wins


def _islands(labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Voxels of structures (labels > 0) in 26-connected components that hold none of
    their class's seeds (bool, same shape)."""
    out = np.zeros(labels.shape, bool)
    for k in np.unique(labels[labels > 0]):
        mask = labels == k
        comp, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
        out |= mask & ~np.isin(comp, np.unique(comp[mask & (seeds == k)]))
    return out


def _island_share(labels: np.ndarray, seeds: np.ndarray) -> float:
    """Largest share, over the structures (labels > 0), of a structure's voxels lying in
    components that hold none of its seeds (:func:`_islands`)."""
    isl = _islands(labels, seeds)
    return max((float(isl[labels == k].mean()) for k in np.unique(labels[labels > 0])),
               default=0.0)


def _balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over the classes present in ``truth`` of the fraction predicted right."""
    return float(np.mean([np.mean(pred[truth == k] == k) for k in np.unique(truth)]))


#: Largest drop (mean log posterior) in how well another class's held-out earlier
#: strokes are predicted for which new strokes count as typical (``_stroke_generalizes``).
GENERALIZE_TOL = 0.01


def _stroke_generalizes(ctx, image: torch.Tensor, seeds: torch.Tensor):
    """Whether the intensity model updated with the new strokes may act everywhere.

    Each half of the earlier strokes (``_stroke_folds``) is left out in turn and
    predicted by an intensity model fitted on the other half, with and without the new
    strokes (mean log posterior of the true class, per class). When the new strokes
    make the earlier strokes of the *other* classes worse predicted by more than
    :data:`GENERALIZE_TOL`, their intensities overlap those classes: they mark a local
    exception (e.g. darker deep white matter, which would pull the white matter
    boundary into the grey matter everywhere) and the updated model should act only
    near them. Otherwise it is used everywhere (a tumour-core region of an intensity
    the earlier strokes missed).

    Returns
    -------
    (bool, {"without": [per class], "with": [per class]}) or (None, None) when the
    earlier strokes cannot be split.
    """
    k1 = ctx.n_classes
    changed = torch.from_numpy(ctx.changed).to(seeds.device)
    earlier = np.where(ctx.changed, 0, np.asarray(ctx.scribbles))
    folds = _stroke_folds(earlier, k1)
    if folds is None:
        return None, None
    folds_t = torch.from_numpy(folds).to(seeds.device)
    new = changed & (seeds >= 0)
    flat = image.reshape(image.shape[0], -1)
    scores = np.zeros((2, k1))
    counts = np.zeros((2, k1))
    for f in (0, 1):
        base = (seeds >= 0) & ~changed & (folds_t != f)
        for j, train in enumerate((base, base | new)):
            hist = fit_histograms(image, [train & (seeds == k) for k in range(k1)])
            for k in range(k1):
                idx = torch.nonzero(((folds_t == f) & (seeds == k)).reshape(-1)).flatten()
                if idx.numel():
                    idx = idx[:: max(1, idx.numel() // _PRIOR_CHECK_SAMPLES)]
                    post = posterior(hist, flat[:, idx])[k].clamp_min(1e-4)
                    scores[j, k] += float(torch.log(post).mean())
                    counts[j, k] += 1
    mean = scores / np.maximum(counts, 1)
    others = (counts[0] > 0) & ~np.isin(np.arange(k1), seeds[new].unique().cpu().numpy())
    ok = not others.any() or (mean[1] - mean[0])[others].min() >= -GENERALIZE_TOL
    return bool(ok), {"without": mean[0].round(4).tolist(), "with": mean[1].round(4).tolist()}


def _local_box(changed, spacing, opts):
    """Padded bounding box (tuple of slices) of the changed voxels, or None."""
    if not opts["local"] or changed is None or not changed.any():
        return None
    box = []
    for axis, h in enumerate(spacing):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(changed.any(axis=other))
        pad = int(math.ceil(opts["local_pad_mm"] / h))
        box.append(slice(max(0, idx[0] - pad), min(changed.shape[axis], idx[-1] + 1 + pad)))
    size = np.prod([s.stop - s.start for s in box])
    return tuple(box) if size <= opts["local_max_fraction"] * changed.size else None


def _prior_shift(old: Histograms, new: Histograms, image: torch.Tensor) -> float:
    """99th percentile of the prior change over a voxel sample."""
    flat = image.reshape(image.shape[0], -1)
    sample = flat[:, :: max(1, flat.shape[1] // _PRIOR_CHECK_SAMPLES)]
    diff = (posterior(old, sample) - posterior(new, sample)).abs().amax(dim=0)
    return float(torch.quantile(diff, 0.99))


def _prior_trust(hist: Histograms, image: torch.Tensor, seeds: torch.Tensor) -> float:
    """How well the intensity model separates the scribbles: the smallest, over classes,
    mean posterior of the scribbled class on its own scribbled voxels."""
    known = seeds >= 0
    post = posterior(hist, image[:, known])
    own = post.gather(0, seeds[known][None])[0]
    means = torch.zeros(post.shape[0], device=image.device).index_add_(0, seeds[known], own)
    counts = torch.bincount(seeds[known], minlength=post.shape[0]).clamp_min(1)
    return float((means / counts).min())


def _trusted_weight(opts: dict, weight: float, trust: float) -> float:
    """``weight`` scaled by the intensity model's trust: in full at ``prior_trust_high``,
    not at all at ``prior_trust_low`` (intensity-separable tissues vs. look-alikes)."""
    ramp = (trust - opts["prior_trust_low"]) / max(
        opts["prior_trust_high"] - opts["prior_trust_low"], 1e-6)
    return weight * min(max(ramp, 0.0), 1.0)


def _solve_local_or_full(ctx, image, seeds, x_prev, box, prior_of, kw, counter, info,
                         opts):
    """Solve inside the sub-box ``box`` with the previous solution ``x_prev`` as its
    Dirichlet boundary, or, when ``box`` is None, the whole volume (warm-started from
    ``x_prev`` if any). ``prior_of(box)`` gives the unary term for a sub-box (None:
    the whole volume), or None without one. Returns the solution.

    The previous solution is only a fair boundary where the correction does not reach
    it: when the labels that change touch an inner face of the sub-box (the error the
    stroke was drawn on extends beyond it), the sub-box grows by its own size on that
    side and is solved again, up to ``local_max_fraction`` of the volume, then the whole
    volume is solved (``info["local_growths"]``).
    """
    growths = 0
    while box is not None:
        sub = (slice(None), *box)
        sub_seeds = seeds[box]
        frame = _frame(sub_seeds.shape, box, seeds.shape, seeds.device)
        p = Problem(image[sub], (sub_seeds >= 0) | frame, _set_seeds(x_prev[sub], sub_seeds),
                    ctx.spacing, prior_of(box))
        yield from _progress(solve(p, coarse_to_fine=False, **kw), counter)
        sides = _touched_faces(p.x.argmax(dim=0) != x_prev[sub].argmax(dim=0), box,
                               seeds.shape)
        if not sides:
            x = x_prev.clone()
            x[sub] = p.x
            info.update(local=True, local_box=tuple((s.start, s.stop) for s in box),
                        local_growths=growths)
            return x
        box = _grow_box(box, sides, seeds.shape, opts)
        growths += 1
    info["local_growths"] = growths
    prior = prior_of(None)
    init = _set_seeds(x_prev, seeds) if x_prev is not None else _onehot_init(
        seeds, ctx.n_classes, prior)
    p = Problem(image, seeds >= 0, init, ctx.spacing, prior)
    stats = yield from _progress(solve(p, coarse_to_fine=x_prev is None, **kw), counter)
    info["cg_iterations"] = [s["iterations"] for s in stats]
    return p.x


def _touched_faces(changed: torch.Tensor, box, full_shape) -> list[tuple[int, int]]:
    """(axis, side) of the sub-box's inner faces (side 0 low, 1 high) next to which a
    label changed (on the layer just inside the Dirichlet face)."""
    sides = []
    for axis, s in enumerate(box):
        n = changed.shape[axis]
        if n < 3:
            continue
        for side, (inside, on_border) in enumerate(((1, s.start > 0),
                                                    (n - 2, s.stop < full_shape[axis]))):
            if on_border and bool(changed.select(axis, inside).any()):
                sides.append((axis, side))
    return sides


def _grow_box(box, sides, full_shape, opts):
    """``box`` grown by its own extent on the touched ``sides``; None when the result
    exceeds ``local_max_fraction`` of the volume."""
    box = list(box)
    for axis, side in sides:
        s = box[axis]
        n = s.stop - s.start
        box[axis] = (slice(max(0, s.start - n), s.stop) if side == 0
                     else slice(s.start, min(full_shape[axis], s.stop + n)))
    size = math.prod(s.stop - s.start for s in box)
    return tuple(box) if size <= opts["local_max_fraction"] * math.prod(full_shape) else None


def _frame(shape, box, full_shape, device):
    """Faces of the sub-box that lie inside the volume (the Dirichlet boundary)."""
    frame = torch.zeros(shape, dtype=torch.bool, device=device)
    for axis, s in enumerate(box):
        index = [slice(None)] * 3
        if s.start > 0:
            index[axis] = 0
            frame[tuple(index)] = True
        if s.stop < full_shape[axis]:
            index[axis] = -1
            frame[tuple(index)] = True
    return frame


def _sample_trust(hist: Histograms, image: torch.Tensor, samples) -> float:
    """Smallest, over classes with samples, mean posterior of the class on (up to
    ``_PRIOR_CHECK_SAMPLES`` of) its own sample voxels."""
    flat = image.reshape(image.shape[0], -1)
    worst = 1.0
    for k, mask in enumerate(samples):
        idx = torch.nonzero(mask.reshape(-1)).flatten()
        if idx.numel() == 0:
            continue
        idx = idx[:: max(1, idx.numel() // _PRIOR_CHECK_SAMPLES)]
        post = posterior(hist, flat[:, idx])
        worst = min(worst, float(post[k].mean()))
    return worst


def _solve_boxes(ctx, image, seeds, x, opts, kw, counter, info, prev=None):
    """Boxes with the graph method; returns (x, histograms or None).

    * Each structure may appear only inside its boxes; outside every box is background
      when every structure has a box (hard seeds, ``engine/_api.py``).
    * Structures that have scribbles take their intensity model from the scribbles
      only (with the trust ramp of the scribble path): the box then constrains, it
      does not inject the other tissues it holds into the model (that is what made
      scribbles + box worse than scribbles alone). Structures without scribbles take
      it from the box core, refitted GrabCut-style for ``box_rounds`` rounds.
    * When every boxed structure has scribbles, the marker watershed of the strokes
      (flooded with the outside of the boxes as background marker, ``_watershed``)
      competes with that intensity model as the unary term; the one whose result fits
      the boxes best (``_boxes.fit_score``) is kept. With a loose box the walker
      alone fills the box to its faces (look-alike CT organs give the intensity model
      no weight); the watershed stops at the object's edges.
    * A model prior (``prior=``) replaces the intensity models.
    * A box that leaves out strokes of its own structure was drawn too small or
      shifted: it is grown to cover them and all its faces are loosened by
      ``_boxes.GROW_FRACTION`` of its size, so it is treated as a loose box.
    * Inexact boxes: hard background against a face that cuts the object drains the
      object away from that face, so a probe solve with the scribbled structures'
      boxes grown shows which faces cut it (``_boxes.faces_from_probe``); those move
      to where the probe's object ends. Then a face whose slice still holds a large
      section of the structure moves outward (``_boxes.cut_faces``) and the system is
      solved again (up to ``box_grow_rounds`` times), so the image decides where the
      object ends. Faces that only touch the object's tip stay.
    * Tightness: a box slice that misses its structure gets its most likely voxel as
      a seed.

    An incremental call (``prev``: the previous call's payload) starts from the boxes
    that call ended with and its intensity-model weight, and skips the probe and the
    weight choice.
    """
    k1, shape = ctx.n_classes, tuple(seeds.shape)
    dev = image.device
    prev_boxes = None if prev is None else prev.get("boxes_solved")
    start = list(ctx.boxes) if prev_boxes is None else [tuple(b) for b in prev_boxes]
    boxes, covered = _boxes.cover_scribbles(start, ctx.scribbles)
    if covered and prev_boxes is None:
        # a box that leaves out strokes of its own structure was drawn too small or
        # shifted; the strokes show that it is wrong, not by how much elsewhere, so
        # all its faces are loosened (grown by _boxes.GROW_FRACTION): from here on it
        # is a loose box (the unary choice and the probe below)
        big = _boxes.grown(boxes, shape)
        boxes = [big[i] if i in covered else b for i, b in enumerate(boxes)]
        info["boxes_loosened"] = list(covered)
    scr_seeds = torch.from_numpy(ctx.scribbles.astype(np.int64) - 1).to(dev)
    scribbled = {k for k in range(1, k1) if bool((scr_seeds == k).any())}
    boxed = {b[0] for b in boxes}
    box_background = boxed >= set(range(1, k1))
    if covered:
        info["boxes_grown_to_scribbles"] = covered

    def background_outside(boxes):
        """Seeds with hard background outside ``boxes`` (when every structure has one)."""
        if not box_background:
            return seeds
        outside = ~torch.from_numpy(_boxes.union_mask(boxes, shape)).to(dev)
        return torch.where(outside & (scr_seeds < 0), 0, scr_seeds)

    if boxes != list(ctx.boxes):
        seeds = background_outside(boxes)
    hist, model = None, None
    if ctx.prior is not None:
        model, gamma = _model_prior(ctx, image, seeds, opts, info)
        rounds, mode = 1, "model prior + box constraints"
    elif boxed <= scribbled:
        rounds, mode = 1, "scribble intensity model + box constraints"
    else:
        rounds, mode = max(1, opts["box_rounds"]), "box-core intensity model (GrabCut)"
    samples = _boxes.initial_samples(boxes, seeds, k1, core=opts["box_core"],
                                     shell=opts["box_shell"], scribbled=scribbled)
    if model is None:
        hist = fit_histograms(image, samples)
        trust = _sample_trust(hist, image, samples)
        info["prior_trust"] = trust
        if mode.startswith("box-core"):
            gammas = [float(opts["box_prior_weight"])]
            if prev is not None and prev.get("box_gamma") is not None:
                gammas = [float(prev["box_gamma"])]  # chosen by the first call
            elif opts["box_select"]:
                gammas = sorted({*BOX_PRIOR_WEIGHTS, *gammas})
            post = posterior(hist, image)
            for msg in _boxes.indistinct(boxes, post, scribbled):
                info.setdefault("box_warnings", []).append(msg)
                warnings.warn(msg, UserWarning, stacklevel=4)
            if opts["box_centre_seeds"]:
                seeds = seeds.clone()
                post *= _boxes.allowed_classes(boxes, shape, k1, dev)
                info["centre_seeds"] = _boxes.centre_seeds(boxes, post, seeds, scribbled)
                scr_seeds = torch.where(seeds > 0, seeds, scr_seeds)
            del post
        else:
            gammas = [_trusted_weight(opts, float(opts["prior_weight"]), trust)]
            if prev is not None and prev.get("watershed"):
                gammas = [WATERSHED]  # chosen by the first call
            elif prev is None and opts["watershed_select"]:
                gammas.append(WATERSHED)
    else:
        gammas = [gamma]
    grad = _watershed.gradient(image.cpu().numpy(), ctx.spacing) if WATERSHED in gammas else None

    def weight_of(g):
        return float(opts["watershed_prior_weight"]) if g == WATERSHED else g

    def unary(g, hist, sds, allowed):
        """The unary term of a candidate: the intensity model ``hist`` (weight ``g``),
        or the watershed flooded from ``sds`` (box outsides included)."""
        if g != WATERSHED:
            return posterior(hist, image) * allowed
        lab = _watershed.labels(None, sds.cpu().numpy(), ctx.spacing, grad)
        return _watershed.prior(lab, k1, dev) * allowed

    def one_pass(gamma, x, samples, n_rounds, bxs=None, sds=None):
        """GrabCut-style rounds at one prior weight (with the current boxes and seeds
        unless ``bxs``/``sds`` are given); returns (x, hist, prior)."""
        bxs = boxes if bxs is None else bxs
        sds = seeds if sds is None else sds
        allowed = _boxes.allowed_classes(bxs, shape, k1, dev)
        fixed = sds >= 0
        hist = None
        for r in range(n_rounds):
            if model is not None:
                prior = model * allowed
            else:
                hist = fit_histograms(image, samples)
                prior = unary(gamma, hist, sds, allowed)
            prior = prior / prior.sum(dim=0, keepdim=True).clamp_min(1e-12)
            # copies: the previous state's solution must stay intact
            init = _set_seeds(x, sds) if x is not None else _onehot_init(sds, k1, prior)
            p = Problem(image, fixed, init, ctx.spacing, prior)
            yield from _progress(solve(p, coarse_to_fine=x is None,
                                       **{**kw, "gamma": weight_of(gamma)}), counter)
            x = p.x
            if r + 1 < n_rounds:
                samples = _boxes.refit_samples(bxs, sds, x.argmax(dim=0), k1,
                                               shell=opts["box_shell"], scribbled=scribbled)
        return x, hist, prior

    def tighten(x, gamma, prior):
        """Tightness seeds on box slices that miss their structure, then re-solve."""
        fixed = (seeds >= 0).clone()
        x = x.clone()
        added = _boxes.tightness_seeds(x, boxes, fixed, margin=opts["box_margin"])
        if added:
            p = Problem(image, fixed, x, ctx.spacing, prior)
            yield from _progress(solve(p, coarse_to_fine=False,
                                       **{**kw, "gamma": weight_of(gamma)}), counter)
            x = p.x
        return x, added

    x0 = x
    if len(gammas) > 1:
        # choose the intensity-model weight on this scan: the one whose result fits
        # the boxes best (tight, not leaking to the faces; _boxes.fit_score)
        tried = []
        for g in gammas:
            xg, hg, pg = yield from one_pass(g, x0, samples, rounds)
            xg, added = yield from tighten(xg, g, pg)
            tried.append((_boxes.fit_score(boxes, xg.argmax(dim=0), opts["box_margin"]), g,
                          xg, hg, pg, added))
        info["box_weight_scores"] = {t[1]: round(t[0], 4) for t in tried}
        _, gamma, x, hist, prior, added = min(tried, key=lambda t: t[0])
        del tried
    else:
        gamma = gammas[0]
        x, hist, prior = yield from one_pass(gamma, x0, samples, rounds)
        x, added = yield from tighten(x, gamma, prior)
    info["prior_weight"] = weight_of(gamma)
    if model is None:
        info["unary"] = ("watershed" if gamma == WATERSHED
                         else "intensity" if gamma > 0 else "none")
    probed = (boxed & scribbled) if model is None else boxed
    if opts["box_probe"] and probed and prev_boxes is None:
        # probe: solve once with these structures' boxes grown; faces where the
        # constrained solve drained the object that the probe keeps cut the object
        big = [g if b[0] in probed else b for b, g in zip(boxes, _boxes.grown(boxes, shape))]
        xp, _, _ = yield from one_pass(gamma, x, samples, 1, big, background_outside(big))
        boxes, probe_faces = _boxes.faces_from_probe(boxes, x.argmax(dim=0), xp,
                                                     shape, probed)
        del xp
        info["box_probe_faces"] = [list(f) for f in probe_faces]
        grown_faces = list(probe_faces)
        if probe_faces:
            seeds = background_outside(boxes)
            x, hist_g, prior = yield from one_pass(gamma, x, samples, 1)
            hist = hist_g if hist_g is not None else hist
            x, more = yield from tighten(x, gamma, prior)
            added += more
    else:
        grown_faces = []
    for _ in range(int(opts["box_grow_rounds"])):
        boxes, faces = _boxes.cut_faces(boxes, x.argmax(dim=0), shape, scribbled)
        if not faces:
            break
        grown_faces += faces
        seeds = background_outside(boxes)
        x = x * _boxes.allowed_classes(boxes, shape, k1, dev)
        x, hist_g, prior = yield from one_pass(gamma, x, samples, 1)
        hist = hist_g if hist_g is not None else hist
        x, more = yield from tighten(x, gamma, prior)
        added += more
    allowed = _boxes.allowed_classes(boxes, shape, k1, dev)
    info.update(box_rounds=rounds, tightness_seeds=added, box_mode=mode,
                box_faces_moved=[list(f) for f in grown_faces],
                boxes_solved=[[int(v) for v in b] for b in boxes])
    x = x * allowed
    return x / x.sum(dim=0, keepdim=True).clamp_min(1e-12), hist


def _scope_correction(ctx, x, x_prev, info):
    """Keep the label changes that a correction can explain; revert new islands.

    A corrective stroke is about the error it is drawn on, and through the intensity
    model about tissue like it: a label change is kept when its connected component
    (6-connected, with the stroke voxels) reaches an edited stroke, or when it extends
    a region that already had its new label (it moves a boundary). Changes that create
    an island of a label where there was none nearby (or a hole) are noise from the
    updated intensity model and go back to the previous solution: without this, in the
    test case of ``tests/engine/test_corrections.py``, as many scattered voxels flip as
    the corrected component holds. A class's first strokes are not a correction: the
    model of a new class may change labels anywhere.

    Parameters
    ----------
    x, x_prev : Tensor, shape (K + 1, Z, Y, X)
        This call's and the previous call's probabilities.

    Returns
    -------
    Tensor, shape (K + 1, Z, Y, X)
    """
    changed = ctx.changed
    if changed is None or not changed.any():
        return x
    new_classes = set(np.unique(ctx.scribbles[changed]).tolist()) - {0}
    kept = set(np.unique(ctx.scribbles[~changed]).tolist())
    if not new_classes <= kept:
        info["correction_scope"] = "a class's first strokes: changes kept everywhere"
        return x
    old_lab = x_prev.argmax(dim=0).cpu().numpy()
    new_lab = x.argmax(dim=0).cpu().numpy()
    diff = old_lab != new_lab
    if not diff.any():
        return x
    lab, _ = ndimage.label(diff | changed)
    keep = np.zeros(lab.max() + 1, bool)
    keep[np.unique(lab[changed])] = True
    for k in np.unique(new_lab[diff]):
        grows = ndimage.binary_dilation((old_lab == k) & ~diff) & diff & (new_lab == k)
        keep[np.unique(lab[grows])] = True
    keep[0] = True
    revert = diff & ~keep[lab]
    n = int(revert.sum())
    info["correction_scope"] = (f"{n} changed voxel(s) forming islands away from the "
                                "edited strokes reverted")
    info["correction_reverted"] = n
    if n:
        r = torch.from_numpy(revert).to(x.device)
        x = torch.where(r, x_prev.to(x.dtype), x)
    return x


@register_method("randomwalk")
def randomwalk(ctx: RefineContext):
    """Random walker with priors (see module docstring).

    Generator yielding :class:`Progress`; returns :class:`MethodOutput` with
    probabilities (K + 1, Z, Y, X) float32. Options: :data:`DEFAULTS`.
    """
    opts = _options(ctx.options)
    device = torch.device(ctx.device)
    image = torch.from_numpy(np.ascontiguousarray(ctx.image, dtype=np.float32)).to(device)
    image = binomial_smooth(image, ctx.spacing, int(opts["smooth"]))
    seeds = torch.from_numpy(ctx.seeds.astype(np.int64)).to(device)
    k1 = ctx.n_classes
    prev = _usable_previous(ctx, opts)
    sigma2 = prev["sigma2"] if prev is not None else contrast_scale(image)
    kw = dict(beta=float(opts["beta"]), gamma=float(opts["prior_weight"]), sigma2=sigma2,
              h_ref=min(ctx.spacing), tol=float(opts["tol"]), max_iter=int(opts["max_iter"]))
    x_prev = None if prev is None else torch.from_numpy(prev["probabilities"]).to(device)
    info = {"warm_start": prev is not None, "local": False}
    counter = [0]
    class_counts = None

    if not bool((seeds >= 0).any()) and not ctx.boxes and (
            ctx.prior is None or opts["model_prior_weight"] <= 0):
        raise LabelEffError(
            "nothing constrains the random walker: no scribbles, no box background and "
            "model_prior_weight=0; scribble, draw boxes or use model_prior_weight > 0")
    hist = hist_global = None
    pure_walker = False
    if ctx.boxes:
        x, hist = yield from _solve_boxes(ctx, image, seeds, x_prev, opts, kw, counter, info,
                                          prev)
        if prev is not None:  # faces moved by earlier calls stay moved
            info["box_faces_moved"] = prev.get("box_faces_moved", []) + info["box_faces_moved"]
            info["boxes_loosened"] = prev.get("boxes_loosened", [])
        info.setdefault("boxes_loosened", [])
    elif ctx.prior is not None:
        prior, kw["gamma"] = _model_prior(ctx, image, seeds, opts, info)
        box = None if prev is None else _local_box(ctx.changed, ctx.spacing, opts)
        x = yield from _solve_local_or_full(
            ctx, image, seeds, x_prev, box,
            lambda b: prior if b is None else prior[(slice(None), *b)], kw, counter, info,
            opts)
    else:
        hist = fit_histograms(image, [seeds == k for k in range(k1)])
        hist_global = hist
        class_counts = torch.bincount(seeds[seeds >= 0], minlength=k1).tolist()
        trust = _prior_trust(hist, image, seeds)
        gamma = kw["gamma"] = _trusted_weight(opts, kw["gamma"], trust)
        watershed = ws_wins = False
        confirmed = 0.0
        if prev is None and opts["prior_select"] and (gamma > 0 or opts["watershed_select"]):
            chosen, scores, confirmed, ws_wins = yield from _select_weight(
                ctx, image, seeds, kw, gamma, counter, watershed=opts["watershed_select"])
            info.update(prior_select_scores=scores, island_hits=round(confirmed, 3))
            pure_walker = chosen == 0.0
        elif prev is not None:  # incremental calls keep the first call's choice
            pure_walker = prev.get("pure_walker", False)
            watershed = prev.get("watershed", False)
        if pure_walker:
            gamma = kw["gamma"] = 0.0
        if watershed:
            # the watershed's labels replace the intensity model; every stroke (the
            # corrections too) is one of its markers, so it is flooded again each call
            # and the whole volume is solved (a new marker can move far-away basins)
            ws_prior = _watershed.prior(_watershed.labels(
                image.cpu().numpy(), seeds.cpu().numpy(), ctx.spacing), k1, device)
            gamma = kw["gamma"] = float(opts["watershed_prior_weight"])
        info.update(prior_trust=trust, prior_weight=gamma,
                    unary="watershed" if watershed else "intensity" if gamma > 0 else "none")
        box = None if prev is None or watershed else _local_box(ctx.changed, ctx.spacing,
                                                                opts)
        if box is not None and gamma > 0:
            old_hist = _hist_from_payload(prev["hist"], device)
            shift = _prior_shift(old_hist, hist, image)
            info["prior_shift"] = shift
            had_all = len(prev.get("class_counts", ())) == k1 and min(prev["class_counts"]) > 0
            general = None
            if shift > opts["local_prior_tol"] and had_all:
                general, info["update_scores"] = _stroke_generalizes(ctx, image, seeds)
            if shift > opts["local_prior_tol"] and (not had_all or general):
                # a class's first samples, or strokes typical of their class
                # (``_stroke_generalizes``): the model is updated everywhere
                box = None
            elif shift > opts["local_prior_tol"]:
                # A small stroke that moves the global intensity model a lot (a region
                # whose intensities differ from the rest of its class, e.g. darker deep
                # white matter) is local evidence: the updated model acts only in the
                # sub-box around the stroke; if the correction outgrows it the whole
                # volume is solved with the previous model (the stroke acts through its
                # seeds) instead of flipping far-away voxels of look-alike intensity.
                info["prior_kept"] = True
                hist_global = old_hist

        def prior_of(b):
            # the updated model in a sub-box around the strokes; the kept one
            # (``prior_kept``) when the whole volume is solved
            if gamma <= 0:
                return None
            if watershed:
                return ws_prior if b is None else ws_prior[(slice(None), *b)]
            if b is None:
                return posterior(hist_global, image)
            return posterior(hist, image[(slice(None), *b)])
        x = yield from _solve_local_or_full(ctx, image, seeds, x_prev, box, prior_of, kw,
                                            counter, info, opts)
        claimed = int((x.argmax(dim=0) > 0).sum())  # most expansive walker solution
        if prev is None and opts["prior_select"] and gamma > 0 and not watershed:
            # an intensity model that puts a large share of a structure in components
            # holding none of its strokes claims look-alike tissue that no background
            # stroke sampled, unless held-out strokes were found in such islands (a
            # structure of several parts; without a held-out check there is no such
            # evidence): the walker alone is solved instead (and kept)
            share = _island_share(x.argmax(dim=0).cpu().numpy(), seeds.cpu().numpy())
            info["island_share"] = round(share, 3)
            if share > ISLAND_MAX and confirmed < ISLAND_CONFIRM:
                pure_walker = True
                gamma = kw["gamma"] = 0.0
                info.update(prior_weight=0.0, unary="none")
                x = yield from _solve_local_or_full(ctx, image, seeds, None, None, prior_of,
                                                    kw, counter, info, opts)
                claimed = max(claimed, int((x.argmax(dim=0) > 0).sum()))
        if ws_wins:
            # the watershed won the held-out check; it is taken only if it claims no more
            # voxels than the most expansive walker solution: it is there to cure the
            # walker's over-reach or shrinkage inside an object, and its own failure is
            # a flood through a weak edge into a look-alike region that no stroke holds
            ws_labels = _watershed.labels(image.cpu().numpy(), seeds.cpu().numpy(),
                                          ctx.spacing)
            info["watershed_claims"] = [int((ws_labels > 0).sum()), claimed]
            if info["watershed_claims"][0] <= claimed:
                watershed, pure_walker = True, False
                ws_prior = _watershed.prior(ws_labels, k1, device)
                gamma = kw["gamma"] = float(opts["watershed_prior_weight"])
                info.update(prior_weight=gamma, unary="watershed")
                x = yield from _solve_local_or_full(ctx, image, seeds, None, None, prior_of,
                                                    kw, counter, info, opts)

    if prev is not None and opts["correction_scope"]:
        x = _scope_correction(ctx, x, x_prev, info)
    probs = as_numpy(x)
    if ctx.boxes:
        info["box_report"] = _boxes.report(ctx.boxes, probs.argmax(axis=0),
                                           [tuple(f) for f in info["box_faces_moved"]],
                                           info["boxes_loosened"])
        for msg in info["box_report"]:
            if "holds no voxel" in msg or "cuts the object" in msg:
                warnings.warn(msg, UserWarning, stacklevel=4)
    payload = {
        "probabilities": probs,
        "sigma2": sigma2,
        "hist": None if (hist if ctx.boxes else hist_global) is None else _hist_payload(
            hist if ctx.boxes else hist_global),
        "prior_key": _prior_key(ctx.prior),
        "boxes": list(ctx.boxes),
        "class_counts": class_counts,
        "pure_walker": pure_walker,
        "watershed": info.get("unary") == "watershed",
        "boxes_solved": info.get("boxes_solved"),
        "box_gamma": info.get("prior_weight") if ctx.boxes else None,
        "box_faces_moved": info.get("box_faces_moved", []),
        "boxes_loosened": info.get("boxes_loosened", []),
        "options": {k: opts[k] for k in _KEY_OPTIONS},
    }
    return MethodOutput(probabilities=probs, payload=payload, info=info)
