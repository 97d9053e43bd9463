"""Names a package offers but imports only when first used (PEP 562 ``__getattr__``).

The cohort's training and prediction rooms import torch and MONAI; the napari layer
imports napari. Their ``__init__`` names them here so that importing the package (the
CLI, the store) stays cheap::

    __getattr__ = lazy_names(__name__, {"train_steps": "_loop"})
"""

from __future__ import annotations

from importlib import import_module


def lazy_names(package: str, names: dict[str, str]):
    """A module ``__getattr__`` importing ``package.<names[name]>`` on first access to
    ``name`` (and keeping the value in the package afterwards)."""

    def __getattr__(name):
        if name in names:
            module = import_module(f"{package}.{names[name]}")
            value = getattr(module, name)
            setattr(import_module(package), name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
