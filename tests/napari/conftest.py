"""Fixtures of the GUI tests (run under Xvfb: ``python -m pytest --xvfb-backend=xvfb``)."""

import pytest


@pytest.fixture
def notes():
    """Messages of the napari notifications dispatched during the test, as
    ``(severity, message)`` pairs (severity lower-case: "error", "info", ...)."""
    from napari.utils.notifications import notification_manager

    seen = []

    def grab(event):
        seen.append((str(event.severity).lower(), str(event.message)))

    notification_manager.notification_ready.connect(grab)
    yield seen
    notification_manager.notification_ready.disconnect(grab)


@pytest.fixture(autouse=True)
def _private_user_store(tmp_path, monkeypatch):
    """Autosave stores and the store index of a test stay inside its tmp_path."""
    from napari_labeleff import session

    monkeypatch.setattr(session, "user_store_dir", lambda: tmp_path / "user-data")


def ball_volume(shape=(24, 40, 40), seed=0):
    """A bright ball in a noisy background: (image float32, truth uint8, scribbles uint8).

    Scribbles: structure 1 (value 2) inside the ball on the middle slice, background
    (value 1) near two borders.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    c = np.array(shape) / 2
    truth = (((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) < 9**2).astype(np.uint8)
    image = (100 + 60 * truth + rng.normal(0, 12, shape)).astype(np.float32)
    mid = shape[0] // 2
    scribbles = np.zeros(shape, np.uint8)
    scribbles[mid, 17:23, 18:22] = 2
    scribbles[mid, 2:6, 2:-2] = 1
    scribbles[mid - 6, -6:-2, 2:-2] = 1
    return image, truth, scribbles


@pytest.fixture
def ball_nifti(tmp_path):
    """The ball volume saved as NIfTI with anisotropic spacing: (path, truth, scribbles)."""
    import nibabel as nib
    import numpy as np

    image, truth, scribbles = ball_volume()
    path = tmp_path / "ball.nii.gz"
    nib.save(nib.Nifti1Image(image.T, np.diag([0.8, 0.8, 1.5, 1.0])), path)
    return path, truth, scribbles
