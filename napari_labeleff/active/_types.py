"""Data contract of active-learning suggestions."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Suggestion:
    """One ranked place to annotate next.

    Attributes
    ----------
    kind : {"slice", "region", "volume"}
    axis : int or None
        Axis (0 = Z, 1 = Y, 2 = X) of a slice suggestion; for a region, the axis of the
        slice through its centre that the viewer should show.
    index : int or None
        Slice index along ``axis`` (for a region: the slice through its centre).
    bbox : tuple of int or None
        (z0, y0, x0, z1, y1, x1), inclusive-exclusive voxel box, for region suggestions.
    score : float
        Higher = more useful to annotate; comparable within one ranking only.
    reason : str
        Short human-readable sentence explaining the suggestion.
    classes : tuple of int
        Structures involved (1..K; 0 = background may appear).
    rank : int
        1-based position in the ranking.
    """

    kind: str
    score: float
    reason: str
    classes: tuple = ()
    axis: int | None = None
    index: int | None = None
    bbox: tuple | None = None
    rank: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes)
        d["bbox"] = list(self.bbox) if self.bbox is not None else None
        return d
