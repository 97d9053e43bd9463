"""Headless active learning: uncertainty scoring and annotation suggestions.

``suggest`` ranks slices or uncertain regions to annotate next with a strategy from
:data:`STRATEGIES`; ``uncertainty_map``, ``uncertain_regions`` and ``volume_score``
expose the scoring it is built on.
"""

from ._scoring import KINDS, uncertain_regions, uncertainty_map, volume_score
from ._strategies import STRATEGIES, register_strategy
from ._suggest import GRANULARITIES, check_options, suggest
from ._types import Suggestion

__all__ = ["GRANULARITIES", "KINDS", "STRATEGIES", "Suggestion", "check_options",
           "register_strategy", "suggest", "uncertain_regions", "uncertainty_map", "volume_score"]
