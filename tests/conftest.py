"""Shared fixtures: small synthetic volumes with fixed seeds, isolated user data dir."""

import numpy as np
import pytest

from napari_labeleff.io import Geometry


@pytest.fixture(autouse=True)
def _isolated_user_data(tmp_path_factory, monkeypatch):
    """Keep autosave stores (platformdirs.user_data_dir) out of the real home folder."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg_data")))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def sphere_volume(rng):
    """(Z, Y, X) = (12, 16, 20) float32 image of a bright ball on noise, and its mask."""
    z, y, x = np.mgrid[:12, :16, :20]
    mask = ((z - 6) / 4.0) ** 2 + ((y - 8) / 5.0) ** 2 + ((x - 10) / 6.0) ** 2 <= 1
    image = (100.0 * mask + rng.normal(0, 5, mask.shape)).astype(np.float32)
    return image, mask.astype(np.uint8)


@pytest.fixture
def oblique_geometry():
    """Rotated direction cosines, anisotropic spacing (x 0.7, y 0.9, z 2.5 mm), RAS."""
    a, b = np.deg2rad(20.0), np.deg2rad(-12.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.7, 0.9, 2.5])
    affine[:3, 3] = [-31.5, 12.25, -80.0]
    return Geometry(affine)
