"""refine(..., prior=P): model class probabilities as the graph method's unary term
(contract C2): validation, use where intensities are ambiguous, the draft without
scribbles, scribbles winning locally over a wrong prior, incremental calls."""

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

from napari_labeleff import LabelEffError
from napari_labeleff.engine import refine

from .conftest import dice, make_phantom

SPACING = (2.0, 1.0, 1.0)


def _soft(gt, n_classes, seed=1):
    """A plausible model output: blurred one-hot labels with multiplicative noise."""
    rng = np.random.default_rng(seed)
    p = np.stack([ndimage.gaussian_filter((gt == c).astype(np.float32), 1.5)
                  for c in range(n_classes)]) + 0.05
    return (p * rng.uniform(0.5, 1.5, p.shape)).astype(np.float32)


@pytest.fixture
def ambiguous():
    """Phantom whose two structures have the same intensity: only a prior separates them."""
    image, gt, scr = make_phantom()
    image = image.copy()
    image[gt == 2] += 0.5
    return image, gt, scr


def test_right_prior_beats_no_prior_where_intensities_are_ambiguous(ambiguous):
    image, gt, scr = ambiguous
    without = refine(image, scr, spacing=SPACING, method="randomwalk")
    res = refine(image, scr, spacing=SPACING, prior=_soft(gt, 3), method="randomwalk")
    d_without = dice(without.labels == 2, gt == 2)
    d_with = dice(res.labels == 2, gt == 2)
    assert d_with > 0.85 and d_with > d_without + 0.2
    assert dice(res.labels == 1, gt == 1) > 0.9
    assert res.info["prior"]["weight"] == 0.5
    assert res.probabilities.shape == (3, *gt.shape)
    np.testing.assert_allclose(res.probabilities.sum(0), 1.0, atol=1e-3)
    np.testing.assert_array_equal(res.labels[scr > 0], scr[scr > 0] - 1)


def test_draft_from_prior_alone_float16_and_lazy(ambiguous):
    image, gt, _ = ambiguous
    prior = _soft(gt, 3).astype(np.float16)
    empty = np.zeros(gt.shape, np.uint8)
    res = refine(image, empty, spacing=SPACING, prior=prior)  # auto -> graph method
    assert res.method == "randomwalk" and "prior" in res.info["auto_reason"]
    assert res.info["assumed_background"] is False
    for c in (1, 2):
        assert dice(res.labels == c, gt == c) > 0.85
    lazy = refine(image, empty, spacing=SPACING, prior=da.from_array(prior, chunks=(1, 8, 16, 16)))
    np.testing.assert_array_equal(lazy.labels, res.labels)


def test_prior_supplies_classes_without_scribbles(ambiguous):
    image, gt, scr = ambiguous
    only_bg_and_1 = np.where(scr <= 2, scr, 0).astype(np.uint8)
    res = refine(image, only_bg_and_1, spacing=SPACING, prior=_soft(gt, 3))
    assert res.n_classes == 3
    assert dice(res.labels == 2, gt == 2) > 0.85


def test_scribbles_win_locally_over_a_wrong_prior():
    """The prior calls the inner (darker) sphere structure 1; one stroke of structure 2
    inside it must flip (most of) the sphere, and leave the prior's answer far from the
    stroke."""
    image, gt, scr = make_phantom()
    wrong = _soft(np.where(gt == 2, 1, gt), 3)
    stroke = np.where(scr == 3, 3, np.where(scr == 1, 1, 0)).astype(np.uint8)
    res = refine(image, stroke, spacing=SPACING, prior=wrong)
    assert res.info["prior"]["disagreeing_scribbled_voxels"] == int((scr == 3).sum())
    assert dice(res.labels == 2, gt == 2) > 0.7
    dist = ndimage.distance_transform_edt(scr != 3, sampling=SPACING)
    far = dist > 25
    np.testing.assert_array_equal(res.labels[far], wrong.argmax(0)[far])
    # without the release the stroke stays a speck in the wrong prior
    stuck = refine(image, stroke, spacing=SPACING, prior=wrong, prior_release_mm=0)
    assert dice(stuck.labels == 2, gt == 2) < 0.3


def test_incremental_call_with_the_same_prior_is_local(ambiguous):
    image, gt, scr = ambiguous
    prior = _soft(gt, 3)
    first = refine(image, scr, spacing=SPACING, prior=prior)
    more = scr.copy()
    more[12, 30:33, 20:23] = 2
    inc = refine(image, more, spacing=SPACING, prior=prior, state=first.state, local_pad_mm=4)
    assert inc.info["warm_start"] and inc.info["local"]
    other = refine(image, more, spacing=SPACING, prior=_soft(gt, 3, seed=5), state=first.state)
    assert not other.info["warm_start"]


def _bad(kind, shape):
    p = np.full((3, *shape), 1 / 3, np.float32)
    if kind == "shape":
        return p[:, :, :-1]
    if kind == "3d":
        return p[0]
    if kind == "one":
        return p[:1]
    if kind == "nan":
        p[1, 0, 0, :2] = np.nan
    elif kind == "neg":
        p[2, 1, 1, 1] = -0.5
    elif kind == "complex":
        return p.astype(np.complex64)
    return p


@pytest.mark.parametrize("kind, match", [
    ("shape", r"prior has shape \(3, 24, 47, 48\); .*spatial shape \(24, 48, 48\)"),
    ("3d", r"prior has shape \(24, 48, 48\); a \(K \+ 1, Z, Y, X\)"),
    ("one", r"prior has 1 class channel\(s\); allowed: 2\.\."),
    ("nan", r"prior has 2 NaN/Inf value\(s\)"),
    ("neg", r"prior has negative values \(min -0\.5\)"),
    ("complex", r"prior has dtype complex64"),
])
def test_bad_prior(kind, match):
    image, gt, scr = make_phantom()
    with pytest.raises(LabelEffError, match=match):
        refine(image, scr, spacing=SPACING, prior=_bad(kind, gt.shape))


def test_prior_class_mismatch_and_method_errors():
    image, gt, scr = make_phantom()
    two = _soft(np.minimum(gt, 1), 2)
    with pytest.raises(LabelEffError, match=r"scribbles hold structure\(s\) \[2\] but the "
                                             r"prior has only 2 channels"):
        refine(image, scr, spacing=SPACING, prior=two)
    with pytest.raises(LabelEffError, match=r"boxes of structure\(s\) \[2\] but the prior"):
        refine(image, np.minimum(scr, 2), spacing=SPACING, prior=two,
               boxes=[(2, 0, 0, 0, 4, 4, 4)])
    with pytest.raises(LabelEffError, match=r"method='online' does not accept prior="):
        refine(image, scr, spacing=SPACING, prior=_soft(gt, 3), method="online")
    with pytest.raises(LabelEffError, match=r"nothing constrains the random walker"):
        refine(image, np.zeros_like(scr), spacing=SPACING, prior=two, model_prior_weight=0)


def test_zero_sum_voxels_count_as_uniform():
    image, gt, scr = make_phantom()
    prior = _soft(gt, 3)
    prior[:, 0, :5, :5] = 0
    res = refine(image, scr, spacing=SPACING, prior=prior)
    assert res.info["prior"]["zero_sum_voxels"] == 25
    assert np.isfinite(res.probabilities).all()


def test_a_wrong_model_prior_cannot_pull_refine_below_the_scribbles_alone():
    """prior_check: the prior is weighed against held-out strokes. A confident model that
    calls a 5-voxel rim of background and the whole sphere structure 1 explains the
    user's strokes worse than the scan's own intensities, so it gets no share and the
    result stays at the scribble-only quality (unchecked, it drags Dice far down)."""
    image, gt, scr = make_phantom()
    mz = gt.shape[0] // 2
    strokes = np.zeros_like(scr)
    for dz in (-4, 0, 4):  # the middle slice's strokes, copied where the truth agrees
        strokes[mz + dz] = np.where((scr[mz] > 0) & (gt[mz + dz] == scr[mz] - 1), scr[mz], 0)
    bad = gt.copy()
    bad[ndimage.binary_dilation(gt > 0, iterations=5) & (gt == 0)] = 1
    bad[gt == 2] = 1
    prior = np.stack([ndimage.gaussian_filter((bad == c).astype(np.float32), 1.0)
                      for c in range(3)]) + 0.02

    def mean_dice(res):
        return np.mean([dice(res.labels == c, gt == c) for c in (1, 2)])

    alone = mean_dice(refine(image, strokes, spacing=SPACING, method="randomwalk"))
    checked = refine(image, strokes, spacing=SPACING, prior=prior, method="randomwalk")
    unchecked = refine(image, strokes, spacing=SPACING, prior=prior, method="randomwalk",
                       prior_check=False)
    assert checked.info["prior"]["share"] < 0.5
    assert mean_dice(checked) >= alone - 0.01
    assert mean_dice(unchecked) < alone - 0.1  # the case is one where the check matters
