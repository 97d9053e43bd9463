"""Voxel uncertainty maps and their aggregation per slice, per region and per volume.

The maths (entropy, margin, mutual information, pooled embeddings) runs in torch on
the best available device, so a 256^3 volume is scored in seconds on a CPU and well
under a second on a GPU. Connected uncertain regions use ``scipy.ndimage`` on the host.
Everything here is product-specific aggregation, hence hand-written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from .._errors import LabelEffError
from ..engine import normalised_entropy, resolve_device

#: Uncertainty kinds accepted by :func:`uncertainty_map`.
KINDS = ("entropy", "margin", "mutual_info")

#: A voxel counts as "uncertain" when its uncertainty (in [0, 1]) reaches this value.
#: For normalised entropy with two classes 0.5 means p(max) < ~0.89.
UNCERTAIN = 0.5

_INVOLVED = 0.2  # voxels from this uncertainty on tell which classes are involved
_POOL = 4  # slice embeddings: intensity / probability pooled to a 4 x 4 grid


def _probabilities(member, name: str) -> np.ndarray:
    probs = getattr(member, "probabilities", member)
    probs = np.asarray(probs)
    if probs.ndim != 4 or probs.shape[0] < 2:
        raise LabelEffError(
            f"{name} must be a RefineResult or probabilities of shape (K + 1, Z, Y, X) "
            f"with K >= 1, got an array of shape {probs.shape}")
    return probs


def ensemble_members(result, others) -> list[np.ndarray]:
    members = [_probabilities(result, "result")]
    for i, o in enumerate(others):
        p = _probabilities(o, f"others[{i}]")
        if p.shape != members[0].shape:
            raise LabelEffError(
                f"others[{i}] has probabilities of shape {p.shape}, but result has "
                f"{members[0].shape}: ensemble members must come from the same volume "
                "and classes")
        members.append(p)
    return members


def _uncertainty(members: list[torch.Tensor], kind: str) -> torch.Tensor:
    """(Z, Y, X) uncertainty in [0, 1] from ensemble members of shape (K + 1, Z, Y, X)."""
    mean = members[0] if len(members) == 1 else torch.stack(members).mean(0)
    if kind == "entropy":
        u = normalised_entropy(mean)
    elif kind == "margin":
        top = torch.topk(mean, 2, dim=0).values
        u = 1.0 - (top[0] - top[1])
    else:  # mutual_info: entropy of the mean minus the mean entropy (BALD)
        u = normalised_entropy(mean) - torch.stack([normalised_entropy(m) for m in members]).mean(0)
    return u.clamp_(0.0, 1.0)


def available_kinds(n_members: int = 1) -> tuple:
    """Uncertainty kinds that make sense for ``n_members`` ensemble members: mutual
    information needs an ensemble (at least two members), so a single refinement is
    offered entropy and margin only."""
    return tuple(k for k in KINDS if k != "mutual_info" or n_members >= 2)


def _check_kind(kind: str, n_members: int) -> None:
    if kind not in KINDS:
        raise LabelEffError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "mutual_info" and n_members < 2:
        raise LabelEffError(
            "kind='mutual_info' needs an ensemble: pass at least one other result in "
            "others= (e.g. a refinement by another method)")


def uncertainty_map(result, kind: str = "entropy", *, others=(), device="auto"
                    ) -> np.ndarray:
    """Voxel-wise uncertainty of a refinement (or of an ensemble of refinements).

    Parameters
    ----------
    result : RefineResult or ndarray, shape (K + 1, Z, Y, X)
        A refinement result, or its class probabilities (channel 0 = background).
    kind : {"entropy", "margin", "mutual_info"}
        ``"entropy"``: predictive entropy of the (ensemble-mean) probabilities,
        normalised by log(K + 1). ``"margin"``: 1 - (p_first - p_second).
        ``"mutual_info"``: epistemic part of the entropy (entropy of the mean minus the
        mean entropy of the members, as in BALD); needs ``others``.
    others : sequence of RefineResult or ndarray
        Further ensemble members on the same volume: results of other methods (the
        graph method and the learned model), test-time-augmented or perturbed runs.
    device : str
        Torch device for the computation: ``"auto"`` (CUDA, then MPS, then CPU),
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Returns
    -------
    ndarray of float32, shape (Z, Y, X)
        Uncertainty in [0, 1]; higher = less certain.
    """
    members = ensemble_members(result, others)
    _check_kind(kind, len(members))
    dev = resolve_device(device)
    with torch.no_grad():
        u = _uncertainty([torch.as_tensor(m, dtype=torch.float32, device=dev)
                          for m in members], kind)
    return u.cpu().numpy()


@dataclass
class VoxelScores:
    """Per-voxel quantities shared by the slice and region aggregations.

    Attributes
    ----------
    uncertainty : Tensor, shape (Z, Y, X), float32, in [0, 1]
    top1, top2 : Tensor, shape (Z, Y, X), int64
        Most and second most probable class per voxel.
    foreground : Tensor, shape (Z, Y, X), bool
        Predicted foreground (``top1 > 0``).
    n_classes : int
        K + 1.
    """

    uncertainty: torch.Tensor
    top1: torch.Tensor
    top2: torch.Tensor
    foreground: torch.Tensor
    n_classes: int


def voxel_scores(members: list[np.ndarray], kind: str, scribbles: np.ndarray,
                 device: torch.device) -> VoxelScores:
    """Uncertainty and top-2 classes of ensemble probabilities; scribbled voxels are
    known, so their uncertainty is set to 0."""
    _check_kind(kind, len(members))
    t = [torch.as_tensor(m, dtype=torch.float32, device=device) for m in members]
    mean = t[0] if len(t) == 1 else torch.stack(t).mean(0)
    u = _uncertainty(t, kind)
    u[torch.as_tensor(scribbles > 0, device=device)] = 0.0
    top = torch.topk(mean, 2, dim=0).indices
    return VoxelScores(u, top[0], top[1], top[0] > 0, mean.shape[0])


def _pair_code(top1: torch.Tensor, top2: torch.Tensor, k1: int) -> torch.Tensor:
    return torch.minimum(top1, top2) * k1 + torch.maximum(top1, top2)


def decode_pair(code: int, k1: int) -> tuple[int, int]:
    """Inverse of the (class a, class b) pair code, a < b."""
    return code // k1, code % k1


@dataclass
class SliceStats:
    """Aggregates of the voxel scores over every slice along one axis.

    Attributes
    ----------
    mass : ndarray, shape (S,)
        Sum of the uncertainty in each slice.
    n_uncertain : ndarray, shape (S,)
        Voxels with uncertainty >= :data:`UNCERTAIN`.
    n_predicted : ndarray, shape (S,)
        Voxels predicted foreground.
    n_foreground : ndarray, shape (S,)
        Voxels predicted foreground or uncertain (the denominator of "x% uncertain").
    class_mass : ndarray, shape (S, K + 1)
        Uncertainty mass involving each class (as first or second most probable class).
    pair : ndarray of int, shape (S,)
        Pair code (:func:`decode_pair`) of the class boundary holding most uncertainty.
    embedding : ndarray, shape (S, D)
        Representation of each slice for diversity: pooled intensities and pooled
        foreground probabilities, each block scaled to unit total variance.
    """

    mass: np.ndarray
    n_uncertain: np.ndarray
    n_predicted: np.ndarray
    n_foreground: np.ndarray
    class_mass: np.ndarray
    pair: np.ndarray
    embedding: np.ndarray


def _pooled(vol: torch.Tensor, axis: int) -> torch.Tensor:
    """(C, Z, Y, X) -> (S, C * POOL * POOL) average-pooled slices along ``axis``."""
    s = vol.movedim(axis + 1, 0)  # (S, C, H, W)
    return F.adaptive_avg_pool2d(s, _POOL).reshape(s.shape[0], -1)


def _standardised(block: torch.Tensor) -> torch.Tensor:
    """Centre a (S, D) feature block and scale it to unit total variance. One scale
    for the whole block (not per feature), so features that barely vary (empty
    background) do not have their noise blown up."""
    block = block - block.mean(0, keepdim=True)
    return block / block.pow(2).sum(1).mean().sqrt().clamp_min(1e-6)


def slice_stats(vs: VoxelScores, image: np.ndarray, probabilities: np.ndarray,
                axis: int) -> SliceStats:
    """Aggregate :class:`VoxelScores` per slice along ``axis`` (0, 1 or 2).

    ``image`` is (C, Z, Y, X) and ``probabilities`` (K + 1, Z, Y, X) (the ensemble
    mean); both only feed the slice embeddings.
    """
    dev = vs.uncertainty.device
    k1 = vs.n_classes
    u = vs.uncertainty.movedim(axis, 0)
    n_slices = u.shape[0]
    u = u.reshape(n_slices, -1)
    unc = u >= UNCERTAIN
    mass = u.sum(1)
    n_unc = unc.sum(1)
    fg = vs.foreground.movedim(axis, 0).reshape(n_slices, -1)
    n_fg = (unc | fg).sum(1)

    # class involvement and dominant boundary, over clearly uncertain voxels
    some = torch.nonzero(u.reshape(-1) >= _INVOLVED).squeeze(1)
    w = u.reshape(-1)[some]
    s_idx = some // u.shape[1]
    t1 = vs.top1.movedim(axis, 0).reshape(-1)[some]
    t2 = vs.top2.movedim(axis, 0).reshape(-1)[some]
    n_sc = n_slices * k1
    class_mass = (torch.bincount(s_idx * k1 + t1, weights=w, minlength=n_sc)
                  + torch.bincount(s_idx * k1 + t2, weights=w, minlength=n_sc))
    pairs = torch.bincount(s_idx * k1 * k1 + _pair_code(t1, t2, k1), weights=w,
                           minlength=n_sc * k1).reshape(n_slices, k1 * k1)

    # each image channel is scaled on its own, so intensity units cancel out
    img = _pooled(torch.as_tensor(image, dtype=torch.float32, device=dev), axis)
    img = torch.cat([_standardised(ch) for ch in img.split(_POOL * _POOL, dim=1)], 1)
    fg_prob = torch.as_tensor(probabilities[1:], dtype=torch.float32, device=dev)
    emb = torch.cat([img / math.sqrt(image.shape[0]),
                     _standardised(_pooled(fg_prob, axis))], dim=1)
    to_np = lambda t: t.cpu().numpy()  # noqa: E731
    return SliceStats(mass=to_np(mass).astype(float), n_uncertain=to_np(n_unc),
                      n_predicted=to_np(fg.sum(1)), n_foreground=to_np(n_fg),
                      class_mass=to_np(class_mass.reshape(n_slices, k1)).astype(float),
                      pair=to_np(pairs.argmax(1)), embedding=to_np(emb).astype(float))


@dataclass
class Region:
    """One connected uncertain region.

    Attributes
    ----------
    bbox : tuple of int
        (z0, y0, x0, z1, y1, x1), inclusive-exclusive voxel box.
    size : int
        Uncertain voxels in the region.
    mass : float
        Sum of their uncertainty.
    centroid : tuple of float
        (z, y, x) centre of mass (voxel units).
    class_mass : ndarray, shape (K + 1,)
        Uncertainty mass involving each class.
    pair : tuple of int
        The class boundary (a, b) holding most of the region's uncertainty.
    foreground : bool
        The region touches predicted foreground.
    """

    bbox: tuple
    size: int
    mass: float
    centroid: tuple
    class_mass: np.ndarray
    pair: tuple
    foreground: bool


def region_block(spacing, shape, block_mm: float = 40.0) -> tuple:
    """Edge (voxels, per axis) of the blocks that split large uncertain regions:
    about ``block_mm`` millimetres, at least 8 voxels, at most the volume."""
    return tuple(int(min(n, max(8, round(block_mm / s)))) for s, n in zip(spacing, shape))


def uncertain_regions(uncertainty, *, spacing, top1=None, top2=None, foreground=None,
                      n_classes: int | None = None, threshold: float = UNCERTAIN,
                      block_mm: float = 40.0, min_voxels: int | None = None
                      ) -> list[Region]:
    """Connected regions of uncertain voxels, split into blocks of ~``block_mm``.

    Uncertain voxels (``uncertainty >= threshold``) are grouped by 6-connectivity; a
    component larger than one block (a whole gray/white boundary is one connected
    surface) is cut along a grid of ``block_mm`` blocks, so every region is small
    enough to look at in one view.

    Parameters
    ----------
    uncertainty : ndarray, shape (Z, Y, X)
        Values in [0, 1] (e.g. from :func:`uncertainty_map`).
    spacing : tuple of float
        (Z, Y, X) mm.
    top1, top2 : ndarray of int, shape (Z, Y, X), optional
        Most and second most probable class; default: all regions involve (0, 1).
    foreground : ndarray of bool, shape (Z, Y, X), optional
        Predicted foreground; default: everything counts as foreground.
    n_classes : int, optional
        K + 1 (length of ``Region.class_mass``); default: inferred from top1/top2.
    threshold : float
        Uncertainty from which a voxel counts as uncertain.
    block_mm : float
        Block edge in millimetres.
    min_voxels : int, optional
        Smaller regions are dropped; default max(10, 1e-4 * volume size).

    Returns
    -------
    list of Region
        Sorted by uncertainty mass, largest first.
    """
    u = np.asarray(uncertainty, dtype=np.float32)
    mask = u >= threshold
    if min_voxels is None:
        min_voxels = max(10, int(1e-4 * u.size))
    lab, n = ndi.label(mask)
    if n == 0:
        return []
    coords = np.nonzero(mask)
    blk = region_block(spacing, u.shape, block_mm)
    nb = [-(-s // b) for s, b in zip(u.shape, blk)]
    block_id = ((coords[0] // blk[0]) * nb[1] + coords[1] // blk[1]) * nb[2] \
        + coords[2] // blk[2]
    keys = lab[coords].astype(np.int64) * (nb[0] * nb[1] * nb[2]) + block_id
    _, inv = np.unique(keys, return_inverse=True)
    n_reg = int(inv.max()) + 1
    size = np.bincount(inv, minlength=n_reg)
    w = u[coords]
    mass = np.bincount(inv, weights=w, minlength=n_reg)
    cen = [np.bincount(inv, weights=c, minlength=n_reg) / size for c in coords]
    relab = np.zeros(u.shape, dtype=np.int32)
    relab[coords] = inv + 1
    boxes = ndi.find_objects(relab)

    t1 = np.zeros(len(w), np.int64) if top1 is None else np.asarray(top1)[coords]
    t2 = np.ones(len(w), np.int64) if top2 is None else np.asarray(top2)[coords]
    k1 = n_classes or int(max(t1.max(), t2.max())) + 1
    cm = (np.bincount(inv * k1 + t1, weights=w, minlength=n_reg * k1)
          + np.bincount(inv * k1 + t2, weights=w, minlength=n_reg * k1)).reshape(n_reg, k1)
    lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
    pm = np.bincount(inv * k1 * k1 + lo * k1 + hi, weights=w,
                     minlength=n_reg * k1 * k1).reshape(n_reg, k1 * k1).argmax(1)
    fg = (np.ones(n_reg, bool) if foreground is None else
          np.bincount(inv, weights=np.asarray(foreground)[coords], minlength=n_reg) > 0)

    regions = []
    for r in np.flatnonzero(size >= min_voxels):
        sl = boxes[r]
        regions.append(Region(
            bbox=tuple(s.start for s in sl) + tuple(s.stop for s in sl),
            size=int(size[r]), mass=float(mass[r]),
            centroid=tuple(float(c[r]) for c in cen), class_mass=cm[r],
            pair=decode_pair(int(pm[r]), k1), foreground=bool(fg[r])))
    regions.sort(key=lambda g: -g.mass)
    return regions


def volume_score(uncertainty, labels=None, *, threshold: float = UNCERTAIN) -> dict:
    """Summary of a whole volume's uncertainty (to rank volumes of a cohort).

    Parameters
    ----------
    uncertainty : ndarray, shape (Z, Y, X)
        Values in [0, 1].
    labels : ndarray of int, shape (Z, Y, X), optional
        Predicted mask; when given, fractions are also reported relative to the
        foreground (predicted structure or uncertain voxels).
    threshold : float

    Returns
    -------
    dict
        ``mean`` (mean uncertainty), ``uncertain_fraction`` (fraction of voxels at or
        above ``threshold``), ``uncertain_voxels`` and, with ``labels``,
        ``foreground_uncertain_fraction``.
    """
    u = np.asarray(uncertainty)
    unc = u >= threshold
    out = {"mean": float(u.mean()), "uncertain_fraction": float(unc.mean()),
           "uncertain_voxels": int(unc.sum())}
    if labels is not None:
        denom = int((unc | (np.asarray(labels) > 0)).sum())
        out["foreground_uncertain_fraction"] = float(unc.sum() / denom) if denom else 0.0
    return out
