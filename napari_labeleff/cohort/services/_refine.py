"""Refining a project volume with the published model as the graph method's prior."""

from __future__ import annotations

import numpy as np

#: A published model is used as refine's prior only when its Dice on held-out
#: validation volumes with full masks is at least this: on the left-atrium tuning cases
#: the graph method reaches 0.77-0.85 from the initial scribbles alone, and models below
#: that pulled refine down (0.33 vs 0.85 in the learning-curve run of session 2).
PRIOR_MIN_DICE = 0.8


def prior_gate(mask_score, independent: bool = True):
    """Whether a model validated at ``mask_score`` (Dice on full masks, or None when
    no validation volume had one) may serve as refine's prior; returns (use, note).

    A score measured on the model's own training volumes (``independent=False``) says
    little (0.87-0.92 there while the prior lowered refine on the next volumes of the
    learning-curve run): the model is then not used as the prior."""
    if mask_score is None:
        return True, ("used unchecked: no validation volume has a full mask (accept or "
                      "import masks to let the project check the model)")
    if not independent:
        return False, (f"not used: its Dice on full masks ({mask_score:.3f}) comes from "
                       "the volumes it trained on; with 5 or more labelled volumes (or one "
                       "set as validation) the project holds some out to check it")
    if mask_score < PRIOR_MIN_DICE:
        return False, (f"not used: the model's validation Dice on full masks "
                       f"{mask_score:.3f} < {PRIOR_MIN_DICE} (a weaker model pulls refine "
                       "below the scribbles alone)")
    return True, f"used: validation Dice on full masks {mask_score:.3f}"


def prior_use(published) -> tuple[bool, str]:
    """:func:`prior_gate` of a :class:`~..store.PublishedModel` (or None)."""
    if published is None:
        return False, "no published model"
    return prior_gate(published.mask_score, published.validation_independent)


def refine_steps(project, vid: str, scribbles, boxes=None, *, method: str = "auto",
                 device: str = "auto", state=None, use_prior: bool | None = None, **options):
    """See :meth:`Project.refine_steps` (``project``: the Project facade)."""
    from ...engine import refine_steps as engine_refine_steps

    prior, note = None, "no published model: refined without a prior"
    published = project.published
    if published is not None:
        use, why = prior_use(published)
        if use_prior is not None:
            use, why = bool(use_prior), f"use_prior={use_prior} ({why})"
        elif not use and not np.any(scribbles) and not boxes:
            use, why = True, f"used: nothing drawn yet, the model is all there is ({why})"
        if use:
            prior = project.predict(vid, device=device, record=False).probabilities
        note = f"prior from model {published}: {why}"
    vol = project.read_image(vid, verify=False)
    image = np.asarray(vol.data)
    result = yield from engine_refine_steps(image, scribbles, spacing=vol.spacing, boxes=boxes,
                                            prior=prior, method=method, device=device,
                                            state=state, **options)
    result.info["project_prior"] = note
    return result
