"""Issue 9, item 4: suggestions reach the structures being segmented, a slice is
annotated along an axis only where it holds strokes drawn in its plane, "looks right"
freezes only the confident interior, mutual information needs an ensemble."""

import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff.active import (annotated_slices, available_kinds, check_options,
                                    confirmed_labels, suggest)
from napari_labeleff.engine import RefineResult, RefineState

from active_synthetic import ANNOTATED, SHAPE, make_lesion, make_two_structures

SP = (1.0, 1.0, 1.0)


def test_axial_strokes_leave_sagittal_slices_free(synthetic):
    image, scribbles, result, _ = synthetic  # strokes on axial slice ANNOTATED only
    along_x = suggest(image, scribbles, spacing=SP, result=result, n=SHAPE[2], axis=2,
                      strategy="random")
    assert len(along_x) == SHAPE[2]  # every sagittal slice may still be suggested
    along_z = suggest(image, scribbles, spacing=SP, result=result, n=SHAPE[0], axis=0,
                      strategy="random")
    assert ANNOTATED not in [s.index for s in along_z]
    assert len(along_z) == SHAPE[0] - 1


def test_annotated_slices_per_axis_and_class():
    s = np.zeros((20, 20, 20), np.int16)
    s[5, 2:5, 3:15] = 2          # axial stroke of structure 1 (3 voxels wide)
    s[5, 17:20, 3:9] = 1         # background on the same slice
    s[3:16, 12:15, 8] = 3        # sagittal stroke of structure 2 (x = 8)
    s[10, 8, 2:12] = 2           # a thin (1 voxel) axial line of structure 1
    z = annotated_slices(s, 0, 4)
    assert np.flatnonzero(z.any(1)).tolist() == [5, 10]
    assert z[5].tolist() == [True, True, False, False]
    assert z[10].tolist() == [False, True, False, False]
    y = annotated_slices(s, 1, 4)
    assert np.flatnonzero(y.any(1)).tolist() == [8]  # the thin line is straight: ambiguous
    x = annotated_slices(s, 2, 4)
    assert np.flatnonzero(x.any(1)).tolist() == [8]  # only the sagittal stroke's slice
    assert x[8].tolist() == [False, False, True, False]


def test_default_reaches_a_small_lesion():
    image, scribbles, result, gt = make_lesion()
    zs = np.flatnonzero(gt.any(axis=(1, 2)))
    lo, hi = zs.min() - 2, zs.max() + 2
    out = suggest(image, scribbles, spacing=SP, result=result, n=3,
                  class_names=["background", "lesion"])
    assert all(lo <= s.index <= hi for s in out), [s.index for s in out]
    assert "serves lesion" in out[0].reason
    # the uncertain block far from the lesion is what plain uncertainty goes to
    ent = suggest(image, scribbles, spacing=SP, result=result, n=3, strategy="entropy")
    assert all(s.index < 16 for s in ent)
    (region,) = suggest(image, scribbles, spacing=SP, result=result, n=1,
                        granularity="region")
    z0, y0, x0, z1, y1, x1 = region.bbox
    assert gt[z0:z1, y0:y1, x0:x1].any()


def test_class_with_fewer_annotated_slices_gets_the_first_slice():
    image, scribbles, result, gt = make_two_structures()
    out = suggest(image, scribbles, spacing=SP, result=result, n=3)
    small = np.flatnonzero((gt == 2).any(axis=(1, 2)))
    assert small.min() - 2 <= out[0].index <= small.max() + 2
    assert out[0].classes[0] == 2
    # once the small structure holds as many stroked slices, the big one comes first
    more = scribbles.copy()
    for z in (32, 40):
        more[z, 19:22, 17:24] = 3
    out = suggest(image, more, spacing=SP, result=result, n=1)
    big = np.flatnonzero((gt == 1).any(axis=(1, 2)))
    assert big.min() - 3 <= out[0].index <= big.max() + 3 and out[0].classes[0] == 1


def _uncertain_slice_result():
    """A 1-structure result whose slice 4 holds a confident square and a doubtful one."""
    shape = (8, 20, 20)
    p1 = np.full(shape, 0.02, np.float32)
    p1[4, 2:9, 2:9] = 0.97    # confident structure
    p1[4, 11:18, 11:18] = 0.6  # predicted structure, but doubtful
    p = np.stack([1 - p1, p1])
    labels = (p1 > 0.5).astype(np.uint8)
    return RefineResult(labels=labels, probabilities=p, uncertainty=np.zeros(shape),
                        method="synthetic", device="cpu", state=RefineState("s", shape, 2))


def test_looks_right_freezes_only_the_confident_interior():
    res = _uncertain_slice_result()
    scribbles = np.zeros(res.labels.shape, np.int16)
    scribbles[4, 0, 0] = 1
    idx, values = confirmed_labels(res, scribbles, (4, 0, 0, 5, 20, 20))
    written = np.zeros(res.labels.shape, np.int32)
    written[idx] = values
    assert set(np.unique(idx[0])) == {4}
    assert (written[4, 3:8, 3:8] == 2).all()       # confident interior -> structure seeds
    assert not written[4, 2, 2]                     # eroded rim stays free
    assert not written[4, 11:18, 11:18].any()       # doubtful labels are not frozen
    assert (written[4, 15:, 0:5] == 1).all()        # confident background
    assert written[4, 0, 0] == 0                    # existing scribbles kept
    # the threshold is the caller's: 0.5 freezes the doubtful square's interior too
    idx, values = confirmed_labels(res, scribbles, (4, 0, 0, 5, 20, 20),
                                   min_probability=0.5)
    written[:] = 0
    written[idx] = values
    assert (written[4, 12:17, 12:17] == 2).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"min_probability": 0.0}, "min_probability must be in"),
    ({"margin": -1}, "margin must be a non-negative integer"),
])
def test_confirmed_labels_bad_input(kwargs, match):
    res = _uncertain_slice_result()
    with pytest.raises(LabelEffError, match=match):
        confirmed_labels(res, np.zeros(res.labels.shape), (4, 0, 0, 5, 20, 20), **kwargs)


def test_mutual_information_needs_an_ensemble(synthetic):
    image, scribbles, result, _ = synthetic
    assert available_kinds(1) == ("entropy", "margin")
    assert "mutual_info" in available_kinds(2)
    with pytest.raises(LabelEffError, match="needs an ensemble"):
        check_options(3, 0, "slice", "default", "mutual_info", n_members=1)
    check_options(3, 0, "slice", "default", "mutual_info", n_members=2)
    with pytest.raises(LabelEffError, match="needs an ensemble"):
        suggest(image, scribbles, spacing=SP, result=result, uncertainty="mutual_info")
