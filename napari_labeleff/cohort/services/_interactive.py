"""The network in the loop: the running score, the learning curve and who leads.

* **Running score.** When a mask is accepted, the published model's draft (no prompt)
  is scored against it *before* the model ever trained on it: an honest measure that
  needs no extra labels (:func:`score_before_accept`). It is kept in the volume's
  record (``curve``) with the interactions and seconds spent on the volume.
* **Curve.** :func:`curve` lists one :class:`CurveItem` per accepted volume, in the
  order accepted.
* **Who leads.** :func:`network_lead` turns the last :data:`LEAD_WINDOW` running
  scores into how much the network leads refine: 0 below :data:`LEAD_MIN` (the graph
  method alone, as with no model: a project whose scans the model does not know never
  ends worse than the graph), rising to 1 at :data:`LEAD_FULL`. Without any running
  score yet (no volume accepted since a model was first published) a model validated
  on held-out full masks leads at the level that score gives, any other half-way until
  the next accept scores it; and on a volume's first call the draft must agree with the
  user's own strokes (``_refine.STROKE_AGREEMENT``). A plain network (trained with
  ``interactive=False``) never leads: it is the graph method's prior, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..._errors import LabelEffError
from ..._metrics import mean_dice
from ..store import now

#: Running score below which the graph method works alone.
LEAD_MIN = 0.7
#: Running score from which the network leads fully.
LEAD_FULL = 0.85
#: How many of the latest running scores count.
LEAD_WINDOW = 3


@dataclass(frozen=True)
class CurveItem:
    """One accepted volume of the learning curve.

    Attributes
    ----------
    volume_id : str
    model_dice_before : float or None
        Mean Dice of the then published model's draft against the accepted mask,
        measured before any model trained on it (None: no model yet, or it had).
    interactions : int
        Refine calls (and logged annotation operations) spent on the volume.
    seconds : float
        Time spent: the logged annotation time, or the refine calls' time.
    model : str or None
        The published model version then.
    accepted : str
        ISO time of the accept.
    """

    volume_id: str
    model_dice_before: float | None
    interactions: int
    seconds: float
    model: str | None
    accepted: str


class WorkLog:
    """Refine calls per volume in this process (folded into the curve at accept)."""

    def __init__(self):
        self._work: dict[str, dict] = {}

    def add(self, vid: str, seconds: float) -> None:
        w = self._work.setdefault(vid, {"interactions": 0, "seconds": 0.0})
        w["interactions"] += 1
        w["seconds"] += float(seconds)

    def get(self, vid: str) -> dict:
        return dict(self._work.get(vid, {"interactions": 0, "seconds": 0.0}))

    def pop(self, vid: str) -> dict:
        return self._work.pop(vid, {"interactions": 0, "seconds": 0.0})


def _trained_on(published) -> set:
    return set(published.record.get("trained_on") or []) if published is not None else set()


def score_before_accept(project, vid: str, mask, *, device: str = "auto") -> tuple:
    """(model version or None, its draft Dice on ``mask`` or None) for the running
    score. None when no model is published, its classes differ, it trained on ``vid``
    already, or it cannot be loaded (a damaged checkpoint is reported, not raised)."""
    published = project.published
    if published is None or list(published.class_names) != project.class_names:
        return None, None
    if vid in _trained_on(published):
        return published.version, None
    try:
        probs = project.predict(vid, device=device, record=False).probabilities
    except LabelEffError:
        return published.version, None
    pred = probs.argmax(axis=0).astype(np.uint8)
    return published.version, round(float(mean_dice(pred, np.asarray(mask), len(project.class_names) + 1)), 4)


def curve_entry(project, version, dice, work: dict, logged: dict) -> dict:
    """A volume's curve entry (running score, interactions, seconds), stored with its
    accept in the same ``project.json`` write."""
    interactions = max(int(work["interactions"]), int(logged.get("interactions", 0)))
    seconds = float(logged.get("seconds", 0.0)) or float(work["seconds"])
    order = 1 + max([int(r.curve.get("order", 0)) for r in project.volumes if r.curve] or [0])
    return {"model": version, "model_dice_before": dice, "interactions": interactions,
            "seconds": round(seconds, 2), "accepted": now(), "order": order}


def curve(project) -> list[CurveItem]:
    """One :class:`CurveItem` per volume with an accepted mask, in the order accepted."""
    items = []
    for rec in project.volumes:
        c = rec.curve
        if not c or rec.status != "accepted":
            continue
        items.append(CurveItem(rec.id, c.get("model_dice_before"), int(c.get("interactions", 0)),
                               float(c.get("seconds", 0.0)), c.get("model"), str(c.get("accepted", ""))))
    order = {rec.id: int(rec.curve.get("order", 0)) for rec in project.volumes if rec.curve}
    return sorted(items, key=lambda it: (order[it.volume_id], it.accepted))


def network_lead(project) -> tuple[float, str]:
    """(lead in [0, 1], why): how much the published interactive network leads refine."""
    published = project.published
    if published is None:
        return 0.0, "no published model: the graph method alone"
    if list(published.class_names) != project.class_names:
        return 0.0, (f"model {published} knows {list(published.class_names)}, the project has "
                     f"{project.class_names}: the graph method alone until it is trained again")
    try:
        model = project.load_model()
    except LabelEffError as err:
        return 0.0, f"the published model cannot be used ({err}): the graph method alone"
    if not int(getattr(model, "config", {}).get("prompt_channels", 0)):
        return 0.0, (f"model {published} is a plain network (trained with interactive=False): "
                     "it serves as the graph method's prior, as the prior gate allows")
    scores = [it.model_dice_before for it in curve(project) if it.model_dice_before is not None]
    scores = scores[-LEAD_WINDOW:]
    if scores:
        score, source = float(np.mean(scores)), f"running score {np.mean(scores):.3f} (last {len(scores)})"
    elif published.mask_score is not None and published.validation_independent:
        score, source = float(published.mask_score), f"held-out validation Dice {published.mask_score:.3f}"
    else:
        # nothing accepted since it was trained: the first volume scores it; meanwhile
        # the network leads half-way (the graph step decides wherever it is below 0.92)
        score, source = LEAD_MIN + 0.5 * (LEAD_FULL - LEAD_MIN), "no running score yet (the next accept gives one)"
    lead = float(np.clip((score - LEAD_MIN) / (LEAD_FULL - LEAD_MIN), 0.0, 1.0))
    return lead, f"model {published}: {source} -> lead {lead:.2f}"

