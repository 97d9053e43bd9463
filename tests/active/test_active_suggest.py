"""Suggestions on hand-built refinement results: every strategy, diversity, class
balance, regions, exclusion and bad input."""

import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff.active import STRATEGIES, Suggestion, suggest, uncertainty_map

from active_synthetic import ANNOTATED, SHAPE, SMALL, make_result

SP = (1.0, 1.0, 1.0)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("axis", [0, 2])
def test_every_strategy_gives_valid_ranking(synthetic, strategy, axis):
    image, scribbles, result, _ = synthetic
    out = suggest(image, scribbles, spacing=SP, result=result, n=6, axis=axis,
                  strategy=strategy, class_names={1: "ball", 2: "cube"})
    assert [s.rank for s in out] == list(range(1, 7))
    scores = [s.score for s in out]
    assert scores == sorted(scores, reverse=True)
    # the strokes lie on axial slice ANNOTATED: only that slice is annotated, along Z;
    # along X no slice holds a stroke drawn in its plane
    annotated = [ANNOTATED] if axis == 0 else []
    idx = [s.index for s in out]
    assert len(set(idx)) == 6
    for s in out:
        assert isinstance(s, Suggestion) and s.kind == "slice" and s.axis == axis
        assert 0 <= s.index < SHAPE[axis] and s.index not in annotated
        assert s.reason.startswith(f"slice {s.index} ")
        assert set(s.classes) <= {0, 1, 2}
        assert s.to_dict()["index"] == s.index


def test_random_strategies_follow_the_seed(synthetic):
    image, scribbles, result, _ = synthetic
    runs = [[s.index for s in suggest(image, scribbles, spacing=SP, result=result,
                                      n=5, strategy="random", seed=seed)]
            for seed in (0, 0, 1)]
    assert runs[0] == runs[1] != runs[2]


def test_foreground_random_prefers_foreground_slices(synthetic):
    image, scribbles, result, _ = synthetic
    fg = np.flatnonzero((result.labels > 0).any(axis=(1, 2)))
    out = suggest(image, scribbles, spacing=SP, result=result, n=len(fg) - 1,
                  strategy="foreground_random", seed=3)
    assert all(s.index in fg for s in out)


def test_equidistant_bisects_from_the_annotated_slice(synthetic):
    image, scribbles, result, _ = synthetic
    out = suggest(image, scribbles, spacing=SP, result=result, n=2,
                  strategy="equidistant")
    fg = np.flatnonzero((result.labels > 0).any(axis=(1, 2)))
    # first: the end of the foreground extent farthest from slice 30; then the middle
    assert out[0].index == fg.min()
    assert abs(out[1].index - (fg.min() + ANNOTATED) / 2) <= 1


def test_default_batch_is_diverse(synthetic):
    image, scribbles, result, _ = synthetic
    default = sorted(s.index for s in suggest(image, scribbles, spacing=SP,
                                              result=result, n=5))
    greedy = sorted(s.index for s in suggest(image, scribbles, spacing=SP,
                                             result=result, n=5, strategy="entropy"))
    assert np.diff(greedy).max() == 1  # pure uncertainty: five neighbouring slices
    assert np.diff(default).min() >= 2
    assert default[-1] - default[0] > 2 * (greedy[-1] - greedy[0])


def test_default_does_not_starve_the_small_structure(synthetic):
    image, scribbles, result, _ = synthetic
    small = range(SMALL[0], SMALL[3])
    entropy = suggest(image, scribbles, spacing=SP, result=result, n=5,
                      strategy="entropy")
    default = suggest(image, scribbles, spacing=SP, result=result, n=5)
    assert not any(s.index in small for s in entropy)
    hits = [s for s in default if s.index in small]
    assert hits and hits[0].classes[0] == 2


def test_reason_names_classes_and_distance(synthetic):
    image, scribbles, result, _ = synthetic
    (s,) = suggest(image, scribbles, spacing=SP, result=result, n=1, strategy="entropy",
                   class_names={0: "background", 1: "ball", 2: "cube"})
    assert "background/ball boundary" in s.reason
    assert f"nearest scribble {abs(s.index - ANNOTATED)} slices away" in s.reason
    (t,) = suggest(image, scribbles, spacing=SP, result=result, n=1, strategy="entropy",
                   class_names=["background", "ball", "cube"])
    assert t.reason == s.reason


def test_regions_cover_the_uncertain_voxels(synthetic):
    image, scribbles, result, _ = synthetic
    out = suggest(image, scribbles, spacing=SP, result=result, n=50,
                  granularity="region", strategy="entropy")
    unc = (uncertainty_map(result) >= 0.5) & (scribbles == 0)
    covered = np.zeros(SHAPE, bool)
    for s in out:
        z0, y0, x0, z1, y1, x1 = s.bbox
        assert s.kind == "region" and z0 <= s.index < z1 and s.axis == 0
        box = unc[z0:z1, y0:y1, x0:x1]
        # tight: uncertain voxels on every face of the box
        for ax in range(3):
            assert np.take(box, 0, axis=ax).any() and np.take(box, -1, axis=ax).any()
        covered[z0:z1, y0:y1, x0:x1] = True
    assert (covered & unc).sum() >= 0.99 * unc.sum()
    small = [s for s in out if 2 in s.classes]
    assert small and all(SMALL[0] - 3 <= s.index < SMALL[3] + 3 for s in small)


def test_regions_are_split_into_blocks(synthetic):
    image, scribbles, result, _ = synthetic
    out = suggest(image, scribbles, spacing=(4.0, 4.0, 4.0), result=result, n=50,
                  granularity="region")
    # 40 mm blocks = 10 voxels: the sphere's connected shell becomes several regions
    assert len(out) > 4
    assert all(s.bbox[d + 3] - s.bbox[d] <= 10 for s in out for d in range(3))


def test_exclude_slices_suggestions_and_boxes(synthetic):
    image, scribbles, result, _ = synthetic
    first = suggest(image, scribbles, spacing=SP, result=result, n=3,
                    strategy="entropy")
    again = suggest(image, scribbles, spacing=SP, result=result, n=3,
                    strategy="entropy", exclude=[first[0], first[1].index])
    assert {s.index for s in again}.isdisjoint({first[0].index, first[1].index})
    assert again[0].index == first[2].index

    regions = suggest(image, scribbles, spacing=SP, result=result, n=2,
                      granularity="region")
    rest = suggest(image, scribbles, spacing=SP, result=result, n=2,
                   granularity="region", exclude=[regions[0], tuple(regions[1].bbox)])
    assert {s.bbox for s in rest}.isdisjoint({regions[0].bbox, regions[1].bbox})


def test_ensemble_members_and_margin(synthetic):
    image, scribbles, result, _ = synthetic
    out = suggest(image, scribbles, spacing=SP, result=result, n=3,
                  uncertainty="mutual_info", others=[result.probabilities[[0, 2, 1]]])
    assert len(out) == 3 and all(s.score > 0 for s in out)
    out = suggest(image, scribbles, spacing=SP, result=result, n=3, uncertainty="margin")
    assert len(out) == 3


def test_all_slices_annotated_is_an_error(synthetic):
    image, _, result, _ = synthetic
    scribbles = np.zeros(SHAPE, np.int16)
    scribbles[:, 0:3, 0:4] = 1  # a stroke on every axial slice
    with pytest.raises(LabelEffError, match="all 40 slices along axis 0"):
        suggest(image, scribbles, spacing=SP, result=result)
    with pytest.raises(LabelEffError, match="already annotated or excluded"):
        suggest(image, scribbles * 0, spacing=SP, result=result, exclude=range(40))
    # other axes still have free slices
    assert suggest(image, scribbles, spacing=SP, result=result, axis=1, n=2)


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 0}, "n must be a positive integer, got 0"),
    ({"n": -3}, "n must be a positive integer"),
    ({"n": 2.5}, "n must be a positive integer"),
    ({"axis": 3}, r"axis must be 0 \(Z\), 1 \(Y\) or 2 \(X\), got 3"),
    ({"axis": -1}, "axis must be"),
    ({"granularity": "volume"}, "granularity must be one of"),
    ({"strategy": "magic"}, "strategy must be one of .*'default'.*got 'magic'"),
    ({"uncertainty": "variance"}, "uncertainty must be one of"),
    ({"uncertainty": "mutual_info"}, "needs an ensemble"),
    ({"spacing": (1.0, 0.0, 1.0)}, "spacing must be 3 positive"),
    ({"exclude": ["slice 3"]}, "exclude items must be"),
    ({"device": "tpu"}, "device='tpu' is unknown"),
])
def test_bad_input(synthetic, kwargs, match):
    image, scribbles, result, _ = synthetic
    args = {"spacing": SP, "result": result, **kwargs}
    with pytest.raises(LabelEffError, match=match):
        suggest(image, scribbles, **args)


def test_result_of_another_volume_is_rejected(synthetic):
    image, scribbles, _, _ = synthetic
    *_, other, _ = make_result(shape=(40, 40, 36), big_centre=(12, 20, 18))
    with pytest.raises(LabelEffError, match=r"result has shape \(40, 40, 36\).*another"):
        suggest(image, scribbles, spacing=SP, result=other)
    with pytest.raises(LabelEffError, match="scribbles must have the image's shape"):
        suggest(image, scribbles[:-1], spacing=SP, result=other)


@pytest.mark.slow  # the engine's default method trains a network, even on 3840 voxels
def test_without_result_refines_first(sphere_volume):
    image, mask = sphere_volume
    scribbles = np.zeros(mask.shape, np.int16)
    scribbles[6, 1:3, 2:18] = 1
    scribbles[6, 7:9, 8:12] = 2
    out = suggest(image, scribbles, spacing=(2.5, 0.9, 0.7), n=3)
    assert [s.rank for s in out] == [1, 2, 3] and all(s.index != 6 for s in out)
    assert all("refinement)" in s.reason for s in out)
