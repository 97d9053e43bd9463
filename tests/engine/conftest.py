"""Synthetic volumes for the engine tests (fixed seeds; no shared data)."""

from __future__ import annotations

import numpy as np
import pytest


def make_phantom(shape=(24, 48, 48), spacing=(2.0, 1.0, 1.0), noise=0.15, seed=0,
                 n_structures=2):
    """Ellipsoid (structure 1, bright) holding a sphere (structure 2, darker) in noise.

    Returns
    -------
    image : ndarray (Z, Y, X) float32
    gt : ndarray (Z, Y, X) uint8
    scribbles : ndarray (Z, Y, X) uint8 (one short stroke per class on the middle slice)
    """
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=float) * s for n, s in zip(shape, spacing)),
                          indexing="ij")
    cz, cy, cx = ((n - 1) * s / 2 for n, s in zip(shape, spacing))
    ell = ((z - cz) / 16) ** 2 + ((y - cy) / 15) ** 2 + ((x - cx) / 18) ** 2 <= 1
    gt = ell.astype(np.uint8)
    if n_structures >= 2:
        gt[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx - 8) ** 2 <= 8.0**2] = 2
    levels = np.array([0.0, 1.0, 0.5], dtype=np.float32)
    image = levels[gt] + rng.normal(0, noise, shape).astype(np.float32)
    scr = np.zeros(shape, np.uint8)
    mz, my, mx = (n // 2 for n in shape)
    scr[mz, 2:5, 4:-4] = 1
    scr[mz, my - 2:my + 3, mx - 14:mx - 9] = 2
    if n_structures >= 2:
        scr[mz, my - 1:my + 2, mx + 6:mx + 11] = 3
    return image.astype(np.float32), gt, scr


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture
def phantom():
    return make_phantom()


@pytest.fixture
def binary_phantom():
    return make_phantom(n_structures=1)
