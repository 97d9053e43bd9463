"""Anatomical rules between structures: stated, learned, enforced and checked.

Headless (no Qt). Typical use::

    from napari_labeleff.rules import Rules
    rules = Rules.template("cardiac", class_names)    # rules.unmatched: roles not found
    rules = Rules([("inside", "LV cavity", "myocardium"), ("one_piece", "myocardium")],
                  class_names=class_names)
    res = engine.refine(image, scribbles, spacing=sp, rules=rules)
    proposals = Rules.learn(masks, class_names, spacings)   # .rule, .support (k, n)
    items = rules.violations(mask, spacing=sp)              # .rule, .bbox, .message

See ``docs/rules.md``.
"""

from ._check import Violation, qa, violations
from ._enforce import apply, enforce
from ._learn import Proposal, accept, learn
from ._model import RELATIONS, Rule, Rules, rules_path, write_beside
from ._templates import TEMPLATES, template_message

__all__ = ["RELATIONS", "TEMPLATES", "Proposal", "Rule", "Rules", "Violation", "accept", "apply", "enforce",
           "learn", "qa", "rules_path", "template_message", "violations",
           "write_beside"]
