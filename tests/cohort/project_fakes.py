"""Helpers for the project-store tests: tiny synthetic NIfTI volumes and a fake learner.

The fake learner stands in for ``cohort.training`` / ``cohort.prediction`` so store tests
stay fast and can dictate validation scores (publish decisions) and damage
checkpoints. It follows the contract: ``train_steps(spec)`` is a generator yielding
``TrainProgress`` and returning a ``TrainReport``, writes ``model.pt`` +
``config.json`` into ``spec.out_dir``, keeps a resume file in ``spec.run_dir``;
``evaluate(folder, cases)`` returns a float; ``load_model(folder)`` has ``predict``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_labeleff.cohort.training import TrainProgress, TrainReport
from napari_labeleff.io import Geometry, write_volume

SHAPE = (8, 12, 14)


def ball(shape=SHAPE, center=None, radius=3.0):
    z, y, x = np.indices(shape)
    cz, cy, cx = center or tuple(n / 2 for n in shape)
    return ((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) <= radius**2


def make_volume(folder, name, *, seed=0, shape=SHAPE, spacing=(2.0, 1.0, 1.0), channels=None,
                origin=(0.0, 0.0, 0.0)):
    """A bright ball on noise, written as ``folder/<name>.nii.gz``; returns the path."""
    rng = np.random.default_rng(seed)
    img = (100.0 * ball(shape) + rng.normal(0, 5, shape)).astype(np.float32)
    if channels:
        img = np.stack([img * (c + 1) for c in range(channels)])
    path = Path(folder) / f"{name}.nii.gz"
    write_volume(path, img, Geometry.from_spacing(spacing, origin))
    return path


def scribbles_for(shape=SHAPE):
    """Background and structure-1 strokes on the middle slice (engine convention)."""
    s = np.zeros(shape, np.uint8)
    z = shape[0] // 2
    s[z, 0, :] = 1
    s[z, shape[1] // 2, shape[2] // 2 - 1: shape[2] // 2 + 2] = 2
    return s


class FakeLearner:
    """Configurable fake of ``_train`` and ``_predict``.

    Attributes
    ----------
    scores : list of float
        Validation score of each new checkpoint, in training order.
    mask_score : float or None
        Every checkpoint's score on validation volumes with full masks.
    steps : int
        Progress steps per run.
    calls : list of TrainSpec
    """

    def __init__(self, scores=(0.8,), steps=4, mask_score=None):
        self.scores = list(scores)
        self.mask_score = mask_score
        self.steps = steps
        self.calls = []
        self.resumed_from = []

    def train_steps(self, spec):
        self.calls.append(spec)
        run = Path(spec.run_dir)
        resume = run / "resume.json"
        start = json.loads(resume.read_text())["step"] if resume.exists() else 0
        self.resumed_from.append(start)
        for step in range(start, self.steps):
            resume.write_text(json.dumps({"step": step}))
            yield TrainProgress(step, self.steps, f"fake step {step}", loss=1.0 / (step + 1))
        out = Path(spec.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        score = self.scores.pop(0) if self.scores else 0.5
        (out / "model.pt").write_bytes(b"fake weights")
        (out / "config.json").write_text(json.dumps({"class_names": list(spec.class_names), "score": score,
                                                          "mask_score": self.mask_score}))
        return TrainReport(out_dir=str(out), val_score=score, epochs=1, seconds=0.1,
                           version=out.name)

    @staticmethod
    def evaluate(folder, cases, device="auto", with_mask_score=False):
        config = json.loads((Path(folder) / "config.json").read_text())  # damaged: raises
        assert all(c.labels_path for c in cases)
        score = float(config["score"])
        return (score, config.get("mask_score")) if with_mask_score else score

    @staticmethod
    def load_model(folder, device="auto"):
        config = json.loads((Path(folder) / "config.json").read_text())
        return FakeModel(len(config["class_names"]) + 1, Path(folder).name)

    def install(self, monkeypatch):
        """Put this fake in place of ``cohort.training.train_steps`` and
        ``cohort.prediction``'s ``evaluate`` / ``load_model``."""
        from napari_labeleff.cohort import prediction, training

        monkeypatch.setattr(training, "train_steps", self.train_steps)
        monkeypatch.setattr(prediction, "evaluate", self.evaluate)
        monkeypatch.setattr(prediction, "load_model", self.load_model)
        return self


class FakeModel:
    """Probability of structure 1 = a sigmoid of the intensity (bright ball)."""

    def __init__(self, n_classes, version):
        self.n_classes = n_classes
        self.version = version
        self.calls = 0
        self.config = {"prompt_channels": 0}  # a plain network: refine uses it as the prior

    def embed(self, image, spacing):
        img = np.asarray(image, dtype=np.float32)
        return np.array([img.mean(), img.std(), (img > 50).mean()], np.float32)

    def predict(self, image, spacing, keep_largest=True):
        self.calls += 1
        img = np.asarray(image, dtype=np.float32)
        img = img[0] if img.ndim == 4 else img
        fg = 1.0 / (1.0 + np.exp(-(img - 50.0) / 10.0))
        probs = np.zeros((self.n_classes, *img.shape), np.float32)
        probs[0] = 1.0 - fg
        probs[1] = fg
        return probs


def write_dicom_series(folder, array_zyx, spacing_xyz=(1.0, 1.0, 2.0)):
    """One DICOM file per slice (SimpleITK's series-from-array recipe, minimal tags)."""
    import SimpleITK as sitk

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.asarray(array_zyx, dtype=np.int16))
    image.SetSpacing(spacing_xyz)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        s = image[:, :, k]
        for tag, value in (
            ("0008|0060", "MR"), ("0020|000d", "1.2.826.0.1.3680043.2.1125.98"),
            ("0020|000e", "1.2.826.0.1.3680043.2.1125.7"),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0020|0032", "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k)))),
            ("0020|0013", str(k + 1)), ("0018|0050", str(spacing_xyz[2])),
        ):
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(s)
    return folder
