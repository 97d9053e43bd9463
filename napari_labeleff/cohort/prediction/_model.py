"""Loading a trained cohort model, predicting, embedding and evaluating (contract C3).

Prediction resamples the volume to the model's target spacing (MONAI ``Spacing``),
normalises it as in training, runs MONAI ``SlidingWindowInfererAdapt`` (Gaussian
blending; on a CUDA out-of-memory it retries with the stitching buffer, then the whole
window, on the CPU), takes the softmax and resamples the probabilities back onto the
volume's own grid (``Spacing`` with the original shape: voxel centres stay aligned).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..._errors import LabelEffError
from ..._metrics import mean_dice, scribble_dice
from ...engine import resolve_device
from ..training import (TrainCase, autocast, build_network, clip_zscore, encode, image_channels,
                        read_checkpoint, read_image, read_labels_snapshot, resample_image,
                        sliding_window_probs)
from ..training import keep_largest as _keep_largest


@dataclass
class LoadedModel:
    """A trained cohort model ready to predict.

    Attributes
    ----------
    net : torch.nn.Module
    config : dict
        The checkpoint's ``config.json``.
    device : torch.device
    version : str
        The checkpoint folder's name.
    class_names : tuple of str
        Structures, background excluded.
    """

    net: torch.nn.Module
    config: dict
    device: torch.device
    version: str
    class_names: tuple = field(default_factory=tuple)

    @property
    def n_classes(self) -> int:
        """K + 1."""
        return int(self.config["n_classes"])

    def _prepare(self, image, spacing):
        img = np.asarray(image, dtype=np.float32)
        if img.ndim == 3:
            img = img[None]
        if img.ndim != 4:
            raise LabelEffError(f"image must be (Z, Y, X) or (C, Z, Y, X), got shape {np.shape(image)}")
        if img.shape[0] != image_channels(self.config):
            raise LabelEffError(
                f"image has {img.shape[0]} channel(s) but model {self.version!r} expects "
                f"{image_channels(self.config)}"
            )
        sp = tuple(float(s) for s in np.asarray(spacing, dtype=float).ravel())
        if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0:
            raise LabelEffError(f"spacing={spacing!r} must be 3 positive (Z, Y, X) mm values")
        if not np.all(np.isfinite(img)):
            raise LabelEffError("image holds NaN/Inf voxels")
        target = tuple(float(t) for t in self.config["target_spacing"])
        return clip_zscore(resample_image(img, sp, target)), sp, img.shape[1:]

    def predict(self, image, spacing, *, keep_largest: bool = True) -> np.ndarray:
        """Class probabilities on the image's own grid.

        Parameters
        ----------
        image : array_like, shape (Z, Y, X) or (C, Z, Y, X)
        spacing : sequence of 3 float
            (Z, Y, X) mm.
        keep_largest : bool
            Structures the training labels showed as one object keep only their
            largest component (``training.keep_largest``); False: the network's raw output.

        Returns
        -------
        ndarray, shape (K+1, Z, Y, X), float32
            Background first; sums to 1 per voxel.
        """
        img, sp, shape = self._prepare(image, spacing)
        probs = sliding_window_probs(self.net, img, self.config["patch_size"], self.device)
        target = tuple(float(t) for t in self.config["target_spacing"])
        out = resample_image(probs.numpy(), target, sp, out_shape=shape)
        np.clip(out, 0.0, None, out=out)
        out /= np.maximum(out.sum(axis=0, keepdims=True), 1e-8)
        if keep_largest:
            _keep_largest(out, self.config.get("single_component") or [])
        return out.astype(np.float32, copy=False)

    def embed(self, image, spacing) -> np.ndarray:
        """Pooled encoder-bottleneck features of the whole volume.

        Returns
        -------
        ndarray, shape (F,), float32
            F = ``config["features"][4]``.
        """
        from monai.transforms import DivisiblePad

        img, _, _ = self._prepare(image, spacing)
        x = DivisiblePad(k=16)(torch.as_tensor(img))
        self.net.eval()
        with torch.no_grad(), autocast(self.device):
            f = encode(self.net, torch.as_tensor(np.asarray(x))[None].to(self.device))
        return f[0].float().cpu().numpy()


def load_model(checkpoint_dir, device="auto") -> LoadedModel:
    """Load a checkpoint folder written by training.

    Parameters
    ----------
    checkpoint_dir : str or path-like
        Folder with ``model.pt`` and ``config.json``.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...

    Raises
    ------
    LabelEffError
        Missing/damaged checkpoint (see :func:`read_checkpoint`), unknown device.
    """
    config, state = read_checkpoint(checkpoint_dir)
    dev = resolve_device(device)
    net = build_network(config)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise LabelEffError(
            f"checkpoint {os.fspath(checkpoint_dir)!r}: weights do not fit the network in config.json "
            f"(damaged or mismatched checkpoint): {str(err).splitlines()[0]}"
        ) from err
    net.to(dev).eval()
    version = os.path.basename(os.path.normpath(os.fspath(checkpoint_dir)))
    return LoadedModel(net, config, dev, version, tuple(config["class_names"]))


def evaluate(checkpoint_dir, cases, *, device="auto", with_mask_score=False):
    """Mean Dice of a checkpoint on cases with labels.

    Cases with a full mask are scored against it; cases with scribbles only on their
    scribbled voxels (held-out weak labels, :func:`scribble_dice`). With
    ``with_mask_score`` the mean over the cases with full masks alone comes too (from
    the same predictions; None when no case has a mask).

    Parameters
    ----------
    checkpoint_dir : str or path-like
    cases : sequence of TrainCase
        Their ``labels_path`` snapshots are read; cases without one are skipped.

    Returns
    -------
    float, or (float, float or None) with ``with_mask_score``
        Mean over the scored cases (and over those with full masks).

    Raises
    ------
    LabelEffError
        No case with labels, damaged checkpoint or snapshot, class list mismatch.
    """
    model = load_model(checkpoint_dir, device=device)
    scores, mask_scores = [], []
    for case in cases:
        if not isinstance(case, TrainCase):
            raise LabelEffError(f"evaluate needs TrainCase objects, got {type(case).__name__}")
        if case.labels_path is None:
            continue
        image, spacing = read_image(case.image_path)
        labels = read_labels_snapshot(case.labels_path, shape=image.shape[1:], n_classes=model.n_classes)
        if labels["mask"] is None and not labels["scribbles"].any():
            continue
        pred = model.predict(image, spacing).argmax(axis=0).astype(np.uint8)
        if labels["mask"] is not None:
            mask_scores.append(mean_dice(pred, labels["mask"], model.n_classes))
            scores.append(mask_scores[-1])
        else:
            scores.append(scribble_dice(pred, labels["scribbles"], model.n_classes))
    if not scores:
        raise LabelEffError("evaluate: none of the cases has a mask or scribbles to score against")
    if with_mask_score:
        return float(np.mean(scores)), (float(np.mean(mask_scores)) if mask_scores else None)
    return float(np.mean(scores))

