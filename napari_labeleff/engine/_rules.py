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

from .._errors import LabelEffError


def check(rules, n_classes: int):
    """Validate ``rules`` for a call with ``n_classes`` classes; returns it or None."""
    if rules is None:
        return None
    raise LabelEffError("rules= is not available yet")  # filled in by the rules work


def enforce(rules, probabilities, ctx, info):
    """Probabilities that satisfy ``rules`` (see module docstring)."""
    raise LabelEffError("rules= is not available yet")
