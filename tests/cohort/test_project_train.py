"""Project training plumbing with a fake learner: the TrainSpec the store builds,
publishing only when validation is not worse, damaged checkpoints, cancel + resume,
class changes after training, predict and refine with the model as prior (issue 7)."""

import json

import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff.cohort import Project, run_training
from napari_labeleff.cohort.training import read_labels_snapshot

from .project_fakes import SHAPE, FakeLearner, ball, make_volume, scribbles_for


@pytest.fixture
def project(tmp_path):
    p = Project.create(tmp_path / "proj", class_names=["left atrium"])
    for i in range(4):
        p.add(make_volume(tmp_path, f"case{i}", seed=i))
    p.set_weak_labels("case0", scribbles=scribbles_for(), boxes=[(1, 2, 3, 3, 6, 9, 11)])
    p.accept("case1", ball().astype(np.uint8))
    yield p
    p.close()


def test_spec_snapshots_labels_and_roles(project, monkeypatch):
    learner = FakeLearner(scores=[0.7]).install(monkeypatch)
    report = project.train(max_minutes=1, device="cpu", seed=3)
    spec = learner.calls[0]
    roles = {c.volume_id: c.role for c in spec.cases}
    assert roles == {"case0": "labelled", "case1": "labelled", "case2": "unlabeled", "case3": "unlabeled"}
    assert spec.class_names == ("left atrium",)
    assert spec.options == {"max_minutes": 1.0, "device": "cpu", "seed": 3}
    assert spec.init_checkpoint is None
    snap0 = read_labels_snapshot(next(c.labels_path for c in spec.cases if c.volume_id == "case0"),
                                 shape=SHAPE, n_classes=2)
    assert np.array_equal(snap0["scribbles"], scribbles_for()) and snap0["mask"] is None
    assert snap0["boxes"].tolist() == [[1, 2, 3, 3, 6, 9, 11]]
    snap1 = read_labels_snapshot(next(c.labels_path for c in spec.cases if c.volume_id == "case1"))
    assert np.array_equal(snap1["mask"], ball())
    assert report.published and report.version == "v0001" and report.score == 0.7
    assert report.val_score == 0.7  # the learner's report, delegated
    assert "validated on training volumes" in report.message
    assert project.published == "v0001" and project.published.score == 0.7
    assert project.model_dir("v0001").joinpath("model.pt").exists()


def test_publish_only_when_not_worse(project, monkeypatch):
    FakeLearner(scores=[0.7, 0.6, 0.7, 0.9]).install(monkeypatch)
    assert project.train().published
    worse = project.train()
    assert not worse.published and project.published == "v0001"
    assert "0.6000 < 0.7000" in worse.message
    equal = project.train()
    assert equal.published and project.published == "v0003"  # not worse = equal is enough
    better = project.train()
    assert better.published and project.published == "v0004"
    statuses = {m["version"]: m["status"] for m in project.models}
    assert statuses == {"v0001": "superseded", "v0002": "kept", "v0003": "superseded", "v0004": "published"}
    with Project.open(project.folder, read_only=True) as ro:  # survives reopening
        assert ro.published == "v0004" and ro.published.score == 0.9


def test_damaged_new_checkpoint_keeps_the_previous_model(project, monkeypatch):
    learner = FakeLearner(scores=[0.7, 0.95]).install(monkeypatch)
    project.train()
    real = learner.train_steps

    def damaging(spec):
        report = yield from real(spec)
        (project.model_dir("v0002") / "config.json").write_text("{not json")
        return report

    monkeypatch.setattr(learner, "train_steps", damaging)
    import sys
    sys.modules["napari_labeleff.cohort.training"].train_steps = damaging
    report = project.train()
    assert not report.published and project.published == "v0001"
    assert "could not be evaluated" in report.message
    assert {m["version"]: m["status"] for m in project.models}["v0002"] == "damaged"


def test_damaged_published_checkpoint_is_replaced_and_named_when_loading(project, monkeypatch):
    FakeLearner(scores=[0.9, 0.1]).install(monkeypatch)
    project.train()
    (project.model_dir("v0001") / "config.json").write_text("{not json")
    with pytest.raises(LabelEffError, match=r"published model v0001 in .*v0001 cannot be loaded"):
        project.predict("case2")
    report = project.train()  # the old one cannot be scored: the new one replaces it
    assert report.published and "v0001 could not be evaluated" in report.message


def test_cancel_then_resume_continues_the_same_run(project, monkeypatch):
    learner = FakeLearner(scores=[0.8], steps=6).install(monkeypatch)
    gen = project.train_steps()
    for _ in range(3):
        next(gen)
    gen.close()  # cancel
    assert project.published is None and project.models == []
    pending = project._data["pending_run"]
    assert pending["version"] == "v0001"
    report = project.train()
    assert learner.resumed_from == [0, 2]  # the second call picked up the resume state
    assert learner.calls[0].run_dir == learner.calls[1].run_dir
    assert report.version == "v0001" and report.published
    assert project._data["pending_run"] is None


def test_changed_labels_start_a_new_run_instead_of_resuming(project, monkeypatch):
    learner = FakeLearner(scores=[0.8], steps=6).install(monkeypatch)
    gen = project.train_steps()
    next(gen)
    gen.close()
    s = scribbles_for()
    s[1, 1, 1] = 2
    project.set_weak_labels("case0", scribbles=s)
    project.train()
    assert learner.resumed_from == [0, 0]
    assert learner.calls[0].run_dir != learner.calls[1].run_dir
    assert project.published == "v0002"


def test_no_labels_and_bad_options(tmp_path, monkeypatch):
    FakeLearner().install(monkeypatch)
    with Project.create(tmp_path / "p", class_names=["a"]) as p:
        with pytest.raises(LabelEffError, match="no volumes"):
            p.train()
        p.add(make_volume(tmp_path, "x"))
        with pytest.raises(LabelEffError, match="no labels to train on"):
            p.train()
        p.set_weak_labels("x", scribbles=scribbles_for())
        with pytest.raises(LabelEffError, match="max_minutes"):
            p.train(max_minutes=0)
        with pytest.raises(LabelEffError, match="device='tpu'"):
            p.train(device="tpu")
        with pytest.raises(LabelEffError, match="options .* are unknown"):
            p.train(colour="blue")


def test_missing_image_stops_training_with_its_name(project, monkeypatch, tmp_path):
    FakeLearner().install(monkeypatch)
    (tmp_path / "case3.nii.gz").rename(tmp_path / "gone.nii.gz")
    with pytest.raises(LabelEffError, match=r"volume 'case3': image .*case3.nii.gz is missing"):
        project.train()


def test_validation_cases_are_held_out(tmp_path, monkeypatch):
    learner = FakeLearner(scores=[0.5]).install(monkeypatch)
    with Project.create(tmp_path / "p", class_names=["a"]) as p:
        for i in range(3):
            p.add(make_volume(tmp_path, f"v{i}", seed=i))
            p.set_weak_labels(f"v{i}", scribbles=scribbles_for())
        p.set_role("v2", "validation")
        report = p.train()
        roles = {c.volume_id: c.role for c in learner.calls[0].cases}
        assert roles == {"v0": "labelled", "v1": "labelled", "v2": "validation"}
        assert "validated on training volumes" not in report.message
        assert p.models[-1]["validation"] == ["v2"]


def test_class_added_after_training_needs_retraining(project, monkeypatch):
    learner = FakeLearner(scores=[0.8, 0.1]).install(monkeypatch)
    project.train()
    project.add_class("appendage")
    with pytest.raises(LabelEffError, match=r"class list changed after training: model v0001 knows \['left atrium'\]"):
        project.predict("case2")
    report = project.train()
    spec = learner.calls[-1]
    assert spec.init_checkpoint is None  # no warm start from a model with other classes
    assert report.published and "no comparable model" in report.message
    assert project.predict("case2").probabilities.shape == (3, *SHAPE)


def test_predict_scores_and_cache(project, monkeypatch):
    FakeLearner(scores=[0.8]).install(monkeypatch)
    with pytest.raises(LabelEffError, match="no published model yet"):
        project.predict("case2")
    project.train()
    pred = project.predict("case2")
    assert pred.labels.shape == SHAPE and pred.labels.dtype == np.uint8
    assert pred.probabilities.shape == (2, *SHAPE)
    assert np.array_equal(pred.labels, (pred.probabilities[1] > 0.5).astype(np.uint8))
    assert pred.uncertainty.shape == SHAPE and 0 <= pred.uncertainty.min() <= pred.uncertainty.max() <= 1
    assert np.mean(pred.labels == ball()) > 0.95
    model = project.load_model()
    assert project.predict("case2") is pred and model.calls == 1  # cached
    row = {r["id"]: r for r in project.table()}["case2"]
    assert 0.5 < row["quality"] <= 1 and 0 <= row["uncertainty"] < 0.5
    assert project.volume("case2").scores["model"] == "v0001"


def test_refine_uses_the_model_as_prior(project, monkeypatch):
    FakeLearner(scores=[0.8]).install(monkeypatch)
    empty = np.zeros(SHAPE, np.uint8)
    with pytest.raises(LabelEffError):
        project.refine("case2", empty)  # no model, no scribbles: nothing to refine from
    project.train()
    res = project.refine("case2", empty)  # the draft: the prior regularised by the graph
    assert res.info["project_prior"].startswith("prior from model v0001: used unchecked")
    assert "prior" in res.info
    assert np.mean(res.labels == ball()) > 0.95
    s = np.zeros(SHAPE, np.uint8)
    s[4, 6, 7] = 1  # a background stroke inside the ball wins locally
    res2 = project.refine("case2", s)
    assert res2.labels[4, 6, 7] == 0


def test_a_model_weak_on_full_masks_is_not_used_as_prior(project, monkeypatch):
    """A model whose validation Dice on full masks is below PRIOR_MIN_DICE would pull
    refine below the scribbles alone: refine leaves it out (except as the draft of a
    volume with nothing drawn), unless use_prior=True."""
    FakeLearner(scores=[0.8], mask_score=0.5).install(monkeypatch)
    project.set_role("case1", "validation")
    project.train()
    assert project.models[-1]["mask_score"] == 0.5
    use, why = project.prior_use()
    assert not use and "0.500 < 0.8" in why
    s = np.zeros(SHAPE, np.uint8)
    s[4, 8, 8], s[0, 0, 0] = 2, 1
    res = project.refine("case2", s)
    assert "prior" not in res.info and "not used" in res.info["project_prior"]
    forced = project.refine("case2", s, use_prior=True)
    assert "prior" in forced.info
    draft = project.refine("case2", np.zeros(SHAPE, np.uint8))
    assert "nothing drawn yet" in draft.info["project_prior"] and "prior" in draft.info


def test_a_model_good_on_full_masks_is_used_as_prior(project, monkeypatch):
    FakeLearner(scores=[0.9, 0.9], mask_score=0.9).install(monkeypatch)
    project.train()  # validated on its own training volumes: not trusted
    use, why = project.prior_use()
    assert not use and "comes from the volumes it trained on" in why
    project.set_role("case1", "validation")  # a held-out volume with a mask
    project.train()
    s = np.zeros(SHAPE, np.uint8)
    s[4, 8, 8], s[0, 0, 0] = 2, 1
    res = project.refine("case2", s)
    assert "prior" in res.info and res.info["project_prior"].endswith("full masks 0.900")


def test_log_records_the_published_model(project, monkeypatch):
    FakeLearner(scores=[0.8]).install(monkeypatch)
    project.train()
    project.log_annotation("case2", "correction", class_name="left atrium", voxels=3, seconds=2)
    assert project.annotation_log("case2")[-1]["model"] == "v0001"


def test_run_training_needs_no_project(project, monkeypatch):
    """The plan is picklable and run_training works without the store (another process)."""
    import pickle

    FakeLearner(scores=[0.8]).install(monkeypatch)
    plan = pickle.loads(pickle.dumps(project.prepare_training(max_minutes=1)))
    gen = run_training(plan)
    messages = []
    try:
        while True:
            messages.append(next(gen).message)
    except StopIteration as stop:
        outcome = stop.value
    assert messages[-1] == "validated" and outcome.score == 0.8
    report = project.finish_training(pickle.loads(pickle.dumps(outcome)))
    assert report.published
    assert json.loads((project.folder / "project.json").read_text())["published"] == "v0001"


@pytest.mark.slow  # ~16 s on an idle 2-core machine, several times that under load
def test_real_learner_end_to_end(tmp_path):
    """The store with the real learner (tiny budget): spec accepted, checkpoint written,
    evaluated, published, loaded; predict and refine with the prior run on it."""
    from .learning_synth import make_volume as synth, slice_scribbles
    from napari_labeleff.io import Geometry, write_volume

    with Project.create(tmp_path / "p", class_names=["ball"]) as p:
        for i in range(3):
            image, gt = synth(i)
            path = tmp_path / f"s{i}.nii.gz"
            write_volume(path, image, Geometry.from_spacing((2.0, 1.0, 1.0)))
            vid = p.add(path)
            if i < 2:
                p.set_weak_labels(vid, scribbles=slice_scribbles(gt))
        report = p.train(max_minutes=1, device="cpu", max_steps=3, semi=True, val_every=100)
        assert report.version == "v0001" and report.score is not None
        assert report.published and p.published == "v0001"
        assert (p.model_dir("v0001") / "model.pt").exists()
        pred = p.predict("s2")
        assert pred.probabilities.shape == (2, 16, 32, 32)
        assert np.allclose(pred.probabilities.sum(0), 1, atol=1e-3)
        res = p.refine("s2", np.zeros((16, 32, 32), np.uint8))
        # the interactive network with no running score yet leads half-way (its draft)
        assert res.labels.shape == (16, 32, 32) and res.info["project_mode"] == "fused"
        plain = p.refine("s2", np.zeros((16, 32, 32), np.uint8), mode="prior")
        assert "prior" in plain.info


@pytest.mark.slow
def test_real_learner_in_a_background_process(tmp_path):
    """run_training(background=True): the learner runs in a spawned process (as in the
    GUI); closing the generator cancels it and the next run resumes."""
    from .learning_synth import make_volume as synth, slice_scribbles
    from napari_labeleff.io import Geometry, write_volume

    with Project.create(tmp_path / "p", class_names=["ball"]) as p:
        for i in range(2):
            image, gt = synth(i)
            path = tmp_path / f"s{i}.nii.gz"
            write_volume(path, image, Geometry.from_spacing((2.0, 1.0, 1.0)))
            p.set_weak_labels(p.add(path), scribbles=slice_scribbles(gt))
        plan = p.prepare_training(max_minutes=1, device="cpu", max_steps=4, semi=False, val_every=100)
        gen = run_training(plan, background=True)
        try:
            while True:
                progress = next(gen)
                if getattr(progress, "stage", "") == "train":
                    break  # the child is training: cancel it
        finally:
            gen.close()
        again = p.prepare_training(max_minutes=1, device="cpu", max_steps=4, semi=False, val_every=100)
        assert again.resumed and again.version == plan.version
        gen = run_training(again, background=True)
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            outcome = stop.value
        report = p.finish_training(outcome)
        assert report.published and p.published == plan.version
        assert (p.model_dir(plan.version) / "model.pt").exists()


def test_class_added_in_the_gui_session_while_it_is_open(project, monkeypatch):
    """Training while the GUI holds a volume's session: the project adopts a class the
    session added, without opening the (locked) session itself."""
    learner = FakeLearner(scores=[0.8]).install(monkeypatch)
    session = project.session("case0")  # what the GUI holds
    try:
        session.add_class("appendage")
        report = project.train()
        assert report.published and learner.calls[0].class_names == ("left atrium", "appendage")
        assert project.class_names == ["left atrium", "appendage"]
    finally:
        session.close()
    with pytest.raises(LabelEffError, match=r"classes \['other'\] differ from the project's"):
        project.adopt_classes(["other"])
