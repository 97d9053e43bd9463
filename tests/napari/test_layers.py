"""Layer <-> array adapters (no viewer needed)."""

import numpy as np
import pytest

from napari_labeleff._napari._layers import (
    accept_into,
    boxes_to_shapes,
    mask_colormap,
    painted_region,
    scribble_colormap,
    shapes_to_boxes,
    VISIBLE_BACKGROUND,
)


def rect(axis, k, a0, b0, a1, b1):
    """Rectangle drawn on slice k of ``axis`` with in-plane corners (a0, b0)-(a1, b1)."""
    corners = [(a0, b0), (a0, b1), (a1, b1), (a1, b0)]
    out = []
    for a, b in corners:
        v = [a, b]
        v.insert(axis, k)
        out.append(v)
    return np.array(out, float)


def feats(cls, before=None, after=None):
    n = len(cls)
    return {"class_id": cls, "before": before or [0] * n, "after": after or [0] * n}


def test_rectangle_on_any_axis_is_a_one_slice_box():
    shape = (20, 30, 40)
    data = [rect(0, 5, 2.2, 3.0, 10.0, 12.7), rect(2, 7, 1, 1, 4, 4)]
    boxes = shapes_to_boxes(data, feats([1, 2]), shape)
    assert (1, 5, 3, 3, 6, 11, 13) in boxes  # voxel centres inside the rectangle
    assert (2, 1, 1, 7, 5, 5, 8) in boxes


def test_slice_range_makes_3d_box_and_is_clipped():
    boxes = shapes_to_boxes([rect(0, 2, 0, 0, 9, 9)], feats([1], [5], [3]), (10, 10, 10))
    assert boxes == [(1, 0, 0, 0, 6, 10, 10)]


def test_two_rectangles_same_class_form_one_3d_box():
    data = [rect(0, 4, 2, 2, 8, 8), rect(0, 10, 3, 3, 9, 9), rect(0, 6, 20, 20, 25, 25)]
    boxes = shapes_to_boxes(data, feats([1, 1, 1]), (16, 32, 32))
    assert sorted(boxes) == [(1, 4, 2, 2, 11, 10, 10), (1, 6, 20, 20, 7, 26, 26)]


def test_other_class_and_out_of_volume_boxes():
    data = [rect(0, 4, 2, 2, 8, 8), rect(0, 10, 3, 3, 9, 9), rect(0, 50, 1, 1, 2, 2)]
    boxes = shapes_to_boxes(data, feats([1, 2, 1]), (16, 32, 32))
    assert sorted(boxes) == [(1, 4, 2, 2, 5, 9, 9), (2, 10, 3, 3, 11, 10, 10)]


def test_boxes_round_trip_through_shapes():
    boxes = [(1, 3, 4, 5, 9, 12, 14), (2, 0, 0, 0, 1, 5, 5)]
    data, features = boxes_to_shapes(boxes)
    assert shapes_to_boxes(data, features, (20, 20, 20)) == boxes


def test_painted_region_from_both_atom_kinds():
    class Masked:
        def __init__(self, key):
            self.slice_key = key

    item = [
        Masked((slice(3, 4), slice(10, 20), slice(5, 9))),
        ((np.array([3, 3]), np.array([25, 26]), np.array([1, 2])), None, 2),
    ]
    assert painted_region(item, (8, 40, 40)) == (3, 10, 1, 4, 27, 9)
    assert painted_region([], (8, 40, 40)) is None


def test_colormaps_follow_scribble_and_mask_conventions():
    colors = {0: "#405060", 1: "#ff0000", 2: "#00ff00"}
    s = scribble_colormap(colors)
    m = mask_colormap(colors)
    assert np.allclose(s.color_dict[1][:3], [0x40 / 255, 0x50 / 255, 0x60 / 255])  # background
    dark = scribble_colormap({0: (0.0, 0.0, 0.0), 1: (1.0, 0.0, 0.0)})
    assert np.allclose(dark.color_dict[1][:3], VISIBLE_BACKGROUND)  # black stays visible
    assert np.allclose(s.color_dict[2], [1, 0, 0, 1])
    assert np.allclose(m.color_dict[1], [1, 0, 0, 1])
    assert m.color_dict[0][3] == 0 and s.color_dict[0][3] == 0


def test_accept_all_class_and_region():
    refined = np.zeros((4, 10, 10), np.uint8)
    refined[:, 1:3, 1:3] = 1
    refined[:, 6:9, 6:9] = 1
    refined[:, 1:3, 6:9] = 2
    final = np.zeros_like(refined)
    final[0, 5, 5] = 2

    new, region = accept_into(final, refined)
    assert np.array_equal(new, refined) and region

    new, _ = accept_into(final, refined, classes=[2])
    assert new[0, 5, 5] == 0 and np.array_equal(new == 2, refined == 2)
    assert not np.any(new == 1)

    new, region = accept_into(final, refined, at=(1, 7, 7))
    assert np.array_equal(new == 1, (refined == 1) & (np.arange(10)[None, :, None] > 5))
    assert region == (slice(0, 4), slice(6, 9), slice(6, 9))
    assert final.sum() == 2  # input untouched

    with pytest.raises(ValueError, match="outside the volume"):
        accept_into(final, refined, at=(9, 0, 0))
