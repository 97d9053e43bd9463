"""Hybrid training of the cohort network: ``train_steps(spec)`` (contract C3).

Stages
------
1. **prepare**: read every volume (``napari_labeleff.io``), resample to the target
   spacing, normalise; for weakly labelled volumes (scribbles / boxes, no full mask)
   run the graph method (``engine.refine``) on the weak labels and keep its confident
   voxels as pseudo-labels (weight ``pseudo_weight``; the scribbles themselves always
   weigh 1). Cached in ``run_dir`` so a resumed run does not recompute them.
2. **pretrain** (option ``pretrain``): self-supervised reconstruction on ALL the
   project's images, as in MONAI's self-supervised tutorial: patches corrupted with
   ``RandCoarseDropout`` (masked cubes) and ``RandCoarseShuffle`` (shuffled cubes) are
   restored by the same ``BasicUNet`` with a C-channel output (L1 loss); every weight but
   the output layer then initialises the segmentation network.
3. **train** (hybrid): per step a labelled batch (full masks: Dice + CE; scribbles and
   pseudo-labels: partial CE + Dice after the softmax; boxes: outside = background,
   tightness MIL term and an exclusion term) and, with ``semi``, an unlabeled batch
   for the UA-MT mean-teacher consistency: the EMA teacher
   (``torch.optim.swa_utils.AveragedModel``) predicts ``mc_passes`` noisy, dropout-
   sampled versions, voxels whose predictive entropy is above a threshold ramped from
   0.75 to 1.0 x ln(K+1) are dropped, and the student's softmax is pulled toward the
   teacher's mean (squared error, weight ramped up to ``consistency``). The EMA teacher
   is kept in every arm and is the model saved (so arms differ only by the terms used).
4. **validate** every ``val_every`` steps and at the end on the validation cases (mean
   Dice on masks, or on held-out scribbled voxels); the best-scoring weights are saved.

Options (``TrainSpec.options``)
-------------------------------
``max_minutes`` (10)      wall-time budget of the whole run (resumed sessions add up)
``max_steps`` (None)      stop after this many hybrid steps (tests; benchmarks)
``device`` ("auto")       "auto" | "cpu" | "cuda" | "cuda:N"
``seed`` (0)              everything random derives from (seed, step): resume is exact
``semi`` (True)           mean-teacher consistency on unlabeled volumes
``pretrain`` (False)      self-supervised stage first (off by default: see the benchmark)
``pretrain_minutes``      budget of the pretraining stage (default 25% of max_minutes)
``pseudo_labels`` (True)  graph-method pseudo-labels on weakly labelled volumes
``pseudo_cache_dir``      where pseudo-labels are cached (default ``run_dir``)
``pseudo_confidence`` (0) leave out pseudo-label voxels whose graph probability is lower
``pseudo_band``           voxels left out on each side of a graph pseudo-label boundary
                          (default ``PSEUDO_BAND``)
``self_training`` (0)     self-training (0 = off): once this share of the training budget
                          is spent, the EMA teacher labels every unlabeled volume; its
                          voxels of probability >= ``SELF_CONFIDENCE`` outside a band
                          around its boundaries join the labelled pool as pseudo-labels
                          (weight ``PSEUDO_WEIGHT``) for the rest of the run
``patch_size``            (Z, Y, X) voxels, multiples of 16 (default from the cohort)
``batch_size``            labelled patches per step (default from free memory, <= 2)
``target_spacing``        (Z, Y, X) mm (default from the cohort, see ``_network``)
``features``              6 BasicUNet widths (CPU default 8..128, CUDA 16..256)
``learning_rate`` (3e-3)  AdamW, decayed linearly to 10% over the budget
``val_every`` (None)      validation interval in steps (default: ~5 times per run)
``num_threads``           torch CPU threads (default: the idle cores by load average, 1..4)
``amp`` (None)            mixed precision (default: on with CUDA: bf16, else fp16+GradScaler)

Cancelling (``close()`` on the generator) writes ``run_dir/resume.pt``; running the
same spec again continues from that step with the same weights, optimiser and data
stream. A state is also written every ~60 s, so a killed process loses at most that.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import resource
import subprocess
import time
import warnings
from collections.abc import Generator

import numpy as np
import torch

from .._errors import LabelEffError
from ..engine import resolve_device
from ..engine._multiscale import available_bytes
from . import _losses
from ._data import build_supervision, make_dataset, prepare_case, sample, to_item
from ._network import (CPU_MAX_VOXELS, CPU_PATCH_CAP, GPU_MAX_VOXELS, GPU_PATCH_CAP,
                       build_network, choose_patch_size, choose_target_spacing,
                       default_features, transfer_encoder_decoder)
from ._predict import (autocast, mean_dice, read_checkpoint, scribble_dice,
                       sliding_window_probs)
from ._spec import TrainProgress, TrainReport, TrainSpec

DEFAULTS = {
    "max_minutes": 10.0, "max_steps": None, "device": "auto", "seed": 0, "semi": True,
    "pretrain": False, "pretrain_minutes": None, "pseudo_labels": True, "patch_size": None,
    "batch_size": None, "target_spacing": None, "features": None, "learning_rate": 3e-3,
    "val_every": None, "num_threads": None, "amp": None, "verbose": False,
    "pseudo_cache_dir": None, "pseudo_confidence": 0.0, "self_training": 0.0,
    "pseudo_band": None,
}
# Not options of the public contract, but named here so the benchmark can report them.
PSEUDO_WEIGHT = 0.5          # weight of a graph pseudo-label voxel (scribbles: 1)
PSEUDO_BAND = 2              # voxels left out on each side of a pseudo-label boundary
SELF_CONFIDENCE = 0.9        # teacher probability a self-training label needs
CONSISTENCY = 0.1            # UA-MT consistency weight (after ramp-up)
EMA_DECAY = 0.99
MC_PASSES_CPU, MC_PASSES_GPU = 2, 8
BOX_WEIGHT = 0.5
SAVE_EVERY_S = 60.0
# Options that may change between sessions of one resumable run.
_VOLATILE = ("max_minutes", "max_steps", "device", "verbose", "num_threads", "val_every",
             "pseudo_cache_dir")


def _options(spec: TrainSpec) -> dict:
    opts = dict(DEFAULTS)
    opts.update(spec.options)
    if opts["max_minutes"] is not None and not (float(opts["max_minutes"]) > 0):
        raise LabelEffError(f"max_minutes={opts['max_minutes']!r} must be > 0")
    if opts["max_steps"] is not None and int(opts["max_steps"]) < 1:
        raise LabelEffError(f"max_steps={opts['max_steps']!r} must be >= 1")
    if opts["patch_size"] is not None:
        ps = tuple(int(p) for p in opts["patch_size"])
        if len(ps) != 3 or any(p < 16 or p % 16 for p in ps):
            raise LabelEffError(f"patch_size={opts['patch_size']!r} must be 3 multiples of 16 (Z, Y, X)")
    band = opts["pseudo_band"]
    if band is not None and (isinstance(band, bool) or not isinstance(band, (int, np.integer)) or band < 0):
        raise LabelEffError(f"pseudo_band={band!r} must be a whole number of voxels >= 0")
    if not 0.0 <= float(opts["self_training"]) < 1.0:
        raise LabelEffError(f"self_training={opts['self_training']!r} must be in [0, 1): the share of "
                            "the training budget after which the unlabeled volumes get the model's labels")
    return opts


def _fingerprint(spec: TrainSpec, opts: dict) -> str:
    stable = {k: v for k, v in opts.items() if k not in _VOLATILE}
    cases = []
    for c in spec.cases:
        st = os.stat(c.labels_path) if c.labels_path and os.path.exists(c.labels_path) else None
        cases.append([c.volume_id, c.role, c.image_path, c.labels_path,
                      None if st is None else [st.st_size, int(st.st_mtime)]])
    blob = json.dumps({"cases": cases, "classes": spec.class_names, "opts": stable,
                       "init": spec.init_checkpoint}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _commit() -> str | None:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _write_failed(path, tmp, err):
    try:
        os.unlink(tmp)
    except OSError:
        pass
    return LabelEffError(f"could not write {path!r} ({err.strerror or err}); disk full or not writable? "
                         "nothing was published; free space and train again (the run resumes)")


def _atomic_torch_save(obj, path):
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise _write_failed(path, tmp, err) from err


def _atomic_text(path, text):
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise _write_failed(path, tmp, err) from err


def _batch_size(opts, device, patch, features) -> int:
    """Labelled patches per step: the option, else as many (<= 2) as a quarter of the
    free memory holds (measured: ~1.3 KB per voxel per feature of the first level for
    BasicUNet training in fp32, activations + gradients)."""
    if opts["batch_size"] is not None:
        return max(1, int(opts["batch_size"]))
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = available_bytes() or 8 * 2**30
    per = float(np.prod(patch)) * features[0] * 1300.0
    return int(max(1, min(2, (0.25 * free) // max(per, 1.0))))


def _set_threads(opts, device):
    if device.type != "cpu":
        return
    n = opts["num_threads"]
    if n is None:
        # the idle cores, 1..4: on an oversubscribed machine OpenMP threads wait on each
        # other at every barrier (measured on 2 cores at load 8: a forward pass took
        # 2-4 s with 2 threads, 0.7-1 s with 1)
        cores = os.cpu_count() or 1
        try:
            busy = int(os.getloadavg()[0])
        except OSError:
            busy = 0
        n = max(1, min(4, cores - busy))
    torch.set_num_threads(int(n))


def _ramp(frac: float) -> float:
    """UA-MT's sigmoid ramp-up exp(-5 (1 - t)^2) over the first 40% of the run."""
    t = min(1.0, max(0.0, frac / 0.4))
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


#: A structure counts as one connected object when, in every dense label map that
#: holds it, its largest 26-connected component has at least this share of its voxels.
SINGLE_COMPONENT = 0.95


def single_component_classes(label_maps, k: int) -> list[bool]:
    """Per structure 1..K, whether the training labels show it as one connected object
    (then prediction keeps only its largest component; ``_predict``).

    Parameters
    ----------
    label_maps : list of ndarray, shape (z, y, x)
        Dense labels 0..K (-1 = unknown), from masks or graph pseudo-labels; scribbles
        alone say nothing about connectivity and are not passed.
    k : int
        Number of structures.

    Returns
    -------
    list of bool, length K
        False for a structure no dense map holds.
    """
    from scipy import ndimage as ndi

    out = []
    for c in range(1, k + 1):
        shares = []
        for lab in label_maps:
            cc, n = ndi.label(lab == c, structure=np.ones((3, 3, 3), bool))
            if n:
                sizes = np.bincount(cc.ravel())[1:]
                shares.append(sizes.max() / sizes.sum())
        out.append(bool(shares) and bool(min(shares) >= SINGLE_COMPONENT))
    return out


def _leave_out_band(lab: np.ndarray, labels: np.ndarray, band: int) -> None:
    """Set ``lab`` to 0 (no information) within ``band`` voxels on each side of every
    boundary of ``labels`` (0..K), in place: a teacher's errors sit at boundaries."""
    from scipy import ndimage as ndi

    if band <= 0:
        return
    for c in range(int(labels.max()) + 1):
        m = labels == c
        edge = ndi.binary_dilation(m, iterations=band) & ~ndi.binary_erosion(m, iterations=band, border_value=1)
        lab[edge] = 0


def _self_labels(model, cases, patch, device, amp, single, folder):
    """The teacher's labels of unlabeled volumes (self-training), saved in ``folder``.

    Per volume: class probabilities by sliding window at the target spacing, structures
    known to be one object keep their largest component (as ``predict`` does), then
    voxels below :data:`SELF_CONFIDENCE` and a band of :data:`PSEUDO_BAND` voxels around
    the predicted boundaries are left out. Returns {volume id: (z, y, x) uint8 labels in
    the scribble convention (0 = left out)}.
    """
    from ._predict import _keep_largest

    os.makedirs(folder, exist_ok=True)
    out = {}
    for pc in cases:
        probs = sliding_window_probs(model, pc.image, patch, device, amp=amp).numpy()
        _keep_largest(probs, single)
        labels = probs.argmax(axis=0)
        lab = (labels + 1).astype(np.uint8)
        lab[probs.max(axis=0) < SELF_CONFIDENCE] = 0
        _leave_out_band(lab, labels, PSEUDO_BAND)
        np.save(os.path.join(folder, f"{pc.volume_id}.npy"), lab)
        out[pc.volume_id] = lab
    return out


def _self_dataset(lab_cases, unl_cases, labels, k_boxes, patch, seed):
    """The labelled dataset with the unlabeled volumes added, supervised by ``labels``
    (``_self_labels``); the unlabeled cases themselves are not modified."""
    items = [to_item(pc, k_boxes) for pc in lab_cases]
    for pc in unl_cases:
        c = copy.copy(pc)
        c.role = "labelled"
        build_supervision(c, pseudo=labels[pc.volume_id], pseudo_weight=PSEUDO_WEIGHT)
        items.append(to_item(c, k_boxes))
    return make_dataset(items, patch, labelled=True, seed=seed + 3)


def _pseudo_labels(case, pc, k, cache_dir, band=PSEUDO_BAND, confidence=0.0):
    """Graph-method labels for a weakly labelled volume, at the target spacing, in the
    scribble convention, with a band of ``band`` voxels around every predicted boundary
    left out (0): the graph's errors sit at boundaries, its interiors are reliable.
    Voxels whose graph probability of their label is below ``confidence`` are left out
    too (a leak into a look-alike region is less certain than the object's core).

    The graph runs on the ORIGINAL grid with the original scribbles/boxes (thin strokes
    do not survive a coarser grid), then the labels are resampled (nearest).
    Cached in ``cache_dir`` by the image path and the content of the weak labels.
    """
    from ..engine import refine
    from ._data import read_image, resample_mask
    from ._spec import read_labels_snapshot

    snap = read_labels_snapshot(case.labels_path, n_classes=k + 1)
    h = hashlib.sha256(case.image_path.encode() + repr(pc.spacing).encode() + repr(band).encode()
                       + (repr(confidence).encode() if confidence > 0 else b""))
    for name in ("scribbles", "boxes"):  # array content: a re-written snapshot still hits
        h.update(np.ascontiguousarray(snap[name]).tobytes())
    key = h.hexdigest()[:16]
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"pseudo_{pc.volume_id}_{key}.npy")
    if os.path.exists(path):
        try:
            return np.load(path), {"cached": True}
        except (OSError, ValueError):
            pass
    image, spacing = read_image(case.image_path)
    labels = read_labels_snapshot(case.labels_path, shape=image.shape[1:], n_classes=k + 1)
    scr, boxes = labels["scribbles"], [tuple(int(v) for v in b) for b in labels["boxes"]]
    if not (scr > 1).any() and not boxes:
        return None, {"skipped": "no structure scribbled and no boxes"}
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:  # e.g. "box cuts the object"
        warnings.simplefilter("always")
        res = refine(image if image.shape[0] > 1 else image[0], scr, spacing=spacing, boxes=boxes or None)
    seconds = time.perf_counter() - t0
    low = resample_mask(np.asarray(res.labels), spacing, pc.spacing, out_shape=pc.image.shape[1:])
    lab = low.astype(np.uint8) + 1
    if confidence > 0:
        sure = np.asarray(res.probabilities).max(axis=0) >= confidence
        sure = resample_mask(sure, spacing, pc.spacing, out_shape=pc.image.shape[1:])
        lab[sure == 0] = 0
    _leave_out_band(lab, low, band)
    np.save(path, lab)
    return lab, {"method": res.method, "seconds": round(seconds, 2), "kept": round(float((lab > 0).mean()), 3),
                 "warnings": [str(w.message) for w in caught]}


def _corrupt(x: torch.Tensor, seed: int) -> tuple:
    """Masked + shuffled cubes (MONAI ``RandCoarseDropout`` / ``RandCoarseShuffle``),
    per sample. Returns (corrupted, changed-region mask)."""
    from monai.transforms import RandCoarseDropout, RandCoarseShuffle

    size = tuple(max(2, s // 8) for s in x.shape[2:])
    drop = RandCoarseDropout(holes=6, spatial_size=size, max_holes=12, max_spatial_size=tuple(2 * s for s in size),
                             fill_value=0.0, prob=1.0)
    shuf = RandCoarseShuffle(holes=6, spatial_size=size, max_holes=12, prob=0.8)
    drop.set_random_state(seed=seed % (2**32))
    shuf.set_random_state(seed=(seed + 1) % (2**32))
    out = []
    for i in range(x.shape[0]):
        out.append(torch.as_tensor(np.asarray(shuf(drop(x[i].clone())))))
    xc = torch.stack(out).to(x.dtype)
    return xc, (xc != x).any(dim=1, keepdim=True)


class _Run:
    """Mutable state of one run (saved as the resume state)."""

    def __init__(self):
        self.stage = "pretrain"
        self.step = 0
        self.pre_step = 0
        self.elapsed = 0.0
        self.cpu = 0.0
        self.log: list = []
        self.best_score = None
        self.best_state = None
        self.best_step = None
        self.losses: list = []
        self.train_start = 0.0
        self.self_step = None  # step at which the self-training labels were made


def train_steps(spec: TrainSpec) -> Generator[TrainProgress, None, TrainReport]:
    """Train the cohort network; yields :class:`TrainProgress`, returns :class:`TrainReport`.

    Parameters
    ----------
    spec : TrainSpec
        Cases with roles, classes, output and run folders, options (module docstring).

    Returns
    -------
    TrainReport
        (as ``StopIteration.value``) with the checkpoint folder written.

    Raises
    ------
    LabelEffError
        No labelled volume or no labels at all, volumes with different channel counts
        or wildly different spacings, an ``init_checkpoint`` with another class list or
        damaged, ``out_dir`` already holding a model, unreadable files.

    Notes
    -----
    ``close()`` cancels at the next yield and leaves ``run_dir/resume.pt``; running the
    same spec again resumes from there.
    """
    if not isinstance(spec, TrainSpec):
        raise LabelEffError(f"train_steps needs a TrainSpec, got {type(spec).__name__}")
    opts = _options(spec)
    session_t0 = time.monotonic()
    session_cpu0 = time.process_time()
    device = resolve_device(opts["device"])
    _set_threads(opts, device)
    k = len(spec.class_names)
    n_classes = k + 1
    if os.path.exists(os.path.join(spec.out_dir, "model.pt")):
        raise LabelEffError(f"out_dir {spec.out_dir!r} already holds a model; give a new checkpoint folder")
    labelled = spec.by_role("labelled")
    if not labelled:
        raise LabelEffError("nothing to train on: no volume has role 'labelled' (scribbles, boxes or a mask); "
                            "annotate at least one volume first")
    os.makedirs(spec.run_dir, exist_ok=True)
    fp = _fingerprint(spec, opts)
    resume_path = os.path.join(spec.run_dir, "resume.pt")

    # ---- warm start --------------------------------------------------------------------
    init_config, init_state = None, None
    if spec.init_checkpoint is not None:
        init_config, init_state = read_checkpoint(spec.init_checkpoint)
        if tuple(init_config["class_names"]) != tuple(spec.class_names):
            raise LabelEffError(
                f"init_checkpoint {spec.init_checkpoint!r} was trained for classes "
                f"{list(init_config['class_names'])} but the project has {list(spec.class_names)}; "
                "the class list changed after training: train from scratch (init_checkpoint=None)"
            )

    # ---- resume state ------------------------------------------------------------------
    run = _Run()
    resume = None
    if os.path.exists(resume_path):
        try:
            resume = torch.load(resume_path, map_location="cpu", weights_only=False)
        except Exception as err:
            raise LabelEffError(f"resume state {resume_path!r} is damaged ({type(err).__name__}); "
                                "delete it to start this run afresh") from err
        if resume.get("fingerprint") != fp:
            resume = None  # another spec used this run_dir: start afresh
    if resume is not None and resume["run"]["stage"] == "done":
        raise LabelEffError(f"run {spec.run_dir!r} already finished; its model is in {resume['out_dir']!r}")

    # ---- geometry and config -----------------------------------------------------------
    yield TrainProgress(0, 1, "reading volume headers", stage="prepare")
    from ..io import read_volume

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
    if resume is not None:
        config = resume["config"]
    elif init_config is not None:
        config = {**init_config}
    else:
        max_vox = GPU_MAX_VOXELS if device.type == "cuda" else CPU_MAX_VOXELS
        target = opts["target_spacing"] or choose_target_spacing(sp, [g[2] for g in geo], max_voxels=max_vox)
        cap = GPU_PATCH_CAP if device.type == "cuda" else CPU_PATCH_CAP
        patch = opts["patch_size"] or choose_patch_size(target, sp, [g[2] for g in geo], cap=cap,
                                                        fraction=0.8 if device.type == "cuda" else 0.6)
        config = {
            "network": "BasicUNet",
            "features": list(opts["features"] or default_features(device)),
            "in_channels": int(channels.pop()),
            "n_classes": n_classes,
            "class_names": list(spec.class_names),
            "target_spacing": [float(t) for t in target],
            "patch_size": [int(p) for p in patch],
            "dropout": 0.1,
            "normalisation": "per channel: clip to 0.5-99.5 percentiles, z-score",
        }
    config = {**config, "class_names": list(spec.class_names), "n_classes": n_classes}
    if int(config["in_channels"]) != int(geo[0][1]):
        raise LabelEffError(f"init_checkpoint expects {config['in_channels']} channel(s); "
                            f"the volumes have {geo[0][1]}")
    patch = tuple(int(p) for p in config["patch_size"])

    # ---- prepare cases -----------------------------------------------------------------
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
                    pseudo, pseudo_info[c.volume_id] = _pseudo_labels(
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
    seed = int(opts["seed"])
    any_boxes = any(pc.boxes is not None for pc in lab_cases)
    lab_ds = make_dataset([to_item(pc, k if any_boxes else 0) for pc in lab_cases], patch, labelled=True,
                          seed=seed)
    semi = bool(opts["semi"]) and bool(unl_cases)
    unl_ds = make_dataset([to_item(pc) for pc in unl_cases], patch, labelled=False, seed=seed + 1) if semi else None
    all_ds = None
    if opts["pretrain"]:
        all_ds = make_dataset([{"image": pc.image} for pc in prepared.values()], patch, labelled=False,
                              seed=seed + 2)

    # ---- networks ----------------------------------------------------------------------
    torch.manual_seed(seed)
    net = build_network(config).to(device)
    if init_state is not None and resume is None:
        net.load_state_dict(init_state)
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    teacher = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(EMA_DECAY), use_buffers=True)
    opt = torch.optim.AdamW(net.parameters(), lr=float(opts["learning_rate"]), weight_decay=1e-4)
    use_amp = device.type == "cuda" if opts["amp"] is None else bool(opts["amp"]) and device.type == "cuda"
    fp16 = use_amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=fp16) if device.type == "cuda" else None
    recon = None
    if resume is not None:
        st = resume["run"]
        for key in ("stage", "step", "pre_step", "elapsed", "cpu", "log", "best_score", "best_step",
                    "train_start"):
            setattr(run, key, st[key])
        run.self_step = st.get("self_step")
        run.best_state = resume.get("best_state")
        net.load_state_dict(resume["net"])
        teacher.load_state_dict(resume["teacher"])
        opt.load_state_dict(resume["opt"])
        if resume.get("recon") is not None:
            recon = build_network(config, out_channels=int(config["in_channels"])).to(device)
            recon.load_state_dict(resume["recon"])
    else:
        run.stage = "pretrain" if opts["pretrain"] else "train"
    resumed_from = run.step if resume is not None else None
    if resumed_from is not None:
        yield TrainProgress(run.step, run.step + 1, f"resumed at step {run.step} ({run.stage})",
                            stage="prepare")

    budget_s = float(opts["max_minutes"]) * 60.0 if opts["max_minutes"] is not None else float("inf")
    max_steps = int(opts["max_steps"]) if opts["max_steps"] is not None else None
    pre_budget = float(opts["pretrain_minutes"]) * 60.0 if opts["pretrain_minutes"] is not None else 0.25 * budget_s
    bs = _batch_size(opts, device, patch, config["features"])
    mc = MC_PASSES_GPU if device.type == "cuda" else MC_PASSES_CPU
    bs_u = bs if device.type == "cuda" else max(1, bs // 2)  # unlabeled patches per step
    last_save = time.monotonic()

    def elapsed():
        return run.elapsed + (time.monotonic() - session_t0)

    def save_resume(stage_override=None):
        state = {
            "fingerprint": fp, "config": config, "out_dir": spec.out_dir,
            "run": {"stage": stage_override or run.stage, "step": run.step, "pre_step": run.pre_step,
                    "elapsed": elapsed(), "cpu": run.cpu + (time.process_time() - session_cpu0),
                    "log": run.log, "best_score": run.best_score, "best_step": run.best_step,
                    "train_start": run.train_start, "self_step": run.self_step},
            "net": net.state_dict(), "teacher": teacher.state_dict(), "opt": opt.state_dict(),
            "recon": recon.state_dict() if recon is not None else None,
            "best_state": run.best_state,
        }
        _atomic_torch_save(state, resume_path)

    def log(entry):
        entry = {"t": round(elapsed(), 2), **entry}
        run.log.append(entry)

    try:
        # ---- self-supervised pretraining ------------------------------------------------
        if run.stage == "pretrain":
            if recon is None:
                recon = build_network(config, out_channels=int(config["in_channels"])).to(device)
                transfer_encoder_decoder(net, recon)
            popt = torch.optim.AdamW(recon.parameters(), lr=float(opts["learning_rate"]), weight_decay=1e-4)
            pre_steps = max(1, max_steps // 4) if max_steps is not None else None
            while True:
                done_time = elapsed() >= pre_budget
                done_steps = pre_steps is not None and run.pre_step >= pre_steps
                if done_time or done_steps:
                    break
                rng = np.random.default_rng([seed, 7, run.pre_step])
                torch.manual_seed(seed * 7919 + run.pre_step)
                b = sample(all_ds, rng, bs, seed=seed * 104729 + run.pre_step)
                x = b["image"].float()
                xc, region = _corrupt(x, seed * 31 + run.pre_step)
                x, xc, region = x.to(device), xc.to(device), region.to(device)
                with autocast(device, use_amp):
                    out = recon(xc)
                loss = _losses.reconstruction_loss(out.float(), x) + _losses.reconstruction_loss(out.float(), x, region)
                popt.zero_grad(set_to_none=True)
                loss.backward()
                popt.step()
                run.pre_step += 1
                lv = float(loss.detach())
                if run.pre_step % 10 == 0:
                    log({"stage": "pretrain", "step": run.pre_step, "loss": round(lv, 5)})
                total = pre_steps or max(run.pre_step + 1, int(run.pre_step * pre_budget / max(elapsed(), 1e-3)))
                yield TrainProgress(run.pre_step, total, f"pretrain: step {run.pre_step}, L1 {lv:.4f}",
                                    loss=lv, stage="pretrain")
                if time.monotonic() - last_save > SAVE_EVERY_S:
                    save_resume()
                    last_save = time.monotonic()
            n = transfer_encoder_decoder(recon, net)
            teacher = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(EMA_DECAY), use_buffers=True)
            opt = torch.optim.AdamW(net.parameters(), lr=float(opts["learning_rate"]), weight_decay=1e-4)
            log({"stage": "pretrain", "done": True, "steps": run.pre_step, "tensors_transferred": n})
            recon = None
            run.stage = "train"
            run.train_start = elapsed()

        # ---- hybrid training -------------------------------------------------------------
        start_elapsed = run.train_start
        train_budget = max(1.0, budget_s - start_elapsed)
        val_every = opts["val_every"]
        if val_every is None:
            val_every = max(10, (max_steps or 200) // 5)
        base_lr = float(opts["learning_rate"])

        def frac():
            """Progress through the run: by steps when ``max_steps`` is set (so a resumed
            run follows exactly the same schedule), else by time."""
            if max_steps is not None:
                return min(1.0, run.step / max_steps)
            return min(1.0, max(0.0, (elapsed() - start_elapsed) / train_budget))

        def validate():
            model = teacher.module
            scores = []
            for pc in val_cases:
                pr = sliding_window_probs(model, pc.image, patch, device, amp=use_amp).argmax(0).numpy()
                if pc.mask is not None:
                    scores.append(mean_dice(pr, pc.mask, n_classes))
                else:
                    scores.append(scribble_dice(pr, pc.scribbles, n_classes))
            return float(np.mean(scores)) if scores else None

        self_at = float(opts["self_training"]) if unl_cases else 0.0
        self_dir = os.path.join(spec.run_dir, "self_labels")
        if self_at and run.self_step is not None:  # resumed after the switch: the same labels
            self_lab = {pc.volume_id: np.load(os.path.join(self_dir, f"{pc.volume_id}.npy")) for pc in unl_cases}
            lab_ds = _self_dataset(lab_cases, unl_cases, self_lab, k if any_boxes else 0, patch, seed)
        while True:
            if max_steps is not None and run.step >= max_steps:
                break
            if elapsed() >= budget_s:
                break
            if self_at and run.self_step is None and frac() >= self_at:
                yield TrainProgress(run.step, run.step + 1, f"self-training: the model labels {len(unl_cases)} "
                                    "unlabeled volume(s)", stage="prepare")
                self_lab = _self_labels(teacher.module, unl_cases, patch, device, use_amp,
                                        config["single_component"], self_dir)
                lab_ds = _self_dataset(lab_cases, unl_cases, self_lab, k if any_boxes else 0, patch, seed)
                run.self_step = run.step
                log({"stage": "self_training", "step": run.step, "volumes": len(self_lab),
                     "kept": round(float(np.mean([(v > 0).mean() for v in self_lab.values()])), 4)})
                save_resume()
            step = run.step
            rng = np.random.default_rng([seed, 1, step])
            torch.manual_seed(seed * 1_000_003 + step)
            for g in opt.param_groups:
                g["lr"] = base_lr * (1.0 - 0.9 * frac())
            net.train()
            b = sample(lab_ds, rng, bs, seed=seed * 104729 + step)
            x = b["image"].float().to(device)
            lab = b["lab"][:, 0].long().to(device)
            w = b["weight"][:, 0].float().to(device)
            with autocast(device, use_amp):
                logits = net(x)
            logits = logits.float()
            probs = torch.softmax(logits, dim=1)
            sup = _losses.partial_ce_dice(logits, lab - 1, w)
            loss = sup
            parts = {"sup": float(sup.detach())}
            if "boxes" in b:
                bx = b["boxes"].to(device)
                fb = b["forbid"].to(device).bool()
                bl = _losses.box_loss(probs, bx) + _losses.exclusion_loss(probs, fb)
                loss = loss + BOX_WEIGHT * bl
                parts["box"] = float(bl.detach())
            if semi:
                u = sample(unl_ds, rng, bs_u, seed=seed * 15485863 + step)
                xu = u["image"].float().to(device)
                noise = lambda t: t + torch.clamp(torch.randn_like(t) * 0.1, -0.2, 0.2)  # noqa: E731
                with autocast(device, use_amp):
                    lu = net(noise(xu))
                pu = torch.softmax(lu.float(), dim=1)
                with torch.no_grad():
                    teacher.train()  # dropout on: MC samples
                    tp = []
                    for _ in range(mc):
                        with autocast(device, use_amp):
                            tp.append(torch.softmax(teacher(noise(xu)).float(), dim=1))
                    tmean = torch.stack(tp).mean(0)
                    ent = -(tmean * torch.log(tmean + 1e-6)).sum(1)
                    r = _ramp(frac())
                    thr = (0.75 + 0.25 * r) * math.log(n_classes)
                    cmask = ent < thr
                cons = _losses.consistency_loss(pu, tmean, cmask)
                loss = loss + CONSISTENCY * r * cons
                parts["cons"] = float(cons.detach())
                parts["kept"] = float(cmask.float().mean())
            opt.zero_grad(set_to_none=True)
            if scaler is not None and fp16:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            teacher.update_parameters(net)
            run.step += 1
            lv = float(loss.detach())
            run.losses.append(lv)
            run.losses = run.losses[-20:]
            mean_loss = float(np.mean(run.losses))
            if run.step % 10 == 0 or run.step == 1:
                log({"stage": "train", "step": run.step, "loss": round(lv, 5),
                     **{k2: round(v, 5) for k2, v in parts.items()}, "lr": opt.param_groups[0]["lr"]})
            val = None
            if val_cases and run.step % val_every == 0:
                yield TrainProgress(run.step, run.step + 1, "validating", loss=mean_loss, stage="validate")
                val = validate()
                log({"stage": "validate", "step": run.step, "val_dice": round(val, 5)})
                if run.best_score is None or val >= run.best_score:
                    run.best_score, run.best_step = val, run.step
                    run.best_state = copy.deepcopy(teacher.module.state_dict())
            if max_steps is not None:
                total = max_steps
            else:
                total = max(run.step + 1, int(run.step / max(frac(), 1e-3)))
            yield TrainProgress(run.step, total, f"train: step {run.step}/{total}, loss {mean_loss:.4f}"
                                + (f", val Dice {val:.3f}" if val is not None else ""),
                                loss=mean_loss, val_dice=val if val is not None else run.best_score,
                                stage="train")
            if time.monotonic() - last_save > SAVE_EVERY_S:
                save_resume()
                last_save = time.monotonic()
    except GeneratorExit:
        try:
            save_resume()
        except LabelEffError:
            pass  # cancelling must not fail; the last periodic state (if any) stays
        raise

    # ---- final validation and save -----------------------------------------------------
    yield TrainProgress(run.step, run.step, "final validation", stage="validate")
    final_state = teacher.module.state_dict()
    val_score = None
    if val_cases:
        val_score = validate()
        log({"stage": "validate", "step": run.step, "val_dice": round(val_score, 5), "final": True})
        if run.best_score is not None and run.best_score > val_score:
            final_state, val_score = run.best_state, run.best_score
            log({"stage": "select", "best_step": run.best_step, "val_dice": round(val_score, 5)})
    yield TrainProgress(run.step, run.step, "saving checkpoint", stage="save")
    os.makedirs(spec.out_dir, exist_ok=True)
    seconds = elapsed()
    cpu = run.cpu + (time.process_time() - session_cpu0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    info = {
        "device": str(device), "pid": os.getpid(), "cpu_seconds": round(cpu, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "threads": torch.get_num_threads(), "batch_size": bs, "semi": semi,
        "pretrain": bool(opts["pretrain"]), "pretrain_steps": run.pre_step, "resumed_from": resumed_from,
        "pseudo_labels": pseudo_info, "n_labelled": len(lab_cases), "n_unlabeled": len(unl_cases),
        "n_validation": len(val_cases), "amp": use_amp, "mc_passes": mc if semi else 0,
        "unlabeled_batch": bs_u if semi else 0, "patch_size": list(patch),
        "self_training_step": run.self_step,
        "target_spacing": list(config["target_spacing"]),
    }
    config_out = {**config, "training": {**{k2: v for k2, v in opts.items()}, "steps": run.step,
                                         "seconds": round(seconds, 1), **info},
                  "code_commit": _commit(), "version": os.path.basename(os.path.normpath(spec.out_dir))}
    _atomic_text(os.path.join(spec.out_dir, "config.json"), json.dumps(config_out, indent=1, default=str))
    _atomic_text(os.path.join(spec.out_dir, "train_log.jsonl"),
                 "".join(json.dumps(e, default=str) + "\n" for e in run.log))
    _atomic_text(os.path.join(spec.out_dir, "score.json"),
                 json.dumps({"val_score": val_score, "n_validation": len(val_cases), "steps": run.step,
                             "metric": "mean Dice (masks; scribbled voxels where no mask)"}, indent=1))
    _atomic_torch_save({k2: v.detach().cpu() for k2, v in final_state.items()},
                       os.path.join(spec.out_dir, "model.pt"))
    run.elapsed = seconds
    save_resume(stage_override="done")
    epochs = int(run.step * bs // max(1, len(lab_cases)))
    return TrainReport(out_dir=spec.out_dir, val_score=val_score, epochs=epochs, seconds=round(seconds, 1),
                       log=list(run.log), steps=run.step,
                       version=os.path.basename(os.path.normpath(spec.out_dir)), info=info)
