"""Loading a trained cohort model, predicting, embedding and scoring (contract C3).

Prediction resamples the volume to the model's target spacing (MONAI ``Spacing``),
normalises it as in training, runs MONAI ``SlidingWindowInfererAdapt`` (Gaussian
blending; on a CUDA out-of-memory it retries with the stitching buffer, then the whole
window, on the CPU), takes the softmax and resamples the probabilities back onto the
volume's own grid (``Spacing`` with the original shape: voxel centres stay aligned).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from .._errors import LabelEffError
from ..engine import resolve_device
from ._data import normalise, read_image, resample_image
from ._network import build_network, encode
from ._spec import TrainCase, read_labels_snapshot

REQUIRED_FILES = ("model.pt", "config.json")
_CONFIG_KEYS = ("network", "features", "in_channels", "n_classes", "class_names",
                "target_spacing", "patch_size")


def autocast(device: torch.device, enabled: bool | None = None):
    """Mixed-precision context: bf16 (or fp16 when bf16 is unsupported) on CUDA, off
    elsewhere (CPU autocast is slower than fp32 for these 3D convolutions)."""
    use = device.type == "cuda" if enabled is None else (enabled and device.type == "cuda")
    if not use:
        return torch.autocast(device_type="cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def sliding_window_probs(net, image, patch_size, device, *, overlap=0.25, amp=None,
                         sw_batch_size=4) -> torch.Tensor:
    """Class probabilities of a whole (C, z, y, x) image at the network's spacing.

    Returns
    -------
    Tensor, shape (K+1, z, y, x), float32, on the CPU.
    """
    from monai.inferers import SlidingWindowInfererAdapt

    # 4 windows per forward: ~3x faster than 1 on CPU (measured on the LA cohort)
    inferer = SlidingWindowInfererAdapt(roi_size=tuple(int(p) for p in patch_size), sw_batch_size=sw_batch_size,
                                        overlap=overlap, mode="gaussian")
    x = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)[None].to(device)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), autocast(device, amp):
            logits = inferer(x, net)
    finally:
        net.train(was_training)
    return torch.softmax(logits.float(), dim=1)[0].cpu()


def dice_scores(pred: np.ndarray, gt: np.ndarray, n_classes: int) -> list:
    """Dice per structure c = 1..K (NaN when c is absent from both)."""
    out = []
    for c in range(1, n_classes):
        p, g = pred == c, gt == c
        s = int(p.sum()) + int(g.sum())
        out.append(float("nan") if s == 0 else 2.0 * int((p & g).sum()) / s)
    return out


def mean_dice(pred, gt, n_classes) -> float:
    """Mean Dice over the structures present in ``gt`` or ``pred`` (1.0 if none)."""
    d = [x for x in dice_scores(pred, gt, n_classes) if not np.isnan(x)]
    return float(np.mean(d)) if d else 1.0


def scribble_dice(pred, scribbles, n_classes) -> float:
    """Dice restricted to scribbled voxels (held-out weak labels): per structure c,
    Dice of ``pred == c`` vs ``scribbles == c + 1`` over voxels with a scribble."""
    sel = scribbles > 0
    return mean_dice(np.where(sel, pred, 0), np.where(sel, scribbles.astype(np.int16) - 1, 0), n_classes)


def _read_config(checkpoint_dir) -> dict:
    path = os.path.join(checkpoint_dir, "config.json")
    try:
        with open(path) as fh:
            config = json.load(fh)
    except (OSError, ValueError) as err:
        raise LabelEffError(f"checkpoint {str(checkpoint_dir)!r}: config.json is unreadable or damaged ({err})") from err
    missing = [k for k in _CONFIG_KEYS if k not in config]
    if missing:
        raise LabelEffError(f"checkpoint {str(checkpoint_dir)!r}: config.json lacks {missing}")
    return config


def read_checkpoint(checkpoint_dir) -> tuple:
    """(config dict, state_dict) of a checkpoint folder.

    Raises
    ------
    LabelEffError
        Missing folder or files, damaged config or weights, weights that do not fit the
        network the config describes.
    """
    checkpoint_dir = os.fspath(checkpoint_dir)
    if not os.path.isdir(checkpoint_dir):
        raise LabelEffError(f"checkpoint folder {checkpoint_dir!r} does not exist")
    missing = [f for f in REQUIRED_FILES if not os.path.exists(os.path.join(checkpoint_dir, f))]
    if missing:
        raise LabelEffError(f"checkpoint {checkpoint_dir!r} is incomplete: missing {missing}")
    config = _read_config(checkpoint_dir)
    try:
        state = torch.load(os.path.join(checkpoint_dir, "model.pt"), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip / EOF errors of a truncated or damaged file
        raise LabelEffError(f"checkpoint {checkpoint_dir!r}: model.pt is damaged ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict):
        raise LabelEffError(f"checkpoint {checkpoint_dir!r}: model.pt does not hold a state dict")
    return config, state


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
        if img.shape[0] != int(self.config["in_channels"]):
            raise LabelEffError(
                f"image has {img.shape[0]} channel(s) but model {self.version!r} expects "
                f"{self.config['in_channels']}"
            )
        sp = tuple(float(s) for s in np.asarray(spacing, dtype=float).ravel())
        if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0:
            raise LabelEffError(f"spacing={spacing!r} must be 3 positive (Z, Y, X) mm values")
        if not np.all(np.isfinite(img)):
            raise LabelEffError("image holds NaN/Inf voxels")
        target = tuple(float(t) for t in self.config["target_spacing"])
        return normalise(resample_image(img, sp, target)), sp, img.shape[1:]

    def predict(self, image, spacing, *, keep_largest: bool = True) -> np.ndarray:
        """Class probabilities on the image's own grid.

        Parameters
        ----------
        image : array_like, shape (Z, Y, X) or (C, Z, Y, X)
        spacing : sequence of 3 float
            (Z, Y, X) mm.
        keep_largest : bool
            Structures the training labels showed as one object keep only their
            largest component (:func:`_keep_largest`); False: the network's raw output.

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


def _keep_largest(probs: np.ndarray, single) -> None:
    """Structures known to be one object keep only their largest predicted component.

    ``single[c - 1]`` is True when the training labels showed structure c as one
    connected object (``_train.single_component_classes``); elsewhere its probability
    goes to the other classes (in place; MONAI ``KeepLargestConnectedComponent`` on the
    argmax labels).

    Parameters
    ----------
    probs : ndarray, shape (K + 1, Z, Y, X), float32
        Sums to 1 per voxel; modified in place.
    single : sequence of bool, length K
    """
    from monai.transforms import KeepLargestConnectedComponent

    applied = [c for c, flag in enumerate(single, start=1) if flag is True]
    if not applied:
        return
    labels = probs.argmax(axis=0)
    # (the transform may edit its input in place: it gets a copy)
    kept = np.asarray(KeepLargestConnectedComponent(applied_labels=applied, is_onehot=False,
                                                    connectivity=3)(labels[None].copy()))[0]
    for c in applied:
        drop = (labels == c) & (kept != c)
        if drop.any():
            probs[c][drop] = 0.0
    probs /= np.maximum(probs.sum(axis=0, keepdims=True), 1e-8)


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

