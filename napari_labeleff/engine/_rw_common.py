"""Helpers shared by the graph method's modules: solver progress and solve counting,
seeds, stroke folds, and the trust of an intensity model."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ._likelihood import Histograms, posterior
from ._rw_solver import solve
from ._types import Progress

#: Voxels sampled per class when intensity models are checked against strokes.
_PRIOR_CHECK_SAMPLES = 1 << 16


class SolveLog:
    """Progress counter and record of the solver calls of one refine call.

    Attributes
    ----------
    stage : str
        Stage of the calls now being made: ``"preview"`` (the first result, on a coarse
        grid), ``"decide"`` (the choices, on a coarse grid) or ``"final"``.
    full_voxels : int
        Voxels of the full-resolution grid (of the region solved).
    calls : list of dict
        One per solve: stage, voxels of its grid, CG iterations on its finest level,
        seconds.
    """

    def __init__(self, full_voxels: int):
        self.step = 0
        self.stage = "final"
        self.full_voxels = int(full_voxels)
        self.calls: list[dict] = []

    def summary(self) -> dict:
        """``info["solves"]``: solves per stage, and how many ran on the whole
        full-resolution grid (sub-box and coarse solves are not counted there)."""
        by_stage: dict[str, int] = {}
        for c in self.calls:
            by_stage[c["stage"]] = by_stage.get(c["stage"], 0) + 1
        full = sum(1 for c in self.calls if c["voxels"] >= self.full_voxels)
        return {"full_resolution": full, "total": len(self.calls), "by_stage": by_stage,
                "iterations": [c["iterations"] for c in self.calls],
                "seconds": [round(c["seconds"], 3) for c in self.calls]}


def _progress(gen, log: SolveLog):
    """Turn the solver's messages into Progress reports; returns the solver's value."""
    while True:
        try:
            msg = next(gen)
        except StopIteration as stop:
            return stop.value
        log.step += 1
        yield Progress(log.step, log.step + 1, msg)


def run_solve(p, log: SolveLog, **kw):
    """Solve ``p`` in place (``_rw_solver.solve``), reporting progress and recording the
    call in ``log``; returns the solver's per-level statistics."""
    t0 = time.perf_counter()
    stats = yield from _progress(solve(p, **kw), log)
    log.calls.append({"stage": log.stage, "voxels": int(p.fixed.numel()),
                      "iterations": int(stats[-1]["iterations"]),
                      "seconds": time.perf_counter() - t0})
    return stats


def _onehot_init(seeds: torch.Tensor, n_classes: int, fill: torch.Tensor | None):
    x = fill.clone() if fill is not None else torch.full(
        (n_classes, *seeds.shape), 1.0 / n_classes, device=seeds.device)
    return _set_seeds(x, seeds)


def _set_seeds(x: torch.Tensor, seeds: torch.Tensor):
    fixed = seeds >= 0
    onehot = F.one_hot(seeds.clamp_min(0), x.shape[0]).movedim(-1, 0).to(x.dtype)
    return torch.where(fixed, onehot, x)




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




def _balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over the classes present in ``truth`` of the fraction predicted right."""
    return float(np.mean([np.mean(pred[truth == k] == k) for k in np.unique(truth)]))




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


