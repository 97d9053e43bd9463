"""Volume-level active learning (issue 9): ranked unannotated volumes with reasons,
diversity in a batch, baselines, bad input."""

import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff.cohort import Project
from napari_labeleff.cohort.services import VOLUME_STRATEGIES, suggest_volumes
from napari_labeleff.io import read_volume, write_volume

from .scale_synth import project  # noqa: F401 (fixture)
from .scale_synth import make_trained_project, write_images

pytestmark = pytest.mark.slow  # a tiny model is trained once for the module (~30 s)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained_al")
    p, gts = make_trained_project(folder, n=7, n_accepted=3)
    p.close()
    return folder, gts


@pytest.mark.parametrize("strategy", VOLUME_STRATEGIES)
def test_every_strategy_ranks_the_unannotated_volumes(project, strategy):
    new = {r.id for r in project.volumes if r.status == "new"}
    out = project.suggest_volumes(n=10, strategy=strategy)
    assert [s.rank for s in out] == list(range(1, len(new) + 1))
    assert {s.volume_id for s in out} == new
    scores = [s.score for s in out]
    assert scores == sorted(scores, reverse=True)
    assert all(s.reason for s in out)
    assert out[0].to_dict()["volume_id"] == out[0].volume_id


def test_random_follows_the_seed(project):
    runs = [[s.volume_id for s in project.suggest_volumes(n=4, strategy="random", seed=s)]
            for s in (0, 0, 5)]
    assert runs[0] == runs[1] and sorted(runs[0]) == sorted(runs[2])


def test_default_batch_does_not_pick_twins(project, tmp_path):
    first = project.suggest_volumes(n=1)[0]
    assert "model uncertainty" in first.reason and first.uncertainty is not None
    # a near-copy of the top volume: as uncertain, so uncertainty alone would pick both
    vol = read_volume(project.volume(first.volume_id).path)
    twin = np.asarray(vol.data) + np.random.default_rng(0).normal(0, 0.01, vol.shape)
    path = tmp_path / "twin.nii.gz"
    write_volume(path, twin.astype(np.float32), vol.geometry)
    twin_id = project.add(path)
    batch = project.suggest_volumes(n=2)
    ids = [s.volume_id for s in batch]
    assert not {first.volume_id, twin_id} <= set(ids), [s.reason for s in batch]
    assert batch[1].diversity < 1.0 and batch[1].score <= batch[0].score
    # once the top volume is annotated, its twin comes last: nothing new to learn there
    project.set_weak_labels(first.volume_id, scribbles=np.where(
        np.arange(np.prod(vol.shape)).reshape(vol.shape) == 0, 1, 0).astype(np.uint8))
    ranking = [s.volume_id for s in project.suggest_volumes(n=10)]
    assert first.volume_id not in ranking
    assert ranking.index(twin_id) >= len(ranking) - 2


def test_bad_input(project, tmp_path):
    with pytest.raises(LabelEffError, match="n must be a positive integer"):
        project.suggest_volumes(n=0)
    with pytest.raises(LabelEffError, match="strategy must be one of"):
        project.suggest_volumes(strategy="entropy")
    images = write_images(tmp_path / "img", 2, first_seed=40)
    with Project.create(tmp_path / "p2", class_names=["ball"]) as p:
        with pytest.raises(LabelEffError, match="has no volumes"):
            suggest_volumes(p)
        a = p.add(images[0][0])
        with pytest.raises(LabelEffError, match="has none yet: train first"):
            suggest_volumes(p, strategy="default")
        with pytest.raises(LabelEffError, match="has none yet"):
            suggest_volumes(p, strategy="foreground_random")
        assert [s.volume_id for s in suggest_volumes(p, strategy="random")] == [a]
        p.accept(a, images[0][1])
        with pytest.raises(LabelEffError, match="nothing to suggest"):
            suggest_volumes(p, strategy="random")
