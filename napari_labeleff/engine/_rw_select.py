"""Choices the graph method makes on a first call, from the user's own strokes: the
unary term (intensity model, none, or the marker watershed), the share of a model
prior, and whether a correction's strokes generalise."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from . import _watershed
from ._likelihood import Histograms, fit_histograms, posterior
from ._rw_common import (_PRIOR_CHECK_SAMPLES, _balanced_accuracy, _onehot_init, run_solve,
                         _prior_trust, _stroke_folds, _trusted_weight)
from ._rw_solver import Problem

#: Shares of the model prior (vs. the scan's intensity model) tried by ``prior_check``.
PRIOR_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)


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


def _select_weight(ctx, image: torch.Tensor, seeds: torch.Tensor, kw: dict, gamma: float,
                   log, watershed: bool = False):
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
            yield from run_solve(p, log, coarse_to_fine=True, **{**kw, "gamma": g})
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




def _prior_shift(old: Histograms, new: Histograms, image: torch.Tensor) -> float:
    """99th percentile of the prior change over a voxel sample."""
    flat = image.reshape(image.shape[0], -1)
    sample = flat[:, :: max(1, flat.shape[1] // _PRIOR_CHECK_SAMPLES)]
    diff = (posterior(old, sample) - posterior(new, sample)).abs().amax(dim=0)
    return float(torch.quantile(diff, 0.99))


