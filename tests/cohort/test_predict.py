"""Loading, prediction (resampling to the network's spacing and back), embedding and
evaluation of cohort checkpoints."""

import json
import os

import numpy as np
import pytest
import torch

from napari_labeleff._errors import LabelEffError
from napari_labeleff.cohort.training import resample_image
from napari_labeleff.cohort.training import build_network
from napari_labeleff.cohort.prediction import LoadedModel, evaluate, load_model, mean_dice, scribble_dice
from napari_labeleff.cohort.training import TrainCase, write_labels_snapshot
from napari_labeleff.io import Geometry, write_volume

CONFIG = {"network": "BasicUNet", "features": [4, 8, 16, 32, 32, 4], "in_channels": 1, "n_classes": 2,
          "class_names": ["ball"], "target_spacing": [1.0, 1.0, 1.0], "patch_size": [16, 32, 32],
          "dropout": 0.0}


class _Intensity(torch.nn.Module):
    """A 'network' whose structure logit is the (normalised) intensity minus ``mid``: a
    threshold oracle that makes resampling errors visible."""

    def __init__(self, mid=0.0):
        super().__init__()
        self.mid = mid

    def forward(self, x):
        return torch.cat([torch.zeros_like(x[:, :1]), 4.0 * (x[:, :1] - self.mid)], dim=1)


def _ball(shape=(24, 40, 40), centre=(12.3, 17.6, 23.2), r=7.5):
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    return (((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= r * r).astype(np.uint8)


def _save(folder, config=CONFIG, state=None):
    folder.mkdir(parents=True, exist_ok=True)
    json.dump(config, open(folder / "config.json", "w"))
    torch.manual_seed(0)
    torch.save(state if state is not None else build_network(config).state_dict(), folder / "model.pt")
    return str(folder)


def test_predict_maps_back_onto_the_original_grid_without_shift():
    gt = _ball()
    image = gt * 100.0 + 1.0
    config = {**CONFIG, "target_spacing": [1.6, 1.6, 1.6]}  # input at 0.8 mm: resampled 2x and back
    mid = float((50.5 - image.mean()) / image.std())  # half-way intensity after z-scoring
    model = LoadedModel(_Intensity(mid), config, torch.device("cpu"), "oracle", ("ball",))
    p = model.predict(image, (0.8, 0.8, 0.8))
    assert p.shape == (2, *gt.shape) and p.dtype == np.float32
    assert np.allclose(p.sum(axis=0), 1.0, atol=1e-5) and p.min() >= 0
    pred = p.argmax(0)
    assert mean_dice(pred, gt, 2) > 0.93
    # the centre of mass stays put (a half-voxel shift of the grid would move it)
    com_pred = np.argwhere(pred == 1).mean(axis=0)
    com_gt = np.argwhere(gt == 1).mean(axis=0)
    assert np.abs(com_pred - com_gt).max() < 0.35
    # (C, Z, Y, X) input works too; wrong channel counts and spacings are refused
    assert model.predict(image[None], (0.8, 0.8, 0.8)).shape == (2, *gt.shape)
    with pytest.raises(LabelEffError, match="channel"):
        model.predict(np.stack([image, image]), (0.8, 0.8, 0.8))
    with pytest.raises(LabelEffError, match="spacing"):
        model.predict(image, (0.8, 0.8))


def test_load_model_predict_and_embed(tmp_path):
    ckpt = _save(tmp_path / "models" / "v7")
    model = load_model(ckpt, device="cpu")
    assert model.version == "v7" and model.class_names == ("ball",) and model.n_classes == 2
    image = _ball().astype(np.float32) * 50 + np.random.default_rng(0).normal(0, 5, (24, 40, 40))
    p = model.predict(image, (1.0, 1.0, 1.0))
    assert p.shape == (2, 24, 40, 40)
    f1 = model.embed(image, (1.0, 1.0, 1.0))
    f2 = model.embed(np.roll(image, 9, axis=2) * 0.3 + np.random.default_rng(1).normal(0, 9, image.shape), (1.0,) * 3)
    assert f1.shape == (32,) and f1.dtype == np.float32 and np.all(np.isfinite(f1))
    assert not np.allclose(f1, f2)


def test_damaged_or_incomplete_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(LabelEffError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    ckpt = tmp_path / "v1"
    _save(ckpt)
    good = (ckpt / "model.pt").read_bytes()
    (ckpt / "model.pt").write_bytes(good[: len(good) // 2])  # truncated write
    with pytest.raises(LabelEffError, match="model.pt is damaged"):
        load_model(ckpt)
    (ckpt / "model.pt").write_bytes(good)
    (ckpt / "config.json").write_text("{ not json")
    with pytest.raises(LabelEffError, match="config.json is unreadable"):
        load_model(ckpt)
    _save(ckpt, config={**CONFIG, "features": [8, 8, 16, 32, 32, 8]},
          state=build_network(CONFIG).state_dict())  # weights of another network
    with pytest.raises(LabelEffError, match="do not fit"):
        load_model(ckpt)
    os.remove(ckpt / "model.pt")
    with pytest.raises(LabelEffError, match="incomplete"):
        load_model(ckpt)


def test_evaluate_scores_masks_and_held_out_scribbles(tmp_path):
    gt = _ball()
    image = gt * 100.0 + 1.0
    img_path = tmp_path / "a.nii.gz"
    write_volume(img_path, image.astype(np.float32), Geometry.from_spacing((1.0, 1.0, 1.0)))
    # an oracle checkpoint: the untrained net replaced by weights that threshold? Use the
    # evaluation path with a real (untrained) checkpoint and check it against a direct score.
    ckpt = _save(tmp_path / "v1")
    model = load_model(ckpt, device="cpu")
    pred = model.predict(image, (1.0, 1.0, 1.0)).argmax(0)
    with_mask = write_labels_snapshot(tmp_path / "m.npz", np.zeros(gt.shape, np.uint8), mask=gt)
    scr = np.zeros(gt.shape, np.uint8)
    scr[12, 15:20, 20:26] = 2
    scr[2, 2:30, 3] = 1
    with_scr = write_labels_snapshot(tmp_path / "s.npz", scr)
    got = evaluate(ckpt, [TrainCase("a", str(img_path), with_mask, "validation")], device="cpu")
    assert got == pytest.approx(mean_dice(pred, gt, 2))
    got2 = evaluate(ckpt, [TrainCase("a", str(img_path), with_scr, "validation")], device="cpu")
    assert got2 == pytest.approx(scribble_dice(pred, scr, 2))
    assert scribble_dice(gt, scr, 2) == 1.0  # a perfect mask scores 1 on its scribbles
    with pytest.raises(LabelEffError, match="none of the cases"):
        evaluate(ckpt, [TrainCase("a", str(img_path), None, "unlabeled")], device="cpu")
    too_many = write_labels_snapshot(tmp_path / "k.npz", np.zeros(gt.shape, np.uint8), mask=gt * 2)
    with pytest.raises(LabelEffError, match="class list"):
        evaluate(ckpt, [TrainCase("a", str(img_path), too_many, "validation")], device="cpu")


def test_resampling_round_trip_keeps_geometry():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(1, 20, 30, 30)).astype(np.float32)
    from scipy import ndimage as ndi

    img = ndi.gaussian_filter(img, (0, 3, 3, 3))
    down = resample_image(img, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0))
    back = resample_image(down, (1.0, 1.0, 1.0), (0.5, 0.5, 0.5), out_shape=img.shape[1:])
    assert back.shape == img.shape
    inner = (slice(None), slice(2, -2), slice(2, -2), slice(2, -2))
    assert np.corrcoef(back[inner].ravel(), img[inner].ravel())[0, 1] > 0.95


def test_a_single_object_structure_keeps_its_largest_component():
    """A structure the training labels show as one object (LA: +0.02 mean Dice on 6
    test volumes, up to +0.12 on one) keeps only its largest predicted component;
    another structure keeps every component."""
    gt = _ball(shape=(24, 40, 40), centre=(12, 20, 14), r=6)
    stray = _ball(shape=(24, 40, 40), centre=(12, 20, 33), r=3)  # a false positive
    image = (gt | stray) * 100.0 + 1.0
    mid = float((50.5 - image.mean()) / image.std())
    for single, n_kept in (([True], gt.sum()), ([False], (gt | stray).sum())):
        config = {**CONFIG, "single_component": single}
        model = LoadedModel(_Intensity(mid), config, torch.device("cpu"), "oracle", ("ball",))
        p = model.predict(image, (1.0, 1.0, 1.0))
        assert np.allclose(p.sum(axis=0), 1.0, atol=1e-5)
        assert abs(int((p.argmax(0) == 1).sum()) - int(n_kept)) <= 0.05 * n_kept


def test_single_component_classes_come_from_dense_labels():
    from napari_labeleff.cohort.training import single_component_classes

    one = np.zeros((10, 20, 20), np.int16)
    one[2:6, 2:8, 2:8] = 1
    one[2:6, 12:18, 12:18] = 2
    two = one.copy()
    two[2:6, 2:8, 12:14] = 2  # structure 2 in two pieces of similar size
    assert single_component_classes([one], 2) == [True, True]
    assert single_component_classes([one, two], 2) == [True, False]
    assert single_component_classes([], 2) == [False, False]
