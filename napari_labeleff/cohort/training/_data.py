"""Reading, resampling, normalising and sampling the cohort's volumes (MONAI transforms).

Every volume goes to the network's target spacing with MONAI ``Spacing`` (images
bilinear, labels per label value so thin strokes survive the coarser grid), intensities
are clipped to the 0.5-99.5 percentiles and z-scored per channel (MONAI
``NormalizeIntensity``), and the supervision of a labelled volume becomes one label map
in the engine's scribble convention (``lab``: 0 = no information, 1 = background,
c + 1 = structure c) plus a per-voxel weight and box channels:

=============  ==============================================================  ======
source         ``lab`` where                                                    weight
=============  ==============================================================  ======
full mask      every voxel                                                      1
scribbles      scribbled voxels (override the rest)                             1
pseudo-labels  confident voxels of ``engine.refine`` on the weak labels         ``w``
boxes          outside all boxes = background (when every structure has one)    1
=============  ==============================================================  ======

Training items go through a MONAI ``CacheDataset`` (the deterministic part cached) and
random transforms: ``RandCropByPosNegLabeld`` (foreground oversampling, 2:1) or
``RandSpatialCropd`` for unlabeled volumes, ``SpatialPadd`` to the patch, a small
``RandAffined`` and intensity augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..._errors import LabelEffError
from ._spec import TrainCase, has_labels, read_labels_snapshot



@dataclass
class PreparedCase:
    """A volume at the network's target spacing.

    Attributes
    ----------
    volume_id, role : str
    image : ndarray, shape (C, z, y, x), float32
        Normalised intensities.
    lab : ndarray, shape (z, y, x), uint8 or None
        Supervision in the scribble convention (0 = none); None for unlabeled volumes.
    weight : ndarray, shape (z, y, x), float32 or None
    boxes : ndarray, shape (K, z, y, x), uint8 or None
        Union of each structure's boxes.
    forbid : ndarray, shape (K, z, y, x), uint8 or None
        Where structure c may not be (outside its boxes, when it has boxes).
    mask : ndarray, shape (z, y, x), uint8 or None
        The full mask (0..K) when the volume has one.
    scribbles : ndarray, shape (z, y, x), uint8 or None
        The scribbles alone (resampled), for held-out validation and pseudo-labels.
    spacing, orig_spacing : tuple of float
    orig_shape : tuple of int
    info : dict
    """

    volume_id: str
    role: str
    image: np.ndarray
    lab: np.ndarray | None = None
    weight: np.ndarray | None = None
    boxes: np.ndarray | None = None
    forbid: np.ndarray | None = None
    mask: np.ndarray | None = None
    scribbles: np.ndarray | None = None
    spacing: tuple = ()
    orig_spacing: tuple = ()
    orig_shape: tuple = ()
    info: dict = field(default_factory=dict)


# ---- geometry -------------------------------------------------------------------------
def _meta(arr: np.ndarray, spacing) -> "torch.Tensor":
    from monai.data import MetaTensor

    affine = np.diag([float(s) for s in spacing] + [1.0])
    return MetaTensor(torch.as_tensor(np.ascontiguousarray(arr)), affine=torch.as_tensor(affine))


def target_shape(shape, spacing, target) -> tuple:
    """(z, y, x) shape of a (Z, Y, X) volume resampled from ``spacing`` to ``target``
    (what MONAI ``Spacing`` produces)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def resample_image(image: np.ndarray, spacing, target, *, mode="bilinear", out_shape=None) -> np.ndarray:
    """Resample (C, Z, Y, X) from ``spacing`` to ``target`` mm with MONAI ``Spacing``
    (voxel centres aligned at the origin). ``out_shape`` forces the output (z, y, x)
    shape (used to map back exactly onto an original grid)."""
    from monai.transforms import Spacing

    if tuple(float(s) for s in spacing) == tuple(float(t) for t in target) and (
        out_shape is None or tuple(out_shape) == tuple(image.shape[1:])
    ):
        return np.asarray(image, dtype=np.float32)
    out = Spacing(pixdim=tuple(float(t) for t in target), mode=mode, padding_mode="border")(
        _meta(np.asarray(image, dtype=np.float32), spacing),
        output_spatial_shape=None if out_shape is None else tuple(int(n) for n in out_shape),
    )
    return np.asarray(out.detach().cpu().numpy(), dtype=np.float32)


def resample_labels(labels: np.ndarray, spacing, target, *, out_shape=None) -> np.ndarray:
    """Resample an integer (Z, Y, X) label map (0 = nothing) to ``target``: each label's
    indicator is resampled linearly and kept where >= 0.3, so thin strokes survive a
    coarser grid; voxels claimed by two labels become 0."""
    labels = np.asarray(labels)
    values = [int(v) for v in np.unique(labels) if v != 0]
    shp = out_shape or target_shape(labels.shape, spacing, target)
    out = np.zeros(shp, np.uint8)
    if not values:
        return out
    if tuple(float(s) for s in spacing) == tuple(float(t) for t in target) and tuple(shp) == labels.shape:
        return labels.astype(np.uint8)
    best = np.zeros(shp, np.float32)
    for v in values:
        frac = resample_image((labels == v)[None].astype(np.float32), spacing, target,
                              out_shape=shp)[0]
        take = (frac >= 0.2) & (frac > best)
        if not take.any():  # a stroke thinner than the new grid: keep its best voxel
            take = np.zeros(shp, bool)
            take[np.unravel_index(int(np.argmax(frac - best)), shp)] = True
        out[take] = v
        best = np.maximum(best, np.where(take, frac, 0.0))
    return out


def resample_mask(mask: np.ndarray, spacing, target, *, out_shape=None) -> np.ndarray:
    """Resample a full mask (0..K, every voxel meaningful) by nearest neighbour."""
    return resample_image(np.asarray(mask, np.float32)[None], spacing, target, mode="nearest",
                          out_shape=out_shape)[0].round().astype(np.uint8)


def clip_zscore(image: np.ndarray) -> np.ndarray:
    """Clip each channel to its 0.5-99.5 percentiles and z-score it (MONAI
    ``NormalizeIntensity``, channel-wise). (C, z, y, x) float32 -> same."""
    from monai.transforms import NormalizeIntensity

    img = np.asarray(image, dtype=np.float32).copy()
    for c in range(img.shape[0]):
        lo, hi = np.percentile(img[c], [0.5, 99.5])
        np.clip(img[c], lo, hi, out=img[c])
    out = NormalizeIntensity(channel_wise=True)(torch.as_tensor(img))
    return np.asarray(out, dtype=np.float32)


# ---- reading ----------------------------------------------------------------------------
def read_image(path):
    """Image (C, Z, Y, X) float32 and (Z, Y, X) spacing via ``napari_labeleff.io``."""
    from ...io import read_volume

    vol = read_volume(path)
    data = np.asarray(vol.data, dtype=np.float32)
    if data.ndim == 3:
        data = data[None]
    if not np.all(np.isfinite(data)):
        raise LabelEffError(f"image {str(path)!r} holds NaN/Inf voxels; fix or mask them before training")
    return data, tuple(float(s) for s in vol.spacing)


def prepare_case(case: TrainCase, config: dict, *, n_classes: int) -> PreparedCase:
    """Read one case and bring it to the config's target spacing.

    Raises
    ------
    LabelEffError
        Missing/unreadable image, channel count different from ``config["in_channels"]``,
        damaged labels snapshot, labels beyond the class list.
    """
    image, spacing = read_image(case.image_path)
    from ._prompts import image_channels

    if image.shape[0] != image_channels(config):
        raise LabelEffError(
            f"volume {case.volume_id!r} has {image.shape[0]} channel(s) but the model expects "
            f"{image_channels(config)}; a project's volumes must share their channel count"
        )
    target = tuple(config["target_spacing"])
    shp = target_shape(image.shape[1:], spacing, target)
    img = clip_zscore(resample_image(image, spacing, target, out_shape=shp))
    pc = PreparedCase(case.volume_id, case.role, img, spacing=target, orig_spacing=spacing,
                      orig_shape=tuple(image.shape[1:]))
    if case.labels_path is None:
        return pc
    labels = read_labels_snapshot(case.labels_path, shape=image.shape[1:], n_classes=n_classes)
    if case.role == "unlabeled":
        return pc
    k = n_classes - 1
    if labels["mask"] is not None:
        pc.mask = resample_mask(labels["mask"], spacing, target, out_shape=shp)
    scr = labels["scribbles"]
    pc.scribbles = resample_labels(scr, spacing, target, out_shape=shp) if scr.any() else np.zeros(shp, np.uint8)
    boxes = labels["boxes"]
    if len(boxes):
        pc.boxes, pc.forbid = _box_channels(boxes, spacing, target, shp, k)
    pc.info["has_labels"] = has_labels(labels)
    return pc


def _box_channels(boxes, spacing, target, shp, k):
    """(K, z, y, x) box unions and forbidden regions at the target spacing."""
    scale = np.asarray(spacing, float) / np.asarray(target, float)
    bm = np.zeros((k, *shp), np.uint8)
    for b in np.asarray(boxes, np.int64):
        c = int(b[0])
        lo = np.floor(b[1:4] * scale).astype(int)
        hi = np.ceil(b[4:7] * scale).astype(int)
        lo = np.clip(lo, 0, shp)
        hi = np.clip(np.maximum(hi, lo + 1), 0, shp)
        bm[(c - 1, *(slice(a, z) for a, z in zip(lo, hi)))] = 1
    with_box = bm.reshape(k, -1).any(axis=1)
    forbid = np.zeros_like(bm)
    for c in range(k):
        if with_box[c]:
            forbid[c] = 1 - bm[c]
    return bm, forbid


def build_supervision(pc: PreparedCase, *, pseudo: np.ndarray | None = None,
                      pseudo_weight: float = 0.5) -> None:
    """Fill ``pc.lab`` / ``pc.weight`` from the mask, scribbles, boxes and pseudo-labels
    (see the module table). ``pseudo``: (z, y, x) uint8 in the scribble convention
    (0 = not confident)."""
    shp = pc.image.shape[1:]
    lab = np.zeros(shp, np.uint8)
    weight = np.zeros(shp, np.float32)
    if pc.boxes is not None:
        k = pc.boxes.shape[0]
        if all(pc.boxes[c].any() for c in range(k)):
            outside = ~pc.boxes.any(axis=0).astype(bool)
            lab[outside] = 1
            weight[outside] = 1.0
    if pseudo is not None:
        sel = pseudo > 0
        lab[sel] = pseudo[sel]
        weight[sel] = pseudo_weight
    if pc.mask is not None:
        lab[:] = pc.mask + 1
        weight[:] = 1.0
    if pc.scribbles is not None:
        sel = pc.scribbles > 0
        lab[sel] = pc.scribbles[sel]
        weight[sel] = 1.0
    pc.lab, pc.weight = lab, weight


# ---- MONAI datasets ---------------------------------------------------------------------
def to_item(pc: PreparedCase, k: int = 0) -> dict:
    """Dict item for the MONAI dataset (channel-first arrays). With ``k`` > 0 every
    labelled item carries (K, z, y, x) box and forbidden channels (zeros without boxes),
    so a batch can mix volumes with and without boxes."""
    item = {"image": pc.image, "id": pc.volume_id}
    if pc.lab is not None:
        item["lab"] = pc.lab[None]
        item["weight"] = pc.weight[None]
        item["fg"] = (pc.lab >= 2)[None].astype(np.uint8)
        if pc.boxes is not None:
            item["boxes"], item["forbid"] = pc.boxes, pc.forbid
        elif k:
            zeros = np.zeros((k, *pc.lab.shape), np.uint8)
            item["boxes"], item["forbid"] = zeros, zeros.copy()
    return item


def make_dataset(items: list, patch_size, *, labelled: bool, seed: int, augment: bool = True):
    """A MONAI ``CacheDataset`` over prepared items with patch sampling and augmentation.

    Labelled items are cropped around known foreground twice as often as elsewhere
    (``RandCropByPosNegLabeld``, pos 2 : neg 1); unlabeled ones uniformly
    (``RandSpatialCropd``). Items smaller than the patch are zero-padded (label 0 =
    no information, so padding never teaches background).
    """
    from monai.data import CacheDataset
    from monai.transforms import (Compose, EnsureTyped, RandAffined, RandCropByPosNegLabeld,
                                  RandGaussianNoised, RandScaleIntensityd, RandShiftIntensityd,
                                  RandSpatialCropd, SpatialPadd)

    patch = tuple(int(p) for p in patch_size)
    if labelled:
        keys = ["image", "lab", "weight"] + (["boxes", "forbid"] if "boxes" in items[0] else [])
        if any(("boxes" in it) != ("boxes" in items[0]) for it in items):
            keys = ["image", "lab", "weight"]
            items = [{k: v for k, v in it.items() if k not in ("boxes", "forbid")} for it in items]
        crop = RandCropByPosNegLabeld(keys=keys, label_key="fg", spatial_size=patch, pos=2, neg=1,
                                      num_samples=1, allow_smaller=True)
        modes = ["bilinear"] + ["nearest"] * (len(keys) - 1)
    else:
        keys = ["image"]
        crop = RandSpatialCropd(keys=keys, roi_size=patch, random_size=False)
        modes = ["bilinear"]
    tr = [EnsureTyped(keys=keys + (["fg"] if labelled else []), track_meta=False), crop,
          SpatialPadd(keys=keys, spatial_size=patch, mode="constant")]
    if augment:
        tr += [
            RandAffined(keys=keys, prob=0.25, rotate_range=(0.15, 0.15, 0.15),
                        scale_range=(0.1, 0.1, 0.1), mode=modes, padding_mode="zeros"),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
            RandGaussianNoised(keys="image", prob=0.2, std=0.05),
        ]
    compose = Compose(tr)
    compose.set_random_state(seed=seed)
    return CacheDataset(data=items, transform=compose, cache_rate=1.0, num_workers=0,
                        progress=False, copy_cache=True)


def sample(ds, rng: np.random.Generator, batch_size: int, *, seed: int | None = None) -> dict:
    """Draw ``batch_size`` random items (one random crop each) and stack them.

    ``seed`` re-seeds the dataset's random transforms first, so a batch is a pure
    function of (``rng`` state, ``seed``): a resumed run draws the same batches."""
    if seed is not None:
        ds.transform.set_random_state(seed=int(seed) % (2**32))
    out = []
    for _ in range(batch_size):
        it = ds[int(rng.integers(len(ds)))]
        if isinstance(it, list):
            it = it[0]
        out.append(it)
    keys = [k for k in out[0] if k in ("image", "lab", "weight", "boxes", "forbid")]
    return {k: torch.stack([torch.as_tensor(o[k]) for o in out]) for k in keys}
