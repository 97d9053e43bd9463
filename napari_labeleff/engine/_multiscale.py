"""Full-size scans in bounded memory: coarse solve, fine solve in a narrow band, tiles.

A 512 x 512 x 300 CT has 78.6 M voxels; the graph method's solver needs about 200
bytes per voxel (class probabilities, conjugate-gradient vectors, edge weights), far
beyond a laptop's RAM. Above :data:`LARGE_VOXELS`, :func:`run` therefore

1. pools the problem (image by block mean, seeds by "a coarse voxel is a seed of c when
   its children hold seeds of c and of no other class", boxes scaled, prior pooled)
   to at most :data:`COARSE_VOXELS` and runs the method there;
2. upsamples the coarse probabilities tile by tile (:data:`TILE_VOXELS` per tile along
   Z) and re-solves, at full resolution, only a narrow band around the label boundaries
   (within half the pooling factor of a label change): a random walker with the voxels
   outside the band (and the scribbles) as Dirichlet boundary and the upsampled
   probabilities as a weak unary term;
3. stores probabilities and uncertainty as float16 and labels as uint8.

Incremental calls warm-start the coarse solve from the previous coarse state and
solve the band again only in tiles where the coarse solution moved (by more than
:data:`REUSE_TOL`) or the scribbles changed; the other tiles keep the previous result.
Peak memory is about :func:`estimate_bytes`; the API refuses, with that estimate, a
volume whose estimate exceeds the memory available.
"""

from __future__ import annotations

import math
import time

import numpy as np
import psutil
import torch
import torch.nn.functional as F

from ._registry import RefineContext, map_previews, normalised_entropy
from ._rw_solver import Problem, contrast_scale, pool_seed_labels, solve
from ._types import Progress, RefineState

#: Volumes (voxels) above which refinement runs coarse-to-fine in a band.
LARGE_VOXELS = 16_000_000
#: Largest coarse problem.
COARSE_VOXELS = 3_000_000
#: Voxels per fine tile (a slab of Z slices).
TILE_VOXELS = 3_000_000
#: Conjugate-gradient iterations of a band solve (the upsampled coarse solution is
#: already close; the band only sharpens boundaries to the fine image edges).
BAND_MAX_ITER = 16
#: Weight of the upsampled coarse probabilities as unary term in the band.
BAND_PRIOR_WEIGHT = 0.05
def factors(shape, spacing, budget: int | None = None, limit=None) -> tuple:
    """Integer pooling factor per axis so that the pooled grid has <= ``budget``
    (default :data:`COARSE_VOXELS`) voxels, growing first the axis whose pooled
    spacing is finest; no axis beyond ``limit`` (per axis), even if the budget is then
    exceeded."""
    budget = COARSE_VOXELS if budget is None else budget
    limit = (math.inf,) * 3 if limit is None else tuple(limit)
    f = [1, 1, 1]
    while math.prod(math.ceil(n / k) for n, k in zip(shape, f)) > budget:
        axis = min((a for a in range(3) if math.ceil(shape[a] / f[a]) > 8
                    and f[a] < limit[a]),
                   key=lambda a: spacing[a] * f[a], default=None)
        if axis is None:
            break
        f[axis] += 1
    return tuple(f)


def estimate_bytes(shape, n_channels: int, n_classes: int, *, large: bool) -> int:
    """Rough peak memory (bytes) of one refinement of a volume of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        (Z, Y, X) of the region solved.
    n_channels, n_classes : int
        Image channels C and K + 1.
    large : bool
        Whether the coarse-to-fine band path is used.
    """
    n = math.prod(shape)
    per_class = 4 * 7 * n_classes  # x, CG vectors, prior, diag... (float32)
    solver = n * (per_class + 12 * n_channels + 40)
    if not large:
        return solver + n * n_classes * 4  # + float32 probabilities out
    coarse = min(n, COARSE_VOXELS) * (per_class + 12 * n_channels + 40)
    tile = min(n, TILE_VOXELS) * (per_class + 12 * n_channels + 40)
    out = n * (2 * n_classes + 2 + 1)  # float16 probabilities, uncertainty, labels
    return coarse + tile + out + n * (4 * n_channels + 2 + 4)


def available_bytes() -> int | None:
    """Memory available to this process (psutil's ``available``), or None."""
    try:
        return int(psutil.virtual_memory().available)
    except (OSError, RuntimeError):
        return None


def _pool_mean(a: np.ndarray, f) -> np.ndarray:
    """(C, Z, Y, X) float -> block means (ceil mode), channel by channel."""
    out = []
    for chan in a:
        t = torch.from_numpy(np.ascontiguousarray(chan, dtype=np.float32))[None, None]
        out.append(F.avg_pool3d(t, f, f, ceil_mode=True)[0, 0])
    return torch.stack(out).numpy()


def _pool_seeds(seeds: np.ndarray, f, n_classes: int) -> np.ndarray:
    """Coarse seeds: class c where the block holds seeds of c and of no other class
    (``_rw_solver.pool_seed_labels`` on a numpy (Z, Y, X) array, -1 = unknown)."""
    return pool_seed_labels(torch.from_numpy(np.asarray(seeds)), f, n_classes).numpy()


def _scale_boxes(boxes, f, shape_c):
    out = []
    for c, *b in boxes:
        lo = [a // k for a, k in zip(b[:3], f)]
        hi = [min(n, max(l + 1, math.ceil(a / k))) for a, k, n, l in zip(b[3:], f, shape_c, lo)]
        out.append((c, *lo, *hi))
    return out


def coarse_context(ctx: RefineContext, f) -> RefineContext:
    """The problem of ``ctx`` pooled by ``f``."""
    k1 = ctx.n_classes
    image = _pool_mean(ctx.image, f)
    shape_c = image.shape[1:]
    seeds = _pool_seeds(ctx.seeds, f, k1)
    scr = _pool_seeds(ctx.scribbles.astype(np.int16) - 1, f, k1) + 1
    prior = None if ctx.prior is None else _pool_mean(ctx.prior, f)
    state, changed = None, None
    if ctx.state is not None and "coarse" in ctx.state.payload:
        prev = ctx.state.payload["coarse"]
        if tuple(prev["shape"]) == tuple(shape_c) and tuple(prev["factors"]) == tuple(f):
            state = RefineState(method=ctx.state.method, shape=tuple(shape_c), n_classes=k1,
                                scribbles=prev["scribbles"], payload=prev["payload"])
            changed = scr != prev["scribbles"]
    return RefineContext(
        image=image, scribbles=scr.astype(np.uint8), seeds=seeds,
        boxes=_scale_boxes(ctx.boxes, f, shape_c),
        spacing=tuple(h * k for h, k in zip(ctx.spacing, f)), n_classes=k1,
        device=ctx.device, state=state, changed=changed, options=dict(ctx.options),
        prior=prior)


def upsample(coarse: torch.Tensor, f, shape) -> torch.Tensor:
    """Coarse (K + 1, Zc, Yc, Xc) probabilities of a grid pooled by ``f`` (ceil mode)
    -> (K + 1, *shape) by trilinear interpolation."""
    return _upsample(coarse.float(), f, 0, shape[0], shape)


def _upsample(coarse: torch.Tensor, f, z0, z1, shape):
    """Coarse (K + 1, Zc, Yc, Xc) probabilities -> fine slab [z0, z1) of ``shape``."""
    fz = f[0]
    c0 = max(0, z0 // fz - 1)
    c1 = min(coarse.shape[1], -(-z1 // fz) + 1)
    slab = coarse[:, c0:c1]
    size = (slab.shape[1] * fz, coarse.shape[2] * f[1], coarse.shape[3] * f[2])
    up = F.interpolate(slab[None], size=size, mode="trilinear", align_corners=False)[0]
    off = z0 - c0 * fz
    return up[:, off:off + (z1 - z0), :shape[1], :shape[2]].contiguous()


def _boundary_band(up: torch.Tensor, radius: int) -> torch.Tensor:
    """Voxels within ``radius`` of a change of the upsampled labels (where two or more
    classes are present in the (2 radius + 1)^3 neighbourhood)."""
    lab = up.argmax(dim=0)
    count = torch.zeros(lab.shape, dtype=torch.uint8)
    for k in range(up.shape[0]):
        m = (lab == k)
        if not bool(m.any()):
            continue
        near = F.max_pool3d(m[None, None].float(), 2 * radius + 1, 1, radius)[0, 0] > 0
        count += near
    return count > 1


def _entropy16(p: torch.Tensor) -> torch.Tensor:
    return normalised_entropy(p).clamp_(0, 1).half()


def run(method_gen, ctx: RefineContext, info: dict):
    """Coarse-to-fine refinement (see module docstring).

    Parameters
    ----------
    method_gen : callable
        ``method_gen(coarse_ctx)`` -> generator returning (name, MethodOutput) (the
        API's fallback runner).
    ctx : RefineContext
        Full-resolution problem.
    info : dict
        Updated with ``multiscale`` details.

    Returns
    -------
    (name, labels uint8, probabilities float16, uncertainty float16, payload)
    """
    shape, k1 = tuple(ctx.seeds.shape), ctx.n_classes
    f = factors(shape, ctx.spacing)
    cctx = coarse_context(ctx, f)
    prev = _previous_fine(ctx, cctx, k1, shape)
    t0 = time.perf_counter()
    name, out = yield from _full_size_previews(method_gen(cctx), f, shape)
    t_coarse = time.perf_counter() - t0
    coarse = torch.from_numpy(np.asarray(out.probabilities, dtype=np.float32))
    coarse = coarse / coarse.sum(dim=0, keepdim=True).clamp_min(1e-12)
    moved = changed_rows = None
    if prev is not None:
        # coarse rows whose solution moved, and fine slices whose scribbles changed:
        # only tiles that touch them are solved again, the others keep their result
        old = torch.from_numpy(prev["coarse"])
        moved = ((coarse - old).abs().amax(dim=0) > REUSE_TOL) | (
            coarse.argmax(dim=0) != old.argmax(dim=0))
        moved = moved.flatten(1).any(dim=1).numpy()
        changed_rows = (np.zeros(shape[0], bool) if ctx.changed is None
                        else ctx.changed.any(axis=(1, 2)))
    labels = np.empty(shape, np.uint8)
    probs = np.empty((k1, *shape), np.float16)
    unc = np.empty(shape, np.float16)
    tz = max(1, TILE_VOXELS // (shape[1] * shape[2]))
    halo = f[0] + 1
    full = torch.from_numpy(np.ascontiguousarray(ctx.image, dtype=np.float32))
    sigma2 = contrast_scale(full[:, ::max(1, shape[0] // 64)])  # subsample along Z
    dil = max(f) // 2 + 1
    band_total, iters, reused = 0, [], 0
    n_tiles = -(-shape[0] // tz)
    for t, z0 in enumerate(range(0, shape[0], tz)):
        z1 = min(shape[0], z0 + tz)
        h0, h1 = max(0, z0 - halo), min(shape[0], z1 + halo)
        if prev is not None:
            c0, c1 = max(0, h0 // f[0] - 1), min(len(moved), -(-h1 // f[0]) + 1)
            if not moved[c0:c1].any() and not changed_rows[h0:h1].any():
                # copies only: the previous labels and uncertainty are kept with the
                # probabilities, so a kept tile costs no conversion, argmax or entropy
                labels[z0:z1] = prev["labels"][z0:z1]
                probs[:, z0:z1] = prev["probs"][:, z0:z1]
                unc[z0:z1] = prev["uncertainty"][z0:z1]
                reused += 1
                yield Progress(t + 1, n_tiles + 1, f"fine band: tile {t + 1}/{n_tiles} kept")
                continue
        up = _upsample(coarse, f, h0, h1, shape)
        seeds = torch.from_numpy(ctx.seeds[h0:h1].astype(np.int64))
        band = _boundary_band(up, dil) & (seeds < 0)
        nb = int(band.sum())
        if nb:
            iters.append((yield from _solve_band(ctx, full, up, band, seeds, h0, h1,
                                                 sigma2)))
        band_total += nb
        core = slice(z0 - h0, z0 - h0 + (z1 - z0))
        pt = up[:, core]
        pt = pt / pt.sum(dim=0, keepdim=True).clamp_min(1e-12)
        labels[z0:z1] = pt.argmax(dim=0).to(torch.uint8).numpy()
        probs[:, z0:z1] = pt.half().numpy()
        unc[z0:z1] = _entropy16(pt).numpy()
        yield Progress(t + 1, n_tiles + 1, f"fine band: tile {t + 1}/{n_tiles}")
    info["multiscale"] = {
        "factors": list(f), "coarse_shape": list(cctx.seeds.shape),
        "band_voxels": band_total, "band_fraction": band_total / math.prod(shape),
        "tile_slices": tz, "band_cg_iterations_max": max(iters) if iters else 0,
        "probabilities_dtype": "float16", "coarse_s": t_coarse,
        "fine_s": time.perf_counter() - t0 - t_coarse,
        "tiles": n_tiles, "tiles_kept": reused,
    }
    # the fine probabilities and uncertainty are kept by reference (the result's own
    # arrays: callers must not edit them in place), the labels as a copy (the viewer
    # shows them in a layer the user may paint on), the coarse probabilities as a copy
    payload = {"coarse": {"shape": list(cctx.seeds.shape), "factors": list(f),
                          "scribbles": cctx.scribbles, "payload": out.payload},
               "fine": {"probs": probs, "labels": labels.copy(), "uncertainty": unc,
                        "coarse": coarse.numpy()}}
    info.update({k: v for k, v in out.info.items() if k not in info})
    return name, labels, probs, unc, payload


def _solve_band(ctx, full, up, band, seeds, h0, h1, sigma2):
    """Re-solve, at full resolution, the voxels of ``band`` in the slab [h0, h1) of the
    upsampled probabilities ``up`` (updated in place), with the voxels outside the band
    and the scribbles as Dirichlet boundary and ``up`` as a weak unary term; only the
    classes present in the band's box are solved. Generator; returns the CG iterations."""
    shape, k1 = tuple(ctx.seeds.shape), ctx.n_classes
    # crop to the band's bounding box (plus one voxel) in Y and X
    ys = torch.nonzero(band.any(dim=2).any(dim=0)).flatten()
    xs = torch.nonzero(band.any(dim=1).any(dim=0)).flatten()
    ya, yb = max(0, int(ys[0]) - 1), min(shape[1], int(ys[-1]) + 2)
    xa, xb = max(0, int(xs[0]) - 1), min(shape[2], int(xs[-1]) + 2)
    sub = (slice(None), slice(None), slice(ya, yb), slice(xa, xb))
    sb = band[sub[1:]]
    sd = seeds[sub[1:]]
    block = up[sub]
    # only the classes present in this block are solved (often 2 or 3)
    present = torch.nonzero(block.amax(dim=(1, 2, 3)) > 0.01).flatten()
    if 0 not in present.tolist():
        present = torch.cat([torch.zeros(1, dtype=present.dtype), present])
    cls = present.tolist()
    x = block[present].clone()
    remap = torch.full((k1,), -1, dtype=torch.long)
    remap[present] = torch.arange(len(cls))
    sdr = torch.where(sd >= 0, remap[sd.clamp_min(0)], torch.full_like(sd, -1))
    sb &= ~((sd >= 0) & (sdr < 0))
    onehot = F.one_hot(sdr.clamp_min(0), len(cls)).movedim(-1, 0).float()
    x = torch.where(sdr >= 0, onehot, x)
    x = x / x.sum(dim=0, keepdim=True).clamp_min(1e-12)
    prior = block[present].clone()
    p = Problem(full[:, h0:h1, ya:yb, xa:xb], ~sb, x, ctx.spacing, prior)
    stats = yield from _silent(solve(
        p, beta=float(ctx.options.get("beta", 8.0)), gamma=BAND_PRIOR_WEIGHT,
        sigma2=sigma2, h_ref=min(ctx.spacing), tol=1e-3, max_iter=BAND_MAX_ITER,
        coarse_to_fine=False))
    block.zero_()
    block[present] = p.x
    up[sub] = block
    del p, x, prior
    return stats[-1]["iterations"]


#: A tile keeps its fine result when no coarse label in its rows changed and no coarse
#: probability moved by more than this (the band follows label boundaries; small
#: shifts of the probabilities far from them do not move it).
REUSE_TOL = 0.25


def _previous_fine(ctx, cctx, k1, shape):
    """The previous call's fine result when this call can reuse its tiles, else None."""
    if cctx.state is None or ctx.state is None:
        return None
    fine = ctx.state.payload.get("fine")
    if fine is None or "labels" not in fine or tuple(fine["probs"].shape) != (k1, *shape):
        return None
    if tuple(fine["coarse"].shape[1:]) != tuple(cctx.seeds.shape):
        return None
    return fine


def _full_size_previews(gen, f, shape):
    """The coarse method's reports, its previews repeated up to the full ``shape``."""
    def repeat(preview):
        for axis, k in enumerate(f):
            preview = np.repeat(preview, k, axis=axis) if k > 1 else preview
        return np.ascontiguousarray(preview[:shape[0], :shape[1], :shape[2]])

    return (yield from map_previews(gen, repeat))


def _silent(gen):
    """Run a solver generator, swallowing its messages; returns its value."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
        yield from ()
