"""Anatomical rules enforced on a refinement result (see ``napari_labeleff.rules``).

Contract used by ``engine/_api.py``:

* ``check(rules, n_classes)`` validates the ``rules=`` argument of ``refine`` against the
  call's classes (K + 1, background included) and returns it (or None).
* ``enforce(rules, probabilities, ctx, info)`` takes the method's class probabilities
  ((K + 1, Z, Y, X), on the solved region) and the :class:`RefineContext`, returns
  probabilities that satisfy the rules (labels = argmax), and writes its report to
  ``info["rules"]``.
"""

from __future__ import annotations

import numpy as np

from .._errors import LabelEffError


def check(rules, n_classes: int):
    """Validate ``rules`` for a call with ``n_classes`` classes; returns it or None.

    Rules naming a structure beyond this call's K (not scribbled, boxed or in the prior
    yet) are set aside and listed in ``info["rules"]["skipped"]``.
    """
    if rules is None:
        return None
    from ..rules import Rules

    if not isinstance(rules, Rules):
        raise LabelEffError(
            f"rules has type {type(rules).__name__}; pass a napari_labeleff.rules.Rules "
            "(Rules([...], class_names=...) or Rules.template(name, class_names)) or None"
        )
    return rules


def enforce(rules, probabilities, ctx, info):
    """Probabilities that satisfy ``rules`` (see module docstring)."""
    from ..rules import enforce

    k1 = int(probabilities.shape[0])
    kept, skipped = rules.restricted(k1 - 1)
    p = probabilities
    if hasattr(p, "detach"):
        p = p.detach().float().cpu().numpy()
    p = np.asarray(p, dtype=np.float32)
    offset = tuple(int(s[0]) for s in info["roi"]) if info.get("roi") else (0, 0, 0)
    out, report = enforce(kept, p, ctx.scribbles, ctx.spacing, offset=offset)
    info["rules"] = {
        "rules": [kept.text(r) for r in kept],
        "skipped": skipped,
        **report,
    }
    return out
