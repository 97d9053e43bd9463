"""The histograms' bin range is computed once per image within a refine call, and never
served stale: an in-place edit or another image gets its own."""

import torch

from napari_labeleff.engine import _likelihood


def test_the_range_is_cached_per_image_and_invalidated_by_edits(monkeypatch):
    calls = []
    real = torch.quantile
    monkeypatch.setattr(_likelihood.torch, "quantile",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    image = torch.linspace(0, 1, 4000).reshape(1, 10, 20, 20)
    lo, hi = _likelihood.intensity_range(image)
    assert _likelihood.intensity_range(image) == (lo, hi) and len(calls) == 1
    image.mul_(10)  # in place: same tensor, new content
    lo2, hi2 = _likelihood.intensity_range(image)
    assert len(calls) == 2 and float(hi2) > 5 * float(hi)
    other = image.clone()
    _likelihood.intensity_range(other)
    assert len(calls) == 3
    samples = [image[0] < 5, image[0] >= 5]
    assert torch.equal(_likelihood.fit_histograms(image, samples).hi, hi2)
