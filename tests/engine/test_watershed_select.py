"""The marker watershed competes with the intensity model as the walker's unary term
(issue 10, small structures): chosen by held-out strokes when the walker over-reaches,
never where it predicts them worse or claims more than the walker, and every
correction is one of its markers."""

import numpy as np
import pytest

from napari_labeleff.engine import _rw_select as _randomwalk, _watershed, refine

from .conftest import dice

SPACING = (2.0, 1.0, 1.0)
#: the intensity model at full weight whatever its trust (only the selection decides)
LEAKY = {"prior_trust_low": 0.0, "prior_trust_high": 0.0, "prior_weight": 0.3}


def _noisy_lesions(noise=0.25, seed=0, slab=True):
    """Two spherical lesions (0.7) in dark tissue (0.3) next to
    (``slab``) a slab of bright tissue (0.7) that no background stroke touches; short strokes in
    the first lesion on three slices, long background strokes. The walker alone
    shrinks to the strokes; the intensity model leaks into the bright slab."""
    rng = np.random.default_rng(seed)
    shape = (24, 64, 64)
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, SPACING)), indexing="ij")
    image = np.full(shape, 0.3, np.float32)
    if slab:
        image[:, :, 44:] = 0.7
    lesions = []
    for cy in (20, 46):
        r = np.sqrt((z - 24) ** 2 + (y - cy) ** 2 + (x - 22) ** 2)
        image[r <= 8] = 0.7
        lesions.append(r <= 8)
    image += rng.normal(0, noise, shape).astype(np.float32)
    scr = np.zeros(shape, np.uint8)
    for zz in (10, 12, 14):
        scr[zz, 20, 15:18] = 2
        scr[zz, 4:60, 4] = 1
        scr[zz, 60, 4:40] = 1
    return image, lesions, scr


def test_watershed_labels_follow_the_markers():
    image = np.zeros((1, 6, 12, 12), np.float32)
    image[0, :, :, 6:] = 1.0
    seeds = np.full((6, 12, 12), -1)
    seeds[3, 6, 2] = 0
    seeds[3, 6, 9] = 1
    lab = _watershed.labels(image, seeds, (1.0, 1.0, 1.0))
    assert (lab[:, :, :5] == 0).all() and (lab[:, :, 7:] == 1).all()
    p = _watershed.prior(lab, 2, "cpu")
    assert p.shape == (2, 6, 12, 12) and np.allclose(p.sum(0).numpy(), 1.0)
    assert float(p[1, 0, 0, 11]) == pytest.approx(_watershed.LABEL_PROBABILITY)


def test_held_out_strokes_choose_the_watershed_for_a_small_noisy_lesion():
    image, (lesion, _), scr = _noisy_lesions()
    off = refine(image, scr, spacing=SPACING, method="randomwalk", watershed_select=False,
                 prior_select=False, **LEAKY)
    on = refine(image, scr, spacing=SPACING, method="randomwalk", **LEAKY)
    scores = on.info["prior_select_scores"]
    assert off.info["unary"] == "intensity" and dice(off.labels == 1, lesion) < 0.2
    assert on.info["unary"] == "watershed" and "unary: watershed" in on.summary()
    assert scores["watershed"] > max(v for k, v in scores.items() if k != "watershed")
    assert dice(on.labels == 1, lesion) > 0.9


def test_an_intensity_model_that_claims_islands_is_not_eligible():
    """The intensity model predicts the held-out strokes as well as the walker alone,
    but it also calls the second, unscribbled lesion (apart from every stroke) lesion,
    and no held-out stroke confirmed such a part."""
    image, (lesion, _), scr = _noisy_lesions(noise=0.05, slab=False)
    fixed = refine(image, scr, spacing=SPACING, method="randomwalk", prior_select=False,
                   **LEAKY)
    res = refine(image, scr, spacing=SPACING, method="randomwalk", watershed_select=False,
                 **LEAKY)
    scores = res.info["prior_select_scores"]
    assert scores[0.3] >= scores[0.0] and res.info["island_share"] > 2 * _randomwalk.ISLAND_MAX
    assert res.info["unary"] == "none" and res.info["prior_weight"] == 0.0
    assert fixed.info["unary"] == "intensity"
    assert dice(res.labels == 1, lesion) > dice(fixed.labels == 1, lesion) + 0.1


def test_island_share_counts_components_without_strokes():
    labels = np.zeros((4, 10, 10), np.int64)
    labels[:, 1:4, 1:4] = 1  # 36 voxels, holds a stroke of class 1
    labels[:, 6:9, 6:9] = 1  # 36 voxels, none
    labels[:, 6:9, 1:3] = 2  # class 2, holds its stroke
    seeds = np.full(labels.shape, -1)
    seeds[1, 2, 2] = 1
    seeds[1, 7, 1] = 2
    assert _randomwalk._island_share(labels, seeds) == 0.5
    seeds[1, 7, 7] = 1
    assert _randomwalk._island_share(labels, seeds) == 0.0


def test_a_watershed_that_claims_more_than_every_walker_option_is_not_taken():
    """Here the intensity model is not trusted (weight 0): the walker alone keeps to the
    strokes; the watershed predicts the held-out strokes better but would claim more
    than any walker option, its own failure mode (a flood), so the walker stays."""
    image, _, scr = _noisy_lesions(noise=0.2)
    res = refine(image, scr, spacing=SPACING, method="randomwalk")
    scores = res.info["prior_select_scores"]
    assert list(scores) == [0.0, "watershed"] and scores["watershed"] > scores[0.0]
    assert res.info["unary"] == "none"


def test_a_correction_is_a_new_marker_of_the_watershed():
    image, (lesion, _), scr = _noisy_lesions()
    slab = np.zeros(image.shape, bool)
    slab[:, :, 46:] = True
    res = refine(image, scr, spacing=SPACING, method="randomwalk", **LEAKY)
    assert res.info["unary"] == "watershed" and (res.labels[slab] == 1).mean() < 0.05
    more = scr.copy()
    more[12, 30, 52:56] = 2  # the user says: the bright slab is the structure too
    again = refine(image, more, spacing=SPACING, method="randomwalk", state=res.state,
                   **LEAKY)
    assert again.info["warm_start"] and again.info["unary"] == "watershed"
    assert (again.labels[slab] == 1).mean() > 0.9
    assert (again.labels[lesion] == 1).mean() > 0.9


def test_the_watershed_is_not_chosen_where_it_predicts_held_out_strokes_worse():
    """Thin bright slabs alternating with dark ones (interleaved tissues, as grey and
    white matter): a stroke's basin ends at the next dark slab, so the watershed misses
    held-out strokes on other slabs that the intensity model finds. The slabs without a
    stroke are islands of the intensity model's result, but held-out strokes were found
    in such islands (the structure has several parts), so they are kept."""
    rng = np.random.default_rng(1)
    shape = (24, 48, 48)
    slabs = ((np.arange(shape[2]) // 4) % 2 == 1)[None, None, :].repeat(24, 0).repeat(48, 1)
    image = np.where(slabs, 1.0, 0.0).astype(np.float32)
    image += rng.normal(0, 0.1, shape).astype(np.float32)
    scr = np.zeros(shape, np.uint8)
    for i, zz in enumerate((6, 12, 18)):
        scr[zz, 10:38, 5 + 8 * i] = 2
        scr[zz, 10:38, 9 + 8 * i + 16] = 1
    res = refine(image, scr, spacing=SPACING, method="randomwalk",
                 prior_trust_low=0.0, prior_trust_high=0.0)
    scores = res.info["prior_select_scores"]
    assert scores["watershed"] < max(v for k, v in scores.items() if k != "watershed")
    assert res.info["unary"] == "intensity"
    assert res.info["island_share"] > _randomwalk.ISLAND_MAX
    assert res.info["island_hits"] >= _randomwalk.ISLAND_CONFIRM
    assert dice(res.labels == 1, slabs) > 0.9


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_thin_volumes_get_a_watershed_too(depth):
    """ITK's recursive Gaussian refuses axes shorter than 4 voxels; a volume of one to
    three slices must still refine (the check runs on every first call)."""
    image = np.zeros((1, depth, 12, 12), np.float32)
    image[0, :, :, 6:] = 1.0
    seeds = np.full((depth, 12, 12), -1)
    seeds[0, 6, 2] = 0
    seeds[0, 6, 9] = 1
    lab = _watershed.labels(image, seeds, (3.0, 1.0, 1.0))
    assert lab.shape == (depth, 12, 12)
    assert (lab[:, :, :5] == 0).all() and (lab[:, :, 7:] == 1).all()
    scr = np.zeros((depth, 12, 12), np.uint8)
    scr[0, 2:10, 1] = 1
    scr[0, 2:10, 10] = 2
    res = refine(image[0], scr, spacing=(3.0, 1.0, 1.0), method="randomwalk")
    assert (res.labels[:, :, 8:] == 1).all()
