"""IO-test helpers: a DICOM series writer (SimpleITK's "DICOM series from array" recipe)."""

import numpy as np
import pytest
import SimpleITK as sitk


def _write_series(folder, array_zyx, *, spacing_xyz=(0.8, 0.8, 2.0), origin=(0.0, 0.0, 0.0),
                  direction=np.eye(3), uid="1.2.826.0.1.3680043.2.1125.1", skip=()):
    """Write ``array_zyx`` (int16) as one DICOM file per slice; ``skip`` drops slices."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.asarray(array_zyx, dtype=np.int16))
    image.SetSpacing(spacing_xyz)
    image.SetOrigin(origin)
    image.SetDirection(np.asarray(direction, dtype=float).ravel().tolist())
    d = np.asarray(direction, dtype=float)
    orientation = "\\".join(f"{v:.10f}" for v in (*d[:, 0], *d[:, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        if k in skip:
            continue
        s = image[:, :, k]
        for tag, value in (
            ("0008|0060", "CT"),
            ("0008|0008", "DERIVED\\SECONDARY"),
            ("0020|000d", "1.2.826.0.1.3680043.2.1125.99"),
            ("0020|000e", uid),
            ("0008|103e", f"series {uid[-4:]}"),
            ("0020|0037", orientation),
            ("0020|0032", "\\".join(f"{v:.10f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k)))),
            ("0020|0013", str(k + 1)),
            ("0018|0050", str(spacing_xyz[2])),
        ):
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"s{uid}_{origin[2]:g}_{k:03d}.dcm"))
        writer.Execute(s)
    return image


@pytest.fixture
def write_dicom_series():
    return _write_series
