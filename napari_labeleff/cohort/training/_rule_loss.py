"""A differentiable penalty for the anatomical rules that have a local form (issue 21).

The network's softmax ``probs`` (B, K+1, Z, Y, X) (channel 0 background, channel c =
structure c) is penalised where it breaks a rule between neighbouring voxels. The rules
are defined slice by slice on the acquisition plane (axis 0, see
``napari_labeleff.rules``), so the neighbourhood here is in-plane too: the 3 x 3
(Y, X) window of each Z slice, taken with ``max_pool3d`` (kernel (1, 3, 3)).

Relations with a local form
---------------------------
``inside(A, B)`` and ``part_of(A, B)``
    A may border only what lies in B: A itself, B, and the classes nested (by
    ``inside`` / ``part_of``, transitively) in A or in B - for ``part_of`` that is B's
    region (B plus its parts). Per voxel ``p_A * maxpool(p_other)`` with
    ``p_other = clamp(1 - sum of those classes' probabilities, 0)``: A next to
    background or to a class outside B. For ``inside`` this is the local form of "B
    seals A off" (a cavity leaking through a gap of its ring touches the outside). The
    rule checker (``rules.violations``) has nothing to check for ``part_of`` in a label
    map (nested regions hold by construction); the penalty is stricter there: it asks a
    part to lie in its whole's interior.
``excludes(A, B)``
    ``p_A * maxpool(p_B) + p_B * maxpool(p_A)``: A next to B, either way.

A class's probability here is that of its region (the class plus its ``part_of``
parts), as in the rule checker. The 3 x 3 window also counts diagonal neighbours, so
the penalty is slightly stricter than the checker's in-plane 4-neighbourhood.

Relations without one
---------------------
``touches``, ``within``, ``one_piece`` / ``n_pieces``, ``volume`` and ``left_of`` /
``right_of`` are about whole objects (a contact somewhere, a distance map, connected
pieces, a sum, centroids), not about a voxel and its neighbours; they are accepted and
skipped here. They act at prediction, through ``rules.apply``.

Normalisation
-------------
Each term is a mean over all B x Z x Y x X voxels (comparable across patch and batch
sizes; in [0, 1] per term for probabilities); the penalty is the sum of the terms (an
``excludes`` rule gives two).
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from ..._errors import LabelEffError
from ...rules import RELATIONS

#: Relations penalised here.
LOCAL_RELATIONS = ("inside", "part_of", "excludes")
#: Relations between two classes, as tuples (relation, a, b).
PAIR_RELATIONS = ("inside", "part_of", "excludes", "touches", "left_of", "right_of")
#: Class arguments of the relations whose tuples are not (relation, a, b).
_CLASS_ARGS = {"within": 2, "one_piece": 1, "n_pieces": 1, "volume": 1}
_ARITY = {"within": 4, "one_piece": 2, "n_pieces": 3, "volume": 4}


def _class_id(ref, item, n_structures: int) -> int:
    if isinstance(ref, bool) or not isinstance(ref, numbers.Integral):
        raise LabelEffError(f"rule {item!r}: class {ref!r} must be a 1-based structure id "
                            "(Rule.as_tuple() without names gives ids)")
    c = int(ref)
    if not 1 <= c <= n_structures:
        raise LabelEffError(f"rule {item!r}: class id {c} is not a structure of this network "
                            f"(allowed ids: 1..{n_structures}; background is implicit)")
    return c


def check_rule_tuples(rules, n_structures: int) -> tuple:
    """Validated rules as a tuple of plain tuples with integer class ids.

    Parameters
    ----------
    rules : iterable of tuple
        ``(relation, a, b)`` for the pair relations, ids 1..K (what
        ``Rule.as_tuple()`` gives without names); the other relations' tuples
        (``("within", a, b, mm)``, ``("one_piece", a)``, ...) are accepted too, and so
        are ``rules.Rule`` objects (a ``Rules`` set iterates over them).
    n_structures : int
        K, the number of structures (background excluded).

    Returns
    -------
    tuple of tuple
        Pair rules as ``(relation, a, b)`` with ``int`` ids; the others as given, with
        their class ids as ``int``.

    Raises
    ------
    LabelEffError
        Not a list of tuples, an unknown relation, a wrong number of items, a class id
        outside 1..K or given by name, a pair relating a class to itself.
    """
    if isinstance(rules, (str, bytes, dict)) or not hasattr(rules, "__iter__"):
        raise LabelEffError(f"rules={rules!r}; allowed: a list of tuples (relation, a, b) with "
                            "1-based structure ids")
    out = []
    for item in rules:
        if callable(getattr(item, "as_tuple", None)):  # a rules.Rule (ids)
            item = item.as_tuple()
        if isinstance(item, (str, bytes)) or not hasattr(item, "__len__") or len(item) < 2:
            raise LabelEffError(f"rule {item!r}; allowed: a tuple (relation, a, b) with 1-based "
                                "structure ids")
        rel = item[0]
        if rel not in RELATIONS:
            raise LabelEffError(f"rule {item!r}: relation {rel!r} is unknown; allowed: "
                                f"{', '.join(RELATIONS)}")
        arity = _ARITY.get(rel, 3)
        if len(item) != arity:
            raise LabelEffError(f"rule {item!r} has {len(item)} items; {rel!r} takes {arity}")
        n_classes = 2 if rel in PAIR_RELATIONS else _CLASS_ARGS[rel]
        ids = [_class_id(ref, item, n_structures) for ref in item[1: 1 + n_classes]]
        if n_classes == 2 and ids[0] == ids[1]:
            raise LabelEffError(f"rule {item!r} relates a class to itself")
        out.append((str(rel), *ids, *item[1 + n_classes:]))
    return tuple(out)


def _ancestors(c: int, up: dict) -> set:
    """Classes above ``c`` in the graph ``up`` ({class: set of outer classes}); a cycle
    in hand-written tuples ends the walk instead of looping."""
    seen, todo = set(), list(up.get(c, ()))
    while todo:
        x = todo.pop()
        if x not in seen:
            seen.add(x)
            todo.extend(up.get(x, ()))
    return seen


def rule_terms(rules, n_structures: int) -> list[tuple[tuple, tuple, bool]]:
    """The penalty's terms, one per ``inside`` / ``part_of`` rule, two per ``excludes``.

    Returns
    -------
    list of (tuple of int, tuple of int, bool)
        ``(inner, other, allowed)``: the region of ``inner`` (summed probabilities) is
        penalised next to ``other`` - the classes listed when ``allowed`` is False
        (``excludes``), or everything but the classes listed, background included, when
        ``allowed`` is True (``inside`` / ``part_of``).
    """
    checked = check_rule_tuples(rules, n_structures)
    nest_up, part_up = {}, {}
    for rel, *ids in checked:
        if rel in ("inside", "part_of"):
            nest_up.setdefault(ids[0], set()).add(ids[1])
        if rel == "part_of":
            part_up.setdefault(ids[0], set()).add(ids[1])

    def nested_in(c):  # classes inside c (inside / part_of, transitively)
        return {x for x in nest_up if c in _ancestors(x, nest_up)}

    def region(c):  # c and its parts (part_of, transitively)
        return tuple(sorted({c} | {x for x in part_up if c in _ancestors(x, part_up)}))

    terms = []
    for rel, *ids in checked:
        if rel not in LOCAL_RELATIONS:
            continue
        a, b = ids[0], ids[1]
        if rel == "excludes":
            terms.append((region(a), region(b), False))
            terms.append((region(b), region(a), False))
        else:
            allowed = {a, b} | nested_in(a) | nested_in(b)
            terms.append((region(a), tuple(sorted(allowed)), True))
    return terms


def _neighbour_max(p: torch.Tensor) -> torch.Tensor:
    """In-plane 3 x 3 maximum of ``p`` (B, 1, Z, Y, X), each Z slice on its own."""
    return F.max_pool3d(p, kernel_size=(1, 3, 3), stride=1, padding=(0, 1, 1))


def rule_penalty(probs: torch.Tensor, rules) -> torch.Tensor:
    """Penalty of ``probs`` against the local rules (module docstring).

    Parameters
    ----------
    probs : Tensor, shape (B, K+1, Z, Y, X)
        Softmax probabilities; channel 0 background, channel c structure c.
    rules : iterable of tuple
        ``(relation, a, b)`` with 1-based structure ids (see :func:`check_rule_tuples`);
        relations without a local form are skipped.

    Returns
    -------
    Tensor (scalar)
        Sum over the terms of their mean over all voxels; 0 (with a graph, so
        ``backward`` works) without a local rule.

    Raises
    ------
    LabelEffError
        ``probs`` not 5-D, or a rule that :func:`check_rule_tuples` refuses (a class id
        outside 1..K).
    """
    if probs.ndim != 5:
        raise LabelEffError(f"probs must be (B, K+1, Z, Y, X), got shape {tuple(probs.shape)}")
    total = probs.sum() * 0.0
    for inner, other, allowed in rule_terms(rules, probs.shape[1] - 1):
        p_in = probs[:, list(inner)].sum(1, keepdim=True)
        p_other = probs[:, list(other)].sum(1, keepdim=True)
        if allowed:
            p_other = (1.0 - p_other).clamp(min=0.0)
        total = total + (p_in * _neighbour_max(p_other)).mean()
    return total
