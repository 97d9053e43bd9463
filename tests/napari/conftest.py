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
