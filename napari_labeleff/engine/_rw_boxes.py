"""Box prompts with the graph method (:class:`BoxSolve`).

The first call runs the steps below on whatever grid it is given (the staged path of
``_randomwalk`` gives it a coarse grid, so the several solves they cost stay cheap);
its outcome (:class:`BoxDecision`: the boxes as solved, the unary term kept) is the
state that later calls start from. A call with a decision (``decided``: the full
resolution stage, or a correction) solves once: tightness seeds and GrabCut samples
come from the previous solution instead of extra solve rounds.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from . import _boxes, _watershed
from ._likelihood import fit_histograms, posterior
from ._rw_common import _onehot_init, _sample_trust, _set_seeds, _trusted_weight, run_solve
from ._rw_select import _model_prior, _select_weight
from ._rw_solver import Problem

#: Intensity-model weights tried for boxed structures without scribbles (the one whose
#: result fits the boxes best is kept; ``_boxes.fit_score``).
BOX_PRIOR_WEIGHTS = (0.0, 0.05, 0.2)


@dataclass(frozen=True)
class Unary:
    """One candidate unary term of the box path.

    Attributes
    ----------
    kind : str
        ``"intensity"`` (the intensity model of the strokes or box cores), ``"watershed"``
        (the marker watershed of the strokes, box outsides as background marker) or
        ``"model"`` (the model prior of ``prior=``).
    weight : float
        Its weight in the walker (0 = edges only).
    """

    kind: str
    weight: float

    @property
    def name(self) -> str:
        """``"watershed"``, ``"none"`` or ``"intensity"`` (``info["unary"]``)."""
        if self.kind == "watershed":
            return "watershed"
        return "intensity" if self.weight > 0 else "none"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "weight": float(self.weight)}


@dataclass
class BoxDecision:
    """What a first call decided, kept in the state for the calls after it.

    Attributes
    ----------
    boxes : list of tuple
        The boxes as solved (grown where they cut their object), in the grid's voxels.
    unary : Unary
    faces_moved : list of list
        (box index, axis, side) of every face moved so far.
    loosened : list of int
        Boxes grown to cover their strokes and loosened.
    """

    boxes: list
    unary: Unary
    faces_moved: list
    loosened: list

    def to_payload(self) -> dict:
        return {"boxes": [[int(v) for v in b] for b in self.boxes],
                "unary": self.unary.to_dict(), "faces_moved": [list(f) for f in
                                                               self.faces_moved],
                "loosened": list(self.loosened)}

    @classmethod
    def from_payload(cls, d: dict | None) -> "BoxDecision | None":
        if not d:
            return None
        return cls([tuple(b) for b in d["boxes"]], Unary(**d["unary"]),
                   [list(f) for f in d["faces_moved"]], list(d["loosened"]))

    def scaled(self, factors, coarse_boxes, fine_boxes, shape) -> "BoxDecision":
        """This decision, made on a grid pooled by ``factors`` where the boxes were
        ``coarse_boxes``, on the full grid whose boxes are ``fine_boxes``: faces that
        did not move keep the user's position, moved faces scale up (outward)."""
        out = []
        for i, (b, cb) in enumerate(zip(self.boxes, coarse_boxes)):
            fb = list(fine_boxes[i]) if i < len(fine_boxes) else None
            new = [b[0]]
            for a in range(3):
                lo = fb[1 + a] if fb and b[1 + a] == cb[1 + a] else b[1 + a] * factors[a]
                new.append(max(0, min(lo, fb[1 + a] if fb else lo)))
            for a in range(3):
                hi = fb[4 + a] if fb and b[4 + a] == cb[4 + a] else b[4 + a] * factors[a]
                new.append(min(shape[a], max(hi, fb[4 + a] if fb else hi)))
            out.append(tuple(new))
        return BoxDecision(out, self.unary, self.faces_moved, self.loosened)


class BoxSolve:
    """Boxes with the graph method, as a list of steps (see :meth:`run`).

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

    With a ``decision`` (a previous call's, or the coarse stage's scaled up) the boxes
    and the unary term are taken from it and the problem is solved once (warm-started
    from ``x``): no probe, no weight choice, no growing.

    Parameters
    ----------
    ctx : RefineContext
    image : Tensor, shape (C, Z, Y, X)
    seeds : Tensor of int64, shape (Z, Y, X)
        -1 unknown, else class (box outsides already background).
    opts, kw : dict
        Method options and solver keywords.
    log : SolveLog
    info : dict
        Diagnostics (written).
    decision : BoxDecision or None
    fine_warm_start : bool
        Whether the warm start of a decided call is a solution on this grid (a
        previous call's) rather than the coarse stage's, upsampled.
    """

    def __init__(self, ctx, image, seeds, opts, kw, log, info, decision=None,
                 fine_warm_start=True):
        self.ctx, self.image, self.opts, self.kw, self.log, self.info = (
            ctx, image, opts, kw, log, info)
        self.fine_warm_start = fine_warm_start
        self.k1, self.shape, self.dev = ctx.n_classes, tuple(seeds.shape), image.device
        self.decision = decision
        start = list(ctx.boxes) if decision is None else list(decision.boxes)
        self.boxes, covered = _boxes.cover_scribbles(start, ctx.scribbles)
        self.loosened = [] if decision is None else list(decision.loosened)
        if covered and decision is None:
            # a box that leaves out strokes of its own structure was drawn too small or
            # shifted; the strokes show that it is wrong, not by how much elsewhere, so
            # all its faces are loosened (grown by _boxes.GROW_FRACTION): from here on
            # it is a loose box (the unary choice and the probe below)
            big = _boxes.grown(self.boxes, self.shape)
            self.boxes = [big[i] if i in covered else b for i, b in enumerate(self.boxes)]
            self.loosened = list(covered)
        if covered:
            info["boxes_grown_to_scribbles"] = covered
        self.scr_seeds = torch.from_numpy(ctx.scribbles.astype(np.int64) - 1).to(self.dev)
        self.scribbled = {k for k in range(1, self.k1) if bool((self.scr_seeds == k).any())}
        self.boxed = {b[0] for b in self.boxes}
        self.box_background = self.boxed >= set(range(1, self.k1))
        self.base_seeds = seeds
        self.seeds = seeds if self.boxes == list(ctx.boxes) else self.background_outside(
            self.boxes)
        self.model = None
        self.grad = None
        self.added = 0

    # ---- small pieces ----------------------------------------------------------------
    def background_outside(self, boxes):
        """Seeds with hard background outside ``boxes`` (when every structure has one)."""
        if not self.box_background:
            return self.base_seeds
        outside = ~torch.from_numpy(_boxes.union_mask(boxes, self.shape)).to(self.dev)
        return torch.where(outside & (self.scr_seeds < 0), 0, self.scr_seeds)

    def unary(self, cand: Unary, hist, sds, allowed):
        """The unary term of a candidate (class likelihoods, masked by ``allowed``)."""
        if cand.kind == "model":
            return self.model * allowed
        if cand.kind == "intensity":
            return posterior(hist, self.image) * allowed
        if self.grad is None:
            self.grad = _watershed.gradient(self.image.cpu().numpy(), self.ctx.spacing)
        lab = _watershed.labels(None, sds.cpu().numpy(), self.ctx.spacing, self.grad)
        return _watershed.prior(lab, self.k1, self.dev) * allowed

    def one_pass(self, cand: Unary, x, samples, n_rounds, bxs=None, sds=None):
        """GrabCut-style rounds with one unary term (with the current boxes and seeds
        unless ``bxs``/``sds`` are given); returns (x, hist, prior)."""
        bxs = self.boxes if bxs is None else bxs
        sds = self.seeds if sds is None else sds
        allowed = _boxes.allowed_classes(bxs, self.shape, self.k1, self.dev)
        fixed = sds >= 0
        hist = None
        for r in range(n_rounds):
            if cand.kind != "model":
                hist = fit_histograms(self.image, samples)
            prior = self.unary(cand, hist, sds, allowed)
            prior = prior / prior.sum(dim=0, keepdim=True).clamp_min(1e-12)
            # copies: the previous state's solution must stay intact
            init = _set_seeds(x, sds) if x is not None else _onehot_init(sds, self.k1, prior)
            p = Problem(self.image, fixed, init, self.ctx.spacing, prior)
            yield from run_solve(p, self.log, coarse_to_fine=x is None,
                                 **{**self.kw, "gamma": cand.weight})
            x = p.x
            if r + 1 < n_rounds:
                samples = _boxes.refit_samples(bxs, sds, x.argmax(dim=0), self.k1,
                                               shell=self.opts["box_shell"],
                                               scribbled=self.scribbled)
        return x, hist, prior

    def tighten(self, x, cand: Unary, prior):
        """Tightness seeds on box slices that miss their structure, then re-solve."""
        fixed = (self.seeds >= 0).clone()
        x = x.clone()
        added = _boxes.tightness_seeds(x, self.boxes, fixed, margin=self.opts["box_margin"])
        if added:
            p = Problem(self.image, fixed, x, self.ctx.spacing, prior)
            yield from run_solve(p, self.log, coarse_to_fine=False,
                                 **{**self.kw, "gamma": cand.weight})
            x = p.x
        self.added += added
        return x

    # ---- steps -----------------------------------------------------------------------
    def mode(self):
        """(GrabCut rounds, description) of this call's intensity model."""
        if self.ctx.prior is not None:
            return 1, "model prior + box constraints"
        if self.boxed <= self.scribbled:
            return 1, "scribble intensity model + box constraints"
        return max(1, self.opts["box_rounds"]), "box-core intensity model (GrabCut)"

    def candidates(self, mode: str, samples):
        """The unary terms to try (one with a decision or a model prior); a generator
        (the intensity weight may be chosen by held-out strokes) returning a list of
        :class:`Unary`."""
        opts, info = self.opts, self.info
        if self.ctx.prior is not None:
            self.model, weight = _model_prior(self.ctx, self.image, self.seeds, opts, info)
            return [Unary("model", weight)]
        hist = fit_histograms(self.image, samples)
        trust = _sample_trust(hist, self.image, samples)
        info["prior_trust"] = trust
        if mode.startswith("box-core"):
            weights = [float(opts["box_prior_weight"])]
            if opts["box_select"] and self.decision is None:
                weights = sorted({*BOX_PRIOR_WEIGHTS, *weights})
            cands = [Unary("intensity", w) for w in weights]
            self.box_core_seeds(hist)
        else:
            weight = _trusted_weight(opts, float(opts["prior_weight"]), trust)
            if self.decision is None and opts["prior_select"] and weight > 0:
                # the intensity model's weight by held-out strokes, as on the scribble
                # path (the box fit cannot tell a model that over-reaches inside the box)
                weight, scores, _, _ = yield from _select_weight(
                    self.ctx, self.image, self.scr_seeds, self.kw, weight, self.log)
                info["prior_select_scores"] = scores
            cands = [Unary("intensity", weight)]
            if self.decision is None and opts["watershed_select"]:
                cands.append(Unary("watershed", float(opts["watershed_prior_weight"])))
        if self.decision is not None:
            return [self.decision.unary]
        return cands

    def box_core_seeds(self, hist):
        """Warnings on boxes whose core looks like their surroundings; centre seeds of
        structures that have no strokes."""
        post = posterior(hist, self.image)
        for msg in _boxes.indistinct(self.boxes, post, self.scribbled):
            self.info.setdefault("box_warnings", []).append(msg)
            warnings.warn(msg, UserWarning, stacklevel=5)
        if self.opts["box_centre_seeds"]:
            self.seeds = self.seeds.clone()
            post *= _boxes.allowed_classes(self.boxes, self.shape, self.k1, self.dev)
            self.info["centre_seeds"] = _boxes.centre_seeds(self.boxes, post, self.seeds,
                                                            self.scribbled)
            self.scr_seeds = torch.where(self.seeds > 0, self.seeds, self.scr_seeds)

    def choose(self, cands, x0, samples, rounds):
        """Solve each candidate; keep the one whose result fits the boxes best (tight,
        not leaking to the faces; ``_boxes.fit_score``). Returns (cand, x, hist, prior)."""
        tried = []
        for cand in cands:
            self.added = 0
            xg, hg, pg = yield from self.one_pass(cand, x0, samples, rounds)
            xg = yield from self.tighten(xg, cand, pg)
            score = _boxes.fit_score(self.boxes, xg.argmax(dim=0), self.opts["box_margin"])
            tried.append((score, cand, xg, hg, pg, self.added))
        if len(tried) > 1:
            self.info["box_weight_scores"] = {
                (t[1].weight if t[1].kind == "intensity" else t[1].kind): round(t[0], 4)
                for t in tried}
        _, cand, x, hist, prior, self.added = min(tried, key=lambda t: t[0])
        return cand, x, hist, prior

    def probe(self, cand, x, samples):
        """Solve once with the scribbled structures' boxes grown; faces where the
        constrained solve drained the object that the probe keeps cut the object and
        move. Returns (x, hist or None, prior or None, faces)."""
        probed = (self.boxed & self.scribbled) if self.model is None else self.boxed
        if not (self.opts["box_probe"] and probed):
            return x, None, None, []
        big = [g if b[0] in probed else b
               for b, g in zip(self.boxes, _boxes.grown(self.boxes, self.shape))]
        xp, _, _ = yield from self.one_pass(cand, x, samples, 1, big,
                                            self.background_outside(big))
        self.boxes, faces = _boxes.faces_from_probe(self.boxes, x.argmax(dim=0), xp,
                                                    self.shape, probed)
        del xp
        self.info["box_probe_faces"] = [list(f) for f in faces]
        hist = prior = None
        if faces:
            self.seeds = self.background_outside(self.boxes)
            x, hist, prior = yield from self.one_pass(cand, x, samples, 1)
            x = yield from self.tighten(x, cand, prior)
        return x, hist, prior, list(faces)

    def grow(self, cand, x, samples):
        """Move faces whose slice still holds a large section of the structure outward
        and solve again, up to ``box_grow_rounds`` times. Returns (x, hist, faces)."""
        faces_all, hist = [], None
        for _ in range(int(self.opts["box_grow_rounds"])):
            self.boxes, faces = _boxes.cut_faces(self.boxes, x.argmax(dim=0), self.shape,
                                                 self.scribbled)
            if not faces:
                break
            faces_all += faces
            self.seeds = self.background_outside(self.boxes)
            x = x * _boxes.allowed_classes(self.boxes, self.shape, self.k1, self.dev)
            x, hist_g, prior = yield from self.one_pass(cand, x, samples, 1)
            hist = hist_g if hist_g is not None else hist
            x = yield from self.tighten(x, cand, prior)
        return x, hist, faces_all

    def solve_decided(self, cand, x, samples, rounds):
        """One solve with the decision's boxes and unary term, warm-started from ``x``
        (the previous or the coarse stage's solution); GrabCut samples are refitted from
        ``x`` instead of extra rounds, and tightness seeds are placed on ``x`` when it is
        this grid's own solution (``fine_warm_start``, a correction). Not on the coarse
        stage's: placed on an upsampled coarse solution (the most likely voxel of a box
        slice that misses its structure) they were wrong on the shipped CT with loose
        boxes (mean Dice 0.725); there they are placed on the first full-resolution
        solution and a second solve follows (0.836)."""
        if x is not None:
            x = x * _boxes.allowed_classes(self.boxes, self.shape, self.k1, self.dev)
            if rounds > 1:
                samples = _boxes.refit_samples(self.boxes, self.seeds, x.argmax(dim=0),
                                               self.k1, shell=self.opts["box_shell"],
                                               scribbled=self.scribbled)
            if self.fine_warm_start:
                # a correction: the previous solution is this grid's own, so its box
                # slices that miss their structure are seeded before the one solve
                # (without this, background strokes near a kidney drained it: left
                # kidney Dice 0.77 -> 0.41 over 3 corrections on the CT benchmark case)
                fixed = (self.seeds >= 0).clone()
                x = x.clone()
                self.added = _boxes.tightness_seeds(x, self.boxes, fixed,
                                                    margin=self.opts["box_margin"])
                self.seeds = torch.where(fixed & (self.seeds < 0), x.argmax(dim=0),
                                         self.seeds)
        x, hist, prior = yield from self.one_pass(cand, x, samples, 1)
        if not self.fine_warm_start:
            # the full-resolution stage after the coarse choices: tightness seeds on its
            # own solution, then a second (warm-started) solve where any were added
            # (without it the shipped CT's kidneys fell from 0.886 / 0.836 to
            # 0.803 / 0.747)
            x = yield from self.tighten(x, cand, prior)
        return x, hist

    def run(self, x):
        """Solve; returns (x, histograms or None, BoxDecision)."""
        rounds, mode = self.mode()
        samples = _boxes.initial_samples(self.boxes, self.seeds, self.k1,
                                         core=self.opts["box_core"],
                                         shell=self.opts["box_shell"],
                                         scribbled=self.scribbled)
        cands = yield from self.candidates(mode, samples)
        faces = [] if self.decision is None else list(self.decision.faces_moved)
        if self.decision is not None:
            cand = cands[0]
            x, hist = yield from self.solve_decided(cand, x, samples, rounds)
        else:
            cand, x, hist, prior = yield from self.choose(cands, x, samples, rounds)
            x, hist_p, _, moved = yield from self.probe(cand, x, samples)
            x, hist_g, grown = yield from self.grow(cand, x, samples)
            hist = next((h for h in (hist_g, hist_p, hist) if h is not None), None)
            faces += moved + grown
        self.info["prior_weight"] = cand.weight
        if cand.kind != "model":
            self.info["unary"] = cand.name
        decision = BoxDecision(list(self.boxes), cand, faces, self.loosened)
        self.info.update(box_rounds=rounds, tightness_seeds=self.added, box_mode=mode,
                         box_faces_moved=[list(f) for f in faces],
                         boxes_loosened=list(self.loosened),
                         boxes_solved=[[int(v) for v in b] for b in self.boxes])
        x = x * _boxes.allowed_classes(self.boxes, self.shape, self.k1, self.dev)
        return x / x.sum(dim=0, keepdim=True).clamp_min(1e-12), hist, decision
