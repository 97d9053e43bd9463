"""Before the first step: read the volumes' headers, choose the network's config,
prepare every case (resampled image, supervision, pseudo-labels) and the datasets."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..._errors import LabelEffError
from ._data import build_supervision, make_dataset, prepare_case, to_item
from ._network import (CPU_MAX_VOXELS, CPU_PATCH_CAP, GPU_MAX_VOXELS, GPU_PATCH_CAP,
                       choose_patch_size, choose_target_spacing, default_features)
from ._options import PSEUDO_BAND, PSEUDO_WEIGHT
from ._prompts import PROMPT_LAYOUT, image_channels, n_prompt_channels
from ._pseudo import pseudo_labels, single_component_classes
from ._spec import TrainProgress, TrainSpec


def read_geometry(spec: TrainSpec) -> list[tuple]:
    """(volume id, channels, shape, spacing) of every case; one channel count and
    comparable spacings across the cohort, else a clear error."""
    from ...io import read_volume

    geo = []
    for c in spec.cases:
        if not os.path.exists(c.image_path):
            raise LabelEffError(f"volume {c.volume_id!r}: image file {c.image_path!r} is missing (moved or deleted?)")
        vol = read_volume(c.image_path)
        geo.append((c.volume_id, vol.n_channels, vol.shape, vol.spacing))
    channels = {g[1] for g in geo}
    if len(channels) > 1:
        detail = ", ".join(f"{g[0]}: {g[1]}" for g in geo)
        raise LabelEffError(f"the project's volumes have different channel counts ({detail}); "
                            "train separate projects or make them match")
    sp = np.array([g[3] for g in geo], dtype=float)
    ratio = sp.max(axis=0) / sp.min(axis=0)
    if np.any(ratio > 8):
        raise LabelEffError(
            f"voxel spacings differ more than 8x along an axis across volumes (min "
            f"{sp.min(axis=0).round(3).tolist()} mm, max {sp.max(axis=0).round(3).tolist()} mm); "
            "a project needs comparable resolutions"
        )
    return geo


def make_config(spec: TrainSpec, opts: dict, device, geo, *, resumed: dict | None,
                init: dict | None) -> dict:
    """The network's config: a resumed run's, a warm start's, or chosen for this cohort
    and device (target spacing, patch size, widths)."""
    n_classes = len(spec.class_names) + 1
    if resumed is not None:
        config = resumed
    elif init is not None:
        config = {**init}
    else:
        sp = np.array([g[3] for g in geo], dtype=float)
        shapes = [g[2] for g in geo]
        max_vox = GPU_MAX_VOXELS if device.type == "cuda" else CPU_MAX_VOXELS
        target = opts["target_spacing"] or choose_target_spacing(sp, shapes, max_voxels=max_vox)
        cap = GPU_PATCH_CAP if device.type == "cuda" else CPU_PATCH_CAP
        patch = opts["patch_size"] or choose_patch_size(target, sp, shapes, cap=cap,
                                                        fraction=0.8 if device.type == "cuda" else 0.6)
        config = {
            "network": "BasicUNet",
            "features": list(opts["features"] or default_features(device)),
            "in_channels": int(geo[0][1]),
            "n_classes": n_classes,
            "class_names": list(spec.class_names),
            "target_spacing": [float(t) for t in target],
            "patch_size": [int(p) for p in patch],
            "dropout": 0.1,
            "normalisation": "per channel: clip to 0.5-99.5 percentiles, z-score",
        }
    config = {**config, "class_names": list(spec.class_names), "n_classes": n_classes}
    channels = image_channels(config)
    if channels != int(geo[0][1]):
        raise LabelEffError(f"init_checkpoint expects {channels} channel(s); "
                            f"the volumes have {geo[0][1]}")
    if resumed is None:
        prompts = n_prompt_channels(len(spec.class_names)) if opts.get("interactive", True) else 0
        config.update(image_channels=channels, prompt_channels=prompts, in_channels=channels + prompts)
        if prompts:
            config["prompts"] = PROMPT_LAYOUT
        else:
            config.pop("prompts", None)
    return config


@dataclass
class Cases:
    """The prepared cases of a run, by role, and what their pseudo-labels did."""

    labelled: list
    validation: list
    unlabeled: list
    everything: list
    pseudo_info: dict = field(default_factory=dict)

    @property
    def any_boxes(self) -> bool:
        return any(pc.boxes is not None for pc in self.labelled)


def prepare_cases(spec: TrainSpec, config: dict, opts: dict):
    """Generator: yields progress, returns :class:`Cases` (also sets
    ``config["single_component"]``)."""
    k = len(spec.class_names)
    n_classes = k + 1
    prepared = {}
    n_cases = len(spec.cases)
    pseudo_info = {}
    dense = set()  # volumes whose supervision is dense (graph pseudo-labels)
    for i, c in enumerate(spec.cases):
        yield TrainProgress(i, n_cases, f"preparing {c.volume_id} ({c.role})", stage="prepare")
        pc = prepare_case(c, config, n_classes=n_classes)
        if c.role == "labelled":
            if not pc.info.get("has_labels"):
                pc.role = "unlabeled"
                pseudo_info[c.volume_id] = {"skipped": "no labels: used as unlabeled"}
            else:
                pseudo = None
                if opts["pseudo_labels"] and pc.mask is None:
                    yield TrainProgress(i, n_cases, f"graph pseudo-labels for {c.volume_id}", stage="prepare")
                    pseudo, pseudo_info[c.volume_id] = pseudo_labels(
                        c, pc, k, opts["pseudo_cache_dir"] or spec.run_dir,
                        band=PSEUDO_BAND if opts["pseudo_band"] is None else int(opts["pseudo_band"]),
                        confidence=float(opts["pseudo_confidence"]))
                    if pseudo is not None:
                        dense.add(c.volume_id)
                build_supervision(pc, pseudo=pseudo, pseudo_weight=PSEUDO_WEIGHT)
        prepared[c.volume_id] = pc
    lab_cases = [pc for pc in prepared.values() if pc.role == "labelled"]
    if not lab_cases:
        raise LabelEffError("nothing to train on: the labelled volumes hold no scribbles, boxes or masks")
    config["single_component"] = single_component_classes(
        [pc.mask if pc.mask is not None else pc.lab.astype(np.int16) - 1
         for pc in lab_cases if pc.mask is not None or pc.volume_id in dense], k)
    val_cases = [pc for pc in prepared.values() if pc.role == "validation"
                 and (pc.mask is not None or (pc.scribbles is not None and pc.scribbles.any()))]
    unl_cases = [pc for pc in prepared.values() if pc.role == "unlabeled"]
    return Cases(lab_cases, val_cases, unl_cases, list(prepared.values()), pseudo_info)


@dataclass
class Datasets:
    """MONAI datasets of a run: labelled patches, unlabeled ones (mean teacher), all
    images (pretraining); None where unused."""

    labelled: object
    unlabeled: object = None
    images: object = None


def make_datasets(cases: Cases, opts: dict, patch, k: int, seed: int, semi: bool) -> Datasets:
    lab_ds = make_dataset([to_item(pc, k if cases.any_boxes else 0) for pc in cases.labelled], patch,
                          labelled=True, seed=seed)
    unl_ds = make_dataset([to_item(pc) for pc in cases.unlabeled], patch, labelled=False,
                          seed=seed + 1) if semi else None
    all_ds = None
    if opts["pretrain"]:
        all_ds = make_dataset([{"image": pc.image} for pc in cases.everything], patch, labelled=False,
                              seed=seed + 2)
    return Datasets(lab_ds, unl_ds, all_ds)
