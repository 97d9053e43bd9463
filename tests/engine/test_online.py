"""Tests of the online-learned methods ``"online"`` and ``"hybrid"`` (engine/_online.py)."""

import numpy as np
import pytest
import torch

from napari_labeleff import LabelEffError
from napari_labeleff.engine import _online, refine, refine_steps

SHAPE = (20, 32, 32)
#: Short training keeps the file fast; the defaults are exercised by the benchmarks.
FAST = {"steps": 40, "warm_steps": 15}


def _dice(a, b):
    return 2 * np.sum(a & b) / max(1, a.sum() + b.sum())


@pytest.fixture(scope="module")
def ball():
    """Noisy bright ball (radius 9) in a dark background, and thin scribbles on two
    axial slices only (the ball spans 19 slices)."""
    rng = np.random.default_rng(0)
    z, y, x = np.indices(SHAPE)
    gt = (z - 10) ** 2 + (y - 16) ** 2 + (x - 16) ** 2 <= 81
    image = (gt * 1.0 + rng.normal(0, 0.25, SHAPE)).astype(np.float32)
    scribbles = np.zeros(SHAPE, np.int16)
    for s in (7, 13):
        scribbles[s, 16, 12:21] = 2  # inside the ball
        scribbles[s, 2, 4:28] = 1  # background
    return image, scribbles, gt


@pytest.mark.parametrize("method", ["online", "hybrid"])
def test_learns_ball_from_sparse_scribbles(ball, method):
    image, scribbles, gt = ball
    res = refine(image, scribbles, spacing=(1.0, 1.0, 1.0), method=method, device="cpu",
                 **FAST)
    assert res.method == method
    assert res.probabilities.shape == (2, *SHAPE)
    assert _dice(res.labels == 1, gt) > 0.9
    # slices far from any scribble are segmented too
    assert _dice(res.labels[2:5] == 1, gt[2:5]) > 0.7


def test_scribbles_are_respected(ball):
    image, scribbles, _ = ball
    res = refine(image, scribbles, spacing=(1.0, 1.0, 1.0), method="online", device="cpu",
                 **FAST)
    np.testing.assert_array_equal(res.labels[scribbles > 0], scribbles[scribbles > 0] - 1)


@pytest.fixture(scope="module")
def two_levels():
    """Background 0, a bright block (1.0) scribbled as the structure, and a mid-grey
    block (0.5) nobody scribbled yet."""
    rng = np.random.default_rng(1)
    image = rng.normal(0, 0.1, SHAPE).astype(np.float32)
    image[4:16, 4:14, 4:14] += 1.0
    image[4:16, 18:28, 18:28] += 0.5
    grey = np.zeros(SHAPE, bool)
    grey[4:16, 18:28, 18:28] = True
    scribbles = np.zeros(SHAPE, np.int16)
    scribbles[10, 6:12, 8] = 2
    scribbles[10, 1, 2:30] = 1
    return image, scribbles, grey


def test_warm_start_trains_fewer_steps_and_follows_the_correction(two_levels):
    image, scribbles, grey = two_levels
    first = refine(image, scribbles, spacing=(1.0, 1.0, 1.0), method="online", device="cpu",
                   **FAST)
    assert first.info["warm_start"] is False
    assert first.info["steps"] == FAST["steps"]

    corrected = scribbles.copy()
    corrected[10, 20:26, 23] = 1  # "the grey block is background"
    second = refine(image, corrected, spacing=(1.0, 1.0, 1.0), method="online",
                    device="cpu", state=first.state, **FAST)
    assert second.info["warm_start"] is True
    assert second.info["steps"] == FAST["warm_steps"]
    assert second.info["steps"] < first.info["steps"]
    p_before = first.probabilities[1][grey].mean()
    p_after = second.probabilities[1][grey].mean()
    assert p_after < p_before - 0.2
    assert (second.labels[grey] == 0).mean() > 0.9


def test_warm_start_leaves_previous_state_intact_even_when_cancelled(two_levels):
    image, scribbles, _ = two_levels
    first = refine(image, scribbles, spacing=(1.0, 1.0, 1.0), method="online", device="cpu",
                   **FAST)
    before = {k: v.clone() for k, v in first.state.payload["net"].items()}
    corrected = scribbles.copy()
    corrected[10, 20:26, 23] = 1
    gen = refine_steps(image, corrected, spacing=(1.0, 1.0, 1.0), method="online",
                       device="cpu", state=first.state, **FAST)
    for _ in range(4):  # into the training loop
        next(gen)
    gen.close()
    refine(image, corrected, spacing=(1.0, 1.0, 1.0), method="online", device="cpu",
           state=first.state, **FAST)
    for k, v in first.state.payload["net"].items():
        assert torch.equal(v, before[k]), k


def test_deterministic_with_seed(ball):
    image, scribbles, _ = ball
    kw = dict(spacing=(1.0, 1.0, 1.0), method="online", device="cpu", steps=20)
    a = refine(image, scribbles, seed=3, **kw)
    b = refine(image, scribbles, seed=3, **kw)
    c = refine(image, scribbles, seed=4, **kw)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert not np.array_equal(a.probabilities, c.probabilities)


def test_state_from_another_class_count(ball):
    image, scribbles, gt = ball
    first = refine(image, scribbles, spacing=(1.0, 1.0, 1.0), method="online", device="cpu",
                   **FAST)
    three = scribbles.copy()
    three[10, 28:31, 2:6] = 3  # a second structure in a corner
    res = refine(image, three, spacing=(1.0, 1.0, 1.0), method="online", device="cpu",
                 state=first.state, **FAST)
    assert res.probabilities.shape == (3, *SHAPE)
    assert res.info["warm_start"] is False
    assert res.state.n_classes == 3
    assert np.all(res.labels[three > 0] == three[three > 0] - 1)


def test_box_and_background_scribble(ball):
    image, _, gt = ball
    scribbles = np.zeros(SHAPE, np.int16)
    scribbles[10, 10:22, 16] = 2
    boxes = [(1, 0, 6, 6, 20, 27, 27)]
    res = refine(image, scribbles, spacing=(1.0, 1.0, 1.0), boxes=boxes, method="online",
                 device="cpu", **FAST)
    assert _dice(res.labels == 1, gt) > 0.85
    assert not res.labels[:, :6].any()  # outside the box is background


def test_tiled_inference_matches_whole_volume(ball, monkeypatch):
    image, scribbles, _ = ball
    kw = dict(spacing=(1.0, 1.0, 1.0), method="online", device="cpu", steps=10)
    whole = refine(image, scribbles, **kw)
    monkeypatch.setattr(_online, "_TILE_VOXELS", 1000)
    monkeypatch.setattr(_online, "_ROI", (8, 16, 16))
    tiled = refine(image, scribbles, **kw)
    np.testing.assert_allclose(tiled.probabilities, whole.probabilities, atol=1e-5)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"stepz": 3}, "unknown option"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"time_budget": -1}, "time_budget"),
        ({"smoothing": "lots"}, "smoothing"),
    ],
)
def test_bad_options(ball, options, match):
    image, scribbles, _ = ball
    with pytest.raises(LabelEffError, match=match):
        refine(image, scribbles, spacing=(1.0, 1.0, 1.0), method="online", device="cpu",
               **options)  # rejected before any training


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_mixed_precision(ball):
    image, scribbles, gt = ball
    res = refine(image, scribbles, spacing=(1.0, 1.0, 1.0), method="hybrid", device="cuda")
    assert res.device.startswith("cuda")
    assert res.probabilities.dtype == np.float32
    assert _dice(res.labels == 1, gt) > 0.9
    again = refine(image, scribbles, spacing=(1.0, 1.0, 1.0), method="hybrid",
                   device="cuda", state=res.state)
    assert again.info["warm_start"] is True
