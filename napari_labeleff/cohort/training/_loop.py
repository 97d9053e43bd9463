"""Hybrid training of the cohort network: ``train_steps(spec)`` (contract C3).

Stages
------
1. **prepare** (``_setup``): read every volume (``napari_labeleff.io``), resample to the
   target spacing, normalise; for weakly labelled volumes (scribbles / boxes, no full
   mask) run the graph method (``engine.refine``) on the weak labels and keep its
   confident voxels as pseudo-labels (weight ``PSEUDO_WEIGHT``; the scribbles
   themselves always weigh 1). Cached in ``run_dir`` so a resumed run does not
   recompute them.
2. **pretrain** (option ``pretrain``, ``_pretrain``): self-supervised reconstruction on
   ALL the project's images, as in MONAI's self-supervised tutorial: patches corrupted
   with ``RandCoarseDropout`` (masked cubes) and ``RandCoarseShuffle`` (shuffled cubes)
   are restored by the same ``BasicUNet`` with a C-channel output (L1 loss); every
   weight but the output layer then initialises the segmentation network.
3. **train** (hybrid, :meth:`Trainer.hybrid_step`): per step a labelled batch (full
   masks: Dice + CE; scribbles and pseudo-labels: partial CE + Dice after the softmax;
   boxes: outside = background, tightness MIL term and an exclusion term; with
   ``rule_weight``, the anatomical-rule penalty of ``_rule_loss`` on every voxel of
   the patch) and, with ``semi``, an unlabeled batch for the UA-MT mean-teacher
   consistency: the EMA teacher (``torch.optim.swa_utils.AveragedModel``) predicts
   ``mc_passes`` noisy, dropout-sampled versions, voxels whose predictive entropy is
   above a threshold ramped from 0.75 to 1.0 x ln(K+1) are dropped, and the student's
   softmax is pulled toward the teacher's mean (squared error, weight ramped up to
   ``consistency``). The EMA teacher is kept in every arm and is the model saved (so
   arms differ only by the terms used).
4. **validate** every ``val_every`` steps and at the end on the validation cases (mean
   Dice on masks, or on held-out scribbled voxels); the best-scoring weights are saved.

The interactive network (issue 19) is :class:`InteractiveTrainer`: the image plus
prompt channels (``_prompts``) filled with simulated interactions (``_simulate``).

Options: see ``_options``. Extending the loop:
:meth:`Trainer.inputs` builds the network's input from a batch (add channels such as
simulated clicks there, and ``config["in_channels"]`` with them), and
:meth:`Trainer.supervised_loss` / :meth:`Trainer.consistency_loss` are the loss terms
of one step; a subclass passed as ``train_steps(spec, trainer=...)`` changes them
without touching the schedule, the resume state or the checkpoint.

Cancelling (``close()`` on the generator) writes ``run_dir/resume.pt``; running the
same spec again continues from that step with the same weights, optimiser and data
stream. A state is also written every ~60 s, so a killed process loses at most that.
The resume file holds tensors and plain values only and is read with
``weights_only=True`` (``_checkpoint.safe_load``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import resource
import time
from collections.abc import Generator

import numpy as np
import torch

from ..._errors import LabelEffError
from ..._metrics import mean_dice, scribble_dice
from ...engine import resolve_device
from . import _losses
from ._checkpoint import atomic_text, atomic_torch_save, read_checkpoint, safe_load
from ._data import sample
from ._inference import autocast, sliding_window_probs
from ._network import build_network, transfer_state
from ._prompts import encode_prompts, image_channels
from ._options import (BOX_WEIGHT, CONSISTENCY, EMA_DECAY, MC_PASSES_CPU, MC_PASSES_GPU,
                       SAVE_EVERY_S, batch_size, check_options, code_commit, fingerprint,
                       ramp, set_threads)
from ._pretrain import pretrain_stage
from ._pseudo import self_dataset, self_labels
from ._rule_loss import rule_penalty
from ._setup import make_config, make_datasets, prepare_cases, read_geometry
from ._simulate import simulate
from ._spec import TrainProgress, TrainReport, TrainSpec

#: Fields of :class:`RunState` saved in the resume file.
_SAVED = ("stage", "step", "pre_step", "elapsed", "cpu", "log", "best_score", "best_step",
          "train_start", "self_step")


class RunState:
    """Mutable counters of one run (saved in the resume file)."""

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

    def restore(self, saved: dict) -> None:
        for key in _SAVED:
            if key == "self_step":
                self.self_step = saved.get("self_step")
            else:
                setattr(self, key, saved[key])


def load_resume(resume_path: str, fp: str) -> dict | None:
    """The resume state of this run (None: none, or another spec's)."""
    if not os.path.exists(resume_path):
        return None
    resume = safe_load(resume_path, f"resume state {resume_path!r}")
    if not isinstance(resume, dict) or "run" not in resume:
        raise LabelEffError(f"resume state {resume_path!r} is damaged (not a resume state); "
                            "delete it to start this run afresh")
    if resume.get("fingerprint") != fp:
        return None  # another spec used this run_dir: start afresh
    return resume


class Trainer:
    """The networks, optimiser and schedule of one run, and the steps it is made of."""

    def __init__(self, spec: TrainSpec, opts: dict, device, config: dict, cases, data,
                 run: RunState, fp: str, started: tuple[float, float] | None = None):
        self.spec, self.opts, self.device, self.config = spec, opts, device, config
        self.cases, self.data, self.run, self.fp = cases, data, run, fp
        self.seed = int(opts["seed"])
        self.n_classes = len(spec.class_names) + 1
        self.patch = tuple(int(p) for p in config["patch_size"])
        self.semi = data.unlabeled is not None
        self.resume_path = os.path.join(spec.run_dir, "resume.pt")
        # (monotonic, process) clocks when this session of the run began: preparing the
        # cases counts against the budget too
        self.t0, self.cpu0 = started or (time.monotonic(), time.process_time())
        self.budget_s = float(opts["max_minutes"]) * 60.0 if opts["max_minutes"] is not None else float("inf")
        self.max_steps = int(opts["max_steps"]) if opts["max_steps"] is not None else None
        self.bs = batch_size(opts, device, self.patch, config["features"])
        self.mc = MC_PASSES_GPU if device.type == "cuda" else MC_PASSES_CPU
        self.bs_u = self.bs if device.type == "cuda" else max(1, self.bs // 2)  # unlabeled patches per step
        self.last_save = time.monotonic()
        self.recon = None
        self.use_amp = device.type == "cuda" if opts["amp"] is None else bool(opts["amp"]) and device.type == "cuda"
        self.fp16 = self.use_amp and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.fp16) if device.type == "cuda" else None

    # ---- networks ---------------------------------------------------------------------
    def build(self, init_state, resume: dict | None) -> None:
        """Student, EMA teacher and optimiser (from the warm start or the resume state)."""
        torch.manual_seed(self.seed)
        self.net = build_network(self.config).to(self.device)
        if init_state is not None and resume is None:
            try:
                self.net.load_state_dict(init_state)
            except RuntimeError:
                # a warm start from a checkpoint with other input channels (plain <->
                # interactive): every tensor that fits is copied, the first conv is new
                n = transfer_state(init_state, self.net)
                self.log({"stage": "warm_start", "tensors_copied": n, "of": len(init_state)})
        self.new_teacher_and_optimiser()
        if resume is not None:
            self.run.restore(resume["run"])
            self.run.best_state = resume.get("best_state")
            self.net.load_state_dict(resume["net"])
            self.teacher.load_state_dict(resume["teacher"])
            self.opt.load_state_dict(resume["opt"])
            if resume.get("recon") is not None:
                self.recon = build_network(self.config, out_channels=image_channels(self.config)).to(self.device)
                self.recon.load_state_dict(resume["recon"])
        else:
            self.run.stage = "pretrain" if self.opts["pretrain"] else "train"

    def new_teacher_and_optimiser(self) -> None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self.teacher = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(EMA_DECAY), use_buffers=True)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=float(self.opts["learning_rate"]), weight_decay=1e-4)

    # ---- bookkeeping ------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.run.elapsed + (time.monotonic() - self.t0)

    def cpu_seconds(self) -> float:
        return self.run.cpu + (time.process_time() - self.cpu0)

    def log(self, entry: dict) -> None:
        self.run.log.append({"t": round(self.elapsed(), 2), **entry})

    def save_resume(self, stage_override=None) -> None:
        """Write the resume state (tensors and plain values only)."""
        run = self.run
        saved = {key: getattr(run, key) for key in _SAVED}
        saved.update(stage=stage_override or run.stage, elapsed=self.elapsed(), cpu=self.cpu_seconds())
        state = {
            "fingerprint": self.fp, "config": self.config, "out_dir": self.spec.out_dir, "run": saved,
            "net": self.net.state_dict(), "teacher": self.teacher.state_dict(), "opt": self.opt.state_dict(),
            "recon": self.recon.state_dict() if self.recon is not None else None,
            "best_state": run.best_state,
        }
        atomic_torch_save(state, self.resume_path)

    def save_now_and_then(self) -> None:
        if time.monotonic() - self.last_save > SAVE_EVERY_S:
            self.save_resume()
            self.last_save = time.monotonic()

    def frac(self) -> float:
        """Progress through the run: by steps when ``max_steps`` is set (so a resumed
        run follows exactly the same schedule), else by time."""
        if self.max_steps is not None:
            return min(1.0, self.run.step / self.max_steps)
        train_budget = max(1.0, self.budget_s - self.run.train_start)
        return min(1.0, max(0.0, (self.elapsed() - self.run.train_start) / train_budget))

    # ---- one hybrid step ------------------------------------------------------------------
    def inputs(self, batch: dict) -> torch.Tensor:
        """The network's input for a batch (the image channels; issue 19 adds channels)."""
        return batch["image"].float().to(self.device)

    def supervised_loss(self, batch: dict, logits: torch.Tensor, parts: dict) -> torch.Tensor:
        """Partial CE + Dice on the labelled voxels, plus the box terms and, with
        ``rule_weight`` > 0 and ``rules``, the rule penalty on every voxel of the
        patches (it needs no labels: it constrains the unlabelled voxels too)."""
        lab = batch["lab"][:, 0].long().to(self.device)
        w = batch["weight"][:, 0].float().to(self.device)
        probs = torch.softmax(logits, dim=1)
        loss = _losses.partial_ce_dice(logits, lab - 1, w)
        parts["sup"] = float(loss.detach())
        if "boxes" in batch:
            bx = batch["boxes"].to(self.device)
            fb = batch["forbid"].to(self.device).bool()
            bl = _losses.box_loss(probs, bx) + _losses.exclusion_loss(probs, fb)
            loss = loss + BOX_WEIGHT * bl
            parts["box"] = float(bl.detach())
        rule_weight = float(self.opts["rule_weight"])
        if rule_weight > 0 and self.opts["rules"]:
            rl = rule_penalty(probs, self.opts["rules"])
            loss = loss + rule_weight * rl
            parts["rule"] = float(rl.detach())
        return loss

    def consistency_loss(self, rng, step: int, parts: dict) -> torch.Tensor:
        """UA-MT: the student's softmax pulled toward the EMA teacher's MC mean where the
        teacher is certain enough (weight ramped up)."""
        u = sample(self.data.unlabeled, rng, self.bs_u, seed=self.seed * 15485863 + step)
        xu = self.inputs(u)
        noise = lambda t: t + torch.clamp(torch.randn_like(t) * 0.1, -0.2, 0.2)  # noqa: E731
        with autocast(self.device, self.use_amp):
            lu = self.net(noise(xu))
        pu = torch.softmax(lu.float(), dim=1)
        with torch.no_grad():
            self.teacher.train()  # dropout on: MC samples
            tp = []
            for _ in range(self.mc):
                with autocast(self.device, self.use_amp):
                    tp.append(torch.softmax(self.teacher(noise(xu)).float(), dim=1))
            tmean = torch.stack(tp).mean(0)
            ent = -(tmean * torch.log(tmean + 1e-6)).sum(1)
            r = ramp(self.frac())
            thr = (0.75 + 0.25 * r) * math.log(self.n_classes)
            cmask = ent < thr
        cons = _losses.consistency_loss(pu, tmean, cmask)
        parts["cons"] = float(cons.detach())
        parts["kept"] = float(cmask.float().mean())
        return CONSISTENCY * r * cons

    def optimise(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None and self.fp16:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        self.teacher.update_parameters(self.net)

    def hybrid_step(self) -> tuple[float, dict]:
        """One optimiser step; returns (loss, its parts)."""
        step = self.run.step
        rng = np.random.default_rng([self.seed, 1, step])
        torch.manual_seed(self.seed * 1_000_003 + step)
        for g in self.opt.param_groups:
            g["lr"] = float(self.opts["learning_rate"]) * (1.0 - 0.9 * self.frac())
        self.net.train()
        b = sample(self.data.labelled, rng, self.bs, seed=self.seed * 104729 + step)
        x = self.inputs(b)
        with autocast(self.device, self.use_amp):
            logits = self.net(x)
        parts: dict = {}
        loss = self.supervised_loss(b, logits.float(), parts)
        if self.semi:
            loss = loss + self.consistency_loss(rng, step, parts)
        self.optimise(loss)
        self.run.step += 1
        return float(loss.detach()), parts

    # ---- validation, self-training ----------------------------------------------------------
    def validate(self) -> float | None:
        model = self.teacher.module
        scores = []
        for pc in self.cases.validation:
            pr = sliding_window_probs(model, pc.image, self.patch, self.device, amp=self.use_amp).argmax(0).numpy()
            if pc.mask is not None:
                scores.append(mean_dice(pr, pc.mask, self.n_classes))
            else:
                scores.append(scribble_dice(pr, pc.scribbles, self.n_classes))
        return float(np.mean(scores)) if scores else None

    def validate_and_keep_best(self, mean_loss: float):
        """Generator: validates (yielding once), keeps the best weights; returns the score."""
        run = self.run
        yield TrainProgress(run.step, run.step + 1, "validating", loss=mean_loss, stage="validate")
        val = self.validate()
        self.log({"stage": "validate", "step": run.step, "val_dice": round(val, 5)})
        if run.best_score is None or val >= run.best_score:
            run.best_score, run.best_step = val, run.step
            run.best_state = copy.deepcopy(self.teacher.module.state_dict())
        return val

    def _self_dir(self) -> str:
        return os.path.join(self.spec.run_dir, "self_labels")

    def _k_boxes(self) -> int:
        return len(self.spec.class_names) if self.cases.any_boxes else 0

    def reload_self_labels(self) -> None:
        """Resumed after the self-training switch: the same labels as before."""
        unl = self.cases.unlabeled
        labels = {pc.volume_id: np.load(os.path.join(self._self_dir(), f"{pc.volume_id}.npy")) for pc in unl}
        self.data.labelled = self_dataset(self.cases.labelled, unl, labels, self._k_boxes(), self.patch, self.seed)

    def self_training_switch(self):
        """Generator: the teacher labels the unlabeled volumes, which join the labelled pool."""
        run, unl = self.run, self.cases.unlabeled
        yield TrainProgress(run.step, run.step + 1, f"self-training: the model labels {len(unl)} "
                            "unlabeled volume(s)", stage="prepare")
        labels = self_labels(self.teacher.module, unl, self.patch, self.device, self.use_amp,
                             self.config["single_component"], self._self_dir())
        self.data.labelled = self_dataset(self.cases.labelled, unl, labels, self._k_boxes(), self.patch, self.seed)
        run.self_step = run.step
        self.log({"stage": "self_training", "step": run.step, "volumes": len(labels),
                  "kept": round(float(np.mean([(v > 0).mean() for v in labels.values()])), 4)})
        self.save_resume()

    # ---- the hybrid stage --------------------------------------------------------------------
    def _val_every(self) -> int:
        val_every = self.opts["val_every"]
        return max(10, (self.max_steps or 200) // 5) if val_every is None else val_every

    def _done(self) -> bool:
        return (self.max_steps is not None and self.run.step >= self.max_steps) or self.elapsed() >= self.budget_s

    def train_stage(self):
        """Generator: hybrid steps until the step count or the time budget is reached."""
        run = self.run
        val_every = self._val_every()
        self_at = float(self.opts["self_training"]) if self.cases.unlabeled else 0.0
        if self_at and run.self_step is not None:
            self.reload_self_labels()
        while not self._done():
            if self_at and run.self_step is None and self.frac() >= self_at:
                yield from self.self_training_switch()
            lv, parts = self.hybrid_step()
            run.losses = (run.losses + [lv])[-20:]
            mean_loss = float(np.mean(run.losses))
            if run.step % 10 == 0 or run.step == 1:
                self.log({"stage": "train", "step": run.step, "loss": round(lv, 5),
                          **{k2: round(v, 5) for k2, v in parts.items()}, "lr": self.opt.param_groups[0]["lr"]})
            val = None
            if self.cases.validation and run.step % val_every == 0:
                val = yield from self.validate_and_keep_best(mean_loss)
            total = self.max_steps if self.max_steps is not None else \
                max(run.step + 1, int(run.step / max(self.frac(), 1e-3)))
            yield TrainProgress(run.step, total, f"train: step {run.step}/{total}, loss {mean_loss:.4f}"
                                + (f", val Dice {val:.3f}" if val is not None else ""),
                                loss=mean_loss, val_dice=val if val is not None else run.best_score,
                                stage="train")
            self.save_now_and_then()

    # ---- the end -----------------------------------------------------------------------------
    def finish(self, resumed_from):
        """Generator: final validation (best weights kept), checkpoint folder written;
        returns the :class:`TrainReport`."""
        run, spec, cases = self.run, self.spec, self.cases
        yield TrainProgress(run.step, run.step, "final validation", stage="validate")
        final_state = self.teacher.module.state_dict()
        val_score = None
        if cases.validation:
            val_score = self.validate()
            self.log({"stage": "validate", "step": run.step, "val_dice": round(val_score, 5), "final": True})
            if run.best_score is not None and run.best_score > val_score:
                final_state, val_score = run.best_state, run.best_score
                self.log({"stage": "select", "best_step": run.best_step, "val_dice": round(val_score, 5)})
        yield TrainProgress(run.step, run.step, "saving checkpoint", stage="save")
        os.makedirs(spec.out_dir, exist_ok=True)
        seconds = self.elapsed()
        info = self.info(resumed_from)
        version = os.path.basename(os.path.normpath(spec.out_dir))
        config_out = {**self.config, "training": {**dict(self.opts), "steps": run.step,
                                                  "seconds": round(seconds, 1), **info},
                      "code_commit": code_commit(), "version": version}
        atomic_text(os.path.join(spec.out_dir, "config.json"), json.dumps(config_out, indent=1, default=str))
        atomic_text(os.path.join(spec.out_dir, "train_log.jsonl"),
                    "".join(json.dumps(e, default=str) + "\n" for e in run.log))
        atomic_text(os.path.join(spec.out_dir, "score.json"),
                    json.dumps({"val_score": val_score, "n_validation": len(cases.validation), "steps": run.step,
                                "metric": "mean Dice (masks; scribbled voxels where no mask)"}, indent=1))
        atomic_torch_save({k2: v.detach().cpu() for k2, v in final_state.items()},
                          os.path.join(spec.out_dir, "model.pt"))
        run.elapsed = seconds
        self.save_resume(stage_override="done")
        epochs = int(run.step * self.bs // max(1, len(cases.labelled)))
        return TrainReport(out_dir=spec.out_dir, val_score=val_score, epochs=epochs, seconds=round(seconds, 1),
                           log=list(run.log), steps=run.step, version=version, info=info)

    def info(self, resumed_from) -> dict:
        run, cases, opts = self.run, self.cases, self.opts
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        return {
            "device": str(self.device), "pid": os.getpid(), "cpu_seconds": round(self.cpu_seconds(), 1),
            "peak_rss_mb": round(peak_mb, 1),
            "threads": torch.get_num_threads(), "batch_size": self.bs, "semi": self.semi,
            "pretrain": bool(opts["pretrain"]), "pretrain_steps": run.pre_step, "resumed_from": resumed_from,
            "pseudo_labels": cases.pseudo_info, "n_labelled": len(cases.labelled),
            "n_unlabeled": len(cases.unlabeled), "n_validation": len(cases.validation), "amp": self.use_amp,
            "mc_passes": self.mc if self.semi else 0, "unlabeled_batch": self.bs_u if self.semi else 0,
            "patch_size": list(self.patch), "self_training_step": run.self_step,
            "target_spacing": list(self.config["target_spacing"]),
        }


class InteractiveTrainer(Trainer):
    """Hybrid training with simulated interaction sequences as prompt channels."""

    def inputs(self, batch: dict) -> torch.Tensor:
        x = batch["image"].float()
        k = self.n_classes - 1
        if "lab" not in batch:
            return x.to(self.device)  # the network appends empty prompts
        lab = batch["lab"][:, 0].numpy()
        strokes, boxes, prev = [], [], []
        for i in range(lab.shape[0]):
            s, b, p, _ = simulate(lab[i], k, np.random.default_rng([self.seed, 7, self.run.step, i]))
            strokes.append(s)
            boxes.append(b)
            prev.append(p)
        prompts = encode_prompts(torch.from_numpy(np.stack(strokes)), torch.from_numpy(np.stack(boxes)),
                                 torch.from_numpy(np.stack(prev)), k)
        return torch.cat([x, prompts], dim=1).to(self.device)


def _warm_start(spec: TrainSpec):
    """(config, state) of ``spec.init_checkpoint`` (None, None without one)."""
    if spec.init_checkpoint is None:
        return None, None
    init_config, init_state = read_checkpoint(spec.init_checkpoint)
    if tuple(init_config["class_names"]) != tuple(spec.class_names):
        raise LabelEffError(
            f"init_checkpoint {spec.init_checkpoint!r} was trained for classes "
            f"{list(init_config['class_names'])} but the project has {list(spec.class_names)}; "
            "the class list changed after training: train from scratch (init_checkpoint=None)"
        )
    return init_config, init_state


def _check_outputs(spec: TrainSpec) -> None:
    if os.path.exists(os.path.join(spec.out_dir, "model.pt")):
        raise LabelEffError(f"out_dir {spec.out_dir!r} already holds a model; give a new checkpoint folder")
    if not spec.by_role("labelled"):
        raise LabelEffError("nothing to train on: no volume has role 'labelled' (scribbles, boxes or a mask); "
                            "annotate at least one volume first")


def train_steps(spec: TrainSpec, *, trainer: type | None = None) -> Generator[TrainProgress, None, TrainReport]:
    """Train the cohort network; yields :class:`TrainProgress`, returns :class:`TrainReport`.

    Parameters
    ----------
    spec : TrainSpec
        Cases with roles, classes, output and run folders, options (``_options``).
    trainer : type, optional
        :class:`Trainer` or a subclass (other inputs or loss terms; module docstring);
        default :class:`InteractiveTrainer` with the option ``interactive`` (on by
        default), else :class:`Trainer`.

    Returns
    -------
    TrainReport
        (as ``StopIteration.value``) with the checkpoint folder written.

    Raises
    ------
    LabelEffError
        No labelled volume or no labels at all, volumes with different channel counts
        or wildly different spacings, an ``init_checkpoint`` with another class list or
        damaged, ``out_dir`` already holding a model, unreadable files, a resume file
        that holds more than weights and plain values (refused unread).

    Notes
    -----
    ``close()`` cancels at the next yield and leaves ``run_dir/resume.pt``; running the
    same spec again resumes from there.
    """
    if not isinstance(spec, TrainSpec):
        raise LabelEffError(f"train_steps needs a TrainSpec, got {type(spec).__name__}")
    opts = check_options(spec)
    started = (time.monotonic(), time.process_time())
    device = resolve_device(opts["device"])
    set_threads(opts, device)
    _check_outputs(spec)
    os.makedirs(spec.run_dir, exist_ok=True)
    fp = fingerprint(spec, opts)
    init_config, init_state = _warm_start(spec)
    resume = load_resume(os.path.join(spec.run_dir, "resume.pt"), fp)
    if resume is not None and resume["run"]["stage"] == "done":
        raise LabelEffError(f"run {spec.run_dir!r} already finished; its model is in {resume['out_dir']!r}")

    yield TrainProgress(0, 1, "reading volume headers", stage="prepare")
    geo = read_geometry(spec)
    config = make_config(spec, opts, device, geo, resumed=None if resume is None else resume["config"],
                         init=init_config)
    cases = yield from prepare_cases(spec, config, opts)
    semi = bool(opts["semi"]) and bool(cases.unlabeled)
    data = make_datasets(cases, opts, tuple(int(p) for p in config["patch_size"]),
                         len(spec.class_names), int(opts["seed"]), semi)
    if trainer is None:
        trainer = InteractiveTrainer if config.get("prompt_channels") else Trainer
    t = trainer(spec, opts, device, config, cases, data, RunState(), fp, started)
    t.build(init_state, resume)
    resumed_from = t.run.step if resume is not None else None
    if resumed_from is not None:
        yield TrainProgress(t.run.step, t.run.step + 1, f"resumed at step {t.run.step} ({t.run.stage})",
                            stage="prepare")
    try:
        if t.run.stage == "pretrain":
            yield from pretrain_stage(t)
        yield from t.train_stage()
    except GeneratorExit:
        try:
            t.save_resume()
        except LabelEffError:
            pass  # cancelling must not fail; the last periodic state (if any) stays
        raise
    return (yield from t.finish(resumed_from))
