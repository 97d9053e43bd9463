"""Network probabilities and the user's strokes combined on the image graph.

:func:`fuse` is the graph step of annotation with a network in the loop (issue 19):
the network (which already saw the strokes as input channels) proposes class
probabilities; the random walker of ``_rw_solver`` then decides only where that
proposal is open to doubt, with the image's edges:

* **fixed** (Dirichlet) voxels: every stroke (its class, hard: a stroke always wins),
  and the voxels where the network is confident (max probability >= ``confident``)
  farther than ``band_mm`` from any doubtful voxel;
* **released**: around a stroke that disagrees with the network's argmax the network's
  confident voxels are not fixed within ``release_mm`` (the stroke says the network is
  wrong there; the graph carries the stroke to the nearest edges) and the network's
  unary term fades to 0 toward the stroke;
* **band**: the rest, solved in the bounding box of the band with the network's
  probabilities as the unary term (Grady 2005 priors, weight ``prior_weight`` times
  the network's certainty ``(max p - 1/(K+1)) / (1 - 1/(K+1))``, so where it is unsure
  the image decides) and as the initial guess.

Why hand-written: it is the product's own combination (no library combines a
network's output with strokes on a random-walker graph); the solver is the engine's.
Dilations are separable max-pools (box neighbourhoods in mm), cheap on CPU and GPU.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from .._errors import LabelEffError
from ._device import resolve_device
from ._rw_solver import Problem, contrast_scale, solve

#: Defaults of :func:`fuse` (tuned on the LA tuning cases 1-4 only).
FUSE_DEFAULTS = {"confident": 0.9, "band_mm": 4.0, "release_mm": 12.0, "prior_weight": 0.3,
                 "beta": 8.0, "tol": 1e-3, "max_iter": 150}


def _dilate(mask: torch.Tensor, radius_vox) -> torch.Tensor:
    """Box dilation of a (Z, Y, X) bool tensor by ``radius_vox`` voxels per axis.

    Radii over 3 voxels are dilated on a grid pooled by up to 4 per axis (any voxel
    set), then expanded back: a superset of the exact dilation by less than the pooling
    factor, 10-20x cheaper for the 10-20 voxel radii of the release zone (a 2.25 M
    voxel volume: 2.4 s -> about 0.1 s on 2 CPU cores)."""
    f = [max(1, min(4, int(r) // 2)) for r in radius_vox]
    x = mask[None, None].float()
    if max(f) > 1:
        x = F.max_pool3d(x, kernel_size=f, stride=f, ceil_mode=True)
    for d, r in enumerate(radius_vox):
        r = -(-int(r) // f[d])
        if r <= 0:
            continue
        k = [1, 1, 1]
        k[d] = 2 * r + 1
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - d)] = pad[2 * (2 - d) + 1] = r
        x = F.max_pool3d(F.pad(x, pad, value=0.0), kernel_size=tuple(k), stride=1)
    if max(f) > 1:
        for d in range(3):
            x = x.repeat_interleave(f[d], dim=d + 2)
        x = x[:, :, : mask.shape[0], : mask.shape[1], : mask.shape[2]]
    return x[0, 0] > 0.5


def _bbox(mask: torch.Tensor):
    idx = [torch.nonzero(mask.any(dim=tuple(a for a in range(3) if a != d))).flatten() for d in range(3)]
    if any(len(i) == 0 for i in idx):
        return None
    return tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)


def fuse(image, probabilities, scribbles, *, spacing, device: str = "auto", **options):
    """Combine a network's class probabilities with the user's strokes (module docstring).

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X) or (C, Z, Y, X)
        Normalised or raw intensities (normalised here per channel).
    probabilities : ndarray, shape (K + 1, Z, Y, X), float
        The network's probabilities on the image's grid (background first).
    scribbles : ndarray, shape (Z, Y, X), int
        0 unannotated, 1 background, c + 1 structure c.
    spacing : sequence of 3 float
        (Z, Y, X) mm.
    device : str
    **options
        ``confident``, ``band_mm``, ``release_mm``, ``prior_weight``, ``beta``, ``tol``,
        ``max_iter`` (:data:`FUSE_DEFAULTS`).

    Returns
    -------
    probabilities : ndarray, shape (K + 1, Z, Y, X), float32
        Sum to 1 per voxel; strokes are one-hot.
    info : dict
        ``band_voxels``, ``solved_box`` (voxels), ``released_voxels``, ``iterations``,
        ``seconds``.
    """
    from ._api import normalise

    unknown = sorted(set(options) - set(FUSE_DEFAULTS))
    if unknown:
        raise LabelEffError(f"fuse options {unknown} are unknown; allowed: {', '.join(FUSE_DEFAULTS)}")
    opts = {**FUSE_DEFAULTS, **options}
    t0 = time.perf_counter()
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = img[None]
    p_np = np.asarray(probabilities, dtype=np.float32)
    s_np = np.asarray(scribbles)
    if p_np.ndim != 4 or p_np.shape[1:] != img.shape[1:] or s_np.shape != img.shape[1:]:
        raise LabelEffError(f"fuse: image {img.shape[1:]}, probabilities {p_np.shape} and "
                            f"scribbles {s_np.shape} must share one (Z, Y, X) grid")
    k1 = p_np.shape[0]
    if s_np.size and int(s_np.max()) > k1:
        raise LabelEffError(f"fuse: scribble value {int(s_np.max())} > K + 1 = {k1}")
    sp = tuple(float(s) for s in spacing)
    dev = resolve_device(device)
    p = torch.from_numpy(p_np).to(dev)
    s = torch.from_numpy(s_np.astype(np.int64)).to(dev)
    stroked = s > 0
    top, arg = p.max(dim=0)
    disagree = stroked & ((s - 1) != arg)
    rad = lambda mm: [int(np.ceil(mm / h)) for h in sp]  # noqa: E731
    released = _dilate(disagree, rad(opts["release_mm"])) if bool(disagree.any()) else torch.zeros_like(stroked)
    doubt = (top < float(opts["confident"])) | released
    band = _dilate(doubt, rad(opts["band_mm"])) & ~stroked
    info = {"band_voxels": int(band.sum()), "released_voxels": int(released.sum()),
            "disagreeing_stroke_voxels": int(disagree.sum()), "iterations": 0, "solved_box": 0}
    out = p.clone()
    onehot = F.one_hot(arg, k1).permute(3, 0, 1, 2).float()
    if bool(stroked.any()):
        sh = F.one_hot((s - 1).clamp_min(0), k1).permute(3, 0, 1, 2).float()
        out = torch.where(stroked[None], sh, out)
        onehot = torch.where(stroked[None], sh, onehot)
    box = _bbox(band)
    if box is not None:
        box = tuple(slice(max(0, b.start - 1), min(n, b.stop + 1)) for b, n in zip(box, band.shape))
        sub_band = band[box]
        x = torch.where(sub_band[None], p[(slice(None), *box)], onehot[(slice(None), *box)]).contiguous()
        # unary term: the network's probabilities weighed by how sure it is (0 for a
        # uniform answer: an unsure network leaves the band to the image), fading to 0
        # toward disagreeing strokes
        weight = ((top[box] - 1.0 / k1) / (1.0 - 1.0 / k1)).clamp(0.0, 1.0)
        if bool(disagree.any()):
            near = _dilate(disagree[box], rad(opts["release_mm"] / 2))
            weight = weight * torch.where(near, 0.0, torch.where(released[box], 0.5, 1.0))
        prior = p[(slice(None), *box)] * weight[None]
        im = torch.from_numpy(normalise(img[(slice(None), *box)])).to(dev)
        prob = Problem(image=im, fixed=~sub_band, x=x, spacing=sp, prior=prior)
        gen = solve(prob, beta=float(opts["beta"]), gamma=float(opts["prior_weight"]),
                    sigma2=contrast_scale(im), h_ref=min(sp), tol=float(opts["tol"]),
                    max_iter=int(opts["max_iter"]), coarse_to_fine=False)
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            stats = stop.value or []
        info["iterations"] = int(sum(st.get("iterations", 0) for st in stats))
        info["solved_box"] = int(sub_band.numel())
        xs = prob.x.clamp(0.0, 1.0)
        xs = xs / xs.sum(dim=0, keepdim=True).clamp_min(1e-12)
        out[(slice(None), *box)] = torch.where(sub_band[None], xs, out[(slice(None), *box)])
    out = out / out.sum(dim=0, keepdim=True).clamp_min(1e-12)
    info["seconds"] = round(time.perf_counter() - t0, 4)
    return np.ascontiguousarray(out.cpu().numpy(), dtype=np.float32), info
