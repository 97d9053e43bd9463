"""Box prompts with the graph method (see :func:`_solve_boxes`)."""

from __future__ import annotations


import numpy as np
import torch

import warnings

from . import _boxes, _watershed
from ._likelihood import fit_histograms, posterior
from ._rw_common import (_onehot_init, _progress, _sample_trust, _set_seeds,
                         _trusted_weight)
from ._rw_select import _model_prior
from ._rw_solver import Problem, solve

#: Intensity-model weights tried for boxed structures without scribbles (the one whose
#: result fits the boxes best is kept; ``_boxes.fit_score``).
BOX_PRIOR_WEIGHTS = (0.0, 0.05, 0.2)
#: The watershed candidate among the box path's unary terms (``_solve_boxes``).
WATERSHED = "watershed"


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


