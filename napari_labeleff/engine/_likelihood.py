"""Per-class intensity likelihoods from sample voxels (scribbles, box cores, box shells).

This is the histogram likelihood that MONAI Label's scribbles pipeline feeds to its graph
cut, computed with torch on the engine's device so that it stays on the GPU next to the
random walker. Multi-channel images use a product of per-channel histograms (naive
Bayes), evaluated in the log domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_MAX_QUANTILE_SAMPLES = 1 << 20


@dataclass
class Histograms:
    """Smoothed per-class, per-channel intensity densities.

    Attributes
    ----------
    lo, hi : Tensor, shape (C,)
        Bin range per channel (robust quantiles of the whole image).
    log_density : Tensor, shape (K + 1, C, bins)
        log p(bin | class) per channel; a class without samples is uniform.
    """

    lo: torch.Tensor
    hi: torch.Tensor
    log_density: torch.Tensor

    @property
    def bins(self) -> int:
        return int(self.log_density.shape[-1])


def _bin_index(image: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int):
    shape = (-1,) + (1,) * (image.ndim - 1)
    scaled = (image - lo.view(shape)) / (hi - lo).view(shape) * bins
    return scaled.clamp_(0, bins - 1).long()


#: (tensor, its version, (lo, hi)) of the last images whose range was computed; the
#: tensors are held so their memory cannot be reused by another image while cached.
_RANGES: list = []
#: Images above this many values are not cached (their range is recomputed).
_RANGE_CACHE_MAX_VALUES = 1 << 24


def intensity_range(image: torch.Tensor):
    """The 0.1 and 99.9 percentiles of each channel of (C, Z, Y, X) ``image`` (over at
    most ``_MAX_QUANTILE_SAMPLES`` voxels): the histograms' bin range. A refine call fits
    histograms of one image several times (held-out folds, corrections' checks), so the
    range of the last two images is kept while they are unchanged (same tensor, same
    version counter: an in-place edit invalidates it)."""
    for t, version, rng in _RANGES:
        if t is image and t._version == version:
            return rng
    flat = image.reshape(image.shape[0], -1)
    step = max(1, flat.shape[1] // _MAX_QUANTILE_SAMPLES)
    q = torch.quantile(flat[:, ::step], torch.tensor([0.001, 0.999], device=image.device), dim=1)
    rng = (q[0], q[1])
    if image.numel() <= _RANGE_CACHE_MAX_VALUES:
        _RANGES.insert(0, (image, image._version, rng))
        del _RANGES[2:]
    return rng


def fit_histograms(image: torch.Tensor, samples, *, bins: int = 64, smooth: float = 1.0):
    """Fit one intensity histogram per class.

    Parameters
    ----------
    image : Tensor, shape (C, Z, Y, X), float32
    samples : sequence of (Tensor of bool, shape (Z, Y, X)) or None
        One entry per class (K + 1 of them, background first): the voxels known or
        assumed to belong to that class. ``None`` or an empty mask gives a uniform
        (uninformative) density.
    bins : int
        Bins per channel between the 0.1 and 99.9 percentiles of each channel.
    smooth : float
        Standard deviation (in bins) of the Gaussian smoothing of each histogram.

    Returns
    -------
    Histograms
    """
    lo, hi = intensity_range(image)
    hi = torch.where(hi > lo, hi, lo + 1.0)
    idx = _bin_index(image, lo, hi, bins).reshape(image.shape[0], -1)

    radius = max(1, int(round(3 * smooth)))
    t = torch.arange(-radius, radius + 1, device=image.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / smooth) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)

    dens = []
    for mask in samples:
        if mask is None or not bool(mask.any()):
            dens.append(torch.full((image.shape[0], bins), 1.0 / bins, device=image.device))
            continue
        sel = idx[:, mask.reshape(-1)]
        counts = torch.stack([torch.bincount(s, minlength=bins) for s in sel]).float()
        counts = F.conv1d(counts[:, None], kernel, padding=radius)[:, 0]
        counts = counts + 1e-3 * counts.sum(dim=1, keepdim=True) / bins
        dens.append(counts / counts.sum(dim=1, keepdim=True))
    return Histograms(lo, hi, torch.stack(dens).log())


def posterior(hist: Histograms, image: torch.Tensor) -> torch.Tensor:
    """Class posteriors with equal class priors.

    Parameters
    ----------
    hist : Histograms
    image : Tensor, shape (C, Z, Y, X)

    Returns
    -------
    Tensor, shape (K + 1, Z, Y, X), float32, summing to 1 over classes.
    """
    idx = _bin_index(image, hist.lo, hist.hi, hist.bins)
    logp = None
    for c in range(image.shape[0]):
        term = hist.log_density[:, c][:, idx[c]]
        logp = term if logp is None else logp + term
    return torch.softmax(logp, dim=0)
