"""Every bad input of refine() gives a one-line LabelEffError naming the problem."""

import numpy as np
import pytest
import torch

from napari_labeleff import LabelEffError
from napari_labeleff.engine import RefineState, refine

SHAPE = (6, 10, 12)


def _ok():
    image = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    scr = np.zeros(SHAPE, np.uint8)
    scr[3, 1, 1:4] = 1
    scr[3, 5, 5:8] = 2
    return image, scr


def _bad_image(kind):
    image, _ = _ok()
    if kind == "nan":
        image[0, 0, :3] = np.nan
    elif kind == "inf":
        image[1, 2, 3] = np.inf
    elif kind == "2d":
        image = image[0]
    elif kind == "5d":
        image = image[None, None]
    elif kind == "complex":
        image = image.astype(np.complex64)
    elif kind == "str":
        image = np.full(SHAPE, "a")
    return image


@pytest.mark.parametrize("kind, match", [
    ("nan", r"image has 3 NaN/Inf voxel\(s\)"),
    ("inf", r"image has 1 NaN/Inf voxel\(s\)"),
    ("2d", r"image has 2 dimensions .*allowed: 3 \(Z, Y, X\) or 4"),
    ("5d", r"image has 5 dimensions"),
    ("complex", r"image has dtype complex64; a numeric"),
    ("str", r"image has dtype <U1"),
])
def test_bad_image(kind, match):
    _, scr = _ok()
    with pytest.raises(LabelEffError, match=match):
        refine(_bad_image(kind), scr, spacing=(1, 1, 1))


@pytest.mark.parametrize("scr, match", [
    (np.zeros((6, 10, 11), np.uint8), r"scribbles have shape \(6, 10, 11\); .* \(6, 10, 12\)"),
    (np.full(SHAPE, 0.5), r"scribbles have dtype float64; an integer array"),
    (np.full(SHAPE, -1, np.int16), r"scribbles hold values -1\.\.-1"),
    (np.full(SHAPE, 300, np.int16), r"scribbles hold values 300\.\.300; allowed"),
])
def test_bad_scribbles(scr, match):
    image, _ = _ok()
    with pytest.raises(LabelEffError, match=match):
        refine(image, scr, spacing=(1, 1, 1))


def test_missing_labels():
    image, scr = _ok()
    with pytest.raises(LabelEffError, match="no scribbles and no boxes"):
        refine(image, np.zeros(SHAPE, np.uint8), spacing=(1, 1, 1))
    with pytest.raises(LabelEffError, match="no structure scribbled"):
        refine(image, np.where(scr == 1, 1, 0).astype(np.uint8), spacing=(1, 1, 1))
    gap = scr.copy()
    gap[gap == 2] = 3  # structure 2 scribbled, structure 1 missing
    with pytest.raises(LabelEffError, match=r"structure\(s\) \[1\] have no scribbles"):
        refine(image, gap, spacing=(1, 1, 1))


@pytest.mark.parametrize("spacing", [(1, 1), (1, 0, 1), (1, -2, 1), (1, np.nan, 1),
                                     "abc", None])
def test_bad_spacing(spacing):
    image, scr = _ok()
    with pytest.raises(LabelEffError, match="spacing="):
        refine(image, scr, spacing=spacing)


@pytest.mark.parametrize("boxes, match", [
    ([(1, 0, 0, 0, 3, 3)], r"boxes\[0\]=.*7 integers"),
    ([(1, 0, 0, 0, 3.5, 3, 3)], r"boxes\[0\]=.*7 integers"),
    ([(0, 0, 0, 0, 3, 3, 3)], r"boxes\[0\] has class 0; allowed: structure ids 1\.\."),
    ([(1, 2, 0, 0, 2, 3, 3)], r"boxes\[0\]=.* is empty; z0 < z1"),
    ([(1, 0, 0, 0, 3, 3, 3), (1, 7, 0, 0, 9, 3, 3)],
     r"boxes\[1\]=.* lies outside the volume of shape \(6, 10, 12\)"),
    ([(1, -5, -5, -5, -1, 3, 3)], r"boxes\[0\]=.* lies outside"),
])
def test_bad_boxes(boxes, match):
    image, _ = _ok()
    with pytest.raises(LabelEffError, match=match):
        refine(image, np.zeros(SHAPE, np.uint8), spacing=(1, 1, 1), boxes=boxes)


def test_partly_outside_box_is_clipped():
    image, _ = _ok()
    # pure noise: the boxes' faces do not stop the structure, which is said
    with pytest.warns(UserWarning, match="cuts the object"):
        res = refine(image, np.zeros(SHAPE, np.uint8), spacing=(1, 1, 1),
                     boxes=[(1, 2, 3, 3, 5, 8, 8), (1, -2, 2, 2, 3, 20, 6)],
                     method="randomwalk")
    assert res.info["boxes_clipped"] == [1]
    assert res.labels.shape == SHAPE


def test_bad_method_device_state_option():
    image, scr = _ok()
    with pytest.raises(LabelEffError, match=r"method='magic' is unknown; allowed: 'auto', .*'randomwalk'"):
        refine(image, scr, spacing=(1, 1, 1), method="magic")
    with pytest.raises(LabelEffError, match=r"device='tpu' is unknown"):
        refine(image, scr, spacing=(1, 1, 1), device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(LabelEffError, match="no CUDA GPU"):
            refine(image, scr, spacing=(1, 1, 1), device="cuda")
    with pytest.raises(LabelEffError, match=r"unknown option\(s\) \['betta'\]"):
        refine(image, scr, spacing=(1, 1, 1), method="randomwalk", betta=3)
    with pytest.raises(LabelEffError, match=r"option beta=-1"):
        refine(image, scr, spacing=(1, 1, 1), method="randomwalk", beta=-1)
    other = RefineState("randomwalk", (6, 10, 13), 2)
    with pytest.raises(LabelEffError, match=r"state comes from a volume of shape \(6, 10, 13\)"):
        refine(image, scr, spacing=(1, 1, 1), state=other)
    with pytest.raises(LabelEffError, match="state has type dict"):
        refine(image, scr, spacing=(1, 1, 1), state={})


def test_state_from_another_method_is_ignored():
    image, scr = _ok()
    foreign = RefineState("someone-else", SHAPE, 2, scr.copy(), {"junk": 1})
    res = refine(image, scr, spacing=(1, 1, 1), method="randomwalk", state=foreign)
    assert res.info["state"].startswith("ignored")
    assert res.info["warm_start"] is False
