"""Geometry of a voxel grid: the one place where orientation conventions live.

Array axis order in the whole package is (Z, Y, X), which is SimpleITK's numpy order
and the reverse of the NIfTI/ITK voxel index order (i, j, k) = (X, Y, Z).

Two affines are involved:

* ``affine_ras`` (4, 4): the *source* affine in NIfTI convention, mapping voxel index
  (i, j, k, 1) to RAS+ millimetres. This is what the writer puts into the output
  NIfTI (sform and qform), so a mask written for an image has exactly the image's
  affine. It is the canonical record of geometry.
* ``napari_affine`` (4, 4): what napari layers get. It maps array index (z, y, x, 1)
  to world coordinates ordered (S, P, L) in millimetres, i.e. the LPS+ world of
  DICOM/ITK with its axes reversed to match the array order. With this choice an
  axial slice of an axis-aligned scan shows anterior at the top and the patient's
  left on the screen's right (radiological convention), as in 3D Slicer and ITK-SNAP.
"""

from __future__ import annotations

import math

from .._errors import LabelEffError

from dataclasses import dataclass

import numpy as np

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_REVERSE3 = np.array(
    [[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float
)


@dataclass(frozen=True, eq=False)
class Geometry:
    """Voxel-to-world geometry of a 3D grid.

    Parameters
    ----------
    affine_ras : ndarray, shape (4, 4)
        NIfTI-style affine mapping voxel index (i, j, k, 1) = (x, y, z, 1) to RAS+
        millimetres.
    """

    affine_ras: np.ndarray

    def __post_init__(self):
        a = np.asarray(self.affine_ras, dtype=float)
        if a.shape != (4, 4) or not np.all(np.isfinite(a)):
            raise ValueError(f"affine_ras must be a finite (4, 4) matrix, got {a!r}")
        if abs(np.linalg.det(a[:3, :3])) < 1e-12:
            raise ValueError("affine_ras is singular (zero spacing or degenerate axes)")
        object.__setattr__(self, "affine_ras", a)

    # ---- constructors -------------------------------------------------------------
    @classmethod
    def from_spacing(cls, spacing=(1.0, 1.0, 1.0), origin_zyx=(0.0, 0.0, 0.0)):
        """Axis-aligned geometry from (Z, Y, X) spacing; world = napari (S, P, L)."""
        napari = np.eye(4)
        napari[:3, :3] = np.diag(np.asarray(spacing, dtype=float))
        napari[:3, 3] = np.asarray(origin_zyx, dtype=float)
        return cls.from_napari_affine(napari)

    @classmethod
    def from_lps(cls, spacing_xyz, origin_lps, direction_lps):
        """From ITK/SimpleITK conventions (spacing, origin, direction in (x, y, z))."""
        direction = np.asarray(direction_lps, dtype=float).reshape(3, 3)
        lps = np.eye(4)
        lps[:3, :3] = direction @ np.diag(np.asarray(spacing_xyz, dtype=float))
        lps[:3, 3] = np.asarray(origin_lps, dtype=float)
        return cls(_RAS_TO_LPS @ lps)

    @classmethod
    def from_napari_affine(cls, affine_zyx):
        """Inverse of :attr:`napari_affine`."""
        lps = _REVERSE3 @ np.asarray(affine_zyx, dtype=float) @ _REVERSE3
        return cls(_RAS_TO_LPS @ lps)

    # ---- derived views --------------------------------------------------------------
    @property
    def affine_lps(self) -> np.ndarray:
        """(4, 4) affine mapping (i, j, k, 1) to LPS+ millimetres (ITK convention)."""
        return _RAS_TO_LPS @ self.affine_ras

    @property
    def napari_affine(self) -> np.ndarray:
        """(4, 4) affine mapping array index (z, y, x, 1) to world (S, P, L) mm."""
        return _REVERSE3 @ self.affine_lps @ _REVERSE3

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm in array order (Z, Y, X)."""
        sx, sy, sz = np.linalg.norm(self.affine_ras[:3, :3], axis=0)
        return (float(sz), float(sy), float(sx))

    @property
    def spacing_xyz(self) -> tuple[float, float, float]:
        return tuple(reversed(self.spacing))

    @property
    def direction_lps(self) -> np.ndarray:
        """(3, 3) ITK direction cosines (columns = voxel axes i, j, k in LPS)."""
        m = self.affine_lps[:3, :3]
        return m / np.linalg.norm(m, axis=0)

    @property
    def origin_lps(self) -> np.ndarray:
        return self.affine_lps[:3, 3].copy()

    @property
    def axcodes(self) -> str:
        """Orientation code of the voxel axes (i, j, k), e.g. ``"RAS"`` or ``"LPS"``."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine_ras))

    @property
    def is_oblique(self) -> bool:
        d = np.abs(self.direction_lps)
        return bool(np.any((d > 1e-6) & (d < 1 - 1e-6)))

    def allclose(self, other: "Geometry", atol: float = 1e-4) -> bool:
        return bool(np.allclose(self.affine_ras, other.affine_ras, atol=atol, rtol=0))

    def to_dict(self) -> dict:
        return {"affine_ras": self.affine_ras.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        return cls(np.asarray(d["affine_ras"], dtype=float))

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:g}" for s in self.spacing)
        return f"Geometry(spacing_zyx=({sp}), axcodes={self.axcodes!r}, oblique={self.is_oblique})"


def check_spacing(spacing) -> tuple:
    """``spacing`` as 3 positive finite floats (Z, Y, X) in mm, or a clear error."""
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise LabelEffError(
            f"spacing={spacing!r} is not a sequence of 3 numbers (Z, Y, X) in mm"
        ) from None
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise LabelEffError(
            f"spacing={spacing!r}; 3 positive finite numbers (Z, Y, X) in mm are required"
        )
    return sp
