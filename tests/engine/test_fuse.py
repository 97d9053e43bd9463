"""engine.fuse: a network's probabilities and the user's strokes on the image graph."""

from __future__ import annotations

import numpy as np
import pytest

from napari_labeleff._errors import LabelEffError
from napari_labeleff.engine import fuse

SHAPE = (12, 40, 40)


def step_image():
    """Bright left half (x < 20), dark right half, a little noise."""
    rng = np.random.default_rng(0)
    img = np.zeros(SHAPE, np.float32)
    img[:, :, :20] = 100.0
    return img + rng.normal(0, 3, SHAPE).astype(np.float32)


def network(boundary: int, confidence: float = 0.97, soft: int = 0):
    """Probabilities of "structure = x < boundary", unsure within ``soft`` voxels of it."""
    p1 = np.where(np.arange(SHAPE[2]) < boundary, confidence, 1 - confidence).astype(np.float32)
    if soft:
        x = np.arange(SHAPE[2])
        near = np.abs(x - boundary + 0.5) <= soft
        p1 = np.where(near, 0.5 + 0.04 * np.sign(boundary - 0.5 - x), p1).astype(np.float32)
    p1 = np.broadcast_to(p1, SHAPE)
    return np.stack([1 - p1, p1]).astype(np.float32)


def test_confident_answers_stay_and_strokes_always_win():
    probs = network(20)
    s = np.zeros(SHAPE, np.uint8)
    s[6, 20, 5] = 1  # a background stroke where the network is sure of the structure
    out, info = fuse(step_image(), probs, s, spacing=(1.0, 1.0, 1.0), device="cpu")
    labels = out.argmax(0)
    assert labels[6, 20, 5] == 0  # the stroke wins
    assert np.allclose(out.sum(0), 1, atol=1e-5)
    far = np.ones(SHAPE, bool)
    far[:, :, :] = False
    far[:, :, 25:] = True
    assert (labels[far] == 0).all() and info["disagreeing_stroke_voxels"] == 1


def test_the_graph_moves_an_unsure_boundary_to_the_image_edge():
    """The network puts the boundary 3 voxels off and is unsure there: the band is
    solved on the image, so the result follows the intensity edge at x = 20."""
    probs = network(23, soft=4)
    s = np.zeros(SHAPE, np.uint8)
    s[6, 20, 5], s[6, 20, 35] = 2, 1
    out, info = fuse(step_image(), probs, s, spacing=(1.0, 1.0, 1.0), device="cpu")
    labels = out.argmax(0)
    net_err = np.mean((probs.argmax(0) == 1) != (np.arange(SHAPE[2]) < 20)[None, None])
    err = np.mean((labels == 1) != (np.arange(SHAPE[2]) < 20)[None, None])
    assert info["band_voxels"] > 0 and err < 0.25 * net_err


def test_a_disagreeing_stroke_releases_the_networks_hold_up_to_the_edge():
    """The network is sure (wrongly) that x < 26 is structure; a background stroke at
    x = 23 releases its confident voxels nearby and the graph stops at the edge."""
    probs = network(26, confidence=0.99)
    s = np.zeros(SHAPE, np.uint8)
    s[:, 10:30, 23] = 1
    out, info = fuse(step_image(), probs, s, spacing=(1.0, 1.0, 1.0), device="cpu", release_mm=8.0)
    labels = out.argmax(0)
    assert info["released_voxels"] > 0
    between = labels[2:10, 12:28, 21:23]  # right of the edge, left of the stroke
    assert between.mean() < 0.2
    kept = fuse(step_image(), probs, s, spacing=(1.0, 1.0, 1.0), device="cpu", release_mm=0.0)[0].argmax(0)
    # without the release only a thin band around the stroke is solved: more of the
    # network's wrong answer stays
    assert kept[2:10, 12:28, 21:23].mean() > between.mean() + 0.3


def test_bad_input():
    with pytest.raises(LabelEffError, match="share one"):
        fuse(step_image(), network(20)[:, :5], np.zeros(SHAPE, np.uint8), spacing=(1, 1, 1))
    with pytest.raises(LabelEffError, match="unknown"):
        fuse(step_image(), network(20), np.zeros(SHAPE, np.uint8), spacing=(1, 1, 1), bogus=1)
    s = np.zeros(SHAPE, np.uint8)
    s[0, 0, 0] = 3
    with pytest.raises(LabelEffError, match="K \\+ 1"):
        fuse(step_image(), network(20), s, spacing=(1, 1, 1))
