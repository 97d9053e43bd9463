"""A small rule learner: the relations that hold in (nearly) all accepted masks.

For every structure and every ordered pair of structures it counts, over the masks where
the relation applies (the classes are present), how often ``inside``, ``touches``,
``excludes`` (never touching) and ``one_piece`` hold, with exactly the definitions the
checker uses (:mod:`._check`). It proposes those whose support reaches ``min_support``;
the user accepts or rejects each. It does not propose ``part_of`` (nested regions are
not visible in a label map), volumes (a range seen in a few masks is not anatomy) or
sides (they need each volume's geometry).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import LabelEffError
from ._check import _check_mask, fill_slices, pieces, touching
from ._model import Rule, Rules, check_class_names


@dataclass(frozen=True)
class Proposal:
    """A learned rule with its support.

    Attributes
    ----------
    rule : Rule
    support : tuple of int
        ``(k, n)``: the rule holds in k of the n masks where it applies.
    text : str
        E.g. ``"LV cavity inside myocardium: 6 of 6 masks"``.
    """

    rule: Rule
    support: tuple
    text: str

    @property
    def fraction(self) -> float:
        k, n = self.support
        return k / n if n else 0.0


def learn(masks, class_names, spacings=None, *, min_support: float = 1.0) -> list[Proposal]:
    """Propose the rules that hold in the accepted masks.

    Parameters
    ----------
    masks : sequence of ndarray, shape (Z, Y, X)
        Accepted masks, 0 = background, c = structure c.
    class_names : sequence of str or dict
        Structure names (``class_names[c - 1]`` = structure c).
    spacings : sequence of (Z, Y, X) tuples, optional
        Accepted for symmetry with checking; the learned relations do not depend on it.
    min_support : float
        Smallest fraction of the applicable masks in which a rule must hold (1.0 = all;
        0.8 = "nearly all").

    Returns
    -------
    list of Proposal
        Best supported first (then by relation: inside, touches, excludes, one piece).
    """
    names = check_class_names(class_names)
    if not names:
        raise LabelEffError("class_names is empty; name the structures the masks hold")
    masks = list(masks)
    if not masks:
        raise LabelEffError("masks is empty; learning needs at least one accepted mask")
    if not 0 < float(min_support) <= 1:
        raise LabelEffError(f"min_support={min_support!r}; allowed: a fraction in (0, 1]")
    if spacings is not None and len(list(spacings)) != len(masks):
        raise LabelEffError(
            f"spacings has {len(list(spacings))} entries for {len(masks)} masks"
        )
    ks = sorted(names)
    counts: dict = {}

    def tally(rule, holds):
        k, n = counts.get(rule, (0, 0))
        counts[rule] = (k + int(holds), n + 1)

    for m in masks:
        arr = _check_mask(m)
        present = {c: arr == c for c in ks}
        present = {c: v for c, v in present.items() if v.any()}
        filled = {c: fill_slices(v) for c, v in present.items()}
        for c, v in present.items():
            tally(Rule("n_pieces", c, n=1), len(pieces(v)[1]) == 1)
        for a in present:
            for b in present:
                if a == b:
                    continue
                tally(Rule("inside", a, b), not (present[a] & ~filled[b]).any())
                if a < b:
                    touch = bool(touching(present[a], present[b]).any())
                    tally(Rule("touches", a, b), touch)
                    tally(Rule("excludes", a, b), not touch)
    order = {"inside": 0, "touches": 1, "excludes": 2, "n_pieces": 3}
    rules = Rules([], class_names=names)
    out = []
    for rule, (k, n) in counts.items():
        if n and k / n >= float(min_support) - 1e-9:
            out.append(Proposal(rule, (k, n), f"{rules.text(rule)}: {k} of {n} masks"))
    out.sort(key=lambda p: (-p.fraction, order[p.rule.relation], p.rule.a, p.rule.b or 0))
    return out


def accept(proposals, class_names, *, geometry=None) -> Rules:
    """Rules from the accepted proposals (contradictions raise, as for any rules)."""
    return Rules([p.rule if isinstance(p, Proposal) else p for p in proposals],
                 class_names=class_names, geometry=geometry)
