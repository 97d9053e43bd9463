"""Quality measures shared by the package (one place for each).

Dice per structure on label maps (NumPy, exact: ``2 |A & B| / (|A| + |B|)`` in double
precision). MONAI's ``DiceMetric`` computes in float32 on one-hot tensors, which costs
K + 1 float copies of a whole volume and rounds differently; the cohort's validation
and publishing decisions were measured with this one. The normalised predictive
entropy is the engine's :func:`napari_labeleff.engine.normalised_entropy`.
"""

from __future__ import annotations

import numpy as np


def dice_scores(pred: np.ndarray, gt: np.ndarray, n_classes: int) -> list:
    """Dice per structure c = 1..K (NaN when c is absent from both)."""
    out = []
    for c in range(1, n_classes):
        p, g = pred == c, gt == c
        s = int(p.sum()) + int(g.sum())
        out.append(float("nan") if s == 0 else 2.0 * int((p & g).sum()) / s)
    return out


def mean_dice(pred, gt, n_classes) -> float:
    """Mean Dice over the structures present in ``gt`` or ``pred`` (1.0 if none)."""
    d = [x for x in dice_scores(pred, gt, n_classes) if not np.isnan(x)]
    return float(np.mean(d)) if d else 1.0


def scribble_dice(pred, scribbles, n_classes) -> float:
    """Dice restricted to scribbled voxels (held-out weak labels): per structure c,
    Dice of ``pred == c`` vs ``scribbles == c + 1`` over voxels with a scribble."""
    sel = scribbles > 0
    return mean_dice(np.where(sel, pred, 0), np.where(sel, scribbles.astype(np.int16) - 1, 0), n_classes)
