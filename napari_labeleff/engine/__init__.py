"""Headless refinement engine: weak labels (scribbles, boxes) -> 3D masks.

Public API: :func:`refine` (and its generator form :func:`refine_steps`), :func:`fuse`
(a network's probabilities combined with the strokes on the image graph),
:func:`available_methods`, :func:`resolve_device`, :func:`normalised_entropy` (the
predictive entropy in [0, 1] used everywhere in the package), and the data contracts
:class:`Progress`, :class:`RefineResult`, :class:`RefineState`. Methods register
themselves in :data:`METHODS` when their module is imported below.
"""

from . import _online  # noqa: F401  (registers "online", "hybrid")
from . import _randomwalk  # noqa: F401  (registers "randomwalk")
from ._api import available_methods, normalised_entropy, refine, refine_steps
from ._device import resolve_device
from ._fuse import FUSE_DEFAULTS, fuse
from ._registry import METHODS
from ._types import Progress, RefineResult, RefineState

__all__ = [
    "FUSE_DEFAULTS",
    "fuse",
    "METHODS",
    "Progress",
    "RefineResult",
    "RefineState",
    "available_methods",
    "normalised_entropy",
    "refine",
    "refine_steps",
    "resolve_device",
]
