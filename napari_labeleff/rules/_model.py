"""The rule model: relations between a session's structures, validated at construction.

Relations (A, B are structures 1..K, by name or 1-based id; background is implicit):

``inside(A, B)``
    A lies within what B encloses: B's voxels plus the holes they surround, filled
    slice by slice on the acquisition plane (axial Z slices, axis 0). A cavity inside
    a myocardium ring holds; a cavity leaking through a gap of the ring does not.
``part_of(A, B)``
    A is a sub-region of B (nested regions such as enhancing tumour in tumour core in
    whole tumour): in a label map each voxel holds the innermost class, and B's
    *region* is B plus its parts. Refinement decides the regions outermost first.
``excludes(A, B)``
    A and B never touch: no voxel of A is a 4-neighbour of a voxel of B within a slice.
    (Voxels cannot overlap in a label map - one class per voxel - so exclusion between
    siblings holds by construction; the explicit rule says they are separated.)
``touches(A, B)``
    When both are present, some voxel of A is a 4-neighbour of B within a slice.
``within(A, B, mm)``
    Every voxel of A lies within ``mm`` millimetres of B (3D distance with the voxel
    spacing), e.g. the myocardium within 15 mm of the LV cavity (a wall-thickness
    bound). Not checked while B is absent.
``one_piece(A)`` / ``n_pieces(A, n)``
    A's region has at most n connected pieces (26-connectivity, in 3D).
``volume(A, lo, hi)``
    A's region holds lo..hi mm^3 (either bound may be None).
``left_of(A, B)`` / ``right_of(A, B)``
    A's centroid lies on the patient's left (right) of B's centroid. Needs the image
    geometry (``geometry=``), refused otherwise.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass

import numpy as np

from .._errors import LabelEffError

#: relation -> number of class arguments
PAIR_RELATIONS = ("inside", "part_of", "excludes", "touches", "left_of", "right_of")
SINGLE_RELATIONS = ("one_piece", "n_pieces", "volume")
RELATIONS = PAIR_RELATIONS + ("within",) + SINGLE_RELATIONS
SIDE_RELATIONS = ("left_of", "right_of")
JSON_FORMAT = "napari-labeleff rules"
JSON_VERSION = 1


@dataclass(frozen=True)
class Rule:
    """One relation between structures (ids 1..K).

    Attributes
    ----------
    relation : str
        One of :data:`RELATIONS` (``one_piece`` is stored as ``n_pieces`` with n = 1).
    a : int
    b : int or None
        Second class of a pair relation.
    n : int or None
        Pieces allowed (``n_pieces``).
    mm : float or None
        Distance bound (``within``).
    lo, hi : float or None
        Volume bounds in mm^3 (``volume``).
    """

    relation: str
    a: int
    b: int | None = None
    n: int | None = None
    lo: float | None = None
    hi: float | None = None
    mm: float | None = None

    @property
    def classes(self) -> tuple:
        return (self.a,) if self.b is None else (self.a, self.b)

    def as_tuple(self, names: dict | None = None) -> tuple:
        """The rule as the tuple :class:`Rules` accepts, with class names when known."""
        nm = (lambda c: names.get(c, c)) if names else (lambda c: c)
        if self.relation == "n_pieces":
            return ("one_piece", nm(self.a)) if self.n == 1 else ("n_pieces", nm(self.a), self.n)
        if self.relation == "volume":
            return ("volume", nm(self.a), self.lo, self.hi)
        if self.relation == "within":
            return ("within", nm(self.a), nm(self.b), self.mm)
        return (self.relation, nm(self.a), nm(self.b))

    def text(self, names: dict | None = None) -> str:
        """Human-readable form, e.g. ``"LV cavity inside myocardium"``."""
        nm = (lambda c: str(names.get(c, f"class {c}"))) if names else (lambda c: f"class {c}")
        a = nm(self.a)
        if self.relation == "n_pieces":
            return f"{a} in one piece" if self.n == 1 else f"{a} in at most {self.n} pieces"
        if self.relation == "volume":
            lo = "0" if self.lo is None else f"{self.lo:g}"
            hi = "any" if self.hi is None else f"{self.hi:g}"
            return f"volume of {a} within {lo}..{hi} mm^3"
        if self.relation == "within":
            return f"{a} within {self.mm:g} mm of {nm(self.b)}"
        words = {"inside": "inside", "part_of": "part of", "excludes": "never touches",
                 "touches": "touches", "left_of": "on the patient's left of",
                 "right_of": "on the patient's right of"}[self.relation]
        return f"{a} {words} {nm(self.b)}"


def _norm(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def check_class_names(class_names) -> dict:
    """``{id: name}`` for structures 1..K from a sequence (K names, ids 1..K) or a dict
    ``{id: name}`` (id 0, background, is ignored)."""
    if class_names is None:
        return {}
    if isinstance(class_names, dict):
        items = [(k, v) for k, v in class_names.items() if k != 0 and k != "0"]
        try:
            out = {int(k): str(v) for k, v in items}
        except (TypeError, ValueError):
            raise LabelEffError(
                f"class_names={class_names!r}: a dict must map structure ids (1..K) to names"
            ) from None
    elif isinstance(class_names, str) or not hasattr(class_names, "__iter__"):
        raise LabelEffError(
            f"class_names={class_names!r}; allowed: a list of the K structure names "
            "(structure c = class_names[c - 1]) or a dict {id: name}"
        )
    else:
        out = {i + 1: str(v) for i, v in enumerate(class_names)}
    if any(k < 1 for k in out):
        raise LabelEffError(f"class_names={class_names!r}: structure ids start at 1")
    seen = {}
    for k, v in out.items():
        if not v.strip():
            raise LabelEffError(f"class_names: structure {k} has an empty name")
        if _norm(v) in seen:
            raise LabelEffError(
                f"class_names: structures {seen[_norm(v)]} and {k} are both named {v!r}; "
                "names must be unique"
            )
        seen[_norm(v)] = k
    return out


def _side_axis(geometry):
    """Patient-left unit direction in array (Z, Y, X) index space, from a Geometry or a
    (4, 4) napari affine (array (z, y, x, 1) -> world (S, P, L) mm)."""
    if geometry is None:
        return None
    aff = getattr(geometry, "napari_affine", geometry)
    try:
        aff = np.asarray(aff, dtype=float)
    except (TypeError, ValueError):
        aff = None
    if aff is None or aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise LabelEffError(
            f"geometry={geometry!r}; allowed: a napari_labeleff.io.Geometry or the (4, 4) "
            "affine from array (Z, Y, X) to world (S, P, L) mm (Geometry.napari_affine)"
        )
    if abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise LabelEffError("geometry: the affine is singular")
    return aff


class Rules:
    """A validated set of anatomical rules between the structures of a session.

    Parameters
    ----------
    rules : iterable
        Tuples such as ``("inside", "LV cavity", "myocardium")``, ``("one_piece", A)``,
        ``("within", A, B, mm)``,
        ``("n_pieces", A, n)``, ``("volume", A, lo_mm3, hi_mm3)`` (a bound may be None),
        ``("excludes", A, B)``, ``("touches", A, B)``, ``("part_of", A, B)``,
        ``("left_of", A, B)``, ``("right_of", A, B)``; classes by name (case-insensitive)
        or 1-based id. :class:`Rule` objects are accepted too.
    class_names : sequence of str or dict, optional
        Structure names, ``class_names[c - 1]`` = structure c, or ``{id: name}``.
        Needed to give rules by name.
    geometry : Geometry or ndarray (4, 4), optional
        Image geometry; required by ``left_of`` / ``right_of``.

    Raises
    ------
    LabelEffError
        Unknown relation or class, bad arguments, or contradictory rules (A inside B and
        B inside A; A excludes B while inside it or touching it; impossible volumes).
    """

    def __init__(self, rules=(), *, class_names=None, geometry=None):
        self.names = check_class_names(class_names)
        self.geometry = geometry
        self._side = _side_axis(geometry)
        #: template roles that matched no class (set by :meth:`template`)
        self.unmatched: list[str] = []
        self.matched: dict[str, str] = {}
        out: list[Rule] = []
        if isinstance(rules, (str, bytes)) or not hasattr(rules, "__iter__"):
            raise LabelEffError(f"rules={rules!r}; allowed: a list of rule tuples")
        for item in rules:
            r = item if isinstance(item, Rule) else self._parse(item)
            if isinstance(item, Rule):
                self._check_rule(r, item)
            if r not in out:
                out.append(r)
        self.rules: tuple[Rule, ...] = tuple(out)
        self._validate()

    # ---- construction ---------------------------------------------------------------
    def _class(self, ref, item) -> int:
        if isinstance(ref, (bool, np.bool_)):
            ref = None
        if isinstance(ref, numbers.Integral):
            c = int(ref)
            if c < 1 or (self.names and c not in self.names):
                known = f"1..{max(self.names)}" if self.names else "1 or more"
                raise LabelEffError(
                    f"rule {item!r}: class id {c} is not a structure (allowed ids: {known}; "
                    "background is implicit in every rule)"
                )
            return c
        if isinstance(ref, str):
            key = _norm(ref)
            for c, name in self.names.items():
                if _norm(name) == key:
                    return c
            if key == "background":
                raise LabelEffError(
                    f"rule {item!r}: rules relate structures; background is implicit"
                )
            known = ", ".join(repr(n) for n in self.names.values()) or "none given"
            raise LabelEffError(
                f"rule {item!r}: class {ref!r} is not one of the classes ({known}); a "
                "class that was removed or renamed must be removed from the rules or "
                "renamed there too"
            )
        raise LabelEffError(f"rule {item!r}: class {ref!r} must be a name or a 1-based id")

    @staticmethod
    def _bound(v, item, what):
        if v is None:
            return None
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) \
                or not math.isfinite(float(v)) or float(v) < 0:
            raise LabelEffError(
                f"rule {item!r}: {what} volume {v!r} must be a finite number >= 0 (mm^3) or None"
            )
        return float(v)

    def _parse(self, item) -> Rule:
        if isinstance(item, dict):
            item = (item.get("relation"), *item.get("args", ()))
        if isinstance(item, (str, bytes)) or not hasattr(item, "__len__") or len(item) < 2:
            raise LabelEffError(
                f"rule {item!r}; allowed: a tuple (relation, class, ...) with relation one "
                f"of {', '.join(RELATIONS)}"
            )
        rel = item[0]
        if rel not in RELATIONS:
            raise LabelEffError(
                f"rule {item!r}: relation {rel!r} is unknown; allowed: {', '.join(RELATIONS)}"
            )
        nargs = {"one_piece": 2, "n_pieces": 3, "volume": 4, "within": 4}.get(rel, 3)
        if len(item) != nargs:
            form = {"one_piece": "('one_piece', A)", "n_pieces": "('n_pieces', A, n)",
                    "volume": "('volume', A, lo_mm3, hi_mm3)",
                    "within": "('within', A, B, mm)"}.get(rel, f"({rel!r}, A, B)")
            raise LabelEffError(f"rule {item!r} has {len(item)} items; the form is {form}")
        a = self._class(item[1], item)
        if rel in PAIR_RELATIONS:
            b = self._class(item[2], item)
            if a == b:
                raise LabelEffError(f"rule {item!r} relates a class to itself")
            return Rule(rel, a, b)
        if rel == "within":
            b = self._class(item[2], item)
            if a == b:
                raise LabelEffError(f"rule {item!r} relates a class to itself")
            d = item[3]
            if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Real) \
                    or not math.isfinite(float(d)) or float(d) <= 0:
                raise LabelEffError(
                    f"rule {item!r}: distance {d!r} must be a finite number > 0 (mm)"
                )
            return Rule("within", a, b, mm=float(d))
        if rel == "one_piece":
            return Rule("n_pieces", a, n=1)
        if rel == "n_pieces":
            n = item[2]
            if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or n < 1:
                raise LabelEffError(f"rule {item!r}: n = {n!r} must be a whole number >= 1")
            return Rule("n_pieces", a, n=int(n))
        lo, hi = self._bound(item[2], item, "lower"), self._bound(item[3], item, "upper")
        if lo is None and hi is None:
            raise LabelEffError(f"rule {item!r}: give a lower or an upper volume bound")
        if hi is not None and hi <= 0:
            raise LabelEffError(f"rule {item!r}: upper volume {hi:g} mm^3 allows no voxel")
        if lo is not None and hi is not None and lo > hi:
            raise LabelEffError(
                f"rule {item!r}: lower volume {lo:g} mm^3 > upper volume {hi:g} mm^3; no "
                "mask can meet it"
            )
        return Rule("volume", a, lo=lo, hi=hi)

    def _check_rule(self, r: Rule, item) -> None:
        if r.relation not in RELATIONS or r.relation == "one_piece":
            raise LabelEffError(f"rule {item!r}: relation {r.relation!r} is unknown")
        for c in r.classes:
            self._class(int(c), item)

    def _validate(self) -> None:
        rs = self.rules
        t = self.text
        if self._side is None:
            side = [r for r in rs if r.relation in SIDE_RELATIONS]
            if side:
                raise LabelEffError(
                    f"rule '{t(side[0])}' needs the image geometry to know where the "
                    "patient's left is; pass geometry= (a napari_labeleff.io.Geometry or its "
                    "napari_affine), or drop the rule"
                )
        # nesting (inside + part_of): no cycles, parents form a chain
        up = {}
        for r in rs:
            if r.relation in ("inside", "part_of"):
                up.setdefault(r.a, set()).add(r.b)
        for r in rs:
            if r.relation in ("inside", "part_of") and r.a in self.ancestors(r.b, up):
                back = next((q for q in rs if q.relation in ("inside", "part_of")
                             and q.a == r.b), r)
                raise LabelEffError(
                    f"rules '{t(r)}' and '{t(back)}' contradict: a class cannot lie inside "
                    "a class that lies inside it"
                )
        for a in up:
            anc = self.ancestors(a, up)
            for x in anc:
                for y in anc:
                    if x < y and x not in self.ancestors(y, up) and y not in self.ancestors(x, up):
                        raise LabelEffError(
                            f"{self._name(a)} lies inside both {self._name(x)} and "
                            f"{self._name(y)}, but neither lies inside the other; nested "
                            "classes must form a tree (add the rule relating them)"
                        )
        for r in rs:
            if r.relation != "excludes":
                continue
            if r.a in self.ancestors(r.b, up) or r.b in self.ancestors(r.a, up):
                inner, outer = (r.a, r.b) if r.b in self.ancestors(r.a, up) else (r.b, r.a)
                raise LabelEffError(
                    f"rule '{t(r)}' contradicts {self._name(inner)} lying inside "
                    f"{self._name(outer)}: a class cannot exclude the class it lies in"
                )
            for q in rs:
                if q.relation == "touches" and {q.a, q.b} == {r.a, r.b}:
                    raise LabelEffError(f"rules '{t(r)}' and '{t(q)}' contradict")
        sides = set()
        for r in rs:
            if r.relation in SIDE_RELATIONS:
                left, right = (r.a, r.b) if r.relation == "left_of" else (r.b, r.a)
                if (right, left) in sides:
                    raise LabelEffError(
                        f"rule '{t(r)}' contradicts another side rule between "
                        f"{self._name(r.a)} and {self._name(r.b)}"
                    )
                sides.add((left, right))
        pieces = {}
        for r in rs:
            if r.relation == "n_pieces":
                if r.a in pieces and pieces[r.a] != r.n:
                    raise LabelEffError(
                        f"{self._name(r.a)} has two piece rules ({pieces[r.a]} and {r.n} "
                        "pieces); keep one"
                    )
                pieces[r.a] = r.n
        for c in {r.a for r in rs if r.relation == "volume"}:
            lo, hi = self.volume_range(c)
            if hi is not None and lo > hi:
                raise LabelEffError(
                    f"the volume rules of {self._name(c)} ask for at least {lo:g} and at most "
                    f"{hi:g} mm^3; no mask can meet both"
                )
        # a part is never larger than its whole
        parts = [r for r in rs if r.relation == "part_of"]
        for r in parts:
            lo_a, _ = self.volume_range(r.a)
            for outer in self.ancestors(r.a, {k: {q.b for q in parts if q.a == k}
                                              for k in {q.a for q in parts}}):
                _, hi_b = self.volume_range(outer)
                if hi_b is not None and lo_a > hi_b:
                    raise LabelEffError(
                        f"{self._name(r.a)} is part of {self._name(outer)} and needs at least "
                        f"{lo_a:g} mm^3, but {self._name(outer)} may hold at most {hi_b:g} "
                        "mm^3; no mask can meet both"
                    )

    @staticmethod
    def ancestors(c, up) -> set:
        out, todo = set(), list(up.get(c, ()))
        while todo:
            x = todo.pop()
            if x not in out:
                out.add(x)
                todo.extend(up.get(x, ()))
        return out

    # ---- queries ----------------------------------------------------------------------
    def _name(self, c) -> str:
        return self.names.get(c, f"class {c}")

    def text(self, rule: Rule) -> str:
        """``rule`` in words with this set's class names."""
        return rule.text(self.names or None)

    def __iter__(self):
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __eq__(self, other) -> bool:
        return (isinstance(other, Rules) and set(self.rules) == set(other.rules)
                and self.names == other.names)

    def __repr__(self) -> str:
        return f"Rules([{'; '.join(self.text(r) for r in self.rules)}])"

    @property
    def classes(self) -> set:
        """Structure ids named by at least one rule."""
        return {c for r in self.rules for c in r.classes}

    def parents(self) -> dict:
        """``{class: direct outer class}`` of the nesting (inside + part_of) tree."""
        up = {}
        for r in self.rules:
            if r.relation in ("inside", "part_of"):
                up.setdefault(r.a, set()).add(r.b)
        out = {}
        for a, outers in up.items():
            anc = self.ancestors(a, up)
            # the innermost outer class: the one whose ancestors hold all the others
            out[a] = max(anc, key=lambda x: len(self.ancestors(x, up)))
        return out

    def parts(self, c) -> set:
        """Classes that are (transitively) ``part_of`` c: they belong to c's region."""
        up = {}
        for r in self.rules:
            if r.relation == "part_of":
                up.setdefault(r.a, set()).add(r.b)
        return {a for a in up if c in self.ancestors(a, up)}

    def volume_range(self, c) -> tuple:
        """(lo, hi) mm^3 of class c's region from its volume rules (lo 0, hi None = open)."""
        lo, hi = 0.0, None
        for r in self.rules:
            if r.relation == "volume" and r.a == c:
                lo = max(lo, r.lo or 0.0)
                if r.hi is not None:
                    hi = r.hi if hi is None else min(hi, r.hi)
        return lo, hi

    def restricted(self, n_structures: int) -> tuple[Rules, list]:
        """Rules whose classes are all in 1..n_structures, and the texts of the others."""
        keep = [r for r in self.rules if max(r.classes) <= n_structures]
        skipped = [self.text(r) for r in self.rules if max(r.classes) > n_structures]
        if not skipped:
            return self, []
        out = Rules.__new__(Rules)
        out.__dict__.update(self.__dict__)
        out.rules = tuple(keep)
        return out, skipped

    # ---- editing (new objects) ----------------------------------------------------------
    def to_list(self) -> list:
        """The rules as tuples with class names (ids where no name is known)."""
        return [r.as_tuple(self.names or None) for r in self.rules]

    def added(self, *rules) -> Rules:
        """A copy with ``rules`` appended (validated, contradictions refused)."""
        return Rules([*self.rules, *rules], class_names=self.names or None,
                     geometry=self.geometry)

    def removed(self, rule) -> Rules:
        """A copy without ``rule`` (a :class:`Rule`, a tuple or an index)."""
        if isinstance(rule, numbers.Integral):
            if not 0 <= rule < len(self.rules):
                raise LabelEffError(f"rule index {rule} out of range 0..{len(self.rules) - 1}")
            target = self.rules[int(rule)]
        else:
            target = rule if isinstance(rule, Rule) else self._parse(rule)
        return Rules([r for r in self.rules if r != target],
                     class_names=self.names or None, geometry=self.geometry)

    def for_classes(self, class_names, *, renamed=None, geometry=None) -> Rules:
        """The same rules for a new class list (after classes were renamed, removed or
        renumbered): classes are matched by name.

        Parameters
        ----------
        class_names : sequence or dict
            The new structure names.
        renamed : dict, optional
            ``{old name: new name}`` for renamed classes.

        Raises
        ------
        LabelEffError
            A rule names a class that no longer exists (the message names the rule).
        """
        renamed = {_norm(k): v for k, v in (renamed or {}).items()}
        new = check_class_names(class_names)
        items = []
        for r in self.rules:
            tup = r.as_tuple(self.names or None)
            fixed = []
            for i, v in enumerate(tup):
                if i and isinstance(v, str) and (r.relation != "volume" or i == 1):
                    v = renamed.get(_norm(v), v)
                    if _norm(v) not in {_norm(n) for n in new.values()}:
                        raise LabelEffError(
                            f"rule '{self.text(r)}' names class {v!r}, which is not among "
                            f"the classes any more ({', '.join(map(repr, new.values()))}); "
                            "remove the rule (Rules.without_class) or restore the class"
                        )
                fixed.append(v)
            items.append(tuple(fixed))
        return Rules(items, class_names=new, geometry=self.geometry if geometry is None else geometry)

    def without_class(self, name) -> Rules:
        """A copy without the rules that name class ``name`` (name or id)."""
        c = self._class(name, name)
        return Rules([r for r in self.rules if c not in r.classes],
                     class_names=self.names or None, geometry=self.geometry)

    def with_geometry(self, geometry) -> Rules:
        """A copy that knows the image geometry (for side rules)."""
        return Rules(self.rules, class_names=self.names or None, geometry=geometry)

    # ---- JSON --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": JSON_FORMAT,
            "version": JSON_VERSION,
            "classes": {str(k): v for k, v in sorted(self.names.items())},
            "rules": [list(t) for t in self.to_list()],
        }

    def to_json(self) -> str:
        """JSON text of the rules and the class names they refer to (geometry is not
        stored: it belongs to each image)."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d, class_names=None, geometry=None) -> Rules:
        if not isinstance(d, dict) or d.get("format") != JSON_FORMAT:
            raise LabelEffError(
                f"not a rules document (expected format {JSON_FORMAT!r}, got "
                f"{d.get('format') if isinstance(d, dict) else type(d).__name__!r})"
            )
        if int(d.get("version", 0)) > JSON_VERSION:
            raise LabelEffError(
                f"rules document version {d.get('version')} is newer than this package "
                f"reads ({JSON_VERSION}); update napari-labeleff"
            )
        stored = {int(k): v for k, v in d.get("classes", {}).items()}
        rules = cls([tuple(r) for r in d.get("rules", [])], class_names=stored or None,
                    geometry=geometry)
        if class_names is not None:
            rules = rules.for_classes(class_names, geometry=geometry)
        return rules

    @classmethod
    def from_json(cls, text, class_names=None, geometry=None) -> Rules:
        """Rules from :meth:`to_json` text; with ``class_names`` the rules are mapped onto
        those classes by name (a rule naming a missing class raises)."""
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as err:
            raise LabelEffError(f"rules JSON cannot be parsed: {err}") from None
        return cls.from_dict(d, class_names=class_names, geometry=geometry)

    # ---- templates, learning, checking (defined in sibling modules) ------------------
    @classmethod
    def template(cls, name, class_names, *, geometry=None) -> Rules:
        """Rules of a known anatomy matched onto ``class_names`` by name; see
        :mod:`napari_labeleff.rules._templates`. ``rules.unmatched`` lists the template's
        structures no class matched, ``rules.matched`` role -> class name."""
        from ._templates import build_template

        return build_template(cls, name, class_names, geometry=geometry)

    @staticmethod
    def learn(masks, class_names, spacings=None, *, min_support=1.0):
        """Relations that hold in the accepted ``masks``; see :func:`~._learn.learn`."""
        from ._learn import learn

        return learn(masks, class_names, spacings, min_support=min_support)

    def violations(self, mask, spacing=(1.0, 1.0, 1.0)):
        """Where ``mask`` breaks a rule; see :func:`~._check.violations`."""
        from ._check import violations

        return violations(self, mask, spacing)


_MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".tif", ".tiff",
                  ".zarr", ".npy", ".dcm")


def rules_path(mask_path):
    """Where the rules of an exported mask go: ``<mask>.rules.json`` beside it
    (``liver_mask.nii.gz`` -> ``liver_mask.rules.json``)."""
    from pathlib import Path

    p = Path(mask_path)
    name = p.name
    for suffix in _MASK_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(f"{name}.rules.json")


def write_beside(rules: Rules, mask_path):
    """Write ``rules`` as JSON beside an exported mask (atomically); returns the path."""
    from ..io import atomic

    path = rules_path(mask_path)
    atomic.durable_put(path, rules.to_json().encode("utf-8"))
    return path
