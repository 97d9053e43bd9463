"""Headless reading and writing of medical volumes with exact geometry."""

from ._geometry import Geometry

__all__ = ["Geometry"]
