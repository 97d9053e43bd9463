"""Driving the product's step generators (engine refinement, training, batch jobs).

Long work is a generator that yields progress and returns its result (DESIGN.md §2);
these run one to its end.
"""

from __future__ import annotations

from typing import Callable, Generator, TypeVar

R = TypeVar("R")


def drain(gen: Generator[object, None, R], progress: Callable[[object], None] | None = None
          ) -> R:
    """Run ``gen`` to its end and return its return value.

    Parameters
    ----------
    gen : generator
        Yields progress reports, returns the result.
    progress : callable, optional
        Called with every report.

    The generator is closed on the way out, so an exception in ``progress`` (or a
    ``KeyboardInterrupt``) cancels it at its current step.
    """
    try:
        while True:
            try:
                report = next(gen)
            except StopIteration as stop:
                return stop.value
            if progress is not None:
                progress(report)
    finally:
        gen.close()
