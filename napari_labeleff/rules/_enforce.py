"""Enforcing rules on a refinement's class probabilities (used by ``engine/_rules.py``).

Design (docs/rules.md has the measured effect):

1. **Hierarchy.** Classes nested by ``inside`` / ``part_of`` form a tree. Labels are
   decided outermost first: background against each top-level region (a class plus
   everything nested in it, scored by the sum of their probabilities), then, inside a
   region, the class against its nested classes, and so on. A thin ring (myocardium)
   no longer loses to the background where ring + cavity together win.
2. **Strokes win.** Every scribbled voxel keeps its scribbled class.
3. **Constraints**, in rounds until nothing changes (at most ``MAX_ROUNDS``):
   ``inside(A, B)``: gaps of B's ring up to ``RING_GAP_VOXELS`` wide are closed with B
   where A leaks through them; A voxels still outside what B encloses go to their next
   most probable allowed class; holes of B that hold neither B nor a class nested in it
   get the most probable class nested in B. ``excludes(A, B)``: voxels where A and B
   touch go to their next most probable other class. ``within(A, B, mm)``: voxels of A
   farther than mm from B go to their next most probable class. ``n_pieces(A, n)``: pieces holding
   A's strokes are kept (else the largest), the others go to their next class.
   ``touches(A, B)``: when they do not touch, the shortest in-plane bridge (at most
   ``BRIDGE_MAX_VOXELS``) becomes A. ``volume``: the least (most) probable voxels leave
   (join) A until the volume fits. ``left_of`` / ``right_of``: unscribbled pieces on the
   wrong side leave A.
   After the rounds, one last pass of ``inside``, ``excludes``, ``n_pieces`` and ``within``
   sends what still breaks them to the background (no such rule constrains it).
4. **Report.** A rule still broken where strokes are involved is a *conflict* ("stroke
   of LV cavity outside the myocardium at slice 12"); any other rule still broken is
   *unresolved*. Nothing is silently ignored.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage as ndi

from ._check import (
    IN_PLANE,
    _slices_text,
    bad_voxels,
    distance_mm,
    fill_slices,
    pieces,
    region,
    side_coordinate,
    touching,
)

MAX_ROUNDS = 4
#: rules whose leftovers (after MAX_ROUNDS) go to the background in one last pass
FALLBACK_RELATIONS = ("inside", "excludes", "n_pieces", "within")
RING_MIN, RING_MAX, RING_DEFAULT = 1, 12, 3
CROP_MARGIN = 16
BRIDGE_MAX_VOXELS = 6
#: Decide nested regions outermost first (design 2); False = plain argmax (design 1).
HIERARCHY = True


def _disk(r: int) -> np.ndarray:
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    d = np.zeros((1, 2 * r + 1, 2 * r + 1), dtype=bool)
    d[0] = x * x + y * y <= r * r
    return d


class _State:
    def __init__(self, rules, probs, strokes, spacing, offset):
        self.rules = rules
        self.p = probs
        self.k1 = probs.shape[0]
        self.stroked = strokes > 0
        self.stroke_cls = strokes.astype(np.int16) - 1
        self.spacing = spacing
        self.offset = offset
        self.changed: dict[str, int] = {}
        self.fallback = False
        self.notes: list[str] = []

    def members(self, c) -> list:
        return [c, *sorted(self.rules.parts(c))]

    def reassign(self, sel, forbid, why) -> int:
        """Voxels ``sel`` (unscribbled) to their most probable class not in ``forbid``."""
        sel = sel & ~self.stroked
        n = int(np.count_nonzero(sel))
        if not n:
            return 0
        allowed = [c for c in range(self.k1) if c not in set(forbid)]
        if self.fallback and 0 in allowed:  # last round: only the background is safe
            allowed = [0]
        if not allowed:
            return 0
        sub = self.p[allowed][:, sel]
        self.labels[sel] = np.asarray(allowed, dtype=self.labels.dtype)[np.argmax(sub, axis=0)]
        self.changed[why] = self.changed.get(why, 0) + n
        return n

    def assign(self, sel, c, why) -> int:
        sel = sel & ~self.stroked & (self.labels != c)
        n = int(np.count_nonzero(sel))
        if n:
            self.labels[sel] = c
            self.changed[why] = self.changed.get(why, 0) + n
        return n


def hierarchical_labels(rules, p: np.ndarray) -> np.ndarray:
    """Labels decided outermost region first (see module docstring)."""
    k1 = p.shape[0]
    parent = {a: b for a, b in rules.parents().items() if a < k1 and b < k1}
    if not parent:
        return np.argmax(p, axis=0).astype(np.uint8)
    children: dict = {}
    for a, b in parent.items():
        children.setdefault(b, []).append(a)

    def depth(c):
        d = 0
        while c in parent:
            c, d = parent[c], d + 1
        return d

    total = {c: p[c] for c in range(k1)}
    for c in sorted(parent, key=depth, reverse=True):
        total[parent[c]] = total[parent[c]] + total[c]
    roots = [c for c in range(k1) if c not in parent]
    labels = np.asarray(roots, dtype=np.uint8)[np.argmax(np.stack([total[c] for c in roots]), 0)]
    for b in sorted(children, key=depth):
        m = labels == b
        if not m.any():
            continue
        opts = [b, *children[b]]
        vals = np.stack([p[b][m], *[total[c][m] for c in children[b]]])
        labels[m] = np.asarray(opts, dtype=np.uint8)[np.argmax(vals, axis=0)]
    return labels


def ring_thickness(b: np.ndarray) -> int:
    """In-plane thickness (voxels) of a ring-like class: 2 * area / boundary voxels
    (a strip of width w and length l has area w * l and about 2 * l boundary voxels),
    clipped to RING_MIN..RING_MAX; RING_DEFAULT when the class has too few voxels."""
    n = int(np.count_nonzero(b))
    if n < 50:
        return RING_DEFAULT
    edge = int(np.count_nonzero(b & ~ndi.binary_erosion(b, IN_PLANE, border_value=1)))
    return int(np.clip(round(2 * n / max(edge, 1)), RING_MIN, RING_MAX))


def _inside(st: _State, rule) -> None:
    rules, L = st.rules, st.labels
    a_cls, why = st.members(rule.a), st.rules.text(rule)
    a = region(L, rules, rule.a)
    if not a.any():
        return
    outer = region(L, rules, rule.b) & ~a
    filled = fill_slices(outer)
    bad = a & ~filled
    if bad.any():
        # close B's ring where A reaches past it: B grows into the background around A
        # (by B's own thickness), and A's voxels touching anything else become B
        zs = np.flatnonzero(bad.any(axis=(1, 2)))
        t = ring_thickness(outer)
        leak = np.zeros(L.shape, dtype=bool)
        leak[zs] = True
        # only the pieces (per slice) that B already touches: a ring is completed, not
        # built around a stray piece (those go to their next class below)
        pieces2d, _ = ndi.label(a & leak, structure=IN_PLANE)
        held = np.unique(pieces2d[touching(a & leak, outer)])
        seed = np.isin(pieces2d, held[held > 0])
        grown = np.zeros(L.shape, dtype=bool)
        for z in zs:  # in-plane disk dilation by t, as a distance threshold (fast for any t)
            if seed[z].any():
                grown[z] = ndi.distance_transform_edt(~seed[z]) <= t
        st.assign(grown & (L == 0), rule.b, why)
        a = region(L, rules, rule.a)
        inner = a | region(L, rules, rule.b)
        rim = (np.isin(pieces2d, held[held > 0]) & a
               & ndi.binary_dilation(~inner, IN_PLANE, border_value=1))
        st.assign(rim, rule.b, why)
        outer = region(L, rules, rule.b) & ~region(L, rules, rule.a)
        filled = fill_slices(outer)
        st.reassign(region(L, rules, rule.a) & ~filled, a_cls, why)
    # holes of B holding neither B nor a class nested in B -> the likeliest nested class
    nested = [c for c, up in rules.parents().items() if up == rule.b and c < st.k1
              and any(r.relation == "inside" and r.a == c and r.b == rule.b for r in rules)]
    if nested:
        inner_ok = np.isin(L, [rule.b, *[x for c in nested for x in st.members(c)]])
        holes = filled & ~inner_ok & ~st.stroked
        if holes.any():
            best = np.asarray(nested, dtype=L.dtype)[np.argmax(st.p[nested][:, holes], axis=0)]
            n = int(holes.sum())
            L[holes] = best
            st.changed[why] = st.changed.get(why, 0) + n


def _within(st: _State, rule) -> None:
    L = st.labels
    a, b = region(L, st.rules, rule.a), region(L, st.rules, rule.b)
    if not a.any() or not b.any():
        return
    far = a & (distance_mm(b, st.spacing) > rule.mm)
    if far.any():
        st.reassign(far, st.members(rule.a), st.rules.text(rule))


def _excludes(st: _State, rule) -> None:
    L = st.labels
    a, b = region(L, st.rules, rule.a), region(L, st.rules, rule.b)
    if not a.any() or not b.any():
        return
    contact = touching(a, b) | touching(b, a)
    if contact.any():
        st.reassign(contact, st.members(rule.a) + st.members(rule.b), st.rules.text(rule))


def _pieces(st: _State, rule) -> None:
    L = st.labels
    a = region(L, st.rules, rule.a)
    lab, sizes = pieces(a)
    if len(sizes) <= rule.n:
        return
    mine = st.stroked & np.isin(st.stroke_cls, st.members(rule.a))
    keep = [int(v) for v in np.unique(lab[mine]) if v]
    for i in np.argsort(-sizes, kind="stable") + 1:
        if len(keep) >= rule.n:
            break
        if int(i) not in keep:
            keep.append(int(i))
    st.reassign(a & ~np.isin(lab, keep), st.members(rule.a), st.rules.text(rule))


def _touches(st: _State, rule) -> None:
    L = st.labels
    a, b = region(L, st.rules, rule.a), region(L, st.rules, rule.b)
    if not a.any() or not b.any() or touching(a, b).any():
        return
    best = None
    for z in np.flatnonzero(a.any(axis=(1, 2)) & b.any(axis=(1, 2))):
        da = ndi.distance_transform_edt(~a[z])
        db = ndi.distance_transform_edt(~b[z])
        s = da + db
        free = ~a[z] & ~b[z] & ~st.stroked[z]
        if not free.any():
            continue
        m = float(s[free].min())
        if best is None or m < best[0]:
            best = (m, z, (s <= m + 0.5) & free)
    if best is None or best[0] > BRIDGE_MAX_VOXELS + 1:
        return
    sel = np.zeros(L.shape, dtype=bool)
    sel[best[1]] = best[2]
    st.assign(sel, rule.a, st.rules.text(rule))


def _volume(st: _State, rule) -> None:
    L = st.labels
    members = st.members(rule.a)
    a = region(L, st.rules, rule.a)
    vox = float(np.prod(st.spacing))
    lo, hi = st.rules.volume_range(rule.a)
    v = a.sum() * vox
    score = st.p[members].sum(axis=0)
    if hi is not None and v > hi:
        cand = np.flatnonzero((a & ~st.stroked).ravel())
        n_drop = min(int(np.ceil((v - hi) / vox)), cand.size)
        if n_drop:
            order = np.argsort(score.ravel()[cand], kind="stable")[:n_drop]
            sel = np.zeros(L.size, dtype=bool)
            sel[cand[order]] = True
            st.reassign(sel.reshape(L.shape), members, st.rules.text(rule))
    elif v < lo:
        cand = np.flatnonzero((~a & ~st.stroked).ravel())
        n_add = min(int(np.ceil((lo - v) / vox)), cand.size)
        if n_add:
            order = np.argsort(-score.ravel()[cand], kind="stable")[:n_add]
            sel = np.zeros(L.size, dtype=bool)
            sel[cand[order]] = True
            st.assign(sel.reshape(L.shape), rule.a, st.rules.text(rule))


def _side(st: _State, rule) -> None:
    L = st.labels
    a, b = region(L, st.rules, rule.a), region(L, st.rules, rule.b)
    if not a.any() or not b.any():
        return
    aff = st.rules._side
    lb = side_coordinate(b, aff, st.offset)
    lab, sizes = pieces(a)
    mine = st.stroked & np.isin(st.stroke_cls, st.members(rule.a))
    drop = np.zeros(L.shape, dtype=bool)
    for i in range(1, len(sizes) + 1):
        comp = lab == i
        if (comp & mine).any():
            continue
        la = side_coordinate(comp, aff, st.offset)
        if (la <= lb) if rule.relation == "left_of" else (la >= lb):
            drop |= comp
    if drop.any() and not (a & ~drop).any():
        return  # every piece on the wrong side: labels swapped? leave it to the report
    st.reassign(drop, st.members(rule.a), st.rules.text(rule))


_ORDER = {"inside": 0, "within": 8, "excludes": 1, "n_pieces": 2, "touches": 3, "volume": 4,
          "left_of": 5, "right_of": 5, "part_of": 9}
_STEPS = {"inside": _inside, "within": _within, "excludes": _excludes, "n_pieces": _pieces,
          "touches": _touches, "volume": _volume, "left_of": _side, "right_of": _side}


def _conflict_text(st: _State, rule, bad, msg) -> str | None:
    """Phrase a remaining violation that involves strokes, or None."""
    hit = bad & st.stroked if bad is not None else None
    if hit is None or not hit.any():
        return None
    name = st.rules._name
    zs = np.flatnonzero(hit.any(axis=(1, 2))) + st.offset[0]
    where = _slices_text(zs)
    cls = sorted({int(c) for c in np.unique(st.stroke_cls[hit]) if c > 0})
    who = " and ".join(name(c) for c in cls) or "background"
    if rule.relation == "inside":
        return f"stroke of {who} outside the {name(rule.b)} at {where}"
    if rule.relation == "excludes":
        return f"strokes of {who} touch at {where} ({rule.relation}: {st.rules.text(rule)})"
    if rule.relation == "n_pieces":
        return f"strokes of {who} lie in separate pieces ({msg}); all stroked pieces kept"
    return f"strokes of {who} contradict '{st.rules.text(rule)}' at {where}"


def _crop(labels, stroked, rules):
    """Slices of the box holding every structure voxel and stroke, grown by
    ``CROP_MARGIN`` in-plane and one slice (all rules act there), or None for the whole
    volume (a volume rule with a lower bound may need voxels anywhere)."""
    if any(r.relation == "volume" and r.lo for r in rules):
        return None
    fg = (labels > 0) | stroked
    sl = ndi.find_objects(fg.astype(np.uint8))
    if not sl or sl[0] is None:
        return None
    m = (1, CROP_MARGIN, CROP_MARGIN)
    return tuple(slice(max(s.start - g, 0), min(s.stop + g, n))
                 for s, g, n in zip(sl[0], m, labels.shape))


def enforce_labels(rules, probs, strokes, spacing, *, offset=(0, 0, 0)):
    """Labels that satisfy ``rules`` as far as the strokes allow, and a report.

    Parameters
    ----------
    rules : Rules
        Already restricted to the classes of ``probs``.
    probs : ndarray, shape (K + 1, Z, Y, X), float
    strokes : ndarray of int, shape (Z, Y, X)
        The user's scribbles (0 = none, 1 = background, c + 1 = structure c).
    spacing : tuple of float
    offset : tuple of int
        Position of this block in the whole volume (for slice numbers and sides).

    Returns
    -------
    labels : ndarray of uint8, shape (Z, Y, X)
    report : dict
        ``changed_voxels`` (per rule), ``conflicts``, ``unresolved``, ``rounds``.
    """
    strokes = np.asarray(strokes)
    base = np.argmax(probs, axis=0).astype(np.uint8)
    labels = hierarchical_labels(rules, probs) if HIERARCHY else base.copy()
    hier = int(np.count_nonzero(labels != base))
    stroked = strokes > 0
    labels[stroked] = np.clip(strokes[stroked].astype(np.int16) - 1, 0,
                              probs.shape[0] - 1).astype(np.uint8)
    box = _crop(labels, stroked, rules)
    if box is None:
        box = tuple(slice(0, n) for n in labels.shape)
    off = tuple(int(o) + s.start for o, s in zip(offset, box))
    st = _State(rules, probs[(slice(None), *box)], strokes[box], spacing, off)
    st.labels = labels[box].copy()
    ordered = sorted((r for r in rules if r.relation in _STEPS), key=lambda r: (
        _ORDER[r.relation], len(rules.ancestors(r.b, {k: {v} for k, v in rules.parents().items()}))
        if r.relation == "inside" else 0))
    rounds = 0
    for rounds in range(1, MAX_ROUNDS + 1):
        before = st.labels.copy()
        for rule in ordered:
            _STEPS[rule.relation](st, rule)
        if np.array_equal(before, st.labels):
            break
    # last resort: what still breaks a structural rule goes to the background, which no
    # such rule constrains (strokes stay; what they still break is a conflict below)
    st.fallback = True
    for rule in ordered:
        if rule.relation in FALLBACK_RELATIONS:
            bad, msg = bad_voxels(rules, rule, st.labels, spacing, off)
            if msg is not None:
                _STEPS[rule.relation](st, rule)
    st.fallback = False
    labels[box] = st.labels
    conflicts, unresolved = [], []
    for rule in rules:
        bad, msg = bad_voxels(rules, rule, st.labels, spacing, off)
        if msg is None:
            continue
        c = _conflict_text(st, rule, bad, msg)
        if c is not None:
            conflicts.append(c)
        else:
            unresolved.append(f"{rules.text(rule)}: {msg}")
    report = {
        "hierarchy_changed_voxels": hier if HIERARCHY else 0,
        "changed_voxels": {k: int(v) for k, v in st.changed.items()},
        "conflicts": conflicts,
        "unresolved": unresolved,
        "rounds": rounds,
    }
    return labels, report


def labels_to_probabilities(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``probs`` changed only where its argmax differs from ``labels``: the values of the
    argmax class and the label's class are swapped (entropy kept), so argmax = labels."""
    out = np.array(probs, dtype=np.float32, copy=True)
    arg = np.argmax(out, axis=0)
    diff = arg != labels
    if diff.any():
        idx = np.nonzero(diff)
        lab = labels[idx].astype(np.intp)
        top = arg[idx]
        vt = out[(top, *idx)].copy()
        vl = out[(lab, *idx)].copy()
        out[(lab, *idx)] = vt + 1e-4
        out[(top, *idx)] = vl
        out[(slice(None), *idx)] /= out[(slice(None), *idx)].sum(axis=0, keepdims=True)
    return out


def enforce(rules, probs, strokes, spacing, *, offset=(0, 0, 0)):
    """(probabilities whose argmax satisfies the rules, report with ``seconds``)."""
    t0 = time.perf_counter()
    labels, report = enforce_labels(rules, probs, strokes, spacing, offset=offset)
    out = labels_to_probabilities(probs, labels)
    report["seconds"] = time.perf_counter() - t0
    return out, report


def apply(rules, probabilities, spacing, scribbles=None):
    """Rules applied to any class probabilities (e.g. a project network's prediction).

    Parameters
    ----------
    rules : Rules
    probabilities : ndarray, shape (K + 1, Z, Y, X)
        Background first; numpy or torch.
    spacing : sequence of 3 float
        (Z, Y, X) mm.
    scribbles : ndarray of int, shape (Z, Y, X), optional
        User strokes (0 none, 1 background, c + 1 structure c); they win locally.

    Returns
    -------
    probabilities : ndarray, float32, shape (K + 1, Z, Y, X)
        argmax = the labels that keep the rules (as far as the strokes allow).
    report : dict
        As ``info["rules"]`` of a refinement.
    """
    from .._errors import LabelEffError

    p = probabilities.detach().float().cpu().numpy() if hasattr(probabilities, "detach") \
        else np.asarray(probabilities, dtype=np.float32)
    if p.ndim != 4 or p.shape[0] < 2:
        raise LabelEffError(
            f"probabilities have shape {p.shape}; a (K + 1, Z, Y, X) array is required")
    strokes = np.zeros(p.shape[1:], np.uint8) if scribbles is None else np.asarray(scribbles)
    if strokes.shape != p.shape[1:]:
        raise LabelEffError(
            f"scribbles have shape {strokes.shape}; the probabilities' (Z, Y, X) is {p.shape[1:]}")
    kept, skipped = rules.restricted(p.shape[0] - 1)
    out, report = enforce(kept, p.astype(np.float32, copy=False), strokes,
                          tuple(float(v) for v in spacing))
    report["skipped"] = skipped
    report["rules"] = [kept.text(r) for r in kept]
    return out, report
