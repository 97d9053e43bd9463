"""Label QA (issue 9): corrupted masks are flagged with a box where the error is,
clean ones are not; k-fold models are trained once and reused; bad input; masks of
the wrong shape or grid are refused at import."""

import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff.cohort import Project
from napari_labeleff.cohort.services import label_qa
from napari_labeleff.io import Geometry, write_labels

from .scale_synth import project  # noqa: F401 (fixture)
from .scale_synth import TINY, corrupt, make_trained_project, write_images

pytestmark = pytest.mark.slow  # a small model is trained once for the module (~30 s)

BAD = {"vol04": "extra", "vol05": "dilated", "vol06": "half"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """10 volumes; a model trained on the clean masks of the first 4; the other 6
    accepted afterwards, 3 of them corrupted (the model never saw them)."""
    folder = tmp_path_factory.mktemp("trained_qa")
    p, gts = make_trained_project(folder, n=10, n_accepted=4,
                                  options=dict(TINY, max_steps=60))
    for v in list(gts)[4:]:
        p.accept(v, corrupt(gts[v], BAD[v]) if v in BAD else gts[v])
    p.close()
    return folder, gts


def _overlap(a, b) -> bool:
    return all(max(a[d], b[d]) < min(a[d + 3], b[d + 3]) for d in range(3))


def test_corrupted_masks_are_flagged_and_clean_ones_are_not(project, trained):
    _, gts = trained
    items = project.label_qa(folds=0, device="cpu")
    assert {it.volume_id for it in items} == set(BAD)
    assert all(it.doubtful and it.score >= 3.5 for it in items)
    by = {it.volume_id: it for it in items}
    assert "component" in by["vol04"].reason
    assert _overlap(by["vol04"].bbox, (2, 2, 24, 6, 8, 30))  # the false extra component
    assert "edge" in by["vol05"].reason and "inside" in by["vol05"].reason
    assert "outside the mask" in by["vol06"].reason
    missing = (gts["vol06"] > 0) & (corrupt(gts["vol06"], "half") == 0)
    z0, y0, x0, z1, y1, x1 = by["vol06"].bbox
    assert missing[z0:z1, y0:y1, x0:x1].any()
    every = project.label_qa(folds=0, device="cpu", include_all=True)
    assert len(every) == 10 and [it.score for it in every] == sorted(
        (it.score for it in every), reverse=True)
    assert every[0].to_dict()["volume_id"] == every[0].volume_id


def test_kfold_models_are_trained_once_and_reused(project):
    opts = dict(TINY, max_steps=8)
    first = label_qa(project, folds=2, device="cpu", include_all=True, train_options=opts)
    assert len(first) == 10
    models = sorted((project.folder / "qa").glob("*/fold*/model.pt"))
    assert len(models) == 2
    stamps = [m.stat().st_mtime_ns for m in models]
    again = label_qa(project, folds=2, device="cpu", include_all=True, train_options=opts)
    assert [m.stat().st_mtime_ns for m in models] == stamps  # reused, not retrained
    assert [(i.volume_id, round(i.score, 6)) for i in again] == \
        [(i.volume_id, round(i.score, 6)) for i in first]
    # a changed mask means new fold models
    changed = project.labels("vol07")["mask"].copy()
    changed[0, 0, 0] = 1
    project.accept("vol07", changed, replace=True)  # re-accepting replaces only when asked (issue 22)
    label_qa(project, folds=2, device="cpu", train_options=opts)
    assert len(sorted((project.folder / "qa").glob("*/fold*/model.pt"))) == 4


def test_bad_input(project, tmp_path):
    with pytest.raises(LabelEffError, match="folds must be 0"):
        project.label_qa(folds=1)
    with pytest.raises(LabelEffError, match="cannot be split into 20 folds"):
        project.label_qa(folds=20)
    images = write_images(tmp_path / "img", 1, first_seed=70)
    with Project.create(tmp_path / "p2", class_names=["ball"]) as p:
        vid = p.add(images[0][0])
        with pytest.raises(LabelEffError, match="no accepted or imported mask"):
            label_qa(p, folds=0)
        p.accept(vid, images[0][1])
        with pytest.raises(LabelEffError, match="no published model"):
            label_qa(p, folds=0)
        # masks on another grid are refused at import, saying what differs
        rec = p.volume(vid)
        wrong_shape = tmp_path / "shape.nii.gz"
        write_labels(wrong_shape, np.zeros((4, 4, 4), np.uint8), rec.geometry)
        with pytest.raises(LabelEffError, match="has shape"):
            p.import_mask(vid, wrong_shape)
        wrong_grid = tmp_path / "grid.nii.gz"
        write_labels(wrong_grid, images[0][1], Geometry.from_spacing((1.0, 1.0, 1.0)))
        with pytest.raises(LabelEffError, match="not on the voxel grid"):
            p.import_mask(vid, wrong_grid)
