"""The torch random walker against scikit-image's reference implementation."""

import numpy as np
import pytest
import torch
from skimage.segmentation import random_walker

from napari_labeleff.engine._rw_solver import Problem, binomial_smooth, contrast_scale, solve


def _drive(gen):
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _problem(img, labels, n_classes):
    seeds = torch.from_numpy(labels.astype(np.int64) - 1)
    fixed = seeds >= 0
    x = torch.full((n_classes, *labels.shape), 1.0 / n_classes)
    x[:, fixed] = torch.nn.functional.one_hot(seeds[fixed], n_classes).T.float()
    image = torch.from_numpy(img).float()
    image = image[None] if image.ndim == 3 else image
    return Problem(image, fixed, x, (1.0, 1.0, 1.0), None)


def _volume(seed=0, channels=1, shape=(10, 24, 24)):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    cz, cy, cx = (n // 2 for n in shape)
    obj = ((z - cz) / (shape[0] / 3)) ** 2 + ((y - cy) / (shape[1] / 3)) ** 2 \
        + ((x - cx) / (shape[2] / 3.5)) ** 2 < 1
    img = obj.astype(float)[None] + rng.normal(0, 0.3, (channels, *shape))
    labels = np.zeros(shape, int)
    labels[cz, cy - 2:cy + 3, cx - 2:cx + 3] = 2
    labels[:, :2, :] = 1
    labels[cz, -3:, :] = 1
    labels[cz // 2, cy, 1:4] = 3
    return img, labels


@pytest.mark.parametrize("channels", [1, 2])
def test_matches_skimage(channels):
    img, labels = _volume(channels=channels)
    beta_sk = 30.0
    data = img[0] if channels == 1 else np.moveaxis(img, 0, -1)
    ref = random_walker(data, labels, beta=beta_sk, mode="bf", return_full_prob=True,
                        channel_axis=None if channels == 1 else -1)
    p = _problem(img, labels, 3)
    sigma2 = contrast_scale(p.image)
    # skimage: w = exp(-beta / (10 std sqrt(C)) * sum_c dI^2); ours: exp(-b sum_c dI^2 / (C s2))
    beta = beta_sk / (10 * data.std()) * sigma2 * channels / np.sqrt(channels)
    _drive(solve(p, beta=beta, gamma=0.0, sigma2=sigma2, h_ref=1.0, tol=1e-5,
                 max_iter=3000, coarse_to_fine=False))
    diff = np.abs(p.x.numpy() - ref)
    assert diff.max() < 0.05
    assert (p.x.numpy().argmax(0) == ref.argmax(0)).mean() > 0.999


def test_coarse_to_fine_converges_to_the_same_solution():
    img, labels = _volume(shape=(24, 64, 64))
    out, iters = [], []
    for c2f in (False, True):
        p = _problem(img, labels, 3)
        stats = _drive(solve(p, beta=4.0, gamma=0.0, sigma2=contrast_scale(p.image),
                             h_ref=1.0, tol=1e-7, max_iter=3000, coarse_to_fine=c2f))
        out.append(p.x.numpy())
        iters.append(stats[-1]["iterations"])
    assert len(stats) > 1  # the pyramid was used
    assert np.abs(out[0] - out[1]).max() < 0.02
    assert iters[1] < iters[0]  # the coarse solution is a better start than uniform


def test_prior_pulls_unseeded_regions():
    """A region cut off from every seed follows the prior (random walks with priors)."""
    img = np.zeros((8, 20, 20))
    img[:, :, 10:] = 10.0  # a wall: almost no walk crosses it
    labels = np.zeros((8, 20, 20), int)
    labels[4, 10, 2] = 1
    labels[4, 12, 4] = 2
    p = _problem(img, labels, 2)
    prior = torch.zeros((2, 8, 20, 20))
    prior[1] = 1.0  # everything looks like class 1
    prior[0, :, :, :10] = 1.0
    prior[1, :, :, :10] = 0.0
    p.prior = prior
    _drive(solve(p, beta=8.0, gamma=0.05, sigma2=contrast_scale(p.image), h_ref=1.0,
                 tol=1e-5, max_iter=2000, coarse_to_fine=True))
    assert (p.x[1, :, :, 12:] > 0.9).all()


def test_spacing_changes_the_solution():
    img, labels = _volume()
    out = []
    for spacing in [(1.0, 1.0, 1.0), (4.0, 1.0, 1.0)]:
        p = _problem(img, labels, 3)
        p.spacing = spacing
        _drive(solve(p, beta=4.0, gamma=0.0, sigma2=contrast_scale(p.image), h_ref=1.0,
                     tol=1e-4, max_iter=1000, coarse_to_fine=False))
        out.append(p.x.numpy())
    assert np.abs(out[0] - out[1]).max() > 0.05
    np.testing.assert_allclose(out[1].sum(0), 1.0, atol=1e-5)


def test_binomial_smooth_preserves_mean_and_constant():
    rng = np.random.default_rng(0)
    v = torch.from_numpy(rng.normal(size=(1, 6, 7, 8)).astype(np.float32))
    s = binomial_smooth(v, (1.0, 1.0, 1.0), 1)
    assert float(s.std()) < float(v.std())
    const = torch.full((1, 5, 5, 5), 3.0)
    torch.testing.assert_close(binomial_smooth(const, (1.0, 1.0, 1.0), 2), const)
    # an axis much coarser than the finest is left alone
    s2 = binomial_smooth(v, (5.0, 1.0, 1.0), 1)
    torch.testing.assert_close(s2[:, 2:3], binomial_smooth(v[:, 2:3], (5.0, 1.0, 1.0), 1))
