"""What a prediction says about a volume: labels, uncertainty, model-estimated scores."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Prediction:
    """The published model's prediction for one volume.

    Attributes
    ----------
    labels : ndarray, shape (Z, Y, X), uint8
    probabilities : ndarray, shape (K + 1, Z, Y, X), float32
    uncertainty : ndarray, shape (Z, Y, X), float32
        Normalised predictive entropy in [0, 1].
    version : str
        Model version that predicted.
    volume_id : str
    scores : dict
        ``uncertainty`` (mean) and ``quality`` (expected Dice), as in
        :attr:`VolumeRecord.scores`.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    uncertainty: np.ndarray
    version: str
    volume_id: str
    scores: dict = field(default_factory=dict)


def summarise(probs: np.ndarray):
    """(labels, normalised entropy, scores) of (K + 1, Z, Y, X) probabilities.

    ``scores``: ``uncertainty`` (mean entropy), ``foreground_uncertainty`` (mean over
    the predicted structures, None without any), ``quality`` (expected Dice of the
    labels under the probabilities themselves)."""
    p = np.clip(probs, 0.0, None)
    p = p / np.maximum(p.sum(0, keepdims=True), 1e-12)
    labels = np.argmax(p, axis=0).astype(np.uint8)
    uncertainty = _entropy(p)
    dices = []
    for c in range(1, p.shape[0]):
        y = labels == c
        denom = float(p[c].sum() + y.sum())
        if denom > 0:
            dices.append(2.0 * float(p[c][y].sum()) / denom)
    quality = float(np.mean(dices)) if dices else None
    fg = labels > 0
    scores = {
        "uncertainty": float(uncertainty.mean()),
        "foreground_uncertainty": float(uncertainty[fg].mean()) if fg.any() else None,
        "quality": quality,
    }
    return labels, uncertainty, scores


def _entropy(p: np.ndarray) -> np.ndarray:
    """The engine's normalised entropy (one implementation in the package)."""
    import torch

    from ...engine import normalised_entropy

    ent = normalised_entropy(torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32)))
    return ent.clamp_(0.0, 1.0).numpy().astype(np.float32, copy=False)
