"""Simulated interaction sequences for training the interactive network.

Each labelled training patch gets prompts as a user would give them, drawn at random
(DeepEdit / nnInteractive style, but for strokes instead of clicks):

* ``EMPTY`` (share ``P_EMPTY``): no prompt at all: the network must still give its
  draft, so the strokes never become a crutch (the plain network's accuracy is kept);
* ``INITIAL`` (share ``P_INITIAL``): initial strokes: per class present (background
  included) one or two axial strokes, the skeleton of the class's eroded region on a
  random slice that holds it, as the protocol's annotator draws them; with
  probability ``P_BOX`` a structure also gets its bounding box;
* ``CORRECTION`` (the rest): initial strokes, a previous result made by perturbing the
  true mask (erosion, dilation, a shift, a blob removed or added: the kinds of errors a
  draft makes) and one to three corrective strokes of the true class inside the
  largest error components of that result, on the slice where each error is largest.

Simulating the previous result by perturbation instead of running the network costs
no forward pass, so the CPU budget buys as many optimiser steps as plain training.
Patches without a full mask (scribbles, boxes, pseudo-labels only) use their own
scribbles as the prompt half of the time.

Hand-written: MONAI's DeepEdit/DeepGrow transforms simulate clicks (points), not
strokes, and need a network pass per simulated click; the morphology is scipy's and
scikit-image's.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

P_EMPTY = 0.3
P_INITIAL = 0.35
P_BOX = 0.15
_DISK = ndi.generate_binary_structure(2, 1)


def _stroke_2d(region: np.ndarray, rng) -> np.ndarray:
    """A stroke inside a 2D region: skeleton of the eroded region (a click if none)."""
    from skimage.morphology import skeletonize

    core = region
    for it in (3, 2, 1):
        er = ndi.binary_erosion(region, _DISK, iterations=it)
        if er.sum() >= 3:
            core = er
            break
    skel = skeletonize(core)
    if not skel.any():
        pts = np.argwhere(region)
        out = np.zeros_like(region)
        out[tuple(pts[rng.integers(len(pts))])] = True
        return out
    if rng.random() < 0.5:  # part of the skeleton: users do not always draw the whole
        lab, n = ndi.label(skel, np.ones((3, 3), bool))
        if n > 1:
            skel = lab == (1 + int(rng.integers(n)))
    return skel


def _strokes_for(region: np.ndarray, n: int, rng) -> np.ndarray:
    """``n`` axial strokes inside a 3D region, on random slices that hold it."""
    out = np.zeros(region.shape, bool)
    counts = region.reshape(region.shape[0], -1).sum(axis=1)
    slices = np.flatnonzero(counts >= 4)
    if len(slices) == 0:
        slices = np.flatnonzero(counts)
    if len(slices) == 0:
        return out
    for z in rng.choice(slices, size=min(n, len(slices)), replace=False):
        out[z] = _stroke_2d(region[z], rng)
    return out


def _perturb(truth: np.ndarray, k: int, rng) -> np.ndarray:
    """A plausible wrong result: each structure eroded, dilated, shifted and/or with a
    blob removed or added."""
    prev = np.zeros_like(truth)
    for c in range(1, k + 1):
        m = truth == c
        if not m.any():
            continue
        op = rng.integers(4)
        r = int(rng.integers(1, 4))
        if op == 0:
            m = ndi.binary_erosion(m, iterations=r)
        elif op == 1:
            m = ndi.binary_dilation(m, iterations=r)
        elif op == 2:
            m = np.roll(m, tuple(int(v) for v in rng.integers(-3, 4, size=3)), axis=(0, 1, 2))
        if op == 3 or rng.random() < 0.5:  # a blob removed from or added at the boundary
            edge = np.argwhere(m ^ ndi.binary_erosion(m))
            if len(edge):
                centre = edge[rng.integers(len(edge))]
                rad = float(rng.uniform(3, 8))
                zz, yy, xx = np.ogrid[tuple(slice(0, n) for n in m.shape)]
                ball = ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) <= rad**2
                m = (m & ~ball) if rng.random() < 0.5 else (m | ball)
        if not m.any() or np.array_equal(m, truth == c):  # eroded away, or unchanged
            m = ndi.binary_dilation(truth == c)
        prev[m] = c
    return prev


def _corrections(truth: np.ndarray, prev: np.ndarray, known: np.ndarray, rng) -> np.ndarray:
    """Corrective strokes (scribble convention) in the largest error components."""
    out = np.zeros(truth.shape, np.uint8)
    wrong = (truth != prev) & known
    if not wrong.any():
        return out
    lab, n = ndi.label(wrong)
    sizes = np.bincount(lab.ravel())[1:]
    for idx in np.argsort(sizes)[::-1][: int(rng.integers(1, 4))]:
        comp = lab == idx + 1
        if sizes[idx] < 4:
            break
        z = int(np.argmax(comp.reshape(comp.shape[0], -1).sum(axis=1)))
        region = comp[z]
        cls = np.bincount(truth[z][region].ravel()).argmax()
        s2 = _stroke_2d(region & (truth[z] == cls), rng)
        out[z][s2] = cls + 1
    return out


def simulate(lab: np.ndarray, n_structures: int, rng: np.random.Generator):
    """Prompts for one training patch.

    Parameters
    ----------
    lab : ndarray of int, shape (z, y, x)
        Supervision in the scribble convention (0 = no information, 1 = background,
        c + 1 = structure c); a full mask labels every voxel inside the volume.
    n_structures : int
        K.
    rng : numpy Generator

    Returns
    -------
    strokes : ndarray, shape (z, y, x), uint8 (scribble convention)
    boxes : ndarray, shape (K, z, y, x), uint8
    previous : ndarray, shape (z, y, x), uint8 (0..K)
    kind : str
        ``"empty"``, ``"initial"``, ``"correction"`` or ``"weak"``.
    """
    k = int(n_structures)
    lab = np.asarray(lab)
    strokes = np.zeros(lab.shape, np.uint8)
    boxes = np.zeros((k, *lab.shape), np.uint8)
    previous = np.zeros(lab.shape, np.uint8)
    known = lab > 0
    if not known.any():
        return strokes, boxes, previous, "empty"
    full = known.mean() > 0.95 or known.sum() > 0.9 * (lab.shape[0] * lab.shape[1] * lab.shape[2])
    u = rng.random()
    if not full:
        if u < 0.5:
            return lab.astype(np.uint8), boxes, previous, "weak"
        return strokes, boxes, previous, "empty"
    if u < P_EMPTY:
        return strokes, boxes, previous, "empty"
    truth = np.where(known, lab.astype(np.int64) - 1, 0)
    for c in range(0, k + 1):
        region = (truth == c) & known
        if region.sum() < 4:
            continue
        strokes[_strokes_for(region, int(rng.integers(1, 3)), rng)] = c + 1
        if c and rng.random() < P_BOX:
            idx = np.argwhere(region)
            lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
            boxes[(c - 1, *(slice(a, b) for a, b in zip(lo, hi)))] = 1
    if u < P_EMPTY + P_INITIAL:
        return strokes, boxes, previous, "initial"
    previous = _perturb(truth, k, rng).astype(np.uint8)
    corr = _corrections(truth, previous, known, rng)
    strokes = np.where(corr > 0, corr, strokes).astype(np.uint8)
    return strokes, boxes, previous, "correction"
