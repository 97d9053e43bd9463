"""Prediction room of the cohort: a trained checkpoint applied to volumes.

* ``_model``   :func:`load_model` -> :class:`LoadedModel` (``predict``: probabilities on
               the volume's own grid; ``embed``), :func:`evaluate` (mean Dice of a
               checkpoint on labelled cases);
* ``_summary`` :class:`Prediction`, :func:`summarise` (labels, normalised entropy,
               model-estimated scores; NumPy only, imported eagerly);
* ``_cache``   :func:`cached_model`, one loaded model per process;
* ``_interactive`` :class:`InteractiveSession`: the interactive network on one open
               volume (prompts in, probabilities out, windowed updates, adaptation).

Uses the training room's network and transforms; never imports the store.
"""

from ..._lazy import lazy_names

from ..._metrics import dice_scores, mean_dice, scribble_dice
from ._cache import cached_model, model_loads
from ._summary import Prediction, summarise

_LAZY = {"LoadedModel": "_model", "load_model": "_model", "evaluate": "_model",
         "InteractiveSession": "_interactive"}

__all__ = ["Prediction", "cached_model", "dice_scores", "mean_dice", "model_loads",
           "scribble_dice", "summarise", *sorted(_LAZY)]

__getattr__ = lazy_names(__name__, _LAZY)
