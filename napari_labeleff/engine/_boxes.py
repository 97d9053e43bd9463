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

import math

import numpy as np
import torch


#: Growth of a box face that cuts its structure, as a fraction of the box's extent
#: along that axis (at least ``GROW_MIN_VOXELS``).
GROW_FRACTION = 0.25
GROW_MIN_VOXELS = 2
#: A face cuts the structure when the structure's section in the face slice is at least
#: this fraction of its largest section along that axis inside the box.
CUT_SECTION = 0.2
#: ... unless the section fills more than this fraction of the face (then the structure
#: leaks over the whole box rather than being cut by it).
FILLED_FACE = 0.6


def _slices(box):
    return tuple(slice(a, b) for a, b in zip(box[1:4], box[4:7]))


def grown(boxes, shape, fraction: float = GROW_FRACTION, extra: int = 0) -> list:
    """The boxes grown on every face by ``fraction`` of their extent (at least
    ``GROW_MIN_VOXELS``) plus ``extra`` voxels, clipped to ``shape``."""
    out = []
    for box in boxes:
        m = [max(GROW_MIN_VOXELS, int(math.ceil(fraction * (b - a)))) if fraction else 0
             for a, b in zip(box[1:4], box[4:7])]
        lo = [max(0, a - d - extra) for a, d in zip(box[1:4], m)]
        hi = [min(n, b + d + extra) for b, d, n in zip(box[4:7], m, shape)]
        out.append((box[0], *lo, *hi))
    return out


def cover_scribbles(boxes, scribbles: np.ndarray) -> tuple:
    """Grow boxes to cover their structure's scribbles: a scribble is the stronger
    evidence, so a box that leaves out strokes of its structure was drawn too small
    or shifted. Each structure's strokes outside all its boxes extend its box that is
    nearest to them (its bounding box with the strokes'). Returns (boxes, grown box
    indices)."""
    out, grown = list(boxes), []
    for c in sorted({b[0] for b in boxes}):
        idx = [i for i, b in enumerate(out) if b[0] == c]
        mask = scribbles == c + 1
        if not mask.any():
            continue
        inside = np.zeros(mask.shape, bool)
        for i in idx:
            inside[_slices(out[i])] = True
        outside = mask & ~inside
        if not outside.any():
            continue
        pts = np.argwhere(outside)
        lo, hi = pts.min(axis=0), pts.max(axis=0) + 1
        centre = (lo + hi) / 2

        def dist(b):
            return float(np.linalg.norm(centre - (np.array(b[1:4]) + np.array(b[4:7])) / 2))

        i = min(idx, key=lambda j: dist(out[j]))
        b = out[i]
        out[i] = (c, *[int(min(a, v)) for a, v in zip(b[1:4], lo)],
                  *[int(max(a, v)) for a, v in zip(b[4:7], hi)])
        grown.append(i)
    return out, grown


def cut_faces(boxes, labels, shape, scribbled=()) -> list:
    """Faces where a box cuts its structure, and the boxes grown there.

    A face cuts the structure when the structure's section in the box's face slice is
    at least :data:`CUT_SECTION` of its largest section along that axis inside the box
    and the face is not on the volume border. Such a face moves outward by
    :data:`GROW_FRACTION` of the box extent (the image then decides how far the object
    goes: hard background starts only beyond the moved face).

    Parameters
    ----------
    boxes : list of tuple
    labels : Tensor or ndarray, shape (Z, Y, X)
    shape : tuple of int

    Returns
    -------
    (new_boxes, faces) : list of tuple, list of (box index, axis, "low" | "high")
    """
    new, faces = [], []
    for i, box in enumerate(boxes):
        c, sl = box[0], _slices(box)
        hit = labels[sl] == c
        lo, hi = list(box[1:4]), list(box[4:7])
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            sec = hit.sum(dim=other) if hasattr(hit, "dim") else hit.sum(axis=other)
            sec = [int(v) for v in sec.tolist()]
            top = max(sec) if sec else 0
            if top == 0:
                continue
            n = box[4 + axis] - box[1 + axis]
            step = max(GROW_MIN_VOXELS, int(math.ceil(GROW_FRACTION * n)))
            # without scribbles, a structure filling the face rectangle leaks (the box
            # core model), it is not cut; a scribbled structure's model does not come
            # from the box, so a filled face means the box is too small
            area = int(np.prod([hit.shape[a] for a in other]))
            full = area + 1 if c in scribbled else FILLED_FACE * area
            if box[1 + axis] > 0 and CUT_SECTION * top <= sec[0] < full:
                lo[axis] = max(0, box[1 + axis] - step)
                faces.append((i, axis, "low"))
            if box[4 + axis] < shape[axis] and CUT_SECTION * top <= sec[-1] < full:
                hi[axis] = min(shape[axis], box[4 + axis] + step)
                faces.append((i, axis, "high"))
        new.append((c, *lo, *hi))
    return new, faces


#: A face cuts its structure when the constrained solve keeps less than this fraction
#: of the probe's structure in the slab just inside the face.
DRAINED = 0.5
#: ... and the probe's structure beyond the face is about as certain as inside the box
#: (mean probability at least this fraction of the inside's; a leak is less certain).
CONFIDENT = 0.9


def faces_from_probe(boxes, labels, probe, shape, classes) -> tuple:  # noqa: C901
    """Move the faces that a probe solve shows to cut their structure.

    A box drawn too small or shifted pins hard background right against its object,
    which then drains away from the face (and never looks cut). The probe is a solve
    in which the boxes of ``classes`` were grown by :data:`GROW_FRACTION`. A face cuts
    its structure when, in the slab just inside it (a tenth of the box extent, at least
    ``GROW_MIN_VOXELS`` slices), the constrained solve keeps less than :data:`DRAINED`
    of the probe's structure, and the probe's section in the face slice is at least
    :data:`CUT_SECTION` of its largest section inside the box. The face then moves to
    where the probe's structure ends, plus one voxel. Faces that only touch the
    object's tip, or that a leak in the probe crosses while the constrained solve
    keeps its object, stay where the user drew them.

    Parameters
    ----------
    boxes : list of tuple
        The boxes before growing.
    labels, probe : Tensor or ndarray, shape (Z, Y, X)
        Labels of the solve with these boxes and of the probe.
    shape : tuple of int
    classes : collection of int
        Structures whose boxes were grown in the probe.

    Returns
    -------
    (new_boxes, faces) : list of tuple, list of (box index, axis, "low" | "high")
    """
    def numpy(a):
        return a.cpu().numpy() if hasattr(a, "cpu") else np.asarray(a)

    labels, probs = numpy(labels), numpy(probe)
    probe = probs.argmax(axis=0)
    big = grown(boxes, shape)
    new, faces = [], []
    for i, (box, gbox) in enumerate(zip(boxes, big)):
        c = box[0]
        lo, hi = list(box[1:4]), list(box[4:7])
        if c not in classes:
            new.append(box)
            continue
        hit = probe[_slices(box)] == c
        kept = labels[_slices(box)] == c
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            sec = hit.sum(axis=other)
            top = int(sec.max()) if sec.size else 0
            if top == 0:
                continue
            ksec = kept.sum(axis=other)
            d = max(GROW_MIN_VOXELS, int(math.ceil(0.1 * len(sec))))
            # the probe's structure in the grown box, within the box's cross-section
            lateral = [slice(box[1 + a], box[4 + a]) if a != axis
                       else slice(gbox[1 + a], gbox[4 + a]) for a in range(3)]
            beyond = (probe[tuple(lateral)] == c).any(axis=other)
            start = gbox[1 + axis]

            p_in = float(probs[c][_slices(box)][hit].mean())

            def cuts(face, slab, out):
                if face < CUT_SECTION * top or ksec[slab].sum() >= DRAINED * sec[slab].sum():
                    return False
                lat = list(lateral)
                lat[axis] = out
                m = probe[tuple(lat)] == c
                return bool(m.any()) and float(probs[c][tuple(lat)][m].mean()) >= CONFIDENT * p_in

            if box[1 + axis] > 0 and cuts(sec[0], slice(0, d), slice(start, box[1 + axis])):
                rows = np.flatnonzero(beyond[: box[1 + axis] - start])
                if rows.size:
                    lo[axis] = max(0, start + int(rows[0]) - 1)
                    faces.append((i, axis, "low"))
            if box[4 + axis] < shape[axis] and cuts(sec[-1], slice(len(sec) - d, None),
                                                     slice(box[4 + axis], gbox[4 + axis])):
                rows = np.flatnonzero(beyond[box[4 + axis] - start:])
                if rows.size:
                    hi[axis] = min(shape[axis], box[4 + axis] + int(rows[-1]) + 2)
                    faces.append((i, axis, "high"))
        new.append((c, *lo, *hi))
    return new, faces


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


def initial_samples(boxes, seeds: torch.Tensor, n_classes, *, core: float, shell: int,
                    scribbled=()):
    """Likelihood samples before any solve: box cores and shells, plus the seeds.

    Parameters
    ----------
    boxes : list of tuple
    seeds : Tensor, shape (Z, Y, X), int (-1 = unknown)
    n_classes : int
    core : float
        Fraction of each box extent (per axis) taken as the structure sample.
    shell : int
        Thickness in voxels of the background shell around the boxes (beyond their
        slack).
    scribbled : collection of int
        Structures that have scribbles: their sample is the scribbles alone (the box
        core would add whatever else the box holds).

    Returns
    -------
    list of Tensor of bool, one (Z, Y, X) mask per class.
    """
    near = _near(boxes, tuple(seeds.shape), shell, seeds.device)
    samples = [(seeds == k) for k in range(n_classes)]
    samples[0] = samples[0] & near
    for box in boxes:
        if box[0] not in scribbled:
            samples[box[0]][_slices(_core(box, core))] = True
    return samples


def _near(boxes, shape, shell: int, device) -> torch.Tensor:
    """The boxes grown by ``shell`` voxels (a union of boxes)."""
    return torch.from_numpy(union_mask(grown(boxes, shape, 0, extra=shell), shape)).to(device)


def refit_samples(boxes, seeds, labels: torch.Tensor, n_classes, *, shell: int,
                  scribbled=()):
    """Samples from the current segmentation: inside the boxes (and their slack) each
    class without scribbles takes its labelled voxels; background also keeps the seeded
    shell around the boxes; scribbled structures keep their scribbles only."""
    shape = tuple(seeds.shape)
    inside = torch.from_numpy(union_mask(boxes, shape)).to(seeds.device)
    near = _near(boxes, shape, shell, seeds.device)
    samples = [(seeds == k) | ((labels == k) & inside & (k not in scribbled))
               for k in range(n_classes)]
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
        if not bool(hit.any()):
            continue  # no object found in the box: said by report(), not forced
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


#: A box "cuts" its structure when more than this fraction of the structure's voxels
#: near the box lie in the slack outside it.
CUT_FRACTION = 0.1


def report(boxes, labels: np.ndarray, grown_faces=(), loosened=()) -> list[str]:
    """Plain-language findings about the boxes, given the result's labels.

    Says when a box holds no voxel of its structure, when the structure spills
    beyond a box face (the box cuts the object: it was drawn too small or shifted),
    and when boxes of different structures overlap.

    Parameters
    ----------
    boxes : list of tuple
        The boxes as the user gave them (validated, clipped).
    labels : ndarray, shape (Z, Y, X)
    grown_faces : sequence of (box index, axis, side)
        Faces that were moved outward because they cut the structure.
    loosened : sequence of int
        Boxes whose faces were all grown because they left out strokes of their
        structure.

    Returns
    -------
    list of str
        One message per finding (empty when nothing is worth saying).
    """
    shape = labels.shape
    out = []
    for i, box in enumerate(boxes):
        c = box[0]
        inside = int(np.count_nonzero(labels[_slices(box)] == c))
        (big,) = grown([box], shape, 2 * GROW_FRACTION)
        near = int(np.count_nonzero(labels[_slices(big)] == c))
        faces = [f"{'ZYX'[a]} {side}" for j, a, side in grown_faces if j == i]
        if i in loosened:
            faces.insert(0, "all, by a quarter of the box, as it left out strokes of its "
                            "structure")
        if inside == 0:
            out.append(f"box {i} (structure {c}, {tuple(box[1:])}) holds no voxel of "
                       f"structure {c}: is the box on the object? (redraw it or scribble "
                       "the structure inside it)")
        elif near and (near - inside) / near > CUT_FRACTION:
            out.append(f"box {i} (structure {c}) cuts the object: "
                       f"{(near - inside) / near:.0%} of structure {c} near it lies outside "
                       f"the box (face(s) moved out: {', '.join(faces) or 'none'}); redraw "
                       "the box around the whole object if it goes further")
    for i, a in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            b = boxes[j]
            if a[0] == b[0]:
                continue
            lo = [max(p, q) for p, q in zip(a[1:4], b[1:4])]
            hi = [min(p, q) for p, q in zip(a[4:7], b[4:7])]
            if all(p < q for p, q in zip(lo, hi)):
                vol = int(np.prod([q - p for p, q in zip(lo, hi)]))
                small = min(int(np.prod([q - p for p, q in zip(x[1:4], x[4:7])]))
                            for x in (a, b))
                kind = "nested" if vol == small else "overlapping"
                out.append(f"boxes {i} and {j} (structures {a[0]} and {b[0]}) are {kind} "
                           f"({vol} shared voxels): there the image decides between them")
    return out


#: Fraction of each box extent (per axis) around its centre searched for pseudo-seeds.
CENTRE_FRACTION = 0.2


def centre_seeds(boxes, post: torch.Tensor, seeds: torch.Tensor, scribbled=(),
                 fraction: float = CENTRE_FRACTION) -> int:
    """Seed the centre of boxes whose structure has no scribbles (a box is drawn
    around its object, so its centre is almost always inside it).

    In the central ``fraction`` of each such box, the voxels whose intensity model
    favours the structure (posterior > 0.5) and that are connected to the voxel of
    highest posterior become seeds of the structure (in place; only where ``seeds``
    is -1). Without them the walker has no seed of the structure and box-only results
    follow the intensity model alone.

    Returns
    -------
    int
        Number of voxels seeded.
    """
    from scipy import ndimage

    added = 0
    for box in boxes:
        c = box[0]
        if c in scribbled:
            continue
        core = _core(box, fraction)
        sl = _slices(core)
        cand = (post[c][sl] > 0.5) & (seeds[sl] < 0)
        if not bool(cand.any()):
            continue
        lab, n = ndimage.label(cand.cpu().numpy())
        if n > 1:
            score = torch.where(cand, post[c][sl], torch.zeros_like(post[c][sl]))
            best = int(torch.argmax(score))
            keep = lab.reshape(-1)[best]
            cand = torch.from_numpy(lab == keep).to(seeds.device)
        seeds[sl] = torch.where(cand, torch.full_like(seeds[sl], c), seeds[sl])
        added += int(cand.sum())
    return added


def fit_score(boxes, labels, margin: int = 1) -> float:
    """How badly a segmentation fits its boxes (0 = perfectly; lower is better).

    A box is drawn to touch its object, so (i) every slice of the box along each axis
    (ignoring ``margin`` slices at each face) should cross the object (tightness), and
    (ii) the object should touch the faces without covering them (a segmentation that
    covers the box faces has leaked to the box). The score is the mean, over boxes,
    of the fraction of box slices missing the object plus the mean fraction of the
    six face slices covered by the object. Used to choose the intensity-model weight
    per scan for structures that have no scribbles.
    """
    scores = []
    for box in boxes:
        hit = labels[_slices(box)] == box[0]
        hit = hit.cpu().numpy() if hasattr(hit, "cpu") else np.asarray(hit)
        missing, cover = [], []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            sec = hit.sum(axis=other)
            n = len(sec)
            inner = sec[margin:n - margin] if n > 2 * margin else sec
            missing.append(float(np.mean(inner == 0)))
            area = hit.size / n
            cover += [sec[0] / area, sec[-1] / area]
        scores.append(float(np.mean(missing)) + float(np.mean(cover)))
    return float(np.mean(scores)) if scores else 0.0


#: A box whose core the intensity model gives its structure less than this mean
#: posterior holds nothing that differs from its surroundings.
DISTINCT_POSTERIOR = 0.6


def indistinct(boxes, post: torch.Tensor, scribbled=()) -> list[str]:
    """Messages for boxes (of structures without scribbles) whose inside the
    box-core intensity model cannot tell from the shell around them (``post``:
    (K + 1, Z, Y, X) posteriors of that model)."""
    out = []
    for i, box in enumerate(boxes):
        c = box[0]
        if c in scribbled:
            continue
        sl = _slices(_core(box, 0.5))
        # structure vs background only (other structures may look alike)
        m = float((post[c][sl] / (post[c][sl] + post[0][sl]).clamp_min(1e-12)).mean())
        if m < DISTINCT_POSTERIOR:
            out.append(f"box {i} (structure {c}): its inside looks like its surroundings "
                       f"(mean posterior {m:.2f}); is the box on the object? Scribble the "
                       "structure inside it to help")
    return out
