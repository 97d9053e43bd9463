"""Headless refinement engine: weak labels (scribbles, boxes) -> 3D masks."""

from ._types import Progress, RefineResult, RefineState

__all__ = ["Progress", "RefineResult", "RefineState"]
