"""Headless active learning: uncertainty scoring and annotation suggestions.

``suggest`` ranks slices or uncertain regions to annotate next with a strategy from
:data:`STRATEGIES`; ``uncertainty_map``, ``uncertain_regions`` and ``volume_score``
expose the scoring it is built on.
"""

from ._annotated import annotated_slices, structure_extents
from ._confirm import confirmed_labels
from ._scoring import (KINDS, available_kinds, uncertain_regions, uncertainty_map,
                       volume_score)
from ._strategies import STRATEGIES, register_strategy
from ._suggest import GRANULARITIES, check_options, suggest
from ._types import Suggestion

__all__ = ["GRANULARITIES", "KINDS", "STRATEGIES", "Suggestion", "annotated_slices",
           "available_kinds", "check_options", "confirmed_labels", "register_strategy",
           "structure_extents", "suggest", "uncertain_regions", "uncertainty_map",
           "volume_score"]
