"""Fixtures of the active-learning tests."""

import pytest
from active_synthetic import make_result


@pytest.fixture(scope="session")
def synthetic():
    """Image, scribbles, hand-built RefineResult and ground truth (see make_result)."""
    return make_result()
