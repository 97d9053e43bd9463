"""``suggest``: ranked places (slices or uncertain regions) to annotate next."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .._errors import LabelEffError
from ..engine._device import resolve_device
from ._scoring import (KINDS, decode_pair, ensemble_members, slice_stats,
                       uncertain_regions, voxel_scores)
from ._strategies import STRATEGIES, Candidates
from ._types import Suggestion

GRANULARITIES = ("slice", "region")
_AXIS_NAMES = ("Z", "Y", "X")


def check_options(n, axis, granularity, strategy, uncertainty) -> None:
    """Validate the scalar options of :func:`suggest` (cheap; callers that refine first
    check them before the refinement)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise LabelEffError(f"n must be a positive integer, got {n!r}")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) \
            or not 0 <= axis <= 2:
        raise LabelEffError(f"axis must be 0 (Z), 1 (Y) or 2 (X), got {axis!r}")
    if granularity not in GRANULARITIES:
        raise LabelEffError(
            f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if strategy not in STRATEGIES:
        raise LabelEffError(
            f"strategy must be one of {tuple(STRATEGIES)}, got {strategy!r}")
    if uncertainty not in KINDS:
        raise LabelEffError(f"uncertainty must be one of {KINDS}, got {uncertainty!r}")


def _validate(image, scribbles, spacing, n, axis, granularity, strategy, uncertainty):
    check_options(n, axis, granularity, strategy, uncertainty)
    image = np.asarray(image)
    if image.ndim not in (3, 4):
        raise LabelEffError(
            f"image must be (Z, Y, X) or (C, Z, Y, X), got shape {image.shape}")
    image = image if image.ndim == 4 else image[None]
    scribbles = np.asarray(scribbles)
    if scribbles.shape != image.shape[1:]:
        raise LabelEffError(f"scribbles must have the image's shape {image.shape[1:]}, "
                            f"got {scribbles.shape}")
    sp = np.asarray(spacing, dtype=float).ravel()
    if sp.shape != (3,) or not np.all(np.isfinite(sp) & (sp > 0)):
        raise LabelEffError(f"spacing must be 3 positive (Z, Y, X) mm values, "
                            f"got {spacing!r}")
    return image, scribbles, tuple(sp)


def _check_result_shape(members, shape):
    if members[0].shape[1:] != tuple(shape):
        raise LabelEffError(
            f"result has shape {members[0].shape[1:]} but the image has {tuple(shape)}: "
            "the result belongs to another volume; refine this image first")


def _exclusions(exclude, axis):
    """Split ``exclude`` into slice indices along ``axis`` and (z0..x1) boxes."""
    slices, boxes = set(), []
    for item in exclude:
        if isinstance(item, Suggestion):
            if item.kind == "region" and item.bbox is not None:
                boxes.append(tuple(item.bbox))
            elif item.axis == axis and item.index is not None:
                slices.add(int(item.index))
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            slices.add(int(item))
        elif isinstance(item, Sequence) and len(item) == 6:
            boxes.append(tuple(int(v) for v in item))
        else:
            raise LabelEffError(
                f"exclude items must be slice indices, (z0, y0, x0, z1, y1, x1) boxes "
                f"or Suggestions, got {item!r}")
    return slices, boxes


def _class_name(c: int, names: Mapping) -> str:
    if c in names:
        return str(names[c])
    return "background" if c == 0 else f"structure {c}"


def _boundary(pair, names) -> str:
    a, b = pair
    if a == b:
        return f"inside {_class_name(a, names)}"
    return f"{_class_name(a, names)}/{_class_name(b, names)} boundary"


def _involved(class_mass: np.ndarray) -> tuple:
    """Classes holding >= 10% of the uncertainty mass: structures first (largest mass
    first), then background."""
    total = class_mass.sum()
    if total <= 0:
        return ()
    share = class_mass / total
    fg = [c for c in np.argsort(-class_mass[1:], kind="stable") + 1 if share[c] >= 0.1]
    return tuple(int(c) for c in fg) + ((0,) if share[0] >= 0.1 else ())


def _box_foreground(boxes, shape, axis) -> np.ndarray:
    """Slices along ``axis`` crossed by a box."""
    out = np.zeros(shape[axis], bool)
    for b in boxes or ():
        out[max(0, int(b[1 + axis])):max(0, int(b[4 + axis]))] = True
    return out


def suggest(image, scribbles, *, spacing, result=None, n: int = 5, axis: int = 0,
            granularity: str = "slice", strategy: str = "default", exclude=(),
            boxes=None, seed: int = 0, uncertainty: str = "entropy", others=(),
            class_names: Mapping | None = None, device="auto") -> list[Suggestion]:
    """Ranked places to annotate next: slices or connected uncertain regions.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X) or (C, Z, Y, X)
    scribbles : ndarray of int, shape (Z, Y, X)
        0 = unannotated, 1 = background, c + 1 = structure c. Slices holding any
        scribble are skipped (slice granularity); scribbled voxels count as certain.
    spacing : tuple of float
        (Z, Y, X) mm.
    result : RefineResult, optional
        Refinement of this image to score. None: a refinement with the engine's
        default method is computed first (the reasons say so).
    n : int
        Number of suggestions (> 0); fewer come back when fewer places remain.
    axis : {0, 1, 2}
        Slice axis (Z, Y, X); for regions, the axis of the slice through the centre
        that the viewer should show.
    granularity : {"slice", "region"}
    strategy : str
        A key of :data:`~napari_labeleff.active.STRATEGIES`: ``"random"``,
        ``"foreground_random"``, ``"equidistant"``, ``"entropy"`` or ``"default"``
        (uncertainty x diversity, class-balanced).
    exclude : iterable
        Slice indices along ``axis``, (z0, y0, x0, z1, y1, x1) boxes or
        :class:`Suggestion` objects already reviewed; a region is excluded when its
        centre lies in an excluded box or on an excluded slice.
    boxes : list of tuple, optional
        Box prompts ``(c, z0, y0, x0, z1, y1, x1)``: passed to the refinement when
        ``result`` is None and count as foreground for ``"foreground_random"``.
    seed : int
        Seed of the random strategies.
    uncertainty : {"entropy", "margin", "mutual_info"}
        Voxel uncertainty (see :func:`uncertainty_map`).
    others : sequence of RefineResult
        Further ensemble members (e.g. another method's refinement) for an
        ensemble-mean prediction and ``uncertainty="mutual_info"``.
    class_names : mapping of int to str, or sequence indexed by label, optional
        Names of classes 0..K for the reasons (default "background", "structure c").
    device : str
        Torch device for scoring (and for the refinement when ``result`` is None):
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Returns
    -------
    list of Suggestion
        Ranked, rank 1 = best. Slice suggestions have ``axis`` and ``index``; region
        suggestions a ``bbox`` plus the ``axis``/``index`` of their centre slice.

    Raises
    ------
    LabelEffError
        n <= 0, axis outside 0..2, unknown granularity, strategy or uncertainty kind,
        shape mismatches (a result of another volume), every slice already annotated
        or excluded.
    """
    image, scribbles, spacing = _validate(image, scribbles, spacing, n, axis,
                                          granularity, strategy, uncertainty)
    axis, n = int(axis), int(n)
    slices_out, boxes_out = _exclusions(exclude, axis)
    shape = scribbles.shape
    annotated = np.moveaxis(scribbles > 0, axis, 0).reshape(shape[axis], -1).any(1)
    if granularity == "slice":
        free = ~annotated
        free[[i for i in slices_out if 0 <= i < shape[axis]]] = False
        if not free.any():
            raise LabelEffError(
                f"all {shape[axis]} slices along axis {axis} are already annotated or "
                "excluded: nothing left to suggest (try another axis or granularity)")
    dev = resolve_device(device)
    note = ""
    if result is None:
        from ..engine import refine

        result = refine(image if image.shape[0] > 1 else image[0], scribbles,
                        spacing=spacing, boxes=boxes, device=device)
        note = f" (scored on a new '{result.method}' refinement)"
    members = ensemble_members(result, others)
    _check_result_shape(members, shape)
    vs = voxel_scores(members, uncertainty, scribbles, dev)
    probs = members[0] if len(members) == 1 else np.mean(members, axis=0)
    names = (dict(class_names) if isinstance(class_names, Mapping)
             else dict(enumerate(class_names or ())))
    rng = np.random.default_rng(seed)
    if granularity == "slice":
        ranked = _suggest_slices(vs, image, probs, axis, annotated, free, boxes,
                                 strategy, n, rng, names)
    else:
        ranked = _suggest_regions(vs, spacing, axis, slices_out, boxes_out, strategy,
                                  n, rng, names)
    for rank, s in enumerate(ranked, start=1):
        s.rank = rank
        s.reason += note
    return ranked


def _suggest_slices(vs, image, probs, axis, annotated, free, boxes, strategy, n, rng,
                    names):
    st = slice_stats(vs, image, probs, axis)
    n_slices = len(free)
    pos = (np.arange(n_slices, dtype=float) / max(1, n_slices - 1))[:, None]
    fg = (st.n_predicted > 0) | _box_foreground(boxes, vs.uncertainty.shape, axis)
    idx = np.flatnonzero(free)
    lab = np.flatnonzero(annotated)
    cands = Candidates(position=pos[idx], score=st.mass[idx],
                       class_score=st.class_mass[idx], foreground=fg[idx],
                       embedding=st.embedding[idx], labelled_position=pos[lab],
                       labelled_embedding=st.embedding[lab])
    out = []
    for j, score, how in STRATEGIES[strategy](cands, n, rng):
        i = int(idx[j])
        k1 = vs.n_classes
        pct = 100.0 * st.n_uncertain[i] / max(1, st.n_foreground[i])
        what = (f"{pct:.0f}% of the foreground voxels uncertain, mostly "
                f"{_boundary(decode_pair(int(st.pair[i]), k1), names)}"
                if st.n_uncertain[i] else "no uncertain voxels")
        near = (f"nearest scribble {int(np.abs(lab - i).min())} slices away"
                if lab.size else f"no scribbles along axis {_AXIS_NAMES[axis]}")
        out.append(Suggestion(
            kind="slice", score=score, axis=axis, index=i,
            classes=_involved(st.class_mass[i]),
            reason=f"slice {i} (axis {_AXIS_NAMES[axis]}): {what}; {near}; {how}"))
    return out


def _suggest_regions(vs, spacing, axis, slices_out, boxes_out, strategy, n, rng, names):
    u = vs.uncertainty.cpu().numpy()
    regions = uncertain_regions(u, spacing=spacing, top1=vs.top1.cpu().numpy(),
                                top2=vs.top2.cpu().numpy(),
                                foreground=vs.foreground.cpu().numpy(),
                                n_classes=vs.n_classes)

    def excluded(r):
        c = np.round(r.centroid).astype(int)
        return int(c[axis]) in slices_out or any(
            all(b[d] <= c[d] < b[d + 3] for d in range(3)) for b in boxes_out)

    regions = [r for r in regions if not excluded(r)]
    if not regions:
        return []
    shape = np.asarray(u.shape, dtype=float)
    pos = np.array([r.centroid for r in regions]) / np.maximum(1, shape - 1)
    cm = np.array([r.class_mass for r in regions])
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1e-12)
    cands = Candidates(position=pos, score=np.array([r.mass for r in regions]),
                       class_score=cm, foreground=np.array([r.foreground for r in regions]),
                       embedding=share, labelled_position=np.zeros((0, 3)),
                       labelled_embedding=np.zeros((0, vs.n_classes)))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out = []
    for j, score, how in STRATEGIES[strategy](cands, n, rng):
        r = regions[j]
        ext = "x".join(str(r.bbox[d + 3] - r.bbox[d]) for d in range(3))
        centre = int(round(r.centroid[axis]))
        out.append(Suggestion(
            kind="region", score=score, axis=axis, index=centre, bbox=r.bbox,
            classes=_involved(r.class_mass),
            reason=(f"region of {r.size} uncertain voxels ({r.size * voxel_ml:.1f} ml) "
                    f"in a {ext} box around slice {centre} (axis {_AXIS_NAMES[axis]}), "
                    f"mostly {_boundary(r.pair, names)}; {how}")))
    return out
