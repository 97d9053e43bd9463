"""Weak labels from a place the user confirmed ("looks right")."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .._errors import LabelEffError

#: Refined voxels become weak labels on confirmation only from this probability on.
CONFIDENT = 0.9


def confirmed_labels(result, scribbles, region, *, min_probability: float = CONFIDENT,
                     margin: int = 1):
    """Weak labels recording a place the user confirmed as correctly refined.

    Only the confident interior of each class becomes hard seeds: voxels whose refined
    class has probability >= ``min_probability``, eroded by ``margin`` voxels (in the
    plane for a one-slice region, in 3D otherwise; the volume border does not erode).
    A glance at a slice does not check every voxel of it, so uncertain voxels and class
    boundaries stay free for the next refinement instead of freezing possibly wrong
    labels into seeds.

    Parameters
    ----------
    result : RefineResult
        The refinement the user looked at: ``labels`` (Z, Y, X) and ``probabilities``
        (K + 1, Z, Y, X) (float16 or float32, numpy or lazily indexable).
    scribbles : ndarray of int, shape (Z, Y, X)
        Current scribbles; never overwritten.
    region : tuple of int
        ``(z0, y0, x0, z1, y1, x1)``, inclusive-exclusive.
    min_probability : float
        In (0, 1]: the refined class's probability a voxel needs.
    margin : int
        Erosion depth in voxels (>= 0).

    Returns
    -------
    indices : tuple of 3 ndarray
        Voxel indices to write (``Labels.data_setitem`` form).
    values : ndarray of int32
        Scribble values (class c -> c + 1) at ``indices``.
    """
    if not 0.0 < float(min_probability) <= 1.0:
        raise LabelEffError(f"min_probability must be in (0, 1], got {min_probability!r}")
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise LabelEffError(f"margin must be a non-negative integer, got {margin!r}")
    labels = np.asarray(result.labels)
    shape = np.array(labels.shape)
    if len(region) != 6:
        raise LabelEffError(f"region must be (z0, y0, x0, z1, y1, x1), got {region!r}")
    lo, hi = np.clip(region[:3], 0, shape), np.clip(region[3:], 0, shape)
    pad_lo, pad_hi = np.maximum(lo - margin, 0), np.minimum(hi + margin, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(pad_lo, pad_hi))
    crop = labels[box]
    probs = result.probabilities
    confident = np.zeros(crop.shape, bool)
    for c in np.unique(crop):
        p = np.asarray(probs[(int(c),) + box], dtype=np.float32)
        confident |= (crop == c) & (p >= min_probability)
    structure = ndi.generate_binary_structure(3, 1)
    for axis in np.flatnonzero(hi - lo == 1):  # one-slice region: erode in its plane
        structure[(slice(None),) * axis + ([0, 2],)] = False
    weak = np.zeros(crop.shape, dtype=np.int32)
    for c in np.unique(crop):
        core = (crop == c) & confident
        if margin > 0:
            core = ndi.binary_erosion(core, structure, iterations=margin, border_value=1)
        weak[core] = int(c) + 1
    inner = weak[tuple(slice(int(a - p), int(b - p)) for a, b, p in zip(lo, hi, pad_lo))]
    own = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    free = (np.asarray(scribbles)[own] == 0) & (inner > 0)
    where = np.nonzero(free)
    indices = tuple(w + int(a) for w, a in zip(where, lo))
    return indices, inner[free]
