"""Hybrid training (``cohort.training.train_steps``) and the background process, on tiny
synthetic cohorts where a threshold does NOT solve the task (see ``learning_synth``)."""

import json
import os

import numpy as np
import pytest
import torch

from napari_labeleff._errors import LabelEffError
from napari_labeleff.cohort.training import train_in_background
from napari_labeleff.cohort.prediction import load_model, mean_dice
from napari_labeleff.cohort.training import TrainCase, TrainSpec, write_labels_snapshot
from napari_labeleff.cohort.training import train_steps

from .learning_synth import make_spec, make_volume, write_case


def run(gen):
    """Drive a generator to the end; return (progress list, report)."""
    seen = []
    try:
        while True:
            seen.append(next(gen))
    except StopIteration as stop:
        return seen, stop.value


def _val_dice(out_dir, seeds=(300, 301)):
    model = load_model(out_dir, device="cpu")
    model.config["single_component"] = []  # the network alone, without post-processing
    scores = []
    for s in seeds:
        image, gt = make_volume(s)
        pred = model.predict(image, (1.0, 1.0, 1.0)).argmax(0)
        scores.append(mean_dice(pred, gt, 2))
    return float(np.mean(scores))


def test_training_learns_what_a_threshold_cannot(tmp_path):
    spec = make_spec(tmp_path, n_labelled=3, kind="mask", options={"max_steps": 60, "semi": False,
                                                                    "learning_rate": 1e-2, "val_every": 30})
    progress, report = run(train_steps(spec))
    assert report.steps == 60
    assert {p.stage for p in progress} >= {"prepare", "train", "validate", "save"}
    losses = [e["loss"] for e in report.log if e.get("stage") == "train"]
    assert np.mean(losses[-2:]) < losses[0]  # loss goes down
    for f in ("model.pt", "config.json", "train_log.jsonl", "score.json"):
        assert os.path.exists(os.path.join(spec.out_dir, f))
    config = json.load(open(os.path.join(spec.out_dir, "config.json")))
    assert config["class_names"] == ["ball"] and config["n_classes"] == 2
    assert config["single_component"] == [True]  # the masks show one ball
    trained = _val_dice(spec.out_dir)
    thresholds = []
    for s in (300, 301):
        image, gt = make_volume(s)
        thresholds.append(mean_dice((image > 50).astype(np.uint8), gt, 2))
    assert trained > np.mean(thresholds) + 0.1, (trained, thresholds)
    # the untrained network (same config, initial weights) is far worse
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    torch.manual_seed(0)
    from napari_labeleff.cohort.training import build_network

    torch.save(build_network(config).state_dict(), untrained / "model.pt")
    json.dump(config, open(untrained / "config.json", "w"))
    assert trained > _val_dice(untrained) + 0.2
    assert report.val_score == pytest.approx(json.load(open(os.path.join(spec.out_dir, "score.json")))["val_score"])


def _weights(path):
    return torch.load(os.path.join(path, "model.pt"), weights_only=True)


@pytest.mark.parametrize("extra", [{"semi": True}, {"semi": False, "self_training": 0.25}],
                         ids=["mean_teacher", "self_training"])
def test_cancel_leaves_resumable_state_and_resume_is_exact(tmp_path, extra):
    opts = {"max_steps": 8, "val_every": 100, **extra}
    spec = make_spec(tmp_path, n_labelled=2, n_unlabeled=1, kind="mask", options=opts)
    gen = train_steps(spec)
    for p in gen:
        if p.stage == "train" and p.step == 3:
            break
    gen.close()  # cancel
    resume = torch.load(os.path.join(spec.run_dir, "resume.pt"), weights_only=False)
    assert resume["run"]["step"] == 3 and resume["run"]["stage"] == "train"
    # self-training labelled the unlabeled volume at 25% of the steps; a resumed run
    # must train on the same labels (read back from the run folder)
    assert resume["run"]["self_step"] == (2 if "self_training" in extra else None)
    assert not os.path.exists(os.path.join(spec.out_dir, "model.pt"))
    progress, report = run(train_steps(spec))  # same spec: resumes
    first_train = [p for p in progress if p.stage == "train"][0]
    assert "resumed at step 3" in [p for p in progress if "resumed" in p.message][0].message
    assert first_train.step == 4
    assert report.steps == 8 and report.info["resumed_from"] == 3
    # an uninterrupted run of the same spec ends with the same weights
    ref = make_spec(tmp_path, n_labelled=2, n_unlabeled=1, kind="mask", options=opts,
                    out="models/ref", run="runs/ref")
    _, ref_report = run(train_steps(ref))
    a, b = _weights(spec.out_dir), _weights(ref.out_dir)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    # rerunning a finished spec is refused clearly (its out_dir holds the model)
    with pytest.raises(LabelEffError, match="already holds a model"):
        next(train_steps(spec))


def test_weak_labels_boxes_semi_and_pretraining_run(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    cases = []
    for i, kind in enumerate(["scribbles", "boxes", "mask"]):
        img, lab, _ = write_case(data, f"c{i}", 100 + i, kind=kind)
        cases.append(TrainCase(f"c{i}", img, lab, "labelled"))
    img, _, _ = write_case(data, "u0", 200, kind="none")
    cases.append(TrainCase("u0", img, None, "unlabeled"))
    spec = make_spec(tmp_path, n_labelled=0, n_val=0)
    spec = TrainSpec(cases=tuple(cases), class_names=("ball",), out_dir=spec.out_dir, run_dir=spec.run_dir,
                     options={**spec.options, "max_steps": 8, "semi": True, "pretrain": True})
    progress, report = run(train_steps(spec))
    stages = {p.stage for p in progress}
    assert "pretrain" in stages and report.info["pretrain_steps"] >= 1
    assert report.info["semi"] and report.info["n_unlabeled"] == 1
    assert set(report.info["pseudo_labels"]) == {"c0", "c1"}  # weak cases only, not the mask
    assert any("box" in e for e in report.log if e.get("stage") == "train")
    assert any("cons" in e for e in report.log if e.get("stage") == "train")
    assert report.val_score is None  # no validation case


def test_no_labels_at_all_is_a_clear_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    img, _, gt = write_case(data, "a", 1, kind="none")
    empty = write_labels_snapshot(data / "a.npz", np.zeros(gt.shape, np.uint8))
    spec = TrainSpec(cases=(TrainCase("a", img, empty, "labelled"),), class_names=("ball",),
                     out_dir=str(tmp_path / "m"), run_dir=str(tmp_path / "r"), options={"device": "cpu"})
    with pytest.raises(LabelEffError, match="hold no scribbles, boxes or masks"):
        run(train_steps(spec))
    spec2 = TrainSpec(cases=(TrainCase("a", img, None, "unlabeled"),), class_names=("ball",),
                      out_dir=str(tmp_path / "m"), run_dir=str(tmp_path / "r"), options={"device": "cpu"})
    with pytest.raises(LabelEffError, match="no volume has role 'labelled'"):
        run(train_steps(spec2))


def test_class_count_mismatch_is_a_clear_error(tmp_path):
    spec = make_spec(tmp_path, n_labelled=1, n_val=0, options={"max_steps": 1, "semi": False})
    run(train_steps(spec))
    # warm start from a checkpoint trained for another class list
    two = make_spec(tmp_path, n_labelled=1, n_val=0, options={"max_steps": 1}, out="models/v2", run="runs/r2",
                    init=spec.out_dir, class_names=("ball", "plate"))
    with pytest.raises(LabelEffError, match="class list changed"):
        run(train_steps(two))
    # labels beyond the class list
    data = tmp_path / "data"
    img, _, gt = write_case(data, "x", 7, kind="none")
    bad = write_labels_snapshot(data / "x.npz", np.where(gt > 0, 3, 0))  # structure 2 of 1
    spec3 = TrainSpec(cases=(TrainCase("x", img, bad, "labelled"),), class_names=("ball",),
                      out_dir=str(tmp_path / "m3"), run_dir=str(tmp_path / "r3"), options={"device": "cpu"})
    with pytest.raises(LabelEffError, match="class list was changed|class list changed"):
        run(train_steps(spec3))


def test_bad_inputs_channels_missing_file_damaged_init(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    a, la, _ = write_case(data, "a", 1, kind="mask")
    b, lb, _ = write_case(data, "b", 2, kind="mask", channels=2)
    common = {"out_dir": str(tmp_path / "m"), "run_dir": str(tmp_path / "r"), "options": {"device": "cpu"}}
    mixed = TrainSpec(cases=(TrainCase("a", a, la), TrainCase("b", b, lb)), class_names=("ball",), **common)
    with pytest.raises(LabelEffError, match="different channel counts"):
        run(train_steps(mixed))
    missing = TrainSpec(cases=(TrainCase("a", str(data / "gone.nii.gz"), la),), class_names=("ball",), **common)
    with pytest.raises(LabelEffError, match="missing"):
        run(train_steps(missing))
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text("{}")
    (damaged / "model.pt").write_bytes(b"not a checkpoint")
    warm = TrainSpec(cases=(TrainCase("a", a, la),), class_names=("ball",), init_checkpoint=str(damaged), **common)
    with pytest.raises(LabelEffError, match="config.json lacks"):
        run(train_steps(warm))
    with pytest.raises(LabelEffError, match="unknown"):
        TrainSpec(cases=(TrainCase("a", a, la),), class_names=("ball",), out_dir="m", run_dir="r",
                  options={"epochs": 3})


def test_background_process_relays_progress_and_result(tmp_path):
    spec = make_spec(tmp_path, n_labelled=1, n_val=0, options={"max_steps": 3, "semi": False})
    progress, report = run(train_in_background(spec))
    assert progress[0].stage == "start"
    assert [p.step for p in progress if p.stage == "train"] == [1, 2, 3]
    assert report.steps == 3 and os.path.exists(os.path.join(report.out_dir, "model.pt"))
    assert report.info["pid"] != os.getpid()


def test_background_process_cancels_and_errors(tmp_path):
    spec = make_spec(tmp_path, n_labelled=1, n_val=0, options={"max_steps": 10_000, "semi": False})
    gen = train_in_background(spec)
    for p in gen:
        if p.stage == "train" and p.step >= 2:
            break
    gen.close()  # cancel: the child saves its resume state and exits
    resume = torch.load(os.path.join(spec.run_dir, "resume.pt"), weights_only=False)
    assert resume["run"]["step"] >= 2 and resume["run"]["stage"] == "train"
    bad = TrainSpec(cases=(TrainCase("a", str(tmp_path / "nope.nii.gz"), None, "unlabeled"),),
                    class_names=("ball",), out_dir=str(tmp_path / "m"), run_dir=str(tmp_path / "r"))
    with pytest.raises(LabelEffError, match="no volume has role 'labelled'"):
        run(train_in_background(bad))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_cuda_with_mixed_precision(tmp_path):
    spec = make_spec(tmp_path, n_labelled=2, n_unlabeled=1, options={"max_steps": 4, "device": "cuda"})
    _, report = run(train_steps(spec))
    assert report.info["device"].startswith("cuda") and report.info["amp"]
    assert report.info["mc_passes"] == 8
    model = load_model(spec.out_dir, device="cuda")
    image, _ = make_volume(300)
    p = model.predict(image, (1.0, 1.0, 1.0))
    assert p.shape == (2, *image.shape) and np.allclose(p.sum(0), 1, atol=1e-4)


def test_disk_full_while_saving_is_a_clear_error_and_publishes_nothing(tmp_path, monkeypatch):
    import errno

    from napari_labeleff.cohort.training import _checkpoint as _train

    spec = make_spec(tmp_path, n_labelled=1, n_val=0, options={"max_steps": 2, "semi": False})
    real_save = torch.save

    def full(obj, path, *a, **k):
        if str(path).startswith(spec.out_dir):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(_train.torch, "save", full)
    with pytest.raises(LabelEffError, match="disk full"):
        run(train_steps(spec))
    assert not os.path.exists(os.path.join(spec.out_dir, "model.pt"))
    assert not [f for f in os.listdir(spec.out_dir) if ".tmp-" in f]


def test_pseudo_labels_are_confident_interiors_and_cached_by_content(tmp_path):
    from napari_labeleff.cohort.training import prepare_case
    from napari_labeleff.cohort.training import pseudo_labels as _pseudo_labels
    from .learning_synth import slice_scribbles

    spec = make_spec(tmp_path, n_labelled=1, n_val=0, kind="scribbles")
    case = spec.cases[0]
    config = {"in_channels": 1, "target_spacing": [1.0, 1.0, 1.0]}
    pc = prepare_case(case, config, n_classes=2)
    lab, info = _pseudo_labels(case, pc, 1, str(tmp_path / "cache"))
    _, gt = make_volume(100)
    kept = lab > 0
    assert 0.5 < kept.mean() < 1.0  # a band around the boundary is left out
    assert ((lab - 1) == gt)[kept].mean() > 0.97
    assert "cached" not in info
    # the same labels written differently (uncompressed): other bytes, same content
    np.savez(case.labels_path, scribbles=slice_scribbles(gt))
    lab2, info2 = _pseudo_labels(case, pc, 1, str(tmp_path / "cache"))
    assert info2 == {"cached": True} and np.array_equal(lab, lab2)


def test_pseudo_confidence_leaves_out_uncertain_voxels(tmp_path):
    from napari_labeleff.cohort.training import prepare_case
    from napari_labeleff.cohort.training import pseudo_labels as _pseudo_labels

    spec = make_spec(tmp_path, n_labelled=1, n_val=0, kind="scribbles")
    case = spec.cases[0]
    pc = prepare_case(case, {"in_channels": 1, "target_spacing": [1.0, 1.0, 1.0]},
                      n_classes=2)
    cache = str(tmp_path / "cache")
    plain, _ = _pseudo_labels(case, pc, 1, cache)
    sure, info = _pseudo_labels(case, pc, 1, cache, confidence=0.95)
    assert "cached" not in info  # another confidence, another cache entry
    assert ((sure > 0) <= (plain > 0)).all() and (sure > 0).sum() < (plain > 0).sum()
    assert np.array_equal(sure[sure > 0], plain[sure > 0])
    none, _ = _pseudo_labels(case, pc, 1, cache, confidence=1.01)  # no voxel is that sure
    assert not none.any()


def test_pseudo_band_option_reaches_the_graph_labels(tmp_path):
    # the default band leaves out voxels (test above); pseudo_band=0 labels every voxel
    spec = make_spec(tmp_path, n_labelled=1, n_val=0, kind="scribbles",
                     options={"max_steps": 1, "semi": False, "pseudo_band": 0})
    _, report = run(train_steps(spec))
    assert report.info["pseudo_labels"]["lab0"]["kept"] == 1.0
    bad = make_spec(tmp_path, n_labelled=1, n_val=0, kind="scribbles", out="models/bad", run="runs/bad",
                    options={"pseudo_band": 1.5})
    with pytest.raises(LabelEffError, match="pseudo_band"):
        next(train_steps(bad))


class _IntensityNet(torch.nn.Module):
    """A stand-in network: logits (0, 8 (x - 0.5)) from the first channel, so the
    foreground probability is a known function of intensity."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x[:, :1]), 8.0 * (x[:, :1] - 0.5)], dim=1)


def test_self_training_labels_keep_confident_voxels_of_the_largest_object(tmp_path):
    from types import SimpleNamespace

    from scipy import ndimage as ndi

    from napari_labeleff.cohort.training import PSEUDO_BAND, SELF_CONFIDENCE
    from napari_labeleff.cohort.training import self_labels as _self_labels

    z, y, x = np.mgrid[:24, :32, :32]
    image = np.zeros((1, 24, 32, 32), np.float32)
    ball = (z - 12) ** 2 + (y - 16) ** 2 + (x - 12) ** 2 < 36
    image[0][ball] = 1.0
    image[0][(z - 12) ** 2 + (y - 16) ** 2 + (x - 26) ** 2 < 4] = 1.0  # a smaller second blob
    image[0][:, :, :2] = 0.4  # background at probability 0.69: not confident
    pc = SimpleNamespace(volume_id="u0", image=image)
    out = _self_labels(_IntensityNet(), [pc], (16, 32, 32), torch.device("cpu"), False, [True],
                       str(tmp_path / "self"))
    lab = out["u0"]
    assert np.array_equal(np.load(tmp_path / "self" / "u0.npy"), lab)
    probs = torch.softmax(_IntensityNet()(torch.from_numpy(image)[None]), dim=1)[0].numpy()
    assert not lab[probs.max(0) < SELF_CONFIDENCE].any()  # unsure voxels are left out
    assert lab[12, 16, 12] == 2 and lab[12, 2, 16] == 1  # interiors keep their class
    assert lab[12, 16, 26] == 1  # the smaller blob is not the one object: background
    edge = ball ^ ndi.binary_erosion(ball)
    near = ndi.binary_dilation(edge, iterations=PSEUDO_BAND - 1)
    assert not lab[near].any()  # a band around the boundary is left out
