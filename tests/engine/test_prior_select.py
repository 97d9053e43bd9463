"""The intensity-model weight is chosen per scan by held-out strokes (issue 10,
"generalise, do not tune")."""

import numpy as np

from napari_labeleff.engine import refine

from .conftest import dice

SPACING = (2.0, 1.0, 1.0)
#: the intensity model always at full weight, so only the selection can turn it off
FULL_TRUST = {"prior_trust_low": 0.0, "prior_trust_high": 0.0}


def _graded_object():
    """An object whose intensity fades from 1.0 (top) to 0.5 (bottom), and a slab of
    background at 0.5 elsewhere: the intensity model fitted on one stroke of the
    object calls its lower part background, the walker alone follows the object."""
    rng = np.random.default_rng(0)
    shape = (32, 48, 48)
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, SPACING)), indexing="ij")
    obj = ((z - 32) / 26) ** 2 + ((y - 24) / 12) ** 2 + ((x - 24) / 12) ** 2 <= 1
    image = np.zeros(shape, np.float32)
    image[obj] = 1.0 - 0.5 * (z[obj] - 6) / 52
    image[:, :, :6] = 0.5
    image += rng.normal(0, 0.05, shape).astype(np.float32)
    scr = np.zeros(shape, np.uint8)
    for zz in (8, 24):
        scr[zz, 22:26, 20:28] = 2
        scr[zz, 10:40, 1:4] = 1
    scr[16, 2:5, 10:40] = 1
    scr[16, 40:44, 10:40] = 1
    return image, obj, scr


def test_held_out_strokes_turn_a_misleading_intensity_model_off():
    image, obj, scr = _graded_object()
    fixed = refine(image, scr, spacing=SPACING, method="randomwalk", prior_select=False,
                   **FULL_TRUST)
    chosen = refine(image, scr, spacing=SPACING, method="randomwalk", **FULL_TRUST)
    scores = chosen.info["prior_select_scores"]
    assert scores[0.0] > scores[0.1] and chosen.info["prior_weight"] == 0.0
    assert dice(chosen.labels == 1, obj) > dice(fixed.labels == 1, obj) + 0.02
    # an incremental call keeps the first call's choice
    more = scr.copy()
    more[16, 22:26, 20:28] = 2
    again = refine(image, more, spacing=SPACING, method="randomwalk", state=chosen.state,
                   **FULL_TRUST)
    assert again.info["warm_start"] and again.info["prior_weight"] == 0.0


def test_a_helpful_intensity_model_is_kept(binary_phantom):
    image, gt, scr = binary_phantom
    res = refine(image, scr, spacing=SPACING, method="randomwalk", **FULL_TRUST)
    scores = res.info["prior_select_scores"]
    assert res.info["prior_weight"] == 0.1 and scores[0.1] >= scores[0.0]
