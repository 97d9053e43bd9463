"""Name -> callable registries (MONAI Label's strategy pattern), shared by the engine's
methods and active learning's strategies."""

from __future__ import annotations

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def registering(registry: dict, kind: str) -> Callable[[str], Callable[[F], F]]:
    """Make a decorator factory ``register(name)`` that adds a callable to ``registry``.

    ``kind`` names the entries in the error raised for a duplicate name.
    """

    def register(name: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            if name in registry:
                raise ValueError(f"{kind} {name!r} is already registered")
            registry[name] = fn
            return fn

        return deco

    return register
