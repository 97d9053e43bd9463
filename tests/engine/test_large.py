"""Full-size scans in bounded memory (issue 10): region of interest around boxes (lazy
images read only there), the coarse-to-fine band path with float16 outputs, and the
memory estimate's clear refusal."""

import numpy as np
import pytest

from napari_labeleff import LabelEffError
from napari_labeleff.engine import _multiscale, refine

from .conftest import dice, make_phantom

SPACING = (2.0, 1.0, 1.0)


class LazyImage:
    """Array-like that records which regions were read (like a dask/zarr array)."""

    def __init__(self, arr):
        self.arr, self.reads = arr, []
        self.shape, self.dtype, self.ndim = arr.shape, arr.dtype, arr.ndim

    def __getitem__(self, key):
        self.reads.append(key)
        return self.arr[key]

    def __array__(self, dtype=None, copy=None):
        self.reads.append("all")
        return self.arr if dtype is None else self.arr.astype(dtype)


def _padded_phantom():
    """The binary phantom in the corner of a volume 4x larger in Y and X."""
    image, gt, scr = make_phantom(n_structures=1)
    big = np.zeros((24, 128, 128), np.float32)
    big += np.random.default_rng(1).normal(0, 0.15, big.shape).astype(np.float32)
    big[:, :48, :48] = image
    g = np.zeros(big.shape, np.uint8)
    g[:, :48, :48] = gt
    s = np.zeros(big.shape, np.uint8)
    s[:, :48, :48] = scr
    return big, g, s


def test_roi_reads_only_the_region_around_the_boxes():
    image, gt, scr = _padded_phantom()
    idx = np.nonzero(gt)
    box = (1, *[int(i.min()) - 1 for i in idx], *[int(i.max()) + 2 for i in idx])
    lazy = LazyImage(image)
    res = refine(lazy, scr, spacing=SPACING, boxes=[box], method="randomwalk")
    assert "all" not in lazy.reads and len(lazy.reads) == 1
    (z, y, x) = lazy.reads[0]
    assert (y.stop - y.start) * (x.stop - x.start) < 0.4 * 128 * 128
    assert res.info["roi"] == [[z.start, z.stop], [y.start, y.stop], [x.start, x.stop]]
    assert res.labels.shape == gt.shape and dice(res.labels == 1, gt == 1) > 0.95
    assert (res.probabilities[0, :, 100:, 100:] == 1).all()
    full = refine(image, scr, spacing=SPACING, boxes=[box], method="randomwalk", roi=False)
    assert "roi" not in full.info
    assert dice(res.labels == 1, full.labels == 1) > 0.98


@pytest.mark.slow  # > 20 s on the loaded 2-core machine
def test_coarse_to_fine_band(monkeypatch):
    monkeypatch.setattr(_multiscale, "COARSE_VOXELS", 12_000)
    monkeypatch.setattr(_multiscale, "TILE_VOXELS", 20_000)
    image, gt, scr = make_phantom()
    direct = refine(image, scr, spacing=SPACING, method="randomwalk")
    res = refine(image, scr, spacing=SPACING, method="randomwalk", multiscale=True)
    ms = res.info["multiscale"]
    assert max(ms["factors"]) > 1 and ms["band_fraction"] < 0.75
    assert res.probabilities.dtype == np.float16 and res.uncertainty.dtype == np.float16
    np.testing.assert_allclose(res.probabilities.astype(np.float32).sum(0), 1, atol=5e-3)
    np.testing.assert_array_equal(res.labels[scr > 0], scr[scr > 0] - 1)
    # pooled 2x2x2, the small sphere loses some detail the band does not fully recover
    for c in (1, 2):
        assert dice(res.labels == c, gt == c) > min(0.88, dice(direct.labels == c, gt == c))
    # the band solve sharpens the upsampled coarse result
    monkeypatch.setattr(_multiscale, "BAND_MAX_ITER", 0)
    blurry = refine(image, scr, spacing=SPACING, method="randomwalk", multiscale=True)
    assert (dice(res.labels == 2, gt == 2) >= dice(blurry.labels == 2, gt == 2))
    # incremental: warm start of the coarse solve
    more = scr.copy()
    more[12, 30:33, 20:23] = 2
    inc = refine(image, more, spacing=SPACING, method="randomwalk", multiscale=True,
                 state=res.state)
    assert inc.info["warm_start"]


def test_too_large_for_memory_is_refused_with_an_estimate(monkeypatch):
    monkeypatch.setattr(_multiscale, "available_bytes", lambda: 2**20)
    image, _, scr = make_phantom()
    with pytest.raises(LabelEffError, match=r"refining a region of \(24, 48, 48\) voxels "
                                            r"with 3 classes needs about .* GB of memory, "
                                            r"0\.0 GB are available"):
        refine(image, scr, spacing=SPACING, method="randomwalk")


def test_estimate_grows_with_size_and_is_bounded_on_the_band_path():
    small = _multiscale.estimate_bytes((100, 100, 100), 1, 5, large=False)
    big = _multiscale.estimate_bytes((300, 512, 512), 1, 5, large=False)
    band = _multiscale.estimate_bytes((300, 512, 512), 1, 5, large=True)
    assert small < big and band < 4 * 2**30 < big


def test_incremental_band_path_solves_only_the_tiles_that_changed(monkeypatch):
    """A correction on a few slices re-solves only the tiles around it; the others keep
    the previous fine result (no other difference from solving every tile again)."""
    monkeypatch.setattr(_multiscale, "COARSE_VOXELS", 12_000)
    monkeypatch.setattr(_multiscale, "TILE_VOXELS", 5_000)
    image, gt, scr = make_phantom(shape=(40, 48, 48))
    first = refine(image, scr, spacing=SPACING, method="randomwalk", multiscale=True)
    more = scr.copy()
    more[20, 30:33, 20:23] = 2
    inc = refine(image, more, spacing=SPACING, method="randomwalk", multiscale=True,
                 state=first.state)
    ms = inc.info["multiscale"]
    assert 0 < ms["tiles_kept"] < ms["tiles"]
    kept = np.flatnonzero((inc.labels == first.labels).all(axis=(1, 2)))
    assert kept.size  # whole slices unchanged
    monkeypatch.setattr(_multiscale, "REUSE_TOL", -1.0)  # every tile solved again
    again = refine(image, more, spacing=SPACING, method="randomwalk", multiscale=True,
                   state=first.state)
    assert again.info["multiscale"]["tiles_kept"] == 0
    assert np.mean(again.labels == inc.labels) > 0.999
