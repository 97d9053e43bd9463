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

Latency budget (:func:`_staged`): on a region above :data:`STAGED_MIN_VOXELS` a first
call yields a coarse first result, makes the choices above on a coarse grid (limited by
the span of the strokes, :func:`_stroke_pooling_limit`) and solves once at full
resolution; ``info["solves"]`` counts the solves of each stage. The room of each part:
``_rw_select`` (choices), ``_rw_local`` (incremental sub-box solves), ``_rw_boxes``
(box prompts), ``_rw_common`` (seeds, folds, trust, solve counting).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import replace

import numpy as np
import torch

from .._errors import LabelEffError
from . import _boxes, _multiscale, _watershed
from ._likelihood import Histograms, fit_histograms, posterior
from ._registry import MethodOutput, RefineContext, as_numpy, class_argmax, register_method
from ._rw_boxes import BoxDecision, BoxSolve
from ._rw_common import SolveLog, _prior_trust, _trusted_weight
from ._rw_local import _local_box, _scope_correction, _solve_local_or_full
from ._rw_select import (ISLAND_CONFIRM, ISLAND_MAX, _island_share, _model_prior,
                         _prior_shift, _select_weight, _stroke_generalizes)
from ._rw_solver import binomial_smooth, contrast_scale
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
    # a first call on a large region yields a coarse first result, makes its choices on
    # a coarse grid and solves once at full resolution (``_staged``)
    "staged": True,
}
_KEY_OPTIONS = ("smooth", "beta", "prior_weight", "prior_trust_low", "prior_trust_high",
                "box_prior_weight", "box_margin", "box_core", "box_shell", "box_grow_rounds",
                "box_centre_seeds", "box_select", "box_probe", "prior_select",
                "watershed_select", "watershed_prior_weight",
                "model_prior_weight", "prior_release_mm", "prior_check")


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



#: Regions (voxels) above which a first call runs in stages: a first result on a coarse
#: grid, the choices on a coarse grid, then one solve at full resolution.
STAGED_MIN_VOXELS = 1 << 16
#: Largest grid of the first result (``Progress.preview``).
PREVIEW_VOXELS = 1 << 17
#: Largest grid on which a first call makes its choices (held-out stroke checks, island
#: and watershed checks, box weights, probe and face moves).
DECIDE_VOXELS = 1 << 18
#: Largest grid on which the watershed's claims are counted (``_solve_scribbles``): the
#: shipped CT's scribbles case took the watershed's flood through weak edges for a
#: claim on the choice grid (2^18 voxels, Dice 0.601) but not on one of 2^20 (0.781); a
#: flood of the full 2.25 M voxel LA case cost 8 s.
CLAIMS_VOXELS = 1 << 20
#: Relative residual at which the coarse stages' solves stop (their labels decide; the
#: final solve still runs to ``tol``).
COARSE_TOL = 1e-2
#: Options of the first result: the default unary term, no choices, no box moves.
_PREVIEW_OPTIONS = {"prior_select": False, "watershed_select": False, "box_select": False,
                    "box_probe": False, "box_grow_rounds": 0, "box_rounds": 1}
#: Diagnostics of the choice stage reported with the final result.
_DECIDE_INFO = ("prior_select_scores", "island_hits", "island_share", "watershed_claims",
                "box_weight_scores", "box_probe_faces", "centre_seeds", "box_warnings")


@register_method("randomwalk")
def randomwalk(ctx: RefineContext):
    """Random walker with priors (see module docstring).

    Generator yielding :class:`Progress`; returns :class:`MethodOutput` with
    probabilities (K + 1, Z, Y, X) float32. Options: :data:`DEFAULTS`.

    A first call on a region above :data:`STAGED_MIN_VOXELS` runs in three stages
    (:func:`_staged`): it yields a first result early (``Progress.preview``), makes its
    choices on a coarse grid and solves once at full resolution. ``info["solves"]``
    counts the solves of each stage and those on the whole full-resolution grid.
    """
    opts = _options(ctx.options)
    log = SolveLog(ctx.seeds.size)
    prev = _usable_previous(ctx, opts)
    if prev is None and opts["staged"] and ctx.seeds.size > STAGED_MIN_VOXELS:
        out = yield from _staged(ctx, opts, log)
    else:
        out = yield from _single(ctx, opts, prev, log)
    out.info["solves"] = log.summary()
    return out


def _staged(ctx: RefineContext, opts: dict, log: SolveLog):
    """A first call in stages; returns :class:`MethodOutput`.

    1. *First result*: one solve on a grid of at most :data:`PREVIEW_VOXELS` (block
       means) with the default unary term and no choices; yielded upsampled as
       ``Progress.preview``.
    2. *Choices*: the full first-call logic (held-out stroke checks, island and
       watershed checks, box weights, probe and face moves) on a grid of at most
       :data:`DECIDE_VOXELS`, whatever the volume's size (a region that small is
       decided and solved at full resolution in one go).
    3. *Final*: one solve at full resolution with those choices, warm-started from the
       upsampled solution of stage 2; the choices go into the state, so corrections
       keep them.
    """
    shape, n = tuple(ctx.seeds.shape), ctx.seeds.size
    base = replace(ctx, state=None, changed=None)
    log.stage = "preview"
    fp = _multiscale.factors(shape, ctx.spacing, min(PREVIEW_VOXELS, n // 8))
    coarse_tol = max(float(opts["tol"]), COARSE_TOL)
    popts = {**ctx.options, **_PREVIEW_OPTIONS, "tol": coarse_tol}
    pctx = replace(_multiscale.coarse_context(base, fp), options=popts)
    pout = yield from _single(pctx, _options(popts), None, log)
    up = _multiscale.upsample(torch.from_numpy(pout.probabilities), fp, shape)
    yield Progress(log.step, log.step + 2, "first result (coarse grid); choosing the "
                   "unary term", preview=class_argmax(up).to(torch.uint8).numpy())
    del up, pout
    fd = _multiscale.factors(shape, ctx.spacing, DECIDE_VOXELS,
                             limit=_stroke_pooling_limit(ctx.scribbles, ctx.n_classes))
    if fd == (1, 1, 1):
        # a region this small is decided at full resolution, where the choices are
        # made on the solutions themselves (no separate final solve)
        log.stage = "final"
        out = yield from _single(ctx, opts, None, log)
        out.info["preview_on"] = {"shape": list(pctx.seeds.shape), "factors": list(fp)}
        return out
    log.stage = "decide"
    dctx = _multiscale.coarse_context(base, fd)
    dout = yield from _single(dctx, {**opts, "tol": coarse_tol}, None, log, coarse=True)
    decided = dict(dout.payload)
    decided.update(
        probabilities=_multiscale.upsample(torch.from_numpy(dout.probabilities), fd,
                                           shape).numpy(),
        sigma2=None, hist=None, from_coarse=True)
    box = BoxDecision.from_payload(decided.get("box_decision"))
    if box is not None:
        decided["box_decision"] = box.scaled(fd, dctx.boxes, ctx.boxes, shape).to_payload()
    log.stage = "final"
    yield Progress(log.step, log.step + 1, "solving at full resolution")
    out = yield from _single(ctx, opts, decided, log)
    out.info.update({k: dout.info[k] for k in _DECIDE_INFO if k in dout.info})
    out.info["decided_on"] = {"shape": list(dctx.seeds.shape), "factors": list(fd)}
    out.info["preview_on"] = {"shape": list(pctx.seeds.shape), "factors": list(fp)}
    return out


#: Voxels of the coarse grid that the strokes of every structure must span along each
#: axis for the choices to be made there (``_stroke_pooling_limit``).
MIN_STROKE_CELLS = 6


def _stroke_pooling_limit(scribbles: np.ndarray, n_classes: int) -> tuple:
    """Largest pooling factor per axis of the choice stage: the strokes of each
    structure must span at least :data:`MIN_STROKE_CELLS` coarse voxels, in-plane
    (their longer in-plane extent, for the Y and X axes) and across slices (Z). Small
    structures are drawn with short strokes, and a grid that shrinks them to a few
    voxels cannot tell their unary term apart (a 16 mm lesion drawn with 3-voxel
    strokes lost its watershed choice, Dice 0.93 -> 0.31, on a grid pooled twice
    in-plane); large ones leave the budget free."""
    limit = [math.inf] * 3
    for k in range(2, n_classes + 1):
        idx = np.nonzero(scribbles == k)
        if not idx[0].size:
            continue
        span = [int(i.max() - i.min()) + 1 for i in idx]
        for a, extent in ((0, span[0]), (1, max(span[1:])), (2, max(span[1:]))):
            limit[a] = min(limit[a], max(1, extent // MIN_STROKE_CELLS))
    return tuple(limit)


def _watershed_claims(ctx, image, seeds, prev, info):
    """The final stage's check of a watershed that won the coarse stage's held-out
    check: how much it claims, counted on a grid of at most :data:`CLAIMS_VOXELS` (the
    choice stage's block means blur the weak edges it floods through), against the
    walker's share of the volume there. Returns (full-resolution labels or None, whether
    the watershed is taken)."""
    f = _multiscale.factors(tuple(seeds.shape), ctx.spacing, CLAIMS_VOXELS)
    img_np, seeds_np = image.cpu().numpy(), seeds.cpu().numpy()
    if f != (1, 1, 1):
        img_np = _multiscale._pool_mean(img_np, f)
        seeds_np = _multiscale._pool_seeds(seeds_np, f, ctx.n_classes)
    claim = _watershed.labels(img_np, seeds_np, tuple(h * k for h, k in zip(ctx.spacing, f)))
    walker = int(round(prev["watershed_claims_walker"] * seeds.numel()))
    info["watershed_claims"] = [int(round((claim > 0).mean() * seeds.numel())), walker]
    return (claim if f == (1, 1, 1) else None), info["watershed_claims"][0] <= walker


def _solve_scribbles(ctx, image, seeds, x_prev, prev, opts, kw, log, info, coarse):
    """The scribble path (no boxes, no model prior): the intensity model of the strokes
    at its trusted weight, none, or the marker watershed (chosen by held-out strokes on
    a first call, kept by later ones), solved locally around a correction where it can
    be. Generator; returns (x, histograms, class counts, pure_walker)."""
    k1, device = ctx.n_classes, image.device
    hist = fit_histograms(image, [seeds == k for k in range(k1)])
    hist_global = hist
    class_counts = torch.bincount(seeds[seeds >= 0], minlength=k1).tolist()
    trust = _prior_trust(hist, image, seeds)
    gamma = kw["gamma"] = _trusted_weight(opts, kw["gamma"], trust)
    watershed = ws_wins = pure_walker = False
    confirmed = 0.0
    if prev is None and opts["prior_select"] and (gamma > 0 or opts["watershed_select"]):
        chosen, scores, confirmed, ws_wins = yield from _select_weight(
            ctx, image, seeds, kw, gamma, log, watershed=opts["watershed_select"])
        info.update(prior_select_scores=scores, island_hits=round(confirmed, 3))
        pure_walker = chosen == 0.0
    elif prev is not None:  # incremental calls keep the first call's choice
        pure_walker = prev.get("pure_walker", False)
        watershed = prev.get("watershed", False)
    ws_labels = None
    if prev is not None and prev.get("watershed_claims_walker") is not None:
        ws_labels, wins = _watershed_claims(ctx, image, seeds, prev, info)
        if wins:
            watershed, pure_walker = True, False
    if pure_walker:
        gamma = kw["gamma"] = 0.0
    if watershed:
        # the watershed's labels replace the intensity model; every stroke (the
        # corrections too) is one of its markers, so it is flooded again each call
        # and the whole volume is solved (a new marker can move far-away basins)
        if ws_labels is None:
            ws_labels = _watershed.labels(image.cpu().numpy(), seeds.cpu().numpy(),
                                          ctx.spacing)
        ws_prior = _watershed.prior(ws_labels, k1, device)
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
                                        log, info, opts)
    claimed = int((class_argmax(x) > 0).sum())  # most expansive walker solution
    if prev is None and opts["prior_select"] and gamma > 0 and not watershed:
        # an intensity model that puts a large share of a structure in components
        # holding none of its strokes claims look-alike tissue that no background
        # stroke sampled, unless held-out strokes were found in such islands (a
        # structure of several parts; without a held-out check there is no such
        # evidence): the walker alone is solved instead (and kept)
        share = _island_share(class_argmax(x).cpu().numpy(), seeds.cpu().numpy())
        info["island_share"] = round(share, 3)
        if share > ISLAND_MAX and confirmed < ISLAND_CONFIRM:
            pure_walker = True
            gamma = kw["gamma"] = 0.0
            info.update(prior_weight=0.0, unary="none")
            x = yield from _solve_local_or_full(ctx, image, seeds, None, None, prior_of,
                                                kw, log, info, opts)
            claimed = max(claimed, int((class_argmax(x) > 0).sum()))
    if ws_wins and coarse:
        # decided at full resolution by the final stage (see above)
        info["watershed_claims_walker"] = claimed / seeds.numel()
    elif ws_wins:
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
                                                kw, log, info, opts)
    return x, hist_global, class_counts, pure_walker


def _single(ctx: RefineContext, opts: dict, prev, log: SolveLog, coarse: bool = False):
    """The graph method on the grid of ``ctx`` in one stage (``prev``: the payload to
    start from, a previous call's or the choice stage's, or None for a first call with
    every choice made here; ``coarse``: the choice stage of :func:`_staged`, which
    leaves the watershed's claim check to the final stage); returns
    :class:`MethodOutput`."""
    device = torch.device(ctx.device)
    image = torch.from_numpy(np.ascontiguousarray(ctx.image, dtype=np.float32)).to(device)
    image = binomial_smooth(image, ctx.spacing, int(opts["smooth"]))
    seeds = torch.from_numpy(ctx.seeds.astype(np.int64)).to(device)
    sigma2 = prev["sigma2"] if prev is not None and prev.get("sigma2") is not None \
        else contrast_scale(image)
    kw = dict(beta=float(opts["beta"]), gamma=float(opts["prior_weight"]), sigma2=sigma2,
              h_ref=min(ctx.spacing), tol=float(opts["tol"]), max_iter=int(opts["max_iter"]))
    x_prev = None if prev is None else torch.from_numpy(prev["probabilities"]).to(device)
    if x_prev is not None and prev.get("from_coarse") and not ctx.boxes:
        # the scribble path's final solve starts from its own pyramid: the choice
        # stage's solution (solved to COARSE_TOL) was a worse start (LA case 0.8346
        # against 0.8368 from the pyramid, same time)
        x_prev = None
    info = {"warm_start": prev is not None, "local": False}
    class_counts = None

    if not bool((seeds >= 0).any()) and not ctx.boxes and (
            ctx.prior is None or opts["model_prior_weight"] <= 0):
        raise LabelEffError(
            "nothing constrains the random walker: no scribbles, no box background and "
            "model_prior_weight=0; scribble, draw boxes or use model_prior_weight > 0")
    hist = hist_global = None
    pure_walker = False
    box_decision = None
    if ctx.boxes:
        solver = BoxSolve(ctx, image, seeds, opts, kw, log, info,
                          None if prev is None else BoxDecision.from_payload(
                              prev.get("box_decision")),
                          fine_warm_start=prev is None or not prev.get("from_coarse"))
        x, hist, box_decision = yield from solver.run(x_prev)
    elif ctx.prior is not None:
        prior, kw["gamma"] = _model_prior(ctx, image, seeds, opts, info)
        box = None if prev is None else _local_box(ctx.changed, ctx.spacing, opts)
        x = yield from _solve_local_or_full(
            ctx, image, seeds, x_prev, box,
            lambda b: prior if b is None else prior[(slice(None), *b)], kw, log, info,
            opts)
    else:
        x, hist_global, class_counts, pure_walker = yield from _solve_scribbles(
            ctx, image, seeds, x_prev, prev, opts, kw, log, info, coarse)

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
        "box_decision": None if box_decision is None else box_decision.to_payload(),
        "watershed_claims_walker": info.get("watershed_claims_walker"),
        "options": {k: opts[k] for k in _KEY_OPTIONS},
    }
    return MethodOutput(probabilities=probs, payload=payload, info=info)

