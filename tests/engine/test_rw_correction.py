"""A small corrective stroke must not re-define the intensity prior globally."""

import numpy as np

from napari_labeleff.engine import refine


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def test_local_stroke_does_not_flip_lookalike_voxels_far_away():
    rng = np.random.default_rng(0)
    shape = (24, 32, 48)
    gt = np.zeros(shape, bool)
    gt[4:20, 4:28, 4:24] = True  # structure, bright...
    image = np.where(gt, 1.0, 0.0)
    image[8:16, 10:20, 16:24] = 0.6  # ...with a darker part
    image[:, :, 34:44] = 0.6  # far background of look-alike intensity
    image = (image + 0.03 * rng.standard_normal(shape)).astype(np.float32)
    scr = np.zeros(shape, np.int16)
    scr[12, 14:18, 6:12] = 2  # structure scribble on the bright part
    scr[12, 14:18, 28:31] = 1  # background scribbles, dark region
    scr[12, 2, 4:40] = 1
    r0 = refine(image, scr, spacing=(1.0, 1.0, 1.0), method="randomwalk", device="cpu",
                local_pad_mm=4.0)
    d0 = _dice(r0.labels == 1, gt)
    scr2 = scr.copy()
    scr2[12, 14, 18:22] = 2  # correction on the darker part of the structure
    r1 = refine(image, scr2, spacing=(1.0, 1.0, 1.0), method="randomwalk", device="cpu",
                local_pad_mm=4.0,
                state=r0.state)
    d1 = _dice(r1.labels == 1, gt)
    assert d1 >= d0 - 0.01, (d0, d1, r1.info)
    # the look-alike background far from the stroke stays background
    assert (r1.labels[:, :, 36:44] == 0).mean() > 0.95, r1.info
