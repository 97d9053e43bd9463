"""Rule templates of known anatomies, matched onto a session's class names.

A template names *roles* (e.g. the LV cavity) with the class names that stand for them;
each role is matched to at most one class by its normalised name (case, ``_`` and ``-``
ignored). Rules whose roles are all matched are kept; the others are dropped and the
unmatched roles are listed in ``rules.unmatched``.
"""

from __future__ import annotations

from .._errors import LabelEffError
from ._model import _norm, check_class_names

#: template -> (roles {role: synonyms}, rules over roles, side rules over roles)
TEMPLATES = {
    "cardiac": (
        {
            "LV cavity": ["lv cavity", "left ventricle", "lv", "left ventricular cavity",
                          "lv blood pool", "left ventricle cavity", "lv endocardium"],
            "myocardium": ["myocardium", "lv myocardium", "myo", "left ventricular myocardium",
                           "lv wall", "left ventricle myocardium"],
            "RV cavity": ["rv cavity", "right ventricle", "rv", "right ventricular cavity",
                          "rv blood pool", "right ventricle cavity"],
        },
        [("inside", "LV cavity", "myocardium"), ("within", "myocardium", "LV cavity", 15.0),
         ("touches", "RV cavity", "myocardium"),
         ("excludes", "RV cavity", "LV cavity"), ("one_piece", "LV cavity"),
         ("one_piece", "myocardium"), ("one_piece", "RV cavity")],
        [],
    ),
    "brain_tumour": (
        {
            "whole tumour": ["whole tumour", "whole tumor", "wt", "edema", "oedema",
                             "peritumoral edema", "peritumoural oedema", "tumour", "tumor"],
            "tumour core": ["tumour core", "tumor core", "tc", "core", "necrosis",
                            "necrotic core", "non enhancing tumour", "non enhancing tumor",
                            "necrotic and non enhancing tumour", "ncr net"],
            "enhancing tumour": ["enhancing tumour", "enhancing tumor", "et", "enhancing",
                                 "enhancing core"],
        },
        [("part_of", "enhancing tumour", "tumour core"),
         ("part_of", "tumour core", "whole tumour"),
         ("one_piece", "whole tumour"), ("one_piece", "tumour core")],
        [],
    ),
    "abdomen": (
        {
            "liver": ["liver"],
            "spleen": ["spleen"],
            "kidney left": ["kidney left", "left kidney", "kidney l", "l kidney"],
            "kidney right": ["kidney right", "right kidney", "kidney r", "r kidney"],
            "liver lesion": ["liver lesion", "liver tumour", "liver tumor", "hepatic lesion"],
            "pancreas": ["pancreas"],
            "gallbladder": ["gallbladder", "gall bladder"],
        },
        [("one_piece", "liver"), ("one_piece", "spleen"), ("one_piece", "kidney left"),
         ("one_piece", "kidney right"), ("excludes", "spleen", "liver"),
         ("part_of", "liver lesion", "liver"), ("one_piece", "pancreas"),
         ("one_piece", "gallbladder")],
        [("left_of", "kidney left", "kidney right")],
    ),
}
ALIASES = {"brain_tumor": "brain_tumour", "tumour": "brain_tumour", "glioma": "brain_tumour",
           "heart": "cardiac", "abdominal": "abdomen"}


def match_roles(roles: dict, names: dict) -> dict:
    """``{role: class id}`` for the roles whose synonyms equal a class name."""
    by_name = {_norm(v): k for k, v in names.items()}
    out, used = {}, set()
    for role, synonyms in roles.items():
        for s in synonyms:
            c = by_name.get(_norm(s))
            if c is not None and c not in used:
                out[role] = c
                used.add(c)
                break
    return out


def build_template(cls, name, class_names, *, geometry=None):
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in TEMPLATES:
        raise LabelEffError(
            f"template {name!r} is unknown; allowed: {', '.join(sorted(TEMPLATES))}"
        )
    roles, rules, side = TEMPLATES[key]
    names = check_class_names(class_names)
    found = match_roles(roles, names)
    items = []
    notes = []
    pool = rules + (side if geometry is not None else [])
    if side and geometry is None:
        notes.append("side rules left out: they need the image geometry (geometry=)")
    for rel, *args in pool:
        roles_used = [a for a in args if isinstance(a, str)]
        if all(r in found for r in roles_used):
            items.append((rel, *[found[a] if isinstance(a, str) else a for a in args]))
    out = cls(items, class_names=names, geometry=geometry)
    out.matched = {role: names[c] for role, c in found.items()}
    out.unmatched = [role for role in roles if role not in found]
    out.notes = notes
    return out


def template_message(rules) -> str:
    """One line about a template's matching, for the GUI and the CLI."""
    parts = [f"{len(rules)} rules"]
    if rules.matched:
        parts.append("matched " + ", ".join(f"{r} = {n!r}" for r, n in rules.matched.items()))
    if rules.unmatched:
        parts.append("no class matched " + ", ".join(rules.unmatched))
    parts.extend(getattr(rules, "notes", []))
    return "; ".join(parts)
