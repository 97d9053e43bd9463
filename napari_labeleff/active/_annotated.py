"""Where the user has really annotated, and where each structure lies.

Two questions the slice and region suggestions need answered per class and per axis:

* Which slices along an axis hold the user's strokes? A stroke painted on an axial
  slice touches every sagittal and coronal slice it crosses, but those slices are not
  annotated: only one row of each is. A slice counts as annotated when it holds a
  stroke seen face-on: a 2D (8-connected) component of scribbles at least
  :data:`MIN_STROKE_VOXELS` voxels across in both in-plane directions (a brush
  stroke has a width; a stroke from another plane seen edge-on is one voxel thick),
  or a thin stroke drawn in its plane: at least that many scribbled voxels, spanning
  that many, with nothing scribbled directly before or after them along the axis
  (a stroke painted in 2D is one voxel thick across its plane).
* Where are the structures being segmented? The predicted components of a class that
  touch its strokes (or all its prediction when it has no strokes), with the strokes
  themselves, give the class's extent; suggestions concentrate there.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: A slice is annotated along an axis when it holds this many voxels of strokes drawn
#: in that plane, spanning at least this many voxels in one in-plane direction.
MIN_STROKE_VOXELS = 3


def plane_strokes(scribbles: np.ndarray, axis: int) -> np.ndarray:
    """Scribbled voxels that belong to strokes drawn in slices along ``axis``.

    Parameters
    ----------
    scribbles : ndarray of int, shape (Z, Y, X)
        0 = unannotated.
    axis : {0, 1, 2}

    Returns
    -------
    ndarray of bool, shape (Z, Y, X)
        Scribbled voxels with no scribbled neighbour directly before or after them
        along ``axis``.
    """
    s = np.asarray(scribbles) > 0
    m = np.moveaxis(s, axis, 0)
    neighbour = np.zeros_like(m)
    neighbour[1:] |= m[:-1]
    neighbour[:-1] |= m[1:]
    return np.moveaxis(m & ~neighbour, 0, axis)


def annotated_slices(scribbles: np.ndarray, axis: int, n_classes: int | None = None
                     ) -> np.ndarray:
    """Per slice along ``axis`` and per class: does the slice hold the user's strokes?

    Parameters
    ----------
    scribbles : ndarray of int, shape (Z, Y, X)
        0 = unannotated, 1 = background, c + 1 = structure c.
    axis : {0, 1, 2}
    n_classes : int, optional
        K + 1 (columns of the result); default: the largest scribble value.

    Returns
    -------
    ndarray of bool, shape (S, K + 1)
        ``out[i, c]``: slice ``i`` holds strokes of class ``c`` drawn in its plane
        (column 0 = background). ``out.any(1)`` = the slice is annotated.
    """
    sc = np.asarray(scribbles)
    k1 = int(n_classes if n_classes is not None else max(1, int(sc.max(initial=0))))
    planar = np.moveaxis(plane_strokes(sc, axis), axis, 0)
    vals = np.moveaxis(sc, axis, 0)
    n = planar.shape[0]
    out = np.zeros((n, k1), bool)
    eight = np.ones((3, 3), bool)
    for i in np.flatnonzero(vals.reshape(n, -1).any(1)):
        held = np.zeros(vals[i].shape, bool)
        # strokes seen face-on: 2D components at least MIN_STROKE_VOXELS wide both ways
        comp, _ = ndi.label(vals[i] > 0, structure=eight)
        for j, box in enumerate(ndi.find_objects(comp), start=1):
            if box is not None and min(b.stop - b.start for b in box) >= MIN_STROKE_VOXELS:
                held |= comp == j
        # thin strokes drawn in this plane (nothing scribbled right before/after them)
        pts = np.argwhere(planar[i])
        if len(pts) >= MIN_STROKE_VOXELS and np.ptp(pts, axis=0).max() + 1 >= MIN_STROKE_VOXELS:
            held |= planar[i]
        if held.any():
            labels = np.unique(vals[i][held]).astype(int) - 1
            out[i, labels[(labels >= 0) & (labels < k1)]] = True
    return out


def structure_extents(scribbles: np.ndarray, labels: np.ndarray, n_classes: int,
                      pad: float = 0.15) -> list:
    """Bounding box of each structure being segmented.

    A structure's extent is the box of its strokes and of the predicted components of
    that class touching them (26-connectivity); a class without strokes, or whose
    strokes touch none of its predicted components, takes its whole prediction. The box grows by ``pad`` times its size on each side (at least
    2 voxels), so the structure's uncertain rim is inside.

    Parameters
    ----------
    scribbles : ndarray of int, shape (Z, Y, X)
    labels : ndarray of int, shape (Z, Y, X)
        Predicted mask (0 = background, c = structure c).
    n_classes : int
        K + 1.
    pad : float

    Returns
    -------
    list of (tuple or None), length K + 1
        ``(z0, y0, x0, z1, y1, x1)`` (inclusive-exclusive) per class, None for
        background (index 0) and for classes neither drawn nor predicted.
    """
    sc = np.asarray(scribbles)
    lab = np.asarray(labels)
    shape = np.array(lab.shape)
    out: list = [None]
    full = np.ones((3, 3, 3), bool)
    for c in range(1, n_classes):
        drawn = sc == c + 1
        pred = lab == c
        where = pred | drawn
        if drawn.any() and pred.any():
            comp, _ = ndi.label(pred, structure=full)
            keep = np.unique(comp[drawn])
            keep = keep[keep > 0]
            if keep.size:  # the strokes lie on predicted components: those are it
                where = np.isin(comp, keep) | drawn
        if not where.any():
            out.append(None)
            continue
        idx = np.argwhere(where)
        lo, hi = idx.min(0), idx.max(0) + 1
        grow = np.maximum(2, np.ceil(pad * (hi - lo))).astype(int)
        lo, hi = np.maximum(lo - grow, 0), np.minimum(hi + grow, shape)
        out.append(tuple(int(v) for v in (*lo, *hi)))
    return out
