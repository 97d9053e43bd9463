"""Box prompts: masks, GrabCut-style likelihood samples and the tightness prior.

A box ``(c, z0, y0, x0, z1, y1, x1)`` says "structure c lies in here, touching (nearly)
every face". The graph method uses boxes in three ways (the scheme is the product's own,
after GrabCut (Rother et al. 2004) and the tightness prior of Lempitsky et al. 2009):

1. outside every box is background (hard seeds, set in ``engine/_api.py`` when every
   structure has a box), and class c is only allowed inside its own boxes;
2. intensity likelihoods as the random walker's prior term: structure c from the core
   of its boxes, background from a shell just outside the boxes and the background
   scribbles; refitted from the current segmentation for a few rounds;
3. tightness: every slice of the box (along each axis, ignoring ``margin`` voxels of
   slack at each face) must cross the object; a slice with no voxel of c gets its most
   likely voxel of c as a seed, and the system is solved again.
"""

from __future__ import annotations

import numpy as np
import torch


def _slices(box):
    return tuple(slice(a, b) for a, b in zip(box[1:4], box[4:7]))


def union_mask(boxes, shape) -> np.ndarray:
    """Boolean (Z, Y, X) mask of the voxels inside at least one box."""
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        mask[_slices(box)] = True
    return mask


def allowed_classes(boxes, shape, n_classes, device) -> torch.Tensor:
    """(K + 1, Z, Y, X) bool: where each class may appear.

    Background may appear everywhere; a structure with boxes only inside them; a
    structure without a box everywhere.
    """
    allowed = torch.ones((n_classes, *shape), dtype=torch.bool, device=device)
    for c in {b[0] for b in boxes}:
        allowed[c] = False
    for box in boxes:
        allowed[(box[0], *_slices(box))] = True
    return allowed


def _core(box, fraction):
    """Central part of a box, ``fraction`` of its extent along each axis."""
    out = [box[0]]
    lo, hi = [], []
    for a, b in zip(box[1:4], box[4:7]):
        n = b - a
        m = int(round(n * (1 - fraction) / 2))
        m = min(m, (n - 1) // 2)
        lo.append(a + m)
        hi.append(b - m)
    return tuple(out + lo + hi)


def initial_samples(boxes, seeds: torch.Tensor, n_classes, *, core: float, shell: int):
    """Likelihood samples before any solve: box cores and shells, plus the seeds.

    Parameters
    ----------
    boxes : list of tuple
    seeds : Tensor, shape (Z, Y, X), int (-1 = unknown)
    n_classes : int
    core : float
        Fraction of each box extent (per axis) taken as the structure sample.
    shell : int
        Thickness in voxels of the background shell around the boxes.

    Returns
    -------
    list of Tensor of bool, one (Z, Y, X) mask per class.
    """
    near = _near(boxes, tuple(seeds.shape), shell, seeds.device)
    samples = [(seeds == k) for k in range(n_classes)]
    samples[0] = samples[0] & near
    for box in boxes:
        samples[box[0]][_slices(_core(box, core))] = True
    return samples


def _near(boxes, shape, shell: int, device) -> torch.Tensor:
    """The boxes dilated by ``shell`` voxels (a union of grown boxes)."""
    grown = [(b[0], *(a - shell for a in b[1:4]), *(a + shell for a in b[4:7])) for b in boxes]
    grown = [(b[0], *(max(a, 0) for a in b[1:4]), *b[4:7]) for b in grown]
    return torch.from_numpy(union_mask(grown, shape)).to(device)


def refit_samples(boxes, seeds, labels: torch.Tensor, n_classes, *, shell: int):
    """Samples from the current segmentation: inside the boxes each class takes its
    labelled voxels; background also keeps the seeded shell around the boxes."""
    inside = torch.from_numpy(union_mask(boxes, tuple(seeds.shape))).to(seeds.device)
    near = _near(boxes, tuple(seeds.shape), shell, seeds.device)
    samples = [(seeds == k) | ((labels == k) & inside) for k in range(n_classes)]
    samples[0] = samples[0] & near
    return samples


def tightness_seeds(x: torch.Tensor, boxes, fixed: torch.Tensor, *, margin: int) -> int:
    """Seed the most likely voxel of each box slice that misses its structure.

    Parameters
    ----------
    x : Tensor, shape (K + 1, Z, Y, X)
        Current probabilities; the new seeds are written into it (one-hot).
    boxes : list of tuple
    fixed : Tensor of bool, shape (Z, Y, X)
        Dirichlet mask, updated in place.
    margin : int
        Slices within ``margin`` voxels of a face are exempt (loose boxes).

    Returns
    -------
    int
        Number of seeds added.
    """
    labels = x.argmax(dim=0)
    added = 0
    for box in boxes:
        c, sl = box[0], _slices(box)
        origin = torch.tensor(box[1:4], device=x.device)
        hit = labels[sl] == c
        prob = torch.where(fixed[sl], torch.full_like(x[c][sl], -1.0), x[c][sl])
        for axis in range(3):
            n = hit.shape[axis]
            rows = list(range(margin, n - margin)) or [n // 2]
            other = tuple(a for a in range(3) if a != axis)
            missing = ~hit.any(dim=other)
            rows = [i for i in rows if bool(missing[i])]
            if not rows:
                continue
            moved = prob.movedim(axis, 0)
            best, flat = moved.reshape(n, -1)[rows].max(dim=1)
            keep = best >= 0  # a slice made only of seeds cannot take a new one
            rows = [r for r, k in zip(rows, keep.tolist()) if k]
            flat = flat[keep]
            if not rows:
                continue
            rest = [hit.shape[a] for a in other]
            coords = torch.zeros((len(rows), 3), dtype=torch.long, device=x.device)
            coords[:, axis] = torch.tensor(rows, device=x.device)
            coords[:, other[0]] = flat // rest[1]
            coords[:, other[1]] = flat % rest[1]
            coords += origin
            zi, yi, xi = coords.unbind(dim=1)
            x[:, zi, yi, xi] = 0.0
            x[c, zi, yi, xi] = 1.0
            fixed[zi, yi, xi] = True
            added += len(rows)
    return added
