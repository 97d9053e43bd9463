"""refine() / refine_steps() on synthetic volumes: quality, boxes, incremental calls,
cancel, out-of-memory fallback, results contract."""

import numpy as np
import pytest
import torch

from napari_labeleff.engine import (
    METHODS, Progress, RefineResult, available_methods, refine, refine_steps)
from napari_labeleff.engine import _api

from .conftest import dice, make_phantom

SPACING = (2.0, 1.0, 1.0)


def _check_result(res, shape, n_classes):
    assert isinstance(res, RefineResult)
    assert res.labels.shape == shape and res.labels.dtype == np.uint8
    assert res.probabilities.shape == (n_classes, *shape)
    assert res.probabilities.dtype == np.float32
    np.testing.assert_allclose(res.probabilities.sum(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(res.labels, res.probabilities.argmax(0))
    assert res.uncertainty.dtype == np.float32
    assert res.uncertainty.min() >= 0 and res.uncertainty.max() <= 1
    assert res.state.shape == shape and res.state.n_classes == n_classes
    assert res.info["timings"]["total_s"] > 0


def test_three_classes_anisotropic(phantom):
    image, gt, scr = phantom
    image0, scr0 = image.copy(), scr.copy()
    res = refine(image, scr, spacing=SPACING, method="randomwalk")
    _check_result(res, gt.shape, 3)
    assert dice(res.labels == 1, gt == 1) > 0.9
    assert dice(res.labels == 2, gt == 2) > 0.85
    assert res.method == "randomwalk" and res.device == "cpu"
    # scribbled voxels keep their class; confident inside, uncertain at boundaries
    np.testing.assert_array_equal(res.labels[scr > 0], scr[scr > 0] - 1)
    assert res.uncertainty[scr > 0].max() < 1e-3
    np.testing.assert_array_equal(image, image0)
    np.testing.assert_array_equal(scr, scr0)


def test_multichannel(phantom):
    image, gt, scr = phantom
    rng = np.random.default_rng(3)
    second = (gt == 2) * 1.0 + rng.normal(0, 0.15, gt.shape)
    res = refine(np.stack([image, second]), scr, spacing=SPACING, method="randomwalk")
    _check_result(res, gt.shape, 3)
    assert dice(res.labels == 1, gt == 1) > 0.9
    assert dice(res.labels == 2, gt == 2) > 0.85


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float64])
def test_integer_and_double_images(binary_phantom, dtype):
    image, gt, scr = binary_phantom
    scaled = (image * 100).astype(dtype) if dtype != np.float64 else image.astype(dtype)
    res = refine(scaled, scr.astype(np.int32), spacing=SPACING, method="randomwalk")
    assert dice(res.labels == 1, gt == 1) > 0.9


def test_assumed_background_warns(binary_phantom):
    image, gt, scr = binary_phantom
    only_structure = np.where(scr == 2, 2, 0).astype(np.uint8)
    with pytest.warns(UserWarning, match="assuming the volume border is background"):
        res = refine(image, only_structure, spacing=SPACING, method="randomwalk")
    assert res.info["assumed_background"] is True
    assert dice(res.labels == 1, gt == 1) > 0.85
    assert refine(image, scr, spacing=SPACING, method="randomwalk").info[
        "assumed_background"] is False


def _box(gt, c, pad=2):
    idx = np.nonzero(gt == c)
    lo = [max(int(i.min()) - pad, 0) for i in idx]
    hi = [int(i.max()) + 1 + pad for i in idx]
    return (c, *lo, *hi)


def test_box_alone_and_box_plus_scribbles(binary_phantom):
    image, gt, scr = binary_phantom
    box = _box(gt, 1)
    res = refine(image, np.zeros_like(scr), spacing=SPACING, boxes=[box], method="randomwalk")
    _check_result(res, gt.shape, 2)
    assert res.method == "randomwalk"
    assert res.info["box_background"] == "outside all boxes"
    d_box = dice(res.labels == 1, gt == 1)
    assert d_box > 0.85
    assert (res.labels[:box[1]] == 0).all() and (res.labels[box[4]:] == 0).all()
    both = refine(image, scr, spacing=SPACING, boxes=[box], method="randomwalk")
    # both are ~0.999 here; scribbles may move a few boundary voxels
    assert dice(both.labels == 1, gt == 1) >= d_box - 0.002


def test_tightness_seeds_a_missed_slice():
    """A slab of background intensity inside the object is missed by the likelihoods; the tightness
    prior (every slice of the box crosses the object) puts a seed on each such slice."""
    rng = np.random.default_rng(0)
    image = rng.normal(0, 0.1, (20, 24, 24)).astype(np.float32)
    gt = np.zeros(image.shape, np.uint8)
    gt[4:16, 8:16, 8:16] = 1
    image[gt == 1] += 1.0
    image[9:11, 8:16, 8:16] -= 1.0  # two slices of the object look like background
    res = refine(image, np.zeros_like(gt), spacing=(1, 1, 1), boxes=[(1, 3, 7, 7, 17, 17, 17)],
                 method="randomwalk", box_margin=1)
    assert res.info["tightness_seeds"] >= 1
    for z in range(4, 16):
        assert (res.labels[z] == 1).any()


def test_two_structures_with_boxes_and_one_without(phantom):
    image, gt, scr = phantom
    res = refine(image, scr, spacing=SPACING, boxes=[_box(gt, 2)], method="randomwalk")
    assert res.info["box_background"].startswith("not applied: structure(s) [1]")
    inside = np.zeros(gt.shape, bool)
    b = _box(gt, 2)
    inside[b[1]:b[4], b[2]:b[5], b[3]:b[6]] = True
    assert not (res.labels[~inside] == 2).any()
    assert dice(res.labels == 1, gt == 1) > 0.85


def test_incremental_matches_fresh_and_is_local(phantom):
    image, gt, scr = phantom
    first = refine(image, scr, spacing=SPACING, method="randomwalk", tol=1e-5)
    payload_before = first.state.payload["probabilities"].copy()
    more = scr.copy()
    more[6, 22:25, 22:25] = 2  # a small extra stroke of structure 1, far from the border
    inc = refine(image, more, spacing=SPACING, method="randomwalk", state=first.state,
                 tol=1e-5, local_pad_mm=6.0)
    fresh = refine(image, more, spacing=SPACING, method="randomwalk", tol=1e-5)
    assert inc.info["state"] == "used" and inc.info["warm_start"] is True
    assert inc.info["local"] is True
    (z0, z1), (y0, y1), (x0, x1) = inc.info["local_box"]
    assert (z1 - z0) * (y1 - y0) * (x1 - x0) < 0.3 * gt.size
    assert (inc.labels == fresh.labels).mean() > 0.995
    assert np.abs(inc.probabilities - fresh.probabilities).mean() < 0.05
    np.testing.assert_array_equal(first.state.payload["probabilities"], payload_before)
    # a change all over the volume is solved globally (warm start)
    wide = more.copy()
    wide[:, 1, 1:-1] = 1
    glob = refine(image, wide, spacing=SPACING, method="randomwalk", state=inc.state)
    assert glob.info["local"] is False and glob.info["warm_start"] is True


def test_generator_progress_and_cancel(phantom):
    image, gt, scr = phantom
    first = refine(image, scr, spacing=SPACING, method="randomwalk")
    snapshot = {k: (v.copy() if isinstance(v, np.ndarray) else v)
                for k, v in first.state.payload.items()}
    state_scr = first.state.scribbles.copy()
    more = scr.copy()
    more[4, 10:14, 10:14] = 1
    more0 = more.copy()
    gen = refine_steps(image, more, spacing=SPACING, method="randomwalk", state=first.state)
    report = next(gen)
    assert isinstance(report, Progress) and report.total >= 1
    gen.close()  # cancel mid-run
    np.testing.assert_array_equal(more, more0)
    np.testing.assert_array_equal(first.state.scribbles, state_scr)
    for k, v in snapshot.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(first.state.payload[k], v)
    seen = []
    res = refine(image, more, spacing=SPACING, method="randomwalk", progress=seen.append)
    assert len(seen) >= 2 and all(isinstance(p, Progress) for p in seen)
    assert isinstance(res, RefineResult)


def test_out_of_memory_falls_back_to_cpu(phantom, monkeypatch):
    image, gt, scr = phantom
    real = METHODS["randomwalk"]
    calls = []

    def flaky(ctx):
        calls.append(ctx.device.type)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return (yield from real(ctx))

    monkeypatch.setitem(METHODS, "randomwalk", flaky)
    monkeypatch.setattr(_api, "resolve_device", lambda device: torch.device("cuda", 0))
    with pytest.warns(UserWarning, match="ran out of memory on cuda:0; retrying on the CPU"):
        res = refine(image, scr, spacing=SPACING, method="randomwalk", device="auto")
    assert calls == ["cuda", "cpu"]
    assert res.device == "cpu" and res.info["fallbacks"]
    assert dice(res.labels == 1, gt == 1) > 0.9


def test_out_of_memory_on_cpu_falls_back_to_graph_method(phantom, monkeypatch):
    image, gt, scr = phantom

    def hungry(ctx):
        raise RuntimeError("DefaultCPUAllocator: out of memory")
        yield  # pragma: no cover (a generator function)

    monkeypatch.setitem(METHODS, "hungry", hungry)
    with pytest.warns(UserWarning, match="hungry ran out of memory on the CPU; falling back"):
        res = refine(image, scr, spacing=SPACING, method="hungry", device="cpu")
    assert res.method == "randomwalk"
    real_error = RuntimeError("shape mismatch")

    def broken(ctx):
        raise real_error
        yield  # pragma: no cover

    monkeypatch.setitem(METHODS, "broken", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        refine(image, scr, spacing=SPACING, method="broken", device="cpu")


def test_auto_reports_its_choice(phantom, monkeypatch):
    image, gt, scr = phantom
    assert "randomwalk" in available_methods()
    learned = {m: METHODS[m] for m in _api.AUTO_LEARNED if m in METHODS}
    for m in learned:
        monkeypatch.delitem(METHODS, m)
    res = refine(image, scr, spacing=SPACING)
    assert res.method == "randomwalk"
    assert res.info["auto_reason"] == "randomwalk: no learned method is preferred by auto"
    monkeypatch.setattr(_api, "AUTO_LEARNED", ("learned",))
    monkeypatch.setitem(METHODS, "learned", METHODS["randomwalk"])
    monkeypatch.setattr(_api, "AUTO_CPU_LEARNED_MAX_VOXELS", 10)
    res = refine(image, scr, spacing=SPACING, device="cpu")
    assert res.method == "randomwalk" and "too slow for the learned method" in res.info[
        "auto_reason"]
    monkeypatch.setattr(_api, "AUTO_CPU_LEARNED_MAX_VOXELS", 10**9)
    res = refine(image, scr, spacing=SPACING, device="cpu")
    assert res.method == _api.AUTO_LEARNED[0]
    assert res.info["auto_reason"].startswith(f"{_api.AUTO_LEARNED[0]}: {gt.size} voxels")
    res = refine(image, np.zeros_like(scr), spacing=SPACING, boxes=[_box(gt, 1)])
    assert res.method == "randomwalk" and "boxes only" in res.info["auto_reason"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(phantom):
    image, gt, scr = phantom
    cpu = refine(image, scr, spacing=SPACING, method="randomwalk", device="cpu", tol=1e-5)
    gpu = refine(image, scr, spacing=SPACING, method="randomwalk", device="cuda", tol=1e-5)
    assert gpu.device.startswith("cuda")
    assert (cpu.labels == gpu.labels).mean() > 0.999
    inc = refine(image, scr, spacing=SPACING, method="randomwalk", device="cuda",
                 state=gpu.state)
    assert inc.info["warm_start"] is True


def test_make_phantom_is_deterministic():
    a = make_phantom(seed=1)
    b = make_phantom(seed=1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
