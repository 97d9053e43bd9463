"""Incremental updates of the graph method: re-solves inside a sub-box around the
changed strokes, with the previous solution as Dirichlet boundary, and the scope of a
correction (islands away from the edited strokes are reverted)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from ._registry import class_argmax
from ._rw_common import _onehot_init, _set_seeds, run_solve
from ._rw_solver import Problem


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




def _solve_local_or_full(ctx, image, seeds, x_prev, box, prior_of, kw, log, info,
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
        yield from run_solve(p, log, coarse_to_fine=False, **kw)
        sides = _touched_faces(class_argmax(p.x) != class_argmax(x_prev[sub]), box,
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
    stats = yield from run_solve(p, log, coarse_to_fine=x_prev is None, **kw)
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
    old_lab = class_argmax(x_prev).cpu().numpy()
    new_lab = class_argmax(x).cpu().numpy()
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


