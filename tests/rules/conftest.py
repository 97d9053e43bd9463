"""Synthetic cardiac-like masks for the rules tests (no shared data)."""

from __future__ import annotations

import numpy as np
import pytest

NAMES = ["RV cavity", "myocardium", "LV cavity"]  # 1, 2, 3


def heart(shape=(6, 40, 48), r_in=6, r_out=9, seed=None):
    """LV cavity (3) in a myocardium ring (2), RV cavity (1) against the ring's left,
    on every slice."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    cy, cx = shape[1] // 2, shape[2] // 2 + 6
    d2 = (y - cy) ** 2 + (x - cx) ** 2
    m = np.zeros(shape, np.uint8)
    m[:] = np.where(d2 <= r_out ** 2, 2, 0)
    m[:] = np.where(d2 <= r_in ** 2, 3, m)
    rv = ((y - cy) ** 2 / 64 + (x - (cx - r_out - 5)) ** 2 / 25 <= 1) & (m == 0)
    m[np.broadcast_to(rv, shape)] = 1
    return m


def onehot_probs(labels, k1=4, p=0.7):
    """Probabilities whose argmax is ``labels`` (p for the label, the rest shared)."""
    out = np.full((k1, *labels.shape), (1 - p) / (k1 - 1), np.float32)
    for c in range(k1):
        out[c][labels == c] = p
    return out


@pytest.fixture
def names():
    return list(NAMES)
