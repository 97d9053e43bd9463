"""Shipped sample volumes (``sample_data/``, built by ``sample_data/make_samples.py``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np

from .._errors import LabelEffError
from ._read import read_volume
from ._volume import Volume


def sample_dir() -> Path:
    """The package's ``sample_data`` folder (a symlink to the top-level one in a checkout)."""
    return Path(str(files("napari_labeleff") / "sample_data"))


@dataclass
class Sample:
    """A sample volume with example weak labels and a reference segmentation.

    Attributes
    ----------
    key : str
        ``"brain"`` or ``"ct"``.
    title : str
    volume : Volume
        The image, (Z, Y, X), with its geometry.
    scribbles : ndarray, shape (Z, Y, X), uint8
        Example scribbles: 0 = unannotated, 1 = background, c + 1 = structure c.
    labels : ndarray, shape (Z, Y, X), uint8
        Reference segmentation, 0 = background, c = structure c (see ``ground_truth``).
    boxes : list of tuple
        Example boxes ``(c, z0, y0, x0, z1, y1, x1)`` (empty when the sample has none).
    class_names : list of str
        ``class_names[0]`` = background, ``class_names[c]`` = structure c.
    colors : list of tuple
        RGB floats in 0..1, same indexing as ``class_names``.
    info : dict
        ``modality``, ``ground_truth`` (``"derived"`` or ``"model"``: not manual),
        ``source``.
    """

    key: str
    title: str
    volume: Volume
    scribbles: np.ndarray
    labels: np.ndarray
    boxes: list[tuple] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    colors: list[tuple] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def _index() -> dict:
    return json.loads((sample_dir() / "samples.json").read_text(encoding="utf-8"))


def list_samples() -> dict[str, str]:
    """``{key: title}`` of the shipped samples."""
    return {key: entry["title"] for key, entry in _index().items()}


def load_sample(key: str) -> Sample:
    """Load a shipped sample (image, example scribbles/boxes, reference labels).

    Parameters
    ----------
    key : str
        One of :func:`list_samples` (``"brain"``, ``"ct"``).

    Returns
    -------
    Sample
    """
    index = _index()
    if key not in index:
        raise LabelEffError(f"key={key!r} is not a sample; available: {', '.join(index)}")
    entry = index[key]
    folder = sample_dir()
    boxes = []
    if entry["boxes"]:
        raw = json.loads((folder / entry["boxes"]).read_text(encoding="utf-8"))
        boxes = [tuple(int(v) for v in b) for b in raw]
    return Sample(
        key=key,
        title=entry["title"],
        volume=read_volume(folder / entry["image"]),
        scribbles=np.asarray(read_volume(folder / entry["scribbles"]).data, dtype=np.uint8),
        labels=np.asarray(read_volume(folder / entry["labels"]).data, dtype=np.uint8),
        boxes=boxes,
        class_names=[c["name"] for c in entry["classes"]],
        colors=[tuple(c["color"]) for c in entry["classes"]],
        info={k: entry[k] for k in ("modality", "ground_truth", "source")},
    )
