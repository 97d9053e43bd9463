"""``suggest``: ranked places (slices or uncertain regions) to annotate next."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from .._errors import LabelEffError
from ..engine import resolve_device
from ._annotated import annotated_slices, structure_extents
from ._scoring import (KINDS, available_kinds, decode_pair, ensemble_members, slice_stats,
                       uncertain_regions, voxel_scores)
from ._strategies import OUTSIDE, STRATEGIES, Candidates
from ._types import Suggestion

GRANULARITIES = ("slice", "region")
_AXIS_NAMES = ("Z", "Y", "X")


def check_options(n, axis, granularity, strategy, uncertainty, n_members=None) -> None:
    """Validate the scalar options of :func:`suggest` (cheap; callers that refine first
    check them before the refinement). With ``n_members`` (ensemble members the caller
    will pass: 1 for a single refinement), ``uncertainty="mutual_info"`` without an
    ensemble is refused here rather than after the refinement."""
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
    if n_members is not None and uncertainty not in available_kinds(n_members):
        raise LabelEffError(
            f"uncertainty={uncertainty!r} needs an ensemble (at least two refinements); "
            f"with {n_members} use one of {available_kinds(n_members)}")


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
        0 = unannotated, 1 = background, c + 1 = structure c. Slices holding strokes
        drawn in their plane are skipped (slice granularity; a stroke drawn on an
        axial slice does not make the sagittal slices it crosses annotated, see
        :func:`~napari_labeleff.active._annotated.annotated_slices`); scribbled voxels
        count as certain.
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
        (class-aware: uncertainty x coverage of each structure being segmented, a
        class with few annotated slices first).
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
    annotated = annotated_slices(scribbles, axis).any(1)
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
    extents = structure_extents(scribbles, vs.top1.cpu().numpy(), vs.n_classes)
    if granularity == "slice":
        ranked = _suggest_slices(vs, image, probs, axis, scribbles, free, boxes,
                                 extents, strategy, n, rng, names)
    else:
        ranked = _suggest_regions(vs, spacing, axis, scribbles, slices_out, boxes_out,
                                  extents, strategy, n, rng, names)
    for rank, s in enumerate(ranked, start=1):
        s.rank = rank
        s.reason += note
    return ranked


def _named(note: str, names) -> str:
    """Replace "structure c" in a strategy's note by the class's name."""
    return re.sub(r"structure (\d+)", lambda m: _class_name(int(m.group(1)), names), note)


def _slice_relevance(extents, axis, n_slices, k1) -> tuple:
    """(S, K + 1) relevance of each slice to each structure and (K + 1,) extent sizes
    in position units (see :class:`~._strategies.Candidates`)."""
    rel = np.full((n_slices, k1), OUTSIDE)
    span = np.ones(k1)
    idx = np.arange(n_slices)
    for c, box in enumerate(extents):
        if box is None:
            continue
        lo, hi = box[axis], box[axis + 3]
        rel[(idx >= lo) & (idx < hi), c] = 1.0
        span[c] = max(1, hi - lo - 1) / max(1, n_slices - 1)
    if not any(b is not None for b in extents[1:]):  # nothing drawn nor predicted
        rel[:] = 1.0
    return rel, span


def _suggest_slices(vs, image, probs, axis, scribbles, free, boxes, extents, strategy,
                    n, rng, names):
    st = slice_stats(vs, image, probs, axis)
    n_slices = len(free)
    k1 = vs.n_classes
    pos = (np.arange(n_slices, dtype=float) / max(1, n_slices - 1))[:, None]
    fg = (st.n_predicted > 0) | _box_foreground(boxes, vs.uncertainty.shape, axis)
    per_class = annotated_slices(scribbles, axis, k1)
    annotated = per_class.any(1)
    idx = np.flatnonzero(free)
    lab = np.flatnonzero(annotated)
    rel, span = _slice_relevance(extents, axis, n_slices, k1)
    top1 = vs.top1.movedim(axis, 0).reshape(n_slices, -1)
    counts = np.stack([(top1 == c).sum(1).cpu().numpy() for c in range(k1)], 1).astype(float)
    presence = counts / np.maximum(counts.max(0, keepdims=True), 1)
    cands = Candidates(position=pos[idx], score=st.mass[idx],
                       class_score=st.class_mass[idx], foreground=fg[idx],
                       embedding=st.embedding[idx], labelled_position=pos[lab],
                       labelled_embedding=st.embedding[lab], relevance=rel[idx],
                       labelled_classes=per_class[lab], class_span=span,
                       presence=presence[idx])
    out = []
    for j, score, how in STRATEGIES[strategy](cands, n, rng):
        how = _named(how, names)
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


def _stroke_centres(scribbles, k1):
    """Centroids (voxel units) of the stroke components of each class and the classes
    they hold: the annotated places of region suggestions."""
    sc = np.asarray(scribbles)
    cents, classes = [], []
    for c in range(k1):
        comp, n = ndi.label(sc == c + 1, structure=np.ones((3, 3, 3), bool))
        if n:
            cents += ndi.center_of_mass(comp > 0, comp, range(1, n + 1))
            row = np.zeros(k1, bool)
            row[c] = True
            classes += [row] * n
    return np.array(cents, float).reshape(-1, 3), np.array(classes, bool).reshape(-1, k1)


def _suggest_regions(vs, spacing, axis, scribbles, slices_out, boxes_out, extents,
                     strategy, n, rng, names):
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
    k1 = vs.n_classes
    scale = np.maximum(1, shape - 1)
    cen = np.array([r.centroid for r in regions])
    pos = cen / scale
    cm = np.array([r.class_mass for r in regions])
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1e-12)
    rel = np.full((len(regions), k1), OUTSIDE)
    span = np.ones(k1)
    for c, box in enumerate(extents):
        if box is not None:
            lo, hi = np.array(box[:3]), np.array(box[3:])
            rel[np.all((cen >= lo) & (cen < hi), axis=1), c] = 1.0
            span[c] = float(np.max((hi - lo - 1) / scale))
    if not any(b is not None for b in extents[1:]):
        rel[:] = 1.0
    lab_pos, lab_cls = _stroke_centres(scribbles, k1)
    cands = Candidates(position=pos, score=np.array([r.mass for r in regions]),
                       class_score=cm, foreground=np.array([r.foreground for r in regions]),
                       embedding=share, labelled_position=lab_pos / scale,
                       labelled_embedding=np.zeros((len(lab_pos), k1)), relevance=rel,
                       labelled_classes=lab_cls, class_span=span)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out = []
    for j, score, how in STRATEGIES[strategy](cands, n, rng):
        how = _named(how, names)
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
