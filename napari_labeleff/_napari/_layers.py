"""Small adapters between napari layers and the engine's array contracts.

Widgets stay thin by going through these functions: colours of classes, the region a
brush stroke touched, the Boxes shapes layer <-> engine boxes, and merging an accepted
part of the refined mask into the final mask. They take and return plain arrays and
lists, so they are tested without a viewer.

Box convention of the Boxes shapes layer (it shares the image's affine, so its data
coordinates are voxel indices (z, y, x)):

* every shape is read as its bounding rectangle on the slice it was drawn on (the axis
  along which all its vertices share one coordinate); voxels whose centres lie inside
  the rectangle are in the box;
* feature ``class_id`` (1..K) is the structure; features ``before`` / ``after`` (>= 0)
  extend the box by that many slices below / above the drawn slice (a 3D box from a
  rectangle plus a slice range);
* two or more rectangles of the same class drawn on different slices of the same axis
  with overlapping in-plane extents and no slice range of their own form one 3D box
  spanning all of them (a 3D box from two rectangles).
"""

from __future__ import annotations

import numpy as np
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.colormaps.standardize_color import transform_color
from scipy import ndimage

BOX_FEATURES = ("class_id", "before", "after")


# ---- colours ------------------------------------------------------------------------
#: Shown for background scribbles when the background class colour is too dark to
#: see on a dark canvas (mask tables often give background black).
VISIBLE_BACKGROUND = (0.45, 0.55, 0.75)


def scribble_colormap(colors: dict) -> DirectLabelColormap:
    """Colormap of the Scribbles layer: value c + 1 shows class c's colour.

    Parameters
    ----------
    colors : dict
        ``class index (0 = background) -> colour``. A near-black background colour is
        replaced by :data:`VISIBLE_BACKGROUND` so background strokes stay visible.
    """
    mapping = {None: "transparent", 0: "transparent"}
    mapping.update({c + 1: col for c, col in colors.items()})
    if 0 in colors and np.max(transform_color(colors[0])[0][:3]) < 0.2:
        mapping[1] = VISIBLE_BACKGROUND
    return DirectLabelColormap(color_dict=mapping)


def mask_colormap(colors: dict[int, str]) -> DirectLabelColormap:
    """Colormap of mask layers: value c (1..K) shows class c's colour, 0 is clear."""
    mapping = {None: "transparent", 0: "transparent"}
    mapping.update({c: col for c, col in colors.items() if c > 0})
    return DirectLabelColormap(color_dict=mapping)


def annotation_metadata(role, geometry, source_path, names, colors) -> dict:
    """``metadata`` of an annotation layer.

    Holds its role, the source geometry and path (so the writer exports it with the
    image's affine) and its label table: for ``role="scribbles"`` the class tables are
    shifted to scribble values (c + 1 = class c, 0 = unannotated).

    Parameters
    ----------
    role : {"scribbles", "boxes", "refined", "final", "uncertainty"}
    geometry : Geometry or None
    source_path : str or None
    names, colors : dict
        ``class index -> name`` and ``class index -> RGB (0..1)``, 0 = background.
    """
    meta = {"labeleff_role": role, "source_path": source_path}
    if geometry is not None:
        meta["geometry"] = geometry.to_dict()
    if role == "scribbles":
        names = {0: "unannotated", **{c + 1: n for c, n in names.items()}}
        colors = {0: (0.0, 0.0, 0.0), **{c + 1: col for c, col in colors.items()}}
    meta["label_names"], meta["label_colors"] = dict(names), dict(colors)
    return meta


# ---- brush strokes ------------------------------------------------------------------
def painted_region(history_item, shape) -> tuple[int, ...] | None:
    """Bounding box ``(z0, y0, x0, z1, y1, x1)`` of one napari paint event.

    Parameters
    ----------
    history_item : list
        ``event.value`` of ``Labels.events.paint``: atoms that are either mask-based
        edits with a ``slice_key`` or ``(indices, old, new)`` tuples.
    shape : tuple of int
        (Z, Y, X) shape of the labels data.
    """
    lo = np.array(shape, dtype=np.int64)
    hi = np.zeros(3, dtype=np.int64)
    for atom in history_item:
        if hasattr(atom, "slice_key"):
            key = atom.slice_key
            a = [s.indices(n)[0] for s, n in zip(key, shape)]
            b = [s.indices(n)[1] for s, n in zip(key, shape)]
        else:
            idx = [np.asarray(i) for i in atom[0]]
            if idx[0].size == 0:
                continue
            a = [int(i.min()) for i in idx]
            b = [int(i.max()) + 1 for i in idx]
        lo = np.minimum(lo, a)
        hi = np.maximum(hi, b)
    if np.any(hi <= lo):
        return None
    return tuple(int(v) for v in (*lo, *hi))


# ---- boxes --------------------------------------------------------------------------
def _rectangle(vertices):
    """(axis, slice index, lo (3,), hi (3,)) of one shape, voxel-centre rounding."""
    v = np.asarray(vertices, dtype=float)[:, -3:]
    flat = np.flatnonzero(np.ptp(v, axis=0) < 1e-6)
    lo = np.ceil(v.min(axis=0) - 1e-6).astype(int)
    hi = np.floor(v.max(axis=0) + 1e-6).astype(int) + 1
    if flat.size == 0:  # not drawn on one slice (e.g. a 3D shape): its bounding box
        return None, None, lo, hi
    axis = int(flat[0])
    k = int(np.round(v[0, axis]))
    lo[axis], hi[axis] = k, k + 1
    return axis, k, lo, hi


def shapes_to_boxes(shape_data, features, shape) -> list[tuple[int, ...]]:
    """Shapes of the Boxes layer -> engine boxes.

    Parameters
    ----------
    shape_data : list of ndarray, each (N, 3)
        ``shapes_layer.data`` in voxel coordinates (z, y, x).
    features : pandas.DataFrame or dict of sequences
        Columns ``class_id``, ``before``, ``after`` (one row per shape).
    shape : tuple of int
        (Z, Y, X) shape of the volume; boxes are clipped to it, empty ones dropped.

    Returns
    -------
    list of tuple
        ``(c, z0, y0, x0, z1, y1, x1)``, inclusive-exclusive voxel indices.
    """
    n = len(shape_data)
    cls = np.asarray(features["class_id"], dtype=int)[:n] if n else []
    before = np.asarray(features["before"], dtype=int)[:n] if n else []
    after = np.asarray(features["after"], dtype=int)[:n] if n else []
    singles, stackable = [], []
    for i, verts in enumerate(shape_data):
        axis, k, lo, hi = _rectangle(verts)
        if axis is not None and not 0 <= k < shape[axis]:
            continue  # drawn outside the volume
        if axis is not None:
            lo[axis] -= max(int(before[i]), 0)
            hi[axis] += max(int(after[i]), 0)
        entry = (int(cls[i]), axis, lo, hi)
        if axis is not None and before[i] <= 0 and after[i] <= 0:
            stackable.append(entry)
        else:
            singles.append(entry)
    merged = _merge_stacked(stackable)
    boxes = []
    for c, _, lo, hi in singles + merged:
        lo = np.clip(lo, 0, shape)
        hi = np.clip(hi, 0, shape)
        if c >= 1 and np.all(hi > lo):
            boxes.append((c, *(int(x) for x in lo), *(int(x) for x in hi)))
    return boxes


def _merge_stacked(entries):
    """Group same-class, same-axis single-slice rectangles on different slices whose
    in-plane extents overlap; each group of 2+ becomes one 3D box (their union)."""
    groups: list[dict] = []
    for c, axis, lo, hi in entries:
        plane = [a for a in range(3) if a != axis]
        for g in groups:
            if (
                g["c"] == c
                and g["axis"] == axis
                and lo[axis] not in g["slices"]
                and all(lo[a] < g["hi"][a] and hi[a] > g["lo"][a] for a in plane)
            ):
                g["lo"], g["hi"] = np.minimum(g["lo"], lo), np.maximum(g["hi"], hi)
                g["slices"].add(int(lo[axis]))
                break
        else:
            groups.append({"c": c, "axis": axis, "lo": lo, "hi": hi, "slices": {int(lo[axis])}})
    return [(g["c"], g["axis"], g["lo"], g["hi"]) for g in groups]


def boxes_to_shapes(boxes) -> tuple[list[np.ndarray], dict[str, list[int]]]:
    """Engine boxes -> rectangles on their first Z slice with a slice range.

    Inverse of :func:`shapes_to_boxes` for boxes made of one rectangle each.

    Returns
    -------
    data : list of ndarray, each (4, 3)
        Rectangle corners in voxel coordinates (z, y, x).
    features : dict
        ``class_id``, ``before`` (0) and ``after`` (z1 - z0 - 1) per rectangle.
    """
    data, features = [], {k: [] for k in BOX_FEATURES}
    for c, z0, y0, x0, z1, y1, x1 in boxes:
        ya, yb, xa, xb = y0, y1 - 1, x0, x1 - 1
        data.append(np.array([[z0, ya, xa], [z0, ya, xb], [z0, yb, xb], [z0, yb, xa]], float))
        features["class_id"].append(int(c))
        features["before"].append(0)
        features["after"].append(int(z1 - z0 - 1))
    return data, features


# ---- accepting the refined mask -------------------------------------------------------
def accept_into(final, refined, *, classes=None, at=None) -> tuple[np.ndarray, tuple]:
    """Copy (part of) the refined mask into the final mask.

    Parameters
    ----------
    final, refined : ndarray, shape (Z, Y, X), uint8
        Masks (0 = background, c = structure c). Not modified.
    classes : iterable of int, optional
        Accept only these structures: their voxels in ``final`` are replaced by the
        refined ones. None (and ``at`` None) accepts the whole refined mask.
    at : tuple of int, optional
        A voxel (z, y, x): accept only the connected region of the refined label under
        it (a background region clears the final mask there).

    Returns
    -------
    new_final : ndarray, shape (Z, Y, X), uint8
    region : tuple of slice
        Bounding box of what changed (for a partial refresh / autosave).
    """
    final = np.asarray(final)
    refined = np.asarray(refined)
    if final.shape != refined.shape:
        raise ValueError(f"final mask shape {final.shape} != refined mask shape {refined.shape}")
    new = final.copy()
    if at is not None:
        at = tuple(int(round(a)) for a in at)
        if any(not 0 <= a < n for a, n in zip(at, refined.shape)):
            raise ValueError(f"position {at} is outside the volume of shape {refined.shape}")
        value = refined[at]
        comps, _ = ndimage.label(refined == value)
        where = comps == comps[at]
        new[where] = value
    elif classes is None:
        new[...] = refined
    else:
        for c in classes:
            new[final == c] = 0
            new[refined == c] = c
    changed = np.argwhere(new != final)
    if changed.size == 0:
        return new, ()
    lo, hi = changed.min(axis=0), changed.max(axis=0) + 1
    return new, tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


# ---- confirming a reviewed suggestion ("looks right") ----------------------------------
def confirmed_scribbles(refined, scribbles, region, *, margin: int = 1):
    """Scribbles that record a region the user confirmed as correctly refined.

    Each class's refined voxels inside ``region`` are eroded by ``margin`` voxels (in
    the plane for a one-slice region, in 3D otherwise; the volume border does not
    erode), so the boundaries between classes stay free for the next refinement; the
    rest become weak labels (mask value c -> scribble value c + 1) wherever no scribble
    exists yet.

    Parameters
    ----------
    refined : ndarray, shape (Z, Y, X), uint8
        Refined mask (0 = background, c = structure c).
    scribbles : ndarray, shape (Z, Y, X), int
        Current scribbles; never overwritten.
    region : tuple of int
        ``(z0, y0, x0, z1, y1, x1)``, inclusive-exclusive.
    margin : int
        Erosion depth in voxels.

    Returns
    -------
    indices : tuple of 3 ndarray
        Voxel indices to write (``Labels.data_setitem`` form).
    values : ndarray
        Scribble values at ``indices``.
    """
    refined = np.asarray(refined)
    shape = np.array(refined.shape)
    lo, hi = np.clip(region[:3], 0, shape), np.clip(region[3:], 0, shape)
    pad_lo, pad_hi = np.maximum(lo - margin, 0), np.minimum(hi + margin, shape)
    crop = refined[tuple(slice(a, b) for a, b in zip(pad_lo, pad_hi))]
    structure = ndimage.generate_binary_structure(3, 1)
    for axis in np.flatnonzero(hi - lo == 1):  # one-slice region: erode in its plane
        structure[(slice(None),) * axis + ([0, 2],)] = False
    weak = np.zeros(crop.shape, dtype=np.int32)
    for c in np.unique(crop):
        core = crop == c
        if margin > 0:
            core = ndimage.binary_erosion(core, structure, iterations=margin, border_value=1)
        weak[core] = int(c) + 1
    inner = weak[tuple(slice(a - p, b - p) for a, b, p in zip(lo, hi, pad_lo))]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    free = (np.asarray(scribbles)[box] == 0) & (inner > 0)
    where = np.nonzero(free)
    indices = tuple(w + a for w, a in zip(where, lo))
    return indices, inner[free]
