"""Data contracts of the refinement engine, shared by the CLI, GUI, active learning
and benchmarks. Kept free of torch imports so they are cheap to import."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Progress:
    """One progress report yielded by a long-running engine generator.

    Attributes
    ----------
    step, total : int
        Completed steps and the expected total (``total`` may grow).
    message : str
        Short human-readable description of the current phase.
    preview : ndarray or None
        Optional intermediate (Z, Y, X) label map, for live display.
    """

    step: int
    total: int
    message: str
    preview: np.ndarray | None = None


@dataclass
class RefineState:
    """Opaque-ish warm-start state carried from one ``refine`` call to the next.

    Attributes
    ----------
    method : str
        Method that produced the state; another method ignores it.
    shape : tuple of int
        (Z, Y, X) shape of the volume the state belongs to; a state from another
        volume is rejected with a clear error.
    n_classes : int
        K + 1 (background included).
    scribbles : ndarray or None
        Copy of the scribbles of the previous call, to find what changed.
    payload : dict
        Method-specific warm-start data (solver solutions, network weights, features).
    """

    method: str
    shape: tuple
    n_classes: int
    scribbles: np.ndarray | None = None
    payload: dict = field(default_factory=dict)


@dataclass
class RefineResult:
    """Output of :func:`napari_labeleff.engine.refine`.

    Attributes
    ----------
    labels : ndarray, shape (Z, Y, X), uint8
        0 = background, c = structure c.
    probabilities : ndarray, shape (K + 1, Z, Y, X), float32
        Per-class probabilities (channel 0 = background); they sum to 1 per voxel.
    uncertainty : ndarray, shape (Z, Y, X), float32
        Normalised predictive entropy in [0, 1].
    method : str
        Method actually used (``"auto"`` is resolved).
    device : str
        Device actually used, e.g. ``"cpu"`` or ``"cuda:0"``.
    state : RefineState
        Pass as ``state=`` to the next call for an incremental update.
    info : dict
        Diagnostics: timings (s), why ``auto`` chose the method, fallbacks taken,
        whether background was assumed, etc.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    uncertainty: np.ndarray
    method: str
    device: str
    state: RefineState
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        """K + 1, background included."""
        return int(self.probabilities.shape[0])

    def summary(self) -> str:
        """One line for the user: method, device, time (and the time to the first result
        when it came earlier) and, for the graph method, the unary term its held-out
        stroke check chose (``info["unary"]``)."""
        timings = self.info.get("timings", {})
        secs, first = timings.get("total_s"), timings.get("first_result_s")
        text = f"{self.method} on {self.device}" + (f" in {secs:.2f} s" if secs is not None
                                                    else "")
        if secs is not None and first is not None and first < 0.9 * secs:
            text += f" (first result after {first:.2f} s)"
        unary = {"watershed": "watershed of the strokes", "intensity": "stroke intensities",
                 "none": "edges only"}.get(self.info.get("unary"))
        return text + (f"; unary: {unary}" if unary else "")
