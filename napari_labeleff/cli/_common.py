"""Helpers shared by the ``labeleff`` commands: reading inputs, refusing to overwrite
inputs, progress bars, warnings on stderr."""

from __future__ import annotations

import json
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .._errors import LabelEffError
from .._steps import drive_with_progress_bar
from ..io import Volume, label_table_paths, read_label_volume, read_volume, smallest_uint

__all__ = ["drive", "load_boxes", "load_label_volume", "load_volume", "refuse_inputs",
           "warnings_to_stderr"]


def drive(generator, desc: str, unit: str = "step"):
    """Run a step generator with a progress bar on stderr; return its result."""
    return drive_with_progress_bar(generator, desc, unit=unit, file=sys.stderr)


def load_volume(path, series: str | None = None) -> Volume:
    """Read an image volume (any supported format) or fail with a one-line error."""
    return read_volume(path, series=series)


def load_label_volume(path, like: Volume, what: str = "scribbles") -> np.ndarray:
    """Read a label volume that must lie on ``like``'s voxel grid.

    Parameters
    ----------
    path : str or Path
        Any format :func:`read_volume` reads.
    like : Volume
        The image the labels belong to.
    what : str
        Name used in error messages (``"scribbles"``, ``"mask"``...).

    Returns
    -------
    ndarray, shape (Z, Y, X)
        Non-negative integer labels in the smallest unsigned dtype.
    """
    data = read_label_volume(path, like.shape, like.geometry, what=what)
    return data.astype(smallest_uint(int(data.max()) if data.size else 0))


def load_boxes(path) -> list[tuple[int, ...]]:
    """Read boxes from JSON: a list of ``[c, z0, y0, x0, z1, y1, x1]`` or of objects with
    keys ``class, z0, y0, x0, z1, y1, x1`` (inclusive-exclusive voxel indices, c >= 1)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LabelEffError(f"boxes file {path} is not valid JSON ({err})") from err
    if not isinstance(raw, list):
        raise LabelEffError(f"boxes file {path} must hold a JSON list, got {type(raw).__name__}")
    keys = ("class", "z0", "y0", "x0", "z1", "y1", "x1")
    boxes = []
    for n, item in enumerate(raw):
        values = [item.get(k) for k in keys] if isinstance(item, dict) else item
        if not isinstance(values, list) or len(values) != 7 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            raise LabelEffError(
                f"boxes file {path}: box {n} = {item!r} must be 7 integers "
                "[c, z0, y0, x0, z1, y1, x1] or an object with keys " + "/".join(keys)
            )
        c, lo, hi = values[0], values[1:4], values[4:]
        if c < 1 or any(a < 0 or a >= b for a, b in zip(lo, hi)):
            raise LabelEffError(f"boxes file {path}: box {n} = {item!r} needs c >= 1 and 0 <= start < stop")
        boxes.append(tuple(values))
    return boxes


@contextmanager
def warnings_to_stderr():
    """Print the warnings raised inside the block as ``warning: ...`` lines on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, (UserWarning, RuntimeWarning)):
                    print(f"warning: {w.message}", file=sys.stderr)


def refuse_inputs(outputs: dict, inputs: dict) -> None:
    """Raise if an output path names an input file (or another output) of the command.

    ``outputs`` / ``inputs``: option name -> path (None = not given).
    """
    def same(a, b) -> bool:
        a, b = Path(a).expanduser(), Path(b).expanduser()
        try:
            return os.path.samefile(a, b)
        except OSError:
            return a.absolute() == b.absolute()

    seen = {k: v for k, v in inputs.items() if v}
    for name, path in outputs.items():
        if not path:
            continue
        targets = [path]
        if name == "--out":
            targets += label_table_paths(path)
        for target in targets:
            for other, used in seen.items():
                if same(target, used):
                    raise LabelEffError(
                        f"{name}={path} would overwrite {other} {used}; choose another output path"
                    )
        seen[name] = path
