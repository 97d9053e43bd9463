"""Random walker segmentation (Grady 2006) with priors (Grady 2005), solved on torch.

Why hand-written: scikit-image's ``random_walker`` builds a scipy sparse Laplacian and
solves it on the CPU only (it is one of our benchmark peers). The product needs the same
model on the GPU, incremental re-solves inside a sub-box with the previous solution as a
Dirichlet boundary, and a prior term for box prompts; so the solver is ours:

* the 6-neighbour graph is never assembled: the Laplacian is applied matrix-free with
  shifted slices (``addcmul_``) on (K, Z, Y, X) tensors, on whatever device holds them;
* edge weights ``w = exp(-beta * sum_c dI_c^2 / (C * sigma^2)) * (h_min / h_d)^2``:
  intensity differences between neighbours (``sigma^2`` = their mean square, as in
  GrabCut, so ``beta`` is contrast-free), scaled by the inverse squared voxel distance
  along axis d so that anisotropic spacing discretises the same continuous problem;
* priors: ``(L_uu + gamma * Lambda) x_k = gamma * lambda_k - L_us x_s,k`` with
  ``lambda_k`` per-voxel class likelihoods and ``Lambda = sum_k lambda_k``;
* all classes but background are solved together as one batched system by
  Jacobi-preconditioned conjugate gradients (background = 1 - the others); the
  convergence test syncs with the host only every few iterations;
* a fresh solve starts coarse-to-fine: images, seeds and priors are pooled by two along
  the finer axes down to ~40^3 voxels, solved there, and the solution is interpolated up
  as the next level's initial guess (a multigrid-style initialisation);
* a warm start (previous solution) skips the pyramid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_COARSEST_VOXELS = 40**3
_CHECK_EVERY = 8


@dataclass
class Problem:
    """One random-walker system on a voxel grid.

    Attributes
    ----------
    image : Tensor, shape (C, Z, Y, X), float32
    fixed : Tensor of bool, shape (Z, Y, X)
        Dirichlet voxels (seeds, or the frame of a local sub-box).
    x : Tensor, shape (K + 1, Z, Y, X), float32
        Values at ``fixed`` voxels and the initial guess elsewhere; solved in place.
    spacing : tuple of float
        (Z, Y, X) voxel size of this grid.
    prior : Tensor, shape (K + 1, Z, Y, X), or None
        Class likelihoods ``lambda`` (sum 1 per voxel).
    """

    image: torch.Tensor
    fixed: torch.Tensor
    x: torch.Tensor
    spacing: tuple
    prior: torch.Tensor | None = None


def binomial_smooth(image: torch.Tensor, spacing, passes: int = 1) -> torch.Tensor:
    """Smooth (C, Z, Y, X) with ``passes`` [1/4, 1/2, 1/4] filters per axis (Gaussian of
    sigma ~0.71 voxel per pass), skipping axes much coarser than the finest one.

    Hand-written with shifted slices because ``conv3d`` (and MONAI's GaussianFilter,
    built on it) is about 8x slower on the CPU for this 3-tap kernel; edges replicate.
    """
    h_min = min(spacing)
    for _ in range(passes):
        for d, h in enumerate(spacing):
            n = image.shape[d + 1]
            if n < 2 or h > 2 * h_min:
                continue
            out = image * 0.5
            lo, hi = image.narrow(d + 1, 0, n - 1), image.narrow(d + 1, 1, n - 1)
            out.narrow(d + 1, 1, n - 1).add_(lo, alpha=0.25)
            out.narrow(d + 1, 0, n - 1).add_(hi, alpha=0.25)
            out.narrow(d + 1, 0, 1).add_(image.narrow(d + 1, 0, 1), alpha=0.25)
            out.narrow(d + 1, n - 1, 1).add_(image.narrow(d + 1, n - 1, 1), alpha=0.25)
            image = out
    return image


def contrast_scale(image: torch.Tensor) -> float:
    """Mean squared neighbour difference (summed over channels, divided by C).

    Computed once on the finest grid and reused on every level and sub-box, so that all
    of them share one edge-weight scale.
    """
    total, count = 0.0, 0
    for d in range(1, 4):
        if image.shape[d] > 1:
            diff = torch.diff(image, dim=d)
            total += float(diff.square().sum())
            count += diff[0].numel()
    return max(total / max(count, 1) / image.shape[0], 1e-12)


def edge_weights(image, spacing, *, beta: float, sigma2: float, h_ref: float):
    """Weights of the edges along Z, Y and X.

    Parameters
    ----------
    image : Tensor, shape (C, Z, Y, X)
    spacing : tuple of float
        (Z, Y, X) voxel size in mm.
    beta : float
        Edge sensitivity; 0 gives a plain (geometric) Laplacian.
    sigma2 : float
        Intensity difference scale from :func:`contrast_scale`.
    h_ref : float
        Reference voxel size (the finest grid's smallest spacing).

    Returns
    -------
    tuple of Tensor
        Shapes (Z-1, Y, X), (Z, Y-1, X), (Z, Y, X-1).
    """
    scale = beta / (sigma2 * image.shape[0])
    out = []
    for d in range(3):
        diff2 = torch.diff(image, dim=d + 1).square_().sum(dim=0)
        w = torch.exp_(diff2.mul_(-scale)).mul_((h_ref / spacing[d]) ** 2).add_(1e-6)
        out.append(w)
    return tuple(out)


def _degree(weights, shape, device):
    deg = torch.zeros(shape, device=device)
    wz, wy, wx = weights
    deg[:-1] += wz
    deg[1:] += wz
    deg[:, :-1] += wy
    deg[:, 1:] += wy
    deg[:, :, :-1] += wx
    deg[:, :, 1:] += wx
    return deg


def _sub_w(out, v, weights):
    """``out -= W v`` (the off-diagonal part of the Laplacian) for batched v."""
    wz, wy, wx = weights
    out[:, :-1].addcmul_(wz, v[:, 1:], value=-1)
    out[:, 1:].addcmul_(wz, v[:, :-1], value=-1)
    out[:, :, :-1].addcmul_(wy, v[:, :, 1:], value=-1)
    out[:, :, 1:].addcmul_(wy, v[:, :, :-1], value=-1)
    out[:, :, :, :-1].addcmul_(wx, v[:, :, :, 1:], value=-1)
    out[:, :, :, 1:].addcmul_(wx, v[:, :, :, :-1], value=-1)
    return out


def _dot(a, b):
    return (a * b).sum(dim=(1, 2, 3), keepdim=True)


def _pcg(p: Problem, weights, gamma: float, tol: float, max_iter: int) -> dict:
    """Solve ``p`` in place for classes 1..K by batched Jacobi-PCG; returns stats."""
    free = (~p.fixed).float()
    diag = _degree(weights, p.fixed.shape, p.x.device)
    rhs = torch.zeros_like(p.x[1:])
    if p.prior is not None and gamma > 0:
        diag = diag + gamma * p.prior.sum(dim=0)
        rhs = gamma * p.prior[1:]
    dinv = free / diag

    x = p.x[1:]
    # b = rhs - L_us x_s (Dirichlet values only); r = b - A x (current guess).
    xs = x * (1.0 - free)
    b = (rhs - _sub_w(diag * xs, xs, weights)).mul_(free)
    r = (rhs - _sub_w(diag * x, x, weights)).mul_(free)
    bz = _dot(b, b * dinv).clamp_min_(1e-30)

    z = r * dinv
    d = z.clone()
    rz = _dot(r, z)
    ad = torch.empty_like(d)
    iters, rel = 0, float("nan")
    for iters in range(1, max_iter + 1):
        torch.mul(diag, d, out=ad)
        _sub_w(ad, d, weights)
        alpha = rz / _dot(d, ad).clamp_min_(1e-30)
        x.addcmul_(alpha.expand_as(d), d)
        r.addcmul_(alpha.expand_as(ad), ad, value=-1)
        torch.mul(r, dinv, out=z)
        rz_new = _dot(r, z)
        if iters % _CHECK_EVERY == 0 or iters == max_iter:
            rel = float((rz_new / bz).max().sqrt())
            if rel <= tol:
                break
        d.mul_(rz_new / rz.clamp_min(1e-30)).add_(z)
        rz = rz_new
    x.clamp_(0.0, 1.0)
    total = x.sum(dim=0)
    over = total > 1.0
    x.div_(torch.where(over, total, torch.ones_like(total)))
    p.x[0] = 1.0 - x.sum(dim=0)
    return {"iterations": iters, "relative_residual": rel, "voxels": int(p.fixed.numel())}


def _coarsen_factors(shape, spacing):
    h_min = min(spacing)
    return tuple(2 if (n >= 16 and h <= 2 * h_min) else 1 for n, h in zip(shape, spacing))


def pool_seed_labels(labels: torch.Tensor, f, n_classes: int) -> torch.Tensor:
    """Coarse seed labels of a (Z, Y, X) integer tensor (-1 unknown, else the class)
    pooled by ``f`` (ceil mode): a coarse voxel is a seed of class c when its block
    holds seeds of c and of no other class. One class at a time, so a full-size scan
    needs no one-hot copy."""
    count = label = None
    for c in range(n_classes):
        m = labels == c
        if not bool(m.any()):
            continue
        present = F.max_pool3d(m[None, None].float(), f, f, ceil_mode=True)[0, 0] > 0
        if count is None:
            count = present.to(torch.int16)
            label = torch.where(present, c, -1).to(torch.int16)
        else:
            count += present
            label = torch.where(present, torch.tensor(c, dtype=torch.int16,
                                                      device=labels.device), label)
    if count is None:
        shape = tuple(-(-n // k) for n, k in zip(labels.shape, f))
        return torch.full(shape, -1, dtype=torch.int16, device=labels.device)
    return torch.where(count == 1, label, torch.tensor(-1, dtype=torch.int16,
                                                       device=labels.device))


def _pool_seeds(fixed, x, k):
    """Coarse Dirichlet mask and one-hot seed values of the problem's seeds."""
    labels = torch.where(fixed, x.argmax(dim=0), torch.full_like(fixed, -1, dtype=torch.long))
    coarse = pool_seed_labels(labels, k, x.shape[0]).long()
    fixed_c = coarse >= 0
    onehot = F.one_hot(coarse.clamp_min(0), x.shape[0]).movedim(-1, 0).float()
    return fixed_c, onehot * fixed_c


def solve(p: Problem, *, beta: float, gamma: float, sigma2: float, h_ref: float,
          tol: float, max_iter: int, coarse_to_fine: bool, _fine: bool = True):
    """Solve a random-walker problem in place, optionally coarse-to-fine.

    Yields
    ------
    str
        A message after each level (used for progress reports).

    Returns
    -------
    list of dict
        Per-level solver statistics, coarsest first.
    """
    stats = []
    k = _coarsen_factors(p.fixed.shape, p.spacing)
    if coarse_to_fine and p.fixed.numel() > _COARSEST_VOXELS and max(k) > 1:
        coarse = Problem(
            image=F.avg_pool3d(p.image[None], k, k, ceil_mode=True)[0],
            fixed=None,
            x=None,
            spacing=tuple(h * f for h, f in zip(p.spacing, k)),
            prior=None if p.prior is None else F.avg_pool3d(p.prior[None], k, k, ceil_mode=True)[0],
        )
        coarse.fixed, seeds_c = _pool_seeds(p.fixed, p.x, k)
        if coarse.prior is not None:
            init = coarse.prior.clone()
        else:
            init = torch.full_like(seeds_c, 1.0 / seeds_c.shape[0])
        coarse.x = torch.where(coarse.fixed, seeds_c, init)
        stats = yield from solve(coarse, beta=beta, gamma=gamma, sigma2=sigma2, h_ref=h_ref,
                                 tol=tol, max_iter=max_iter, coarse_to_fine=True, _fine=False)
        up = F.interpolate(coarse.x[None], size=tuple(p.fixed.shape), mode="trilinear",
                           align_corners=False)[0]
        p.x = torch.where(p.fixed, p.x, up)
    weights = edge_weights(p.image, p.spacing, beta=beta, sigma2=sigma2, h_ref=h_ref)
    level = _pcg(p, weights, gamma, tol, max_iter if _fine else 4 * max_iter)
    stats.append(level)
    yield f"solved {tuple(p.fixed.shape)}: {level['iterations']} CG iterations"
    return stats
