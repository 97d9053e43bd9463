"""Training options: defaults, checks, the run's fingerprint, machine-dependent choices.

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
``interactive`` (True)    the network takes prompt channels (strokes, boxes, previous
                          mask) and trains on simulated interactions
                          (``_interactive.InteractiveTrainer``); False: image only
``rules`` (())            anatomical rules as tuples ``(relation, a, b)`` with 1-based
                          structure ids (``Rule.as_tuple()``); a project passes its own
                          pair rules. Only ``inside``, ``part_of`` and ``excludes`` have a
                          training form (``_rule_loss``); the others are accepted and
                          skipped (they act at prediction, ``rules.apply``)
``rule_weight`` (0.0)     weight of the rule penalty (``_rule_loss.rule_penalty``) on the
                          softmax of every voxel of the labelled patches, labelled or not;
                          0 = off (the default until a benchmark shows it helps)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess

import numpy as np
import torch

from ..._errors import LabelEffError
from ._rule_loss import check_rule_tuples
from ._spec import TrainSpec

DEFAULTS = {
    "max_minutes": 10.0, "max_steps": None, "device": "auto", "seed": 0, "semi": True,
    "pretrain": False, "pretrain_minutes": None, "pseudo_labels": True, "patch_size": None,
    "batch_size": None, "target_spacing": None, "features": None, "learning_rate": 3e-3,
    "val_every": None, "num_threads": None, "amp": None, "verbose": False,
    "pseudo_cache_dir": None, "pseudo_confidence": 0.0, "self_training": 0.0,
    "pseudo_band": None, "interactive": True, "rules": (), "rule_weight": 0.0,
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
VOLATILE = ("max_minutes", "max_steps", "device", "verbose", "num_threads", "val_every",
             "pseudo_cache_dir")



def check_options(spec: TrainSpec) -> dict:
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
    w = opts["rule_weight"]
    if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(w)) or float(w) < 0:
        raise LabelEffError(f"rule_weight={w!r} must be a finite number >= 0 (0 = no rule penalty)")
    opts["rule_weight"] = float(w)
    # plain tuples with int ids: the fingerprint and config.json see one form
    opts["rules"] = check_rule_tuples(opts["rules"] or (), len(spec.class_names))
    return opts


def fingerprint(spec: TrainSpec, opts: dict) -> str:
    stable = {k: v for k, v in opts.items() if k not in VOLATILE}
    if not stable.get("rule_weight"):
        # without a weight the rules change nothing: runs from before these options
        # existed, and runs whose project rules were edited, still resume
        stable.pop("rules", None)
        stable.pop("rule_weight", None)
    cases = []
    for c in spec.cases:
        st = os.stat(c.labels_path) if c.labels_path and os.path.exists(c.labels_path) else None
        cases.append([c.volume_id, c.role, c.image_path, c.labels_path,
                      None if st is None else [st.st_size, int(st.st_mtime)]])
    blob = json.dumps({"cases": cases, "classes": spec.class_names, "opts": stable,
                       "init": spec.init_checkpoint}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def code_commit() -> str | None:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def batch_size(opts, device, patch, features) -> int:
    """Labelled patches per step: the option, else as many (<= 2) as a quarter of the
    free memory holds (measured: ~1.3 KB per voxel per feature of the first level for
    BasicUNet training in fp32, activations + gradients)."""
    if opts["batch_size"] is not None:
        return max(1, int(opts["batch_size"]))
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = _available_bytes() or 8 * 2**30
    per = float(np.prod(patch)) * features[0] * 1300.0
    return int(max(1, min(2, (0.25 * free) // max(per, 1.0))))


def set_threads(opts, device):
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


def ramp(frac: float) -> float:
    """UA-MT's sigmoid ramp-up exp(-5 (1 - t)^2) over the first 40% of the run."""
    t = min(1.0, max(0.0, frac / 0.4))
    return float(math.exp(-5.0 * (1.0 - t) ** 2))



def _available_bytes() -> int | None:
    """Memory available to this process (psutil: ``MemAvailable`` on Linux), or None."""
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)
