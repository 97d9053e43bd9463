"""Driving the product's step generators (engine refinement, training, batch jobs).

Long work is a generator that yields progress and returns its result (DESIGN.md §2);
these run one to its end: :func:`drain` (tests, blocking APIs) and
:func:`drive_with_progress_bar` (the command line).
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


def drive_with_progress_bar(gen: Generator[object, None, R], desc: str, *, unit: str = "step",
                            file=None) -> R:
    """Run ``gen`` to its end with a tqdm progress bar; return its return value.

    Parameters
    ----------
    gen : generator
        Yields reports with ``step``, ``total`` and ``message`` (engine ``Progress``,
        ``TrainProgress``), returns the result.
    desc : str
        The bar's label.
    unit : str
        What a step is (``"volume"``...).
    file : file object, optional
        Where the bar goes (default: stderr).

    Interrupting (Ctrl-C) closes, that is cancels, the generator at its current step.
    """
    import sys

    from tqdm import tqdm

    with tqdm(desc=desc, file=file or sys.stderr, unit=unit, dynamic_ncols=True) as bar:
        def show(progress):
            bar.total = progress.total
            bar.n = progress.step
            bar.set_postfix_str(progress.message, refresh=False)
            bar.refresh()

        return drain(gen, show)
