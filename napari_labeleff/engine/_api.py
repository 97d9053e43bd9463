"""Public refinement API: validation, normalisation, method choice, fallbacks, results.

Everything common to all methods happens here once; methods (see ``_registry``) only
turn a :class:`RefineContext` into class probabilities.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import time
import warnings

import numpy as np
import torch

from .._errors import LabelEffError
from .._steps import drain
from ..io import check_spacing
from . import _boxes, _multiscale, _rules
from ._device import resolve_device
from ._registry import (METHODS, MethodOutput, RefineContext, class_argmax, map_previews,
                        normalised_entropy)
from ._types import Progress, RefineResult, RefineState

#: Learned methods that ``method="auto"`` prefers when the device or size allows,
#: most preferred first (registered by ``engine/_online.py``). Empty on purpose: in the
#: benchmark (docs/benchmarks.md) the graph method matched or beat "hybrid"/"online" on
#: MNI 3-class and the left atrium at a fraction of the cost, so ``auto`` does not pick
#: them; users select them by name (they win on MNI white matter).
AUTO_LEARNED: tuple[str, ...] = ()
#: Graph method used by ``auto`` otherwise, and as the out-of-memory fallback.
AUTO_GRAPH = "randomwalk"
#: Largest volume (voxels) for which ``auto`` runs a learned method on the CPU.
AUTO_CPU_LEARNED_MAX_VOXELS = 2_000_000
_MAX_CLASSES = 254
_QUANTILE_SAMPLES = 1 << 21
#: Methods that accept ``prior=`` (class probabilities from a model).
PRIOR_METHODS = ("randomwalk",)


def available_methods() -> list[str]:
    """Names of the registered refinement methods (``"auto"`` is always accepted too).

    Returns
    -------
    list of str
        Sorted method names usable as ``refine(..., method=name)``.
    """
    return sorted(METHODS)


# ---- validation ----------------------------------------------------------------------
def _check_image(image, roi=None) -> np.ndarray:
    """Validate the image and return (C, Z, Y, X) numpy, reading only ``roi`` (a tuple
    of 3 slices) of a lazy array (dask, zarr...)."""
    arr = image if hasattr(image, "shape") and hasattr(image, "dtype") else np.asarray(image)
    dtype = np.dtype(arr.dtype)
    if dtype.kind not in "iuf":
        raise LabelEffError(
            f"image has dtype {dtype}; a numeric (integer or float) array is required"
        )
    if len(arr.shape) not in (3, 4):
        raise LabelEffError(
            f"image has {len(arr.shape)} dimensions (shape {tuple(arr.shape)}); allowed: "
            "3 (Z, Y, X) or 4 (C, Z, Y, X)"
        )
    if min(arr.shape) < 1:
        raise LabelEffError(f"image of shape {tuple(arr.shape)} is empty")
    if roi is not None:
        arr = arr[roi] if len(arr.shape) == 3 else arr[(slice(None), *roi)]
    arr = np.asarray(arr)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.dtype.kind == "f":
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise LabelEffError(
                f"image has {bad} NaN/Inf voxel(s); only finite intensities are allowed "
                "(fill or mask them first)"
            )
    return arr


def _image_shape(image) -> tuple:
    """Spatial (Z, Y, X) shape of an image without reading it (validated later)."""
    shp = tuple(getattr(image, "shape", None) or np.shape(image))
    if len(shp) not in (3, 4):
        _check_image(image)  # raises the dimension error
    return shp[-3:]


def _check_scribbles(scribbles, shape) -> np.ndarray:
    arr = np.array(scribbles, copy=True)
    if arr.shape != shape:
        raise LabelEffError(
            f"scribbles have shape {arr.shape}; the image's spatial shape (Z, Y, X) is "
            f"{shape}"
        )
    if arr.dtype.kind not in "iu":
        raise LabelEffError(
            f"scribbles have dtype {arr.dtype}; an integer array is required "
            "(0 = unannotated, 1 = background, c + 1 = structure c)"
        )
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi > _MAX_CLASSES + 1:
        raise LabelEffError(
            f"scribbles hold values {lo}..{hi}; allowed: 0 = unannotated, "
            f"1 = background, c + 1 = structure c (c = 1..{_MAX_CLASSES})"
        )
    return arr


def _check_boxes(boxes, shape):
    """Validate and clip boxes; returns (boxes, indices of clipped boxes)."""
    if boxes is None:
        return [], []
    out, clipped = [], []
    for i, box in enumerate(boxes):
        vals = tuple(box) if hasattr(box, "__len__") else (box,)
        if len(vals) != 7 or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in vals
        ):
            raise LabelEffError(
                f"boxes[{i}]={box!r}; each box must be 7 integers "
                "(c, z0, y0, x0, z1, y1, x1)"
            )
        c, lo, hi = int(vals[0]), [int(v) for v in vals[1:4]], [int(v) for v in vals[4:]]
        if not 1 <= c <= _MAX_CLASSES:
            raise LabelEffError(
                f"boxes[{i}] has class {c}; allowed: structure ids 1..{_MAX_CLASSES}"
            )
        if any(a >= b for a, b in zip(lo, hi)):
            raise LabelEffError(
                f"boxes[{i}]={tuple(vals)} is empty; z0 < z1, y0 < y1 and x0 < x1 are "
                "required (inclusive-exclusive voxel indices)"
            )
        clo = [max(a, 0) for a in lo]
        chi = [min(b, n) for b, n in zip(hi, shape)]
        if any(a >= b for a, b in zip(clo, chi)):
            raise LabelEffError(
                f"boxes[{i}]={tuple(vals)} lies outside the volume of shape {shape}"
            )
        if clo != lo or chi != hi:
            clipped.append(i)
        out.append((c, *clo, *chi))
    return out, clipped


def _check_prior(prior, shape, roi=None, header_only=False):
    """Validate a class-probability prior; returns (float32 array (K+1, Z, Y, X), notes).

    ``prior`` may be any array-like with ``shape`` and ``__getitem__`` (numpy, dask, zarr);
    it is read once as float32. Voxels whose probabilities sum to 0 are uninformative
    (uniform).
    """
    if prior is None:
        return None, {}
    pshape = getattr(prior, "shape", None)
    if pshape is None:
        prior = np.asarray(prior)
        pshape = prior.shape
    pshape = tuple(int(n) for n in pshape)
    if len(pshape) != 4 or pshape[1:] != tuple(shape):
        raise LabelEffError(
            f"prior has shape {pshape}; a (K + 1, Z, Y, X) array of class probabilities "
            f"with (Z, Y, X) = the image's spatial shape {tuple(shape)} is required"
        )
    if not 2 <= pshape[0] <= _MAX_CLASSES + 1:
        raise LabelEffError(
            f"prior has {pshape[0]} class channel(s); allowed: 2..{_MAX_CLASSES + 1} "
            "(background first, then structures 1..K)"
        )
    dtype = np.dtype(getattr(prior, "dtype", np.float32))
    if dtype.kind not in "fiub":
        raise LabelEffError(
            f"prior has dtype {dtype}; class probabilities must be real numbers "
            "(float16/float32 recommended)"
        )
    if header_only:
        return None, {}
    roi = roi or tuple(slice(0, n) for n in pshape[1:])
    sub = tuple(s.indices(n)[1] - s.indices(n)[0] for s, n in zip(roi, pshape[1:]))
    arr = np.empty((pshape[0], *sub), dtype=np.float32)
    for c in range(pshape[0]):  # one class at a time: lazy priors stay cheap to read
        arr[c] = np.asarray(prior[(c, *roi)], dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        raise LabelEffError(
            f"prior has {int(finite.size - np.count_nonzero(finite))} NaN/Inf value(s); "
            "only finite, non-negative class probabilities are allowed"
        )
    del finite
    lo = float(arr.min())
    if lo < 0:
        raise LabelEffError(
            f"prior has negative values (min {lo:g}); class probabilities must be >= 0"
        )
    total = arr.sum(axis=0)
    empty = total <= 0
    n_empty = int(np.count_nonzero(empty))
    if n_empty:
        arr[:, empty] = 1.0 / pshape[0]
        total[empty] = 1.0
    arr /= total[None]
    return arr, {"zero_sum_voxels": n_empty}


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise LabelEffError(f"option {name}={value!r}; allowed: True or False")
    return bool(value)


#: Margin of the region solved around the boxes, as a fraction of each box's extent
#: (the faces of a box that cuts its object may move out twice by a quarter) plus
#: ``ROI_MARGIN_VOXELS``.
ROI_MARGIN_FRACTION = 0.5
ROI_MARGIN_VOXELS = 10
#: Below this fraction of the volume the region of interest is used.
ROI_MAX_FRACTION = 0.8
#: Probabilities above this many values (all classes) are returned as float16.
FLOAT32_MAX_VALUES = 1 << 26


def _roi(boxes, shape, notes):
    """Region solved when every structure has a box: their bounding box, grown."""
    if not boxes or notes.get("box_background") != "outside all boxes":
        return None
    lo = [min(b[1 + a] for b in boxes) for a in range(3)]
    hi = [max(b[4 + a] for b in boxes) for a in range(3)]
    roi = []
    for a in range(3):
        ext = max(b[4 + a] - b[1 + a] for b in boxes)
        m = int(math.ceil(ROI_MARGIN_FRACTION * ext)) + ROI_MARGIN_VOXELS
        roi.append(slice(max(0, lo[a] - m), min(shape[a], hi[a] + m)))
    size = math.prod(s.stop - s.start for s in roi)
    return tuple(roi) if size < ROI_MAX_FRACTION * math.prod(shape) else None


def _paste(labels, probs, unc, roi, shape):
    """Full-size results from the region's: background outside it."""
    k1 = probs.shape[0]
    dtype = np.float16 if k1 * math.prod(shape) > FLOAT32_MAX_VALUES else probs.dtype
    full_l = np.zeros(shape, np.uint8)
    full_l[roi] = labels
    full_p = np.zeros((k1, *shape), dtype)
    full_p[0] = 1
    full_p[(slice(None), *roi)] = probs
    full_u = np.zeros(shape, unc.dtype)
    full_u[roi] = unc
    return full_l, full_p, full_u


def _check_memory(shape, n_channels, n_classes, large):
    need = _multiscale.estimate_bytes(shape, n_channels, n_classes, large=large)
    have = _multiscale.available_bytes()
    if have is not None and need > have:
        raise LabelEffError(
            f"refining a region of {shape} voxels with {n_classes} classes needs about "
            f"{need / 2**30:.1f} GB of memory, {have / 2**30:.1f} GB are available"
            + ("" if large else " (pass multiscale=True for the coarse-to-fine path)")
            + "; draw boxes around the structures (only their region is solved), crop "
            "or downsample the image"
        )
    return need


def _check_state(state, shape, method, n_classes):
    """Returns (state to use or None, note for info)."""
    if state is None:
        return None, "none"
    if not isinstance(state, RefineState):
        raise LabelEffError(
            f"state has type {type(state).__name__}; pass the RefineState of a previous "
            "result (result.state) or None"
        )
    if tuple(state.shape) != tuple(shape):
        raise LabelEffError(
            f"state comes from a volume of shape {tuple(state.shape)}, this image has "
            f"shape {tuple(shape)}; pass state=None for a new volume"
        )
    if state.method != method:
        return None, f"ignored: it comes from method {state.method!r}"
    if state.n_classes != n_classes:
        return None, f"ignored: it has {state.n_classes} classes, now {n_classes}"
    return state, "used"


def _choose_method(method, device, n_voxels, has_structure_scribbles, has_prior=False):
    if not isinstance(method, str) or (method != "auto" and method not in METHODS):
        allowed = ", ".join(repr(m) for m in ["auto", *available_methods()])
        raise LabelEffError(f"method={method!r} is unknown; allowed: {allowed}")
    if has_prior and method != "auto" and method not in PRIOR_METHODS:
        raise LabelEffError(
            f"method={method!r} does not accept prior=; methods that use a prior: "
            f"{', '.join(repr(m) for m in ('auto', *PRIOR_METHODS))}"
        )
    if method != "auto":
        return method, "requested"
    if has_prior:
        return AUTO_GRAPH, f"{AUTO_GRAPH}: a prior is given (the graph method uses it)"
    learned = next((m for m in AUTO_LEARNED if m in METHODS), None)
    if learned is None:
        return AUTO_GRAPH, f"{AUTO_GRAPH}: no learned method is preferred by auto"
    if not has_structure_scribbles:
        return AUTO_GRAPH, f"{AUTO_GRAPH}: boxes only (the graph method handles box priors)"
    if device.type == "cuda":
        return learned, f"{learned}: CUDA device {device}"
    if n_voxels <= AUTO_CPU_LEARNED_MAX_VOXELS:
        return learned, (
            f"{learned}: {n_voxels} voxels <= {AUTO_CPU_LEARNED_MAX_VOXELS} fit the CPU budget"
        )
    return AUTO_GRAPH, (
        f"{AUTO_GRAPH}: {n_voxels} voxels > {AUTO_CPU_LEARNED_MAX_VOXELS} on {device.type} "
        "(too slow for the learned method)"
    )


# ---- preparation ---------------------------------------------------------------------
def normalise(image: np.ndarray) -> np.ndarray:
    """Robust per-channel normalisation: zero median, unit IQR-based scale.

    Parameters
    ----------
    image : ndarray, shape (C, Z, Y, X)

    Returns
    -------
    ndarray, shape (C, Z, Y, X), float32
        ``(I - median) / (IQR / 1.349)`` per channel (the IQR of a standard normal is
        1.349); channels with a zero IQR fall back to the 1-99 percentile range, then 1.
    """
    out = np.empty(image.shape, dtype=np.float32)
    for c, chan in enumerate(image):
        flat = chan.reshape(-1)
        sample = flat[:: max(1, flat.size // _QUANTILE_SAMPLES)]
        p1, q1, med, q3, p99 = np.percentile(sample, [1, 25, 50, 75, 99])
        scale = (q3 - q1) / 1.349
        if scale <= 0:
            scale = (p99 - p1) / 4.653
        if scale <= 0:
            scale = 1.0
        np.subtract(chan, med, out=out[c], dtype=np.float32, casting="unsafe")
        out[c] /= np.float32(scale)
    return out


def _seeds(scribbles, boxes, n_structures, has_prior=False):
    """Solver seeds (-1 unknown, else 0..K) and notes for ``info``."""
    seeds = scribbles.astype(np.int16) - 1
    notes = {"assumed_background": False}
    present = set(np.unique(scribbles).tolist())
    if boxes:
        boxed = {b[0] for b in boxes}
        unboxed = [c for c in range(1, n_structures + 1) if c not in boxed]
        if unboxed:
            notes["box_background"] = (
                f"not applied: structure(s) {unboxed} have no box, so voxels outside the "
                "boxes may belong to them"
            )
        else:
            outside = ~_boxes.union_mask(boxes, scribbles.shape)
            seeds[outside & (scribbles == 0)] = 0
            notes["box_background"] = "outside all boxes"
    elif 1 not in present and not has_prior:
        border = np.ones(scribbles.shape, dtype=bool)
        border[1:-1, 1:-1, 1:-1] = False
        seeds[border & (scribbles == 0)] = 0
        notes["assumed_background"] = True
        warnings.warn(
            "no background scribbles: assuming the volume border is background "
            "(scribble background to override)",
            UserWarning,
            stacklevel=3,
        )
    return seeds, notes


def _check_classes(scribbles, boxes, prior_classes=None):
    present = set(np.unique(scribbles).tolist())
    structures = {v - 1 for v in present if v >= 2} | {b[0] for b in boxes}
    if prior_classes is not None:
        kp = prior_classes - 1
        scribbled = sorted(v - 1 for v in present if v - 1 > kp)
        if scribbled:
            raise LabelEffError(
                f"scribbles hold structure(s) {scribbled} but the prior has only "
                f"{prior_classes} channels (background + structures 1..{kp}); give a "
                "prior with a channel per structure, or renumber the scribbles"
            )
        boxed = sorted({b[0] for b in boxes if b[0] > kp})
        if boxed:
            raise LabelEffError(
                f"boxes of structure(s) {boxed} but the prior has only {prior_classes} "
                f"channels (background + structures 1..{kp})"
            )
        return kp, any(v >= 2 for v in present)
    if not present - {0} and not boxes:
        raise LabelEffError(
            "no scribbles and no boxes: scribble at least one structure (value c + 1) "
            "or draw a box"
        )
    if not structures:
        raise LabelEffError(
            "no structure scribbled: the scribbles hold only background (1); scribble a "
            "structure (value c + 1) or draw a box"
        )
    k = max(structures)
    missing = sorted(set(range(1, k + 1)) - structures)
    if missing:
        raise LabelEffError(
            f"structure(s) {missing} have no scribbles and no box while structure {k} "
            "does; scribble them or renumber the classes"
        )
    return k, any(v >= 2 for v in present)


# ---- running -------------------------------------------------------------------------
def _is_oom(exc: BaseException) -> bool:
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _run_with_fallback(name, ctx, info):
    """Run a method; on out-of-memory fall back to the CPU, then to the graph method."""
    while True:
        try:
            out = yield from METHODS[name](ctx)
            return name, out
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled
            if not _is_oom(exc):
                raise
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
            if ctx.device.type != "cpu":
                msg = f"{name} ran out of memory on {ctx.device}; retrying on the CPU"
                ctx.device = torch.device("cpu")
            elif name != AUTO_GRAPH:
                msg = f"{name} ran out of memory on the CPU; falling back to {AUTO_GRAPH}"
                name, ctx.state, ctx.changed = AUTO_GRAPH, None, None
            else:
                raise LabelEffError(
                    f"out of memory refining a volume of shape {ctx.seeds.shape}: "
                    "crop or downsample the image"
                ) from exc
            warnings.warn(msg, UserWarning, stacklevel=3)
            info.setdefault("fallbacks", []).append(msg)


def _finalise(probabilities):
    """Probabilities -> (probabilities, labels, uncertainty) as host numpy arrays."""
    p = probabilities if isinstance(probabilities, torch.Tensor) else torch.from_numpy(
        np.asarray(probabilities, dtype=np.float32)
    )
    p = p.float().clamp(0.0, 1.0)
    p = p / p.sum(dim=0, keepdim=True).clamp_min(1e-12)
    labels = class_argmax(p).to(torch.uint8)
    unc = normalised_entropy(p).clamp_(0.0, 1.0)
    return (
        np.ascontiguousarray(p.cpu().numpy(), dtype=np.float32),
        labels.cpu().numpy(),
        np.ascontiguousarray(unc.cpu().numpy(), dtype=np.float32),
    )


@dataclasses.dataclass
class _Call:
    """A validated refine call: what :func:`refine_steps` runs."""

    name: str
    shape: tuple
    k: int
    scribbles: np.ndarray
    roi: tuple | None
    sub_shape: tuple
    large: bool
    ctx: RefineContext
    info: dict
    rules: object


def _prepare(image, scribbles, spacing, boxes, prior, method, device, state, rules,
             options) -> _Call:
    """Validate a refine call's arguments and build the method's context."""
    options = dict(options)
    use_roi = _flag(options.pop("roi", True), "roi")
    multiscale = options.pop("multiscale", "auto")
    if multiscale not in ("auto", True, False):
        raise LabelEffError(f"option multiscale={multiscale!r}; allowed: 'auto', True, False")
    shape = _image_shape(image)
    scr = _check_scribbles(scribbles, shape)
    sp = check_spacing(spacing)
    bxs, clipped = _check_boxes(boxes, shape)
    if prior is not None:  # cheap checks first: the method must accept a prior
        _choose_method(method, torch.device("cpu"), 0, True, has_prior=True)
        _check_prior(prior, shape, header_only=True)
        n_prior = int(getattr(prior, "shape", np.shape(prior))[0])
    k, has_structure_scribbles = _check_classes(
        scr, bxs, None if prior is None else n_prior)
    rules = _rules.check(rules, k + 1)
    dev = resolve_device(device)
    name, reason = _choose_method(method, dev, int(np.prod(shape)), has_structure_scribbles,
                                  has_prior=prior is not None)
    st, state_note = _check_state(state, shape, name, k + 1)
    seeds, notes = _seeds(scr, bxs, k, has_prior=prior is not None)
    roi = _roi(bxs, shape, notes) if use_roi else None
    if roi is not None:
        notes["roi"] = [[s.start, s.stop] for s in roi]
    if st is not None and st.payload.get("roi") != notes.get("roi"):
        st, state_note = None, "ignored: the region solved (around the boxes) changed"
    sub = roi or tuple(slice(0, n) for n in shape)
    sub_shape = tuple(s.stop - s.start for s in sub)
    img = _check_image(image, roi)
    large = multiscale is True or (multiscale == "auto"
                                   and math.prod(sub_shape) > _multiscale.LARGE_VOXELS)
    _check_memory(sub_shape, img.shape[0], k + 1, large)
    pri, prior_notes = _check_prior(prior, shape, roi)
    changed = None if st is None or st.scribbles is None else scr != st.scribbles
    ctx = RefineContext(
        image=normalise(img),
        scribbles=scr[sub],
        seeds=seeds[sub],
        boxes=[(b[0], *(a - s.start for a, s in zip(b[1:4], sub)),
                *(a - s.start for a, s in zip(b[4:], sub))) for b in bxs],
        spacing=sp,
        n_classes=k + 1,
        device=dev,
        state=st,
        changed=None if changed is None else changed[sub],
        options=options,
        prior=pri,
    )
    del img, seeds
    info = {"auto_reason": reason, "state": state_note, "boxes_clipped": clipped, **notes}
    if pri is not None:
        info["prior"] = dict(prior_notes)
    return _Call(name, shape, k, scr, roi, sub_shape, large, ctx, info, rules)


def _full_size_previews(gen, *, roi, shape, first: list):
    """The method's reports, previews pasted into the volume's full (Z, Y, X) shape;
    the time of the first preview is appended to ``first``."""
    def paste(preview):
        if roi is None:
            return preview
        full = np.zeros(shape, np.uint8)
        full[roi] = preview
        return full

    def seen():
        if not first:
            first.append(time.perf_counter())

    return (yield from map_previews(gen, paste, seen))


def refine_steps(image, scribbles, *, spacing, boxes=None, prior=None, method="auto",
                 device="auto", state=None, rules=None, **options):
    """Refine weak labels into a 3D mask, step by step (generator form of :func:`refine`).

    Same parameters as :func:`refine` (without ``progress``).

    Yields
    ------
    Progress
        Progress reports; close the generator to cancel (inputs and ``state`` are left
        untouched).

    Returns
    -------
    RefineResult
        As the ``StopIteration.value`` of the generator.
    """
    t0 = time.perf_counter()
    call = _prepare(image, scribbles, spacing, boxes, prior, method, device, state, rules,
                    options)
    name, shape, roi, ctx, info, rules = (call.name, call.shape, call.roi, call.ctx,
                                          call.info, call.rules)
    k, scr, large, sub_shape = call.k, call.scribbles, call.large, call.sub_shape
    t1 = time.perf_counter()
    yield Progress(0, 1, f"refining with {name} on {ctx.device}")
    first = []  # time of the first usable result (Progress.preview)
    stream = functools.partial(_full_size_previews, roi=roi, shape=shape, first=first)

    if large:
        def runner(cctx):
            return (yield from _run_with_fallback(name, cctx, info))

        name, labels, probs, unc, payload = yield from stream(
            _multiscale.run(runner, ctx, info))
        out = MethodOutput(probabilities=probs, payload=payload, info={})
        t2 = time.perf_counter()
        if rules is not None:
            probs, labels, unc = _finalise(_rules.enforce(rules, probs, ctx, info))
        t_rules = time.perf_counter()
    else:
        name, out = yield from stream(_run_with_fallback(name, ctx, info))
        if not isinstance(out, MethodOutput):
            raise TypeError(f"method {name!r} returned {type(out).__name__}, not MethodOutput")
        t2 = time.perf_counter()
        probabilities = out.probabilities
        if rules is not None:
            probabilities = _rules.enforce(rules, probabilities, ctx, info)
        t_rules = time.perf_counter()
        probs, labels, unc = _finalise(probabilities)
    if roi is not None:
        labels, probs, unc = _paste(labels, probs, unc, roi, shape)
    t3 = time.perf_counter()
    prior_info = info.pop("prior", None)
    info.update(out.info)
    if prior_info is not None:
        info["prior"] = {**prior_info, **info.get("prior", {})}
    info["memory_estimate_gb"] = round(_multiscale.estimate_bytes(
        sub_shape, ctx.image.shape[0], k + 1, large=large) / 2**30, 3)
    if not first:  # one-stage calls: the final result is the first one
        first.append(t3)
        yield Progress(1, 1, "done", preview=labels)
    info["timings"] = {
        "first_result_s": first[0] - t0,
        "prepare_s": t1 - t0,
        "method_s": t2 - t1,
        "rules_s": t_rules - t2,
        "finalise_s": t3 - t2,
        "total_s": t3 - t0,
    }
    new_state = RefineState(
        method=name, shape=shape, n_classes=k + 1, scribbles=scr,
        payload={**out.payload, "roi": None if roi is None else info["roi"]},
    )
    return RefineResult(
        labels=labels,
        probabilities=probs,
        uncertainty=unc,
        method=name,
        device=str(ctx.device),
        state=new_state,
        info=info,
    )


def refine(image, scribbles, *, spacing, boxes=None, prior=None, method="auto",
           device="auto", state=None, rules=None, progress=None, **options) -> RefineResult:
    """Turn scribbles and/or boxes into a full 3D segmentation.

    Parameters
    ----------
    image : array_like, shape (Z, Y, X) or (C, Z, Y, X)
        Numeric, finite intensities (channels = e.g. several MRI sequences).
    scribbles : array_like of int, shape (Z, Y, X)
        0 = unannotated, 1 = background, c + 1 = structure c (c = 1..K).
    spacing : sequence of 3 float
        (Z, Y, X) voxel size in mm.
    boxes : list of tuple, optional
        ``(c, z0, y0, x0, z1, y1, x1)`` voxel boxes (inclusive-exclusive) around
        structure c. Partly outside boxes are clipped; outside every box is background
        when every structure has a box.
    prior : array_like, shape (K + 1, Z, Y, X), optional
        Class probabilities from any model (background first; float16/float32, numpy
        or lazily indexable such as dask/zarr). Finite and non-negative; normalised per
        voxel here (all-zero voxels count as uniform). With a prior, structures need no
        scribbles or boxes, ``scribbles`` may be all zero (the result is then the prior
        regularised by the graph), and K + 1 = ``prior.shape[0]``; a scribbled or boxed
        structure beyond it is an error. Used by the graph method as its unary term in
        place of the intensity model; scribbles stay hard seeds and release the prior
        around them where they disagree with it (``info["prior"]`` says how).
        Methods without prior support raise :class:`LabelEffError`.
    method : str
        ``"auto"`` or one of :func:`available_methods`.
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
    state : RefineState, optional
        ``result.state`` of a previous call on the same volume: incremental update.
    rules : napari_labeleff.rules.Rules, optional
        Anatomical relations between the classes (inside, excludes, touches, one piece,
        volume, side) enforced on the result; ``info["rules"]`` reports what was
        enforced and any stroke that contradicts a rule.
    progress : callable, optional
        Called with each :class:`Progress`.
    **options
        Method options (e.g. ``beta``, ``prior_weight`` for ``"randomwalk"``).

    Returns
    -------
    RefineResult
        ``labels`` (Z, Y, X) uint8, ``probabilities`` (K + 1, Z, Y, X) float32,
        ``uncertainty`` (Z, Y, X) in [0, 1], ``method``, ``device``, ``state``, ``info``.

    Raises
    ------
    LabelEffError
        Invalid input; the message names the argument, its value and what is allowed.

    Warns
    -----
    UserWarning
        When background is assumed on the volume border (structure scribbles only), or
        when an out-of-memory fallback was taken.
    """
    gen = refine_steps(image, scribbles, spacing=spacing, boxes=boxes, prior=prior,
                       method=method, device=device, state=state, rules=rules, **options)
    return drain(gen, progress)
