"""Self-supervised pretraining (option ``pretrain``): restore corrupted patches of all
the project's images, then hand the encoder-decoder weights to the segmentation network.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _losses
from ._data import sample
from ._inference import autocast
from ._network import build_network, transfer_encoder_decoder
from ._prompts import image_channels
from ._spec import TrainProgress


def corrupt(x: torch.Tensor, seed: int) -> tuple:
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


def _reconstruction_step(t, popt) -> float:
    """One pretraining step of trainer ``t``; returns the loss."""
    run, seed, device = t.run, t.seed, t.device
    rng = np.random.default_rng([seed, 7, run.pre_step])
    torch.manual_seed(seed * 7919 + run.pre_step)
    b = sample(t.data.images, rng, t.bs, seed=seed * 104729 + run.pre_step)
    x = b["image"].float()
    xc, region = corrupt(x, seed * 31 + run.pre_step)
    x, xc, region = x.to(device), xc.to(device), region.to(device)
    with autocast(device, t.use_amp):
        out = t.recon(xc)
    loss = _losses.reconstruction_loss(out.float(), x) + _losses.reconstruction_loss(out.float(), x, region)
    popt.zero_grad(set_to_none=True)
    loss.backward()
    popt.step()
    run.pre_step += 1
    return float(loss.detach())


def pretrain_stage(t):
    """Generator: the pretraining stage of trainer ``t`` (a ``_loop.Trainer``) until its
    step count (a quarter of ``max_steps``) or time budget is spent."""
    run, opts = t.run, t.opts
    if t.recon is None:
        t.recon = build_network(t.config, out_channels=image_channels(t.config)).to(t.device)
        transfer_encoder_decoder(t.net, t.recon)
    popt = torch.optim.AdamW(t.recon.parameters(), lr=float(opts["learning_rate"]), weight_decay=1e-4)
    pre_budget = float(opts["pretrain_minutes"]) * 60.0 if opts["pretrain_minutes"] is not None \
        else 0.25 * t.budget_s
    pre_steps = max(1, t.max_steps // 4) if t.max_steps is not None else None
    while not (t.elapsed() >= pre_budget or (pre_steps is not None and run.pre_step >= pre_steps)):
        lv = _reconstruction_step(t, popt)
        if run.pre_step % 10 == 0:
            t.log({"stage": "pretrain", "step": run.pre_step, "loss": round(lv, 5)})
        total = pre_steps or max(run.pre_step + 1, int(run.pre_step * pre_budget / max(t.elapsed(), 1e-3)))
        yield TrainProgress(run.pre_step, total, f"pretrain: step {run.pre_step}, L1 {lv:.4f}",
                            loss=lv, stage="pretrain")
        t.save_now_and_then()
    n = transfer_encoder_decoder(t.recon, t.net)
    t.new_teacher_and_optimiser()
    t.log({"stage": "pretrain", "done": True, "steps": run.pre_step, "tensors_transferred": n})
    t.recon = None
    run.stage = "train"
    run.train_start = t.elapsed()
