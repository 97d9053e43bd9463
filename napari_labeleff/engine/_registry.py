"""Method registry of the refinement engine (MONAI Label's ``Strategy`` pattern:
small callables in a dict keep the API open).

A method is a generator function ``fn(ctx: RefineContext)`` that yields
:class:`~napari_labeleff.engine._types.Progress` and returns a :class:`MethodOutput`.
Validation, normalisation, box handling common to all methods, device choice and
building the :class:`RefineResult` happen once in ``engine/_api.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generator

import numpy as np

from .._registry import registering
from ._types import Progress, RefineState


@dataclass
class RefineContext:
    """Validated inputs handed to a method.

    Attributes
    ----------
    image : ndarray, shape (C, Z, Y, X), float32
        Finite, each channel robustly normalised (zero median, unit IQR-based scale).
    scribbles : ndarray, shape (Z, Y, X), int
        As given by the user: 0 = unannotated, 1 = background, c + 1 = structure c.
    seeds : ndarray, shape (Z, Y, X), int16
        Hard constraints for solvers: -1 = unknown, else class index 0..K. Combines the
        scribbles with box-derived background (outside every box, when boxes exist).
    boxes : list of tuple
        Validated, clipped boxes ``(c, z0, y0, x0, z1, y1, x1)``.
    spacing : tuple of float
        (Z, Y, X) voxel size in mm.
    n_classes : int
        K + 1, background included.
    device : torch.device
    state : RefineState or None
        Previous state of the *same* method on the *same* volume, else None.
    changed : ndarray of bool, shape (Z, Y, X), or None
        Voxels whose scribble changed since ``state`` (None on a first call).
    options : dict
        Method-specific keyword options passed through ``refine(**options)``.
    prior : ndarray, shape (K + 1, Z, Y, X), float32, or None
        Validated class probabilities from a model (sum 1 per voxel), or None.
    """

    image: np.ndarray
    scribbles: np.ndarray
    seeds: np.ndarray
    boxes: list
    spacing: tuple
    n_classes: int
    device: Any
    state: RefineState | None = None
    changed: np.ndarray | None = None
    options: dict = field(default_factory=dict)
    prior: np.ndarray | None = None


@dataclass
class MethodOutput:
    """What a method returns.

    Attributes
    ----------
    probabilities : ndarray, shape (K + 1, Z, Y, X), float32
    payload : dict
        Stored in ``RefineState.payload`` for the next call.
    info : dict
        Merged into ``RefineResult.info``.
    """

    probabilities: np.ndarray
    payload: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


MethodFn = Callable[[RefineContext], Generator[Progress, None, MethodOutput]]

#: name -> generator function. Filled by the method modules at import of
#: ``napari_labeleff.engine``.
METHODS: dict[str, MethodFn] = {}


#: Decorator ``@register_method(name)`` adding a method to :data:`METHODS`.
register_method = registering(METHODS, "refinement method")


def as_numpy(x) -> np.ndarray:
    """Torch tensor or array -> float32 numpy array on the host."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def class_argmax(x):
    """Index of the largest class (axis 0) of a (K + 1, Z, Y, X) torch tensor, int64
    (Z, Y, X); ties go to the lower class, as ``argmax``. A pass per class: ``argmax``
    over the strided class axis was 3x slower on the CPU, and refine takes it several
    times per call."""
    import torch

    best = x[0]
    lab = torch.zeros(x.shape[1:], dtype=torch.int64, device=x.device)
    for k in range(1, x.shape[0]):
        lab.masked_fill_(x[k] > best, k)
        best = torch.maximum(best, x[k])
    return lab


def normalised_entropy(p):
    """Predictive entropy over axis 0 of a (K + 1, ...) probability tensor, in [0, 1]."""
    import math

    import torch

    return -torch.special.xlogy(p, p).sum(0) / math.log(p.shape[0])


def map_previews(gen, fn, on_preview=None):
    """Re-yield a method generator's reports with each ``Progress.preview`` replaced by
    ``fn(preview)`` (``on_preview()`` called at each); returns the generator's value."""
    import dataclasses

    while True:
        try:
            report = next(gen)
        except StopIteration as stop:
            return stop.value
        if report.preview is not None:
            report = dataclasses.replace(report, preview=fn(report.preview))
            if on_preview is not None:
                on_preview()
        yield report
