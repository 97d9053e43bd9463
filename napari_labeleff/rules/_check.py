"""Checking masks against rules: where each rule is broken (QA, reports, tests).

Geometry shared with the enforcement (``_enforce``): slices are axial (axis 0, the
acquisition plane of a short-axis or axial stack); "enclosed" = filled slice by slice
(``scipy.ndimage.binary_fill_holes`` per slice); "touch" = 4-neighbours within a slice;
pieces = 26-connected components in 3D.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .._errors import LabelEffError
from ..io import check_spacing
from ._model import Rule

#: 4-neighbours within a slice (no neighbour across slices)
IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
IN_PLANE[1] = ndi.generate_binary_structure(2, 1)
#: 26-connectivity for pieces
FULL = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class Violation:
    """One place where a mask breaks a rule.

    Attributes
    ----------
    rule : Rule
    bbox : tuple of int
        ``(z0, y0, x0, z1, y1, x1)`` inclusive-exclusive voxel box of the offending voxels.
    message : str
        What is wrong and where (slices), with class names.
    slice : int
        The axial slice to look at first (the one holding most offending voxels).
    voxels : int
        Offending voxels (0 for rules about a whole class, e.g. touches).
    """

    rule: Rule
    bbox: tuple
    message: str
    slice: int
    voxels: int = 0

    def to_dict(self, names=None) -> dict:
        return {"rule": list(self.rule.as_tuple(names)), "bbox": list(self.bbox),
                "message": self.message, "slice": self.slice, "voxels": self.voxels}


def fill_slices(mask: np.ndarray) -> np.ndarray:
    """``mask`` with the holes of every axial slice filled (only the slices and the
    box holding voxels are computed)."""
    out = np.zeros(mask.shape, dtype=bool)
    sl = ndi.find_objects(mask.astype(np.uint8))
    if not sl or sl[0] is None:
        return out
    z, y, x = sl[0]
    for k in range(z.start, z.stop):
        out[k, y, x] = ndi.binary_fill_holes(mask[k, y, x])
    return out


def bbox(mask: np.ndarray) -> tuple | None:
    sl = ndi.find_objects(mask.astype(np.uint8))
    if not sl or sl[0] is None:
        return None
    return tuple(s.start for s in sl[0]) + tuple(s.stop for s in sl[0])


def touching(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Voxels of ``a`` that are in-plane 4-neighbours of ``b``."""
    box = bbox(b)
    out = np.zeros(a.shape, dtype=bool)
    if box is None:
        return out
    lo = [max(v - 1, 0) for v in box[:3]]
    hi = [min(v + 1, n) for v, n in zip(box[3:], a.shape)]
    sl = tuple(slice(l, h) for l, h in zip(lo, hi))
    out[sl] = a[sl] & ndi.binary_dilation(b[sl], IN_PLANE)
    return out


def pieces(mask: np.ndarray):
    """(labels, sizes) of the 26-connected pieces of ``mask``."""
    lab, n = ndi.label(mask, structure=FULL)
    return lab, np.bincount(lab.ravel(), minlength=n + 1)[1:]


def distance_mm(b: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm, 3D, with the voxel spacing) of every voxel to ``b``."""
    return ndi.distance_transform_edt(~b, sampling=spacing)


def region(mask: np.ndarray, rules, c: int) -> np.ndarray:
    """Class c's region: its voxels plus those of its parts (``part_of``)."""
    return np.isin(mask, [c, *rules.parts(c)])


def _slices_text(zs) -> str:
    zs = sorted(set(int(z) for z in zs))
    if not zs:
        return ""
    runs, start, prev = [], zs[0], zs[0]
    for z in zs[1:] + [None]:
        if z is not None and z == prev + 1:
            prev = z
            continue
        runs.append(f"{start}" if start == prev else f"{start}-{prev}")
        if z is not None:
            start = prev = z
    return ("slice " if len(zs) == 1 else "slices ") + ", ".join(runs)


def _worst_slice(bad: np.ndarray) -> int:
    counts = bad.reshape(bad.shape[0], -1).sum(axis=1)
    return int(np.argmax(counts))


def side_coordinate(mask, aff, offset=(0, 0, 0)) -> float:
    """Patient-left world coordinate (L of S, P, L) of the centroid of ``mask``."""
    zyx = np.array(ndi.center_of_mass(mask), dtype=float) + np.asarray(offset, dtype=float)
    return float((aff @ np.append(zyx, 1.0))[2])


def bad_voxels(rules, rule: Rule, mask: np.ndarray, spacing, offset=(0, 0, 0)):
    """(bad voxel mask or None, message or None) of one rule on ``mask``; None message =
    the rule holds. Used by :func:`violations` and the enforcement's final check."""
    t = rules.text(rule)
    name = rules._name
    vox = float(np.prod(spacing))
    if rule.relation == "part_of":
        return None, None  # nested regions: holds in every label map by construction
    if rule.relation == "inside":
        a = region(mask, rules, rule.a)
        if not a.any():
            return None, None
        outer = region(mask, rules, rule.b) & ~a
        bad = a & ~fill_slices(outer)
        if not bad.any():
            return None, None
        zs = np.flatnonzero(bad.any(axis=(1, 2))) + offset[0]
        return bad, (f"{name(rule.a)} is not inside {name(rule.b)}: {int(bad.sum())} voxels "
                     f"lie outside what {name(rule.b)} encloses at {_slices_text(zs)}")
    if rule.relation == "within":
        a, b = region(mask, rules, rule.a), region(mask, rules, rule.b)
        if not a.any() or not b.any():
            return None, None
        bad = a & (distance_mm(b, spacing) > rule.mm)
        if not bad.any():
            return None, None
        zs = np.flatnonzero(bad.any(axis=(1, 2))) + offset[0]
        return bad, (f"{int(bad.sum())} voxels of {name(rule.a)} lie farther than "
                     f"{rule.mm:g} mm from {name(rule.b)} at {_slices_text(zs)}")
    if rule.relation in ("excludes", "touches"):
        a, b = region(mask, rules, rule.a), region(mask, rules, rule.b)
        contact = touching(a, b)
        if rule.relation == "excludes":
            if not contact.any():
                return None, None
            bad = contact | touching(b, a)
            zs = np.flatnonzero(bad.any(axis=(1, 2))) + offset[0]
            return bad, (f"{name(rule.a)} touches {name(rule.b)} ({int(contact.sum())} voxels) "
                         f"at {_slices_text(zs)}")
        if not a.any() or not b.any() or contact.any():
            return None, None
        return a | b, f"{name(rule.a)} does not touch {name(rule.b)}"
    if rule.relation == "n_pieces":
        a = region(mask, rules, rule.a)
        lab, sizes = pieces(a)
        if len(sizes) <= rule.n:
            return None, None
        keep = np.argsort(-sizes, kind="stable")[: rule.n] + 1
        bad = a & ~np.isin(lab, keep)
        zs = np.flatnonzero(bad.any(axis=(1, 2))) + offset[0]
        extra = sorted(sizes.tolist(), reverse=True)[rule.n:]
        return bad, (f"{name(rule.a)} has {len(sizes)} pieces (allowed {rule.n}); the extra "
                     f"piece{'s' if len(extra) > 1 else ''} ({', '.join(map(str, extra))} "
                     f"voxels) at {_slices_text(zs)}")
    if rule.relation == "volume":
        a = region(mask, rules, rule.a)
        v = float(a.sum()) * vox
        lo, hi = rule.lo or 0.0, rule.hi
        if v < lo and lo > mask.size * vox:
            raise LabelEffError(
                f"rule '{t}' cannot be met: the whole volume holds {mask.size * vox:g} mm^3, "
                f"less than {lo:g} mm^3"
            )
        if lo <= v and (hi is None or v <= hi):
            return None, None
        if v == 0:
            return None, f"{name(rule.a)} is absent (volume 0, needs at least {lo:g} mm^3)"
        return a, (f"volume of {name(rule.a)} is {v:.6g} mm^3, outside {lo:g}.."
                   f"{'any' if hi is None else f'{hi:g}'} mm^3")
    if rule.relation in ("left_of", "right_of"):
        a, b = region(mask, rules, rule.a), region(mask, rules, rule.b)
        if not a.any() or not b.any():
            return None, None
        la = side_coordinate(a, rules._side, offset)
        lb = side_coordinate(b, rules._side, offset)
        ok = la > lb if rule.relation == "left_of" else la < lb
        if ok:
            return None, None
        side = "left" if rule.relation == "left_of" else "right"
        return a, (f"{name(rule.a)} is not on the patient's {side} of {name(rule.b)} "
                   f"(centroids {abs(la - lb):.1f} mm the other way)")
    raise LabelEffError(f"rule {rule!r}: unknown relation")


def _check_mask(mask) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 3:
        raise LabelEffError(f"mask has shape {arr.shape}; a (Z, Y, X) label array is required")
    if arr.dtype.kind not in "iub":
        raise LabelEffError(f"mask has dtype {arr.dtype}; an integer label array is required")
    return arr


def violations(rules, mask, spacing=(1.0, 1.0, 1.0), *, offset=(0, 0, 0)) -> list:
    """Where ``mask`` breaks ``rules``.

    Parameters
    ----------
    rules : Rules
    mask : ndarray of int, shape (Z, Y, X)
        0 = background, c = structure c.
    spacing : sequence of 3 float
        (Z, Y, X) mm (volumes).

    Returns
    -------
    list of Violation
        In rule order; empty when every rule holds. A class absent from the mask breaks
        no rule about it, except a volume rule with a lower bound.
    """
    arr = _check_mask(mask)
    sp = check_spacing(spacing)
    out = []
    for rule in rules:
        bad, msg = bad_voxels(rules, rule, arr, sp, offset)
        if msg is None:
            continue
        if bad is None or not bad.any():
            box, z = (0, 0, 0, *arr.shape), 0
            n = 0
        else:
            box, z, n = bbox(bad), _worst_slice(bad), int(bad.sum())
        if rule.relation == "touches":
            n = 0
        out.append(Violation(rule, tuple(int(v) for v in box), msg, z, n))
    return out


def qa(rules, masks_by_id, spacings=None) -> list[dict]:
    """Rule violations of many masks (label QA of a project).

    Parameters
    ----------
    rules : Rules
    masks_by_id : dict
        ``{volume id: (Z, Y, X) mask}`` (arrays, or zero-argument callables returning one,
        so a project can load masks lazily).
    spacings : dict or tuple, optional
        ``{volume id: (Z, Y, X) mm}``, or one spacing for all (default 1 mm).

    Returns
    -------
    list of dict
        One item per violation: ``id``, ``rule`` (tuple with names), ``text`` (the rule in
        words), ``bbox``, ``slice``, ``message``, ``voxels``; masks in the given order.
    """
    items = []
    for vid, mask in masks_by_id.items():
        sp = spacings.get(vid, (1.0, 1.0, 1.0)) if isinstance(spacings, dict) else (
            spacings or (1.0, 1.0, 1.0))
        m = mask() if callable(mask) else mask
        for v in violations(rules, m, sp):
            items.append({"id": vid, "rule": v.rule.as_tuple(rules.names or None),
                          "text": rules.text(v.rule), "bbox": v.bbox, "slice": v.slice,
                          "message": v.message, "voxels": v.voxels})
    return items
