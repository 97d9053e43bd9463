"""Headless active learning: uncertainty scoring and annotation suggestions."""

from ._types import Suggestion

__all__ = ["Suggestion"]
