"""Simulated annotator of ``benchmarks/PROTOCOL.md`` (deterministic given a seed).

Every benchmark of the project (refinement, active learning) draws its weak labels
here, so methods and peers always get exactly the same scribbles, boxes and
corrections. The protocol itself is the project's own definition, hence hand-written;
the morphology is scipy / scikit-image.

Conventions: ``gt`` is a (Z, Y, X) integer array, 0 = background, c = structure c
(c = 1..K); scribbles are (Z, Y, X) int16, 0 = unannotated, 1 = background,
c + 1 = structure c; boxes are ``(c, z0, y0, x0, z1, y1, x1)`` inclusive-exclusive.
"Axial" = axis 0.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import disk, skeletonize

SCRIBBLE_DTYPE = np.int16
_CROSS = ndi.generate_binary_structure(2, 1)  # 3x3 cross
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity in 2D
_SIX = ndi.generate_binary_structure(3, 1)  # 6-connectivity in 3D


# ---- stroke primitive ------------------------------------------------------------------
def stroke(region2d: np.ndarray) -> np.ndarray:
    """One stroke inside a 2D region (protocol "stroke primitive").

    Erode with a disk of radius 3 (2, 1, 0 if that empties the region; pixels outside
    the image count as outside the region), keep the largest 8-connected component,
    skeletonize, dilate once with the 3x3 cross clipped to the uneroded region. If no
    skeleton remains, the stroke is the single pixel of the region nearest its
    centroid (a click).

    Parameters
    ----------
    region2d : ndarray of bool, shape (H, W)

    Returns
    -------
    ndarray of bool, shape (H, W)
        The stroke, a subset of ``region2d`` (empty if the region is empty).
    """
    region = np.asarray(region2d, dtype=bool)
    out = np.zeros_like(region)
    if not region.any():
        return out
    for radius in (3, 2, 1, 0):
        core = ndi.binary_erosion(region, disk(radius)) if radius else region
        if core.any():
            break
    lab, n = ndi.label(core, structure=_EIGHT)
    if n > 1:
        sizes = np.bincount(lab.ravel())[1:]
        core = lab == (1 + int(np.argmax(sizes)))
    skel = skeletonize(core)
    if skel.any():
        return ndi.binary_dilation(skel, _CROSS) & region
    pts = np.argwhere(region)
    nearest = pts[np.argmin(((pts - pts.mean(axis=0)) ** 2).sum(axis=1))]
    out[tuple(nearest)] = True
    return out


# ---- initial weak labels -----------------------------------------------------------
def _axial_counts(gt: np.ndarray, c: int) -> np.ndarray:
    return (gt == c).reshape(gt.shape[0], -1).sum(axis=1)


def scribble_slices(gt: np.ndarray, c: int, n_slices: int, rng) -> list[int]:
    """Axial slices that get class ``c``'s initial strokes (protocol "initial scribbles").

    ``z_i = z0 + (i + 1)(z1 - z0)/(n + 1)`` plus a uniform offset of at most
    ``(z1 - z0)/(4(n + 1))`` slices, rounded, then moved to the nearest slice holding
    >= 10 voxels of the class (ties: the lower slice; if no slice has 10 voxels, the
    fullest slice). Returns [] when the class is absent.
    """
    counts = _axial_counts(gt, c)
    present = np.flatnonzero(counts)
    if present.size == 0:
        return []
    z0, z1 = int(present[0]), int(present[-1])
    ok = np.flatnonzero(counts >= 10)
    if ok.size == 0:
        ok = np.array([int(np.argmax(counts))])
    span = z1 - z0
    max_off = span / (4 * (n_slices + 1))
    chosen = []
    for i in range(n_slices):
        z = z0 + (i + 1) * span / (n_slices + 1) + rng.uniform(-max_off, max_off)
        z = int(np.clip(np.round(z), 0, gt.shape[0] - 1))
        chosen.append(int(ok[np.argmin(np.abs(ok - z))]))
    return chosen


def initial_scribbles(gt: np.ndarray, n_slices: int = 3, seed: int = 0) -> np.ndarray:
    """Initial scribbles: one stroke per class on ``n_slices`` axial slices.

    Classes 0 (background) .. K are visited in order with one ``numpy`` generator
    seeded by ``seed``, so the result is deterministic.

    Parameters
    ----------
    gt : ndarray of int, shape (Z, Y, X)
        Ground truth, 0 = background, c = structure c.
    n_slices : int
        Slices per class.
    seed : int

    Returns
    -------
    ndarray of int16, shape (Z, Y, X)
        0 = unannotated, 1 = background, c + 1 = structure c.
    """
    gt = np.asarray(gt)
    rng = np.random.default_rng(seed)
    scr = np.zeros(gt.shape, dtype=SCRIBBLE_DTYPE)
    for c in range(int(gt.max()) + 1):
        for z in scribble_slices(gt, c, n_slices, rng):
            scr[z][stroke(gt[z] == c)] = c + 1
    return scr


def box_prompts(gt: np.ndarray, seed: int = 0) -> list[tuple]:
    """Per-structure 3D bounding boxes, each face moved outward by 0..3 voxels.

    Parameters
    ----------
    gt : ndarray of int, shape (Z, Y, X)
    seed : int

    Returns
    -------
    list of tuple
        ``(c, z0, y0, x0, z1, y1, x1)`` inclusive-exclusive voxel indices, clipped to
        the volume, for every structure c present (ascending c).
    """
    gt = np.asarray(gt)
    rng = np.random.default_rng(seed)
    boxes = []
    for c, sl in enumerate(ndi.find_objects(gt.astype(np.int32)), start=1):
        if sl is None:
            continue
        lo = [s.start - int(rng.integers(0, 4)) for s in sl]
        hi = [s.stop + int(rng.integers(0, 4)) for s in sl]
        lo = [max(0, v) for v in lo]
        hi = [min(n, v) for v, n in zip(hi, gt.shape)]
        boxes.append((c, *lo, *hi))
    return boxes


def box_variant_prompts(gt: np.ndarray, variant: str, seed: int = 0) -> list[tuple]:
    """Inexact boxes for the robustness study (PROTOCOL.md, issue 10).

    ``exact``: :func:`box_prompts`; ``plus20``: the ground-truth bounding box with each
    face moved outward by 20% of the extent along that axis; ``minus20``: each face
    moved inward by 10% of the extent (the box cuts 20% of it per axis); ``shifted``:
    the ground-truth bounding box moved by 20% of its extent along Y and X.
    """
    if variant == "exact":
        return box_prompts(gt, seed=seed)
    gt = np.asarray(gt)
    boxes = []
    for c, sl in enumerate(ndi.find_objects(gt.astype(np.int32)), start=1):
        if sl is None:
            continue
        lo = np.array([s.start for s in sl])
        hi = np.array([s.stop for s in sl])
        ext = hi - lo
        if variant == "plus20":
            d = np.ceil(0.2 * ext).astype(int)
            lo, hi = lo - d, hi + d
        elif variant == "minus20":
            d = np.round(0.1 * ext).astype(int)
            lo, hi = lo + d, np.maximum(hi - d, lo + d + 1)
        elif variant == "shifted":
            d = np.round(0.2 * ext).astype(int) * np.array([0, 1, 1])
            lo, hi = lo + d, hi + d
        else:
            raise ValueError(f"box variant {variant!r}; known: exact, plus20, minus20, shifted")
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, gt.shape)
        boxes.append((c, *map(int, lo), *map(int, hi)))
    return boxes


# ---- corrections -----------------------------------------------------------------------
def error_components(gt: np.ndarray, pred: np.ndarray, n_classes: int | None = None):
    """Error components of the protocol, largest first.

    Yields ``(t, mask_view, offset, size)`` for the 6-connected components of
    ``{gt == t and pred != t}`` over all classes t (background included), sorted by
    size descending (ties: lower class, then lower component label). ``mask_view`` is
    the component's bool mask inside its bounding box and ``offset`` the box origin.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    k1 = int(gt.max()) + 1 if n_classes is None else n_classes
    comps = []
    for t in range(k1):
        lab, n = ndi.label((gt == t) & (pred != t), structure=_SIX)
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel())[1:]
        for i, sl in enumerate(ndi.find_objects(lab)):
            comps.append((-int(sizes[i]), t, i, lab, sl))
    comps.sort(key=lambda e: e[:3])
    for negsize, t, i, lab, sl in comps:
        yield t, lab[sl] == i + 1, tuple(s.start for s in sl), -negsize


def corrective_interaction(gt: np.ndarray, pred: np.ndarray, scribbles: np.ndarray):
    """One corrective stroke (protocol "corrective interactions").

    Components are visited largest first; for each, the axial slice through its
    centre of mass is tried first, then its other slices by distance to the centre
    (ties: lower slice). The first stroke that adds at least one voxel not already
    scribbled with ``t + 1`` is accepted.

    Parameters
    ----------
    gt, pred : ndarray of int, shape (Z, Y, X)
    scribbles : ndarray of int, shape (Z, Y, X)
        Not modified.

    Returns
    -------
    (new_scribbles, info) or None
        ``new_scribbles`` is a copy with the stroke written as ``t + 1``; ``info`` is a
        dict with ``class`` (t), ``slice`` (z), ``component_size`` and ``added``
        (voxels newly set). None when no error component admits a useful stroke
        (prediction perfect, or every error already scribbled).
    """
    scribbles = np.asarray(scribbles)
    for t, comp, off, size in error_components(gt, pred):
        zc = ndi.center_of_mass(comp)[0]
        zs = np.flatnonzero(comp.reshape(comp.shape[0], -1).any(axis=1))
        for dz in sorted(zs, key=lambda z: (abs(z - zc), z)):
            region = comp[dz]
            s = stroke(region)
            z = off[0] + int(dz)
            ys = slice(off[1], off[1] + comp.shape[1])
            xs = slice(off[2], off[2] + comp.shape[2])
            added = int((s & (scribbles[z, ys, xs] != t + 1)).sum())
            if added:
                new = scribbles.copy()
                new[z, ys, xs][s] = t + 1
                return new, {"class": int(t), "slice": z, "component_size": size,
                             "added": added}
    return None


def slice_annotation(gt: np.ndarray, scribbles: np.ndarray, axis: int, index: int):
    """Annotate one slice (slice-level active-learning variant of the protocol).

    Draws one stroke per class present in the ground truth of that slice (background
    included) with label c + 1.

    Parameters
    ----------
    gt, scribbles : ndarray of int, shape (Z, Y, X)
        ``scribbles`` is not modified.
    axis : int
        0, 1 or 2.
    index : int
        Slice index along ``axis``.

    Returns
    -------
    ndarray of int16, shape (Z, Y, X)
        A copy of ``scribbles`` with the new strokes.
    """
    new = np.array(scribbles, dtype=SCRIBBLE_DTYPE, copy=True)
    g = np.take(gt, index, axis=axis)
    view = np.moveaxis(new, axis, 0)[index]
    for c in np.unique(g):
        view[stroke(g == c)] = int(c) + 1
    return new


def al_start_slice(gt: np.ndarray, axis: int = 0) -> int:
    """Middle slice of the union of the structures' extents along ``axis``
    (the single initial annotated slice of the active-learning variant)."""
    fg = np.moveaxis(np.asarray(gt) > 0, axis, 0)
    idx = np.flatnonzero(fg.reshape(fg.shape[0], -1).any(axis=1))
    return int((idx[0] + idx[-1]) // 2)


# ---- metrics -------------------------------------------------------------------------
def dice_per_class(gt: np.ndarray, pred: np.ndarray, K: int) -> np.ndarray:
    """Dice of structures 1..K (background excluded).

    Returns
    -------
    ndarray of float, shape (K,)
        Dice per structure; 1.0 where a structure is absent from both ``gt`` and
        ``pred``.
    """
    gt = np.asarray(gt).ravel()
    pred = np.asarray(pred).ravel()
    n = K + 1
    conf = np.bincount(np.clip(gt, 0, K).astype(np.int64) * n
                       + np.clip(pred, 0, K).astype(np.int64), minlength=n * n)
    conf = conf.reshape(n, n)
    inter = np.diag(conf)[1:].astype(float)
    denom = conf.sum(axis=0)[1:] + conf.sum(axis=1)[1:]
    return np.where(denom > 0, 2 * inter / np.maximum(denom, 1), 1.0)


def noc(mean_dice_curve, threshold: float):
    """Number of clicks to reach ``threshold``: interactions needed before the mean
    Dice reaches it (index 0 = after the initial weak labels); None = not reached."""
    for i, d in enumerate(mean_dice_curve):
        if d >= threshold:
            return i
    return None


def format_noc(value, k: int) -> str:
    """NoC as printed in tables: the number, or ``">k"`` when not reached."""
    return f">{k}" if value is None else str(value)


# ---- self-check ------------------------------------------------------------------------
def _self_check(case_names=("mni2", "la:1", "acdc:1", "ct:boxes")) -> None:
    """Print annotator statistics on real cases (needs /work/shared/data)."""
    from .cases import load_cases

    for case in load_cases(case_names):
        gt = case.gt
        K = case.n_structures
        scr = initial_scribbles(gt, seed=0)
        again = initial_scribbles(gt, seed=0)
        assert np.array_equal(scr, again), "initial_scribbles is not deterministic"
        wrong = (scr > 0) & (scr - 1 != gt)
        per = {c: int((scr == c + 1).sum()) for c in range(K + 1)}
        sl = {c: sorted(set(np.flatnonzero((scr == c + 1).any(axis=(1, 2))).tolist()))
              for c in range(K + 1)}
        print(f"{case.name}: shape {gt.shape} spacing {case.spacing} K={K}")
        print(f"  scribble voxels per class {per}, slices {sl}, wrong-label voxels "
              f"{int(wrong.sum())}")
        print(f"  boxes {box_prompts(gt, seed=0)}")
        # corrections against an all-background prediction: each must hit an error
        pred = np.zeros_like(gt)
        s = scr
        for i in range(3):
            out = corrective_interaction(gt, pred, s)
            if out is None:
                break
            s, info = out
            print(f"  correction {i + 1}: {info}")
        d = dice_per_class(gt, pred, K)
        print(f"  Dice of all-background prediction {np.round(d, 3).tolist()}; "
              f"Dice of gt {dice_per_class(gt, gt, K).tolist()}")
        z = al_start_slice(gt)
        a = slice_annotation(gt, np.zeros_like(scr), 0, z)
        print(f"  AL start slice {z}: labels drawn {np.unique(a[a > 0]).tolist()}")


if __name__ == "__main__":
    _self_check()
