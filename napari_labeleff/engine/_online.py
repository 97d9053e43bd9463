"""Online-learned model: a small network trained in the loop from weak labels.

Two registered methods share this code:

``"online"``
    weakly + semi-supervised: partial cross-entropy on the scribbled voxels and the
    box-derived background, partial labels and a tightness prior inside boxes, entropy
    minimisation and consistency under feature noise on unlabeled voxels.
``"hybrid"``
    the same, plus the graph method (``"randomwalk"``): its log-probabilities are extra
    input channels (spatial context the intensity features lack), its confident voxels
    are pseudo-labels (uncertainty filtering by the top-1/top-2 margin), and its
    probabilities are fused into the output (product of experts).

Design for the CPU budget (about 2 s per call at 0.64 M voxels on 2 cores): the 3D
context comes from filter responses computed once per volume (``engine/_features.py``)
and cached in ``state.payload``; the network is MONAI's ``FullyConnectedNet`` applied
per voxel (a fully convolutional net with 1x1x1 kernels), so it trains on a few
thousand sampled voxels per step and predicts the whole volume in one pass (tiled with
``monai.inferers.sliding_window_inference`` for large volumes). A 3D CNN with 3x3x3
kernels trained on the full volume costs tens of seconds per call on 2 CPU cores. A
CRF-style mean-field smoothing (Potts model, Gaussian spatial kernel) regularises the
output. Warm start: weights, optimiser state and features travel in ``state.payload``,
so a corrective scribble trains a few more steps, with the changed voxels oversampled.
On CUDA the network runs under ``torch.autocast``. Everything random is drawn from a
``torch.Generator`` seeded by the ``seed`` option, so results are reproducible.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.networks.layers import GaussianFilter
from monai.networks.nets import FullyConnectedNet

from .._errors import LabelEffError
from ._features import multiscale_features
from ._registry import METHODS, MethodOutput, RefineContext, register_method
from ._types import Progress, RefineState

#: Name of the graph method the hybrid takes pseudo-labels from.
GRAPH_METHOD = "randomwalk"

#: Options accepted through ``refine(**options)``, with their defaults.
DEFAULTS = {
    "seed": 0,  # seeds weight init and voxel sampling: same inputs -> same result
    "steps": 100,  # training steps on a first call
    "warm_steps": 30,  # training steps when warm-started from ``state``
    "hidden": 16,  # width of the hidden layers
    "time_budget": None,  # seconds of training at most (None: run all steps)
    "smoothing": 2.0,  # weight of the mean-field smoothness term (0 = off)
}
_LR = 1e-2
_N_LABELED = 1024  # sampled labeled voxels per class and step
_N_UNLABELED = 4096  # sampled voxels per step for the unlabeled-voxel terms
_N_LINES = 8  # random lines per box axis per step for the tightness prior
_ENTROPY_WEIGHT = 1.5
_CONSISTENCY_WEIGHT = 1.0
_FEATURE_NOISE = 0.15  # std of the feature noise of the consistency term
_PSEUDO_WEIGHT = 0.5
_ANCHOR_WEIGHT = 5.0  # warm start: KL to the previous network's predictions
_PSEUDO_MARGIN = 0.5  # graph top-1 minus top-2 probability needed for a pseudo-label
_GRAPH_FUSION = 0.5  # exponent of the graph probabilities in the hybrid's output
_MEAN_FIELD_ITERS = 3
_TILE_VOXELS = 1 << 22  # volumes above this run through sliding_window_inference
_ROI = (64, 128, 128)


def _options(ctx: RefineContext) -> dict:
    """Validated method options (unknown names and bad values raise LabelEffError)."""
    unknown = sorted(set(ctx.options) - set(DEFAULTS))
    if unknown:
        raise LabelEffError(
            f"unknown option(s) {', '.join(unknown)} for the online methods; "
            f"allowed: {', '.join(DEFAULTS)}")
    opts = {**DEFAULTS, **ctx.options}
    for name in ("steps", "warm_steps", "hidden"):
        value = opts[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise LabelEffError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(opts["seed"], bool) or not isinstance(opts["seed"], (int, np.integer)):
        raise LabelEffError(f"seed must be an integer, got {opts['seed']!r}")
    budget = opts["time_budget"]
    if budget is not None and (isinstance(budget, bool)
                               or not isinstance(budget, (int, float)) or budget <= 0):
        raise LabelEffError(f"time_budget must be None or seconds > 0, got {budget!r}")
    smoothing = opts["smoothing"]
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) \
            or not 0 <= smoothing <= 10:
        raise LabelEffError(f"smoothing must be a number in [0, 10], got {smoothing!r}")
    return opts


def _build_net(n_in: int, n_out: int, hidden: int) -> torch.nn.Module:
    """Per-voxel head: MONAI's fully connected net on (n, F) feature rows.

    Applied to every voxel it is a fully convolutional net with 1x1x1 kernels; as
    ``Linear`` layers it trains an order of magnitude faster on CPU than ``conv3d``
    on the same sampled voxels.
    """
    return FullyConnectedNet(n_in, n_out, [hidden, hidden], act="PRELU")


def _fingerprint(image: np.ndarray) -> tuple:
    """Cheap identity of an image, to reuse cached features only for the same data."""
    sample = image.reshape(-1)[:: max(1, image.size // 4096)]
    return image.shape, float(sample.sum()), float((sample * sample).sum())


class _Sampler:
    """Index tables of the weak labels and seeded random draws from them."""

    def __init__(self, ctx: RefineContext, generator: torch.Generator):
        dev = ctx.device
        self.gen = generator
        self.n_classes = ctx.n_classes
        self.shape = ctx.seeds.shape
        self.n_voxels = int(np.prod(self.shape))
        seeds = torch.from_numpy(ctx.seeds.reshape(-1).astype(np.int64)).to(dev)
        self.seeds = seeds
        self.by_class = [torch.nonzero(seeds == c).flatten() for c in range(ctx.n_classes)]
        # Changed voxels of each class (the new corrective strokes): oversampled within
        # their class, so the classes keep equal weight and a small stroke does not shift
        # the class prior (which swung the whole volume toward the stroke's class).
        self.changed = [None] * ctx.n_classes
        if ctx.changed is not None:
            changed = torch.from_numpy(ctx.changed.reshape(-1)).to(dev)
            for c, pool in enumerate(self.by_class):
                idx = pool[changed[pool]]
                self.changed[c] = idx if idx.numel() else None
        self.boxes = [b for b in ctx.boxes if all(b[4 + i] > b[1 + i] for i in range(3))]

    def _draw(self, pool: torch.Tensor, n: int) -> torch.Tensor:
        pick = torch.randint(pool.numel(), (n,), generator=self.gen, device=pool.device)
        return pool[pick]

    def labeled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-balanced labeled voxels: idx, target. Half of a class's draws come
        from its changed voxels when it has any."""
        idx = []
        for pool, changed in zip(self.by_class, self.changed):
            if not pool.numel():
                continue
            if changed is None:
                idx.append(self._draw(pool, _N_LABELED))
            else:
                idx += [self._draw(pool, _N_LABELED // 2), self._draw(changed, _N_LABELED // 2)]
        idx = torch.cat(idx)
        return idx, self.seeds[idx]

    def anywhere(self, n: int = _N_UNLABELED) -> torch.Tensor:
        """Uniformly drawn voxel indices."""
        return torch.randint(self.n_voxels, (n,), generator=self.gen,
                             device=self.seeds.device)

    def box_points(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Unlabeled voxels inside boxes and, per voxel, the allowed classes (bool
        (n, K+1)): background or the class of any box holding the voxel."""
        dev = self.seeds.device
        pts = []
        for c, z0, y0, x0, z1, y1, x1 in self.boxes:
            lo = torch.tensor([z0, y0, x0], device=dev)
            hi = torch.tensor([z1, y1, x1], device=dev)
            u = torch.rand((_N_UNLABELED // max(1, len(self.boxes)), 3),
                           generator=self.gen, device=dev)
            pts.append(lo + (u * (hi - lo)).long().clamp_max(hi - lo - 1))
        pts = torch.cat(pts)
        flat = (pts[:, 0] * self.shape[1] + pts[:, 1]) * self.shape[2] + pts[:, 2]
        return flat, pts

    def box_lines(self):
        """Per box: (class, (n_lines, length) flat indices) for lines along each axis
        through the box (tightness prior: each one crosses the object)."""
        dev = self.seeds.device
        strides = (self.shape[1] * self.shape[2], self.shape[2], 1)
        out = []
        for c, *bounds in self.boxes:
            lo, hi = bounds[:3], bounds[3:]
            for axis in range(3):
                others = [a for a in range(3) if a != axis]
                base = torch.zeros(_N_LINES, dtype=torch.long, device=dev)
                for a in others:
                    r = torch.randint(lo[a], hi[a], (_N_LINES,), generator=self.gen,
                                      device=dev)
                    base = base + r * strides[a]
                along = torch.arange(lo[axis], hi[axis], device=dev) * strides[axis]
                out.append((c, base[:, None] + along[None, :]))
        return out


def _apply(net, feats: torch.Tensor, idx: torch.Tensor, amp: bool) -> torch.Tensor:
    """Logits (n, K+1) of the voxels ``idx`` of the (N, F) feature rows."""
    with torch.autocast("cuda", enabled=amp):
        return net(feats[idx]).float()


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean()


def _loss(net, feats, sampler: _Sampler, gen, amp: bool, ramp: float,
          pseudo: torch.Tensor | None, anchor=None) -> torch.Tensor:
    """One step's loss: weak supervision plus the unlabeled-voxel terms; on a warm
    start, ``anchor`` (the previous network, frozen) keeps the unlabeled voxels near
    its predictions (distillation), so a small corrective stroke corrects locally
    instead of shifting the decision boundary of the whole volume."""
    idx, target = sampler.labeled()
    loss = F.cross_entropy(_apply(net, feats, idx, amp), target)

    if sampler.boxes:
        flat, pts = sampler.box_points()
        allowed = torch.zeros((flat.numel(), sampler.n_classes), dtype=torch.bool,
                              device=flat.device)
        allowed[:, 0] = True
        for c, z0, y0, x0, z1, y1, x1 in sampler.boxes:
            inside = ((pts >= torch.tensor([z0, y0, x0], device=pts.device))
                      & (pts < torch.tensor([z1, y1, x1], device=pts.device))).all(dim=1)
            allowed[inside, c] = True
        logp = F.log_softmax(_apply(net, feats, flat, amp), dim=1)
        loss = loss - torch.logsumexp(logp.masked_fill(~allowed, -torch.inf), dim=1).mean()
        tight = []
        for c, lines in sampler.box_lines():
            logp = F.log_softmax(_apply(net, feats, lines.reshape(-1), amp), dim=1)
            tight.append(-logp[:, c].reshape(lines.shape).max(dim=1).values.mean())
        loss = loss + torch.stack(tight).mean()

    u = sampler.anywhere()
    logits_u = _apply(net, feats, u, amp)
    loss = loss + ramp * _ENTROPY_WEIGHT * _entropy(logits_u)
    noisy = feats[u] + _FEATURE_NOISE * torch.randn(
        (u.numel(), feats.shape[1]), generator=gen, device=feats.device)
    with torch.autocast("cuda", enabled=amp):
        logits_n = net(noisy).float()
    loss = loss + ramp * _CONSISTENCY_WEIGHT * F.kl_div(
        F.log_softmax(logits_n, dim=1), F.softmax(logits_u.detach(), dim=1),
        reduction="batchmean")
    if anchor is not None:
        with torch.no_grad():
            target_u = F.softmax(_apply(anchor, feats, u, amp), dim=1)
        loss = loss + _ANCHOR_WEIGHT * F.kl_div(
            F.log_softmax(logits_u, dim=1), target_u, reduction="batchmean")

    if pseudo is not None:
        p_idx = sampler.anywhere()
        p_target = pseudo[p_idx]
        keep = p_target >= 0
        if keep.any():
            loss = loss + ramp * _PSEUDO_WEIGHT * F.cross_entropy(
                _apply(net, feats, p_idx[keep], amp), p_target[keep])
    return loss


@torch.no_grad()
def _predict(net, feats: torch.Tensor, shape, amp: bool) -> torch.Tensor:
    """Logits (1, K+1, Z, Y, X) of the whole volume from (N, F) feature rows; large
    volumes go through MONAI's sliding-window inferer to bound peak memory."""

    def head(x):  # (1, F, z, y, x) -> (1, K+1, z, y, x)
        rows = x[0].reshape(x.shape[1], -1).T
        with torch.autocast("cuda", enabled=amp):
            out = net(rows).float()
        return out.T.reshape(1, -1, *x.shape[2:])

    if feats.shape[0] <= _TILE_VOXELS:
        with torch.autocast("cuda", enabled=amp):
            out = net(feats).float()
        return out.T.reshape(1, -1, *shape)
    x = feats.T.reshape(1, feats.shape[1], *shape)
    roi = tuple(min(r, s) for r, s in zip(_ROI, shape))
    return sliding_window_inference(x, roi, 1, head, overlap=0.0)


@torch.no_grad()
def _mean_field(log_unary: torch.Tensor, spacing, weight: float) -> torch.Tensor:
    """Mean-field inference of a Potts CRF with a Gaussian spatial kernel.

    ``log_unary`` (1, K+1, Z, Y, X) -> probabilities of the same shape. Hand-written
    because it is a few lines of MONAI filtering; a dense bilateral CRF would cost
    more than the whole call budget on CPU.
    """
    prob = F.softmax(log_unary, dim=1)
    if weight <= 0:
        return prob
    base = min(spacing)
    smooth = GaussianFilter(3, [base / s for s in spacing]).to(prob.device)
    for _ in range(_MEAN_FIELD_ITERS):
        prob = F.softmax(log_unary + weight * smooth(prob), dim=1)
    return prob


def _features(ctx: RefineContext, payload: dict) -> torch.Tensor:
    """Feature rows (N, F), from the previous state when the image is the same."""
    key = _fingerprint(ctx.image) + (tuple(ctx.spacing),)
    cached = payload.get("features")
    if cached is not None and payload.get("fingerprint") == key \
            and cached.device == torch.device(ctx.device):
        return cached
    image = torch.from_numpy(np.ascontiguousarray(ctx.image, dtype=np.float32))
    feats = multiscale_features(image.to(ctx.device), ctx.spacing)
    return feats.reshape(feats.shape[0], -1).T.contiguous()


def _graph(ctx: RefineContext, prev: dict):
    """Run the graph method (a generator) for the hybrid; returns its MethodOutput."""
    state = None
    if "graph" in prev and ctx.state is not None:
        state = RefineState(GRAPH_METHOD, ctx.state.shape, ctx.state.n_classes,
                            ctx.state.scribbles, prev["graph"])
    sub = dataclasses.replace(ctx, state=state, options={})
    return (yield from METHODS[GRAPH_METHOD](sub))


def _pseudo_labels(prob: np.ndarray, device) -> torch.Tensor:
    """Flat class index where the graph is confident (top-1 minus top-2 probability at
    least ``_PSEUDO_MARGIN``), -1 elsewhere."""
    p = torch.from_numpy(prob).to(device).reshape(prob.shape[0], -1)
    top = torch.topk(p, 2, dim=0).values
    label = p.argmax(dim=0)
    return torch.where(top[0] - top[1] >= _PSEUDO_MARGIN, label, torch.full_like(label, -1))


def _train(ctx: RefineContext, hybrid: bool):
    """Shared generator of ``online`` and ``hybrid``."""
    opts = _options(ctx)
    t0 = time.perf_counter()
    device = torch.device(ctx.device)
    amp = device.type == "cuda"
    prev = ctx.state.payload if ctx.state is not None else {}
    info = {}

    graph_out = None
    if hybrid:
        if GRAPH_METHOD not in METHODS:
            raise LabelEffError(f"method 'hybrid' needs the graph method {GRAPH_METHOD!r}, "
                                "which is not available")
        graph_out = yield from _graph(ctx, prev)
        info["graph_s"] = time.perf_counter() - t0

    feats = _features(ctx, prev)
    image_feats = feats
    if hybrid:  # graph log-probabilities as extra inputs: spatial context
        g = torch.from_numpy(graph_out.probabilities).to(device)
        g = torch.log(g.clamp_min(1e-3)).reshape(g.shape[0], -1).T
        feats = torch.cat([feats, (g - g.mean(0)) / g.std(0).clamp_min(1e-6)], dim=1)
    yield Progress(0, 1, "features ready")
    n_in = feats.shape[1]

    gen = torch.Generator(device=device)
    gen.manual_seed(int(opts["seed"]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(opts["seed"]))
        net = _build_net(n_in, ctx.n_classes, int(opts["hidden"]))
    net = net.to(device)
    warm = (prev.get("arch") == (n_in, int(opts["hidden"])) and "net" in prev
            and ctx.state.n_classes == ctx.n_classes)
    if warm:
        net.load_state_dict(prev["net"])  # copies: the previous state stays intact
        anchor = copy.deepcopy(net).eval().requires_grad_(False)
    else:
        anchor = None
    opt = torch.optim.Adam(net.parameters(), lr=_LR)
    if warm:
        opt.load_state_dict(copy.deepcopy(prev["opt"]))
    steps = int(opts["warm_steps"] if warm else opts["steps"])
    info.update(warm_start=warm, steps_planned=steps)

    sampler = _Sampler(ctx, gen)
    pseudo = _pseudo_labels(graph_out.probabilities, device) if hybrid else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp and not torch.cuda.is_bf16_supported())
    t_train = time.perf_counter()
    done = 0
    for step in range(steps):
        ramp = 1.0 if warm else min(1.0, 2.0 * step / steps)
        loss = _loss(net, feats, sampler, gen, amp, ramp, pseudo, anchor)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        done = step + 1
        if done % 10 == 0 or done == steps:
            yield Progress(done, steps, f"training ({done}/{steps}, loss {loss.item():.3f})")
        if opts["time_budget"] is not None and time.perf_counter() - t_train > opts["time_budget"]:
            break
    info.update(steps=done, train_s=time.perf_counter() - t_train)

    net.eval()
    logits = _predict(net, feats, ctx.seeds.shape, amp)
    log_unary = F.log_softmax(logits, dim=1)
    if hybrid:
        g = torch.from_numpy(graph_out.probabilities).to(device)[None]
        log_unary = log_unary + _GRAPH_FUSION * torch.log(g.clamp_min(1e-6))
    prob = _mean_field(log_unary, ctx.spacing, float(opts["smoothing"]))[0]
    seeds = torch.from_numpy(ctx.seeds.astype(np.int64)).to(device)
    known = seeds >= 0
    prob[:, known] = F.one_hot(seeds[known], ctx.n_classes).T.to(prob.dtype)
    info["total_s"] = time.perf_counter() - t0

    payload = {"net": net.state_dict(), "opt": opt.state_dict(), "features": image_feats,
               "fingerprint": _fingerprint(ctx.image) + (tuple(ctx.spacing),),
               "arch": (n_in, int(opts["hidden"]))}
    if hybrid:
        payload["graph"] = graph_out.payload
    return MethodOutput(probabilities=prob.float().cpu().numpy(), payload=payload, info=info)


@register_method("online")
def online(ctx: RefineContext):
    """Online-learned network from the weak labels and the unlabeled voxels.

    Generator yielding :class:`Progress`, returning :class:`MethodOutput` with
    probabilities (K + 1, Z, Y, X). Options (``refine(**options)``): see
    :data:`DEFAULTS`.
    """
    return (yield from _train(ctx, hybrid=False))


@register_method("hybrid")
def hybrid(ctx: RefineContext):
    """``online`` plus pseudo-labels from, and fusion with, the graph method."""
    return (yield from _train(ctx, hybrid=True))
