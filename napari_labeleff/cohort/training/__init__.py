"""Training room of the cohort: the learner, from a :class:`TrainSpec` to a checkpoint.

Never imports the store. Modules, in the order a run uses them:

* ``_spec``       the contract: :class:`TrainSpec` (cases, classes, folders, options),
                  :class:`TrainCase`, labels snapshots, :class:`TrainProgress`,
                  :class:`TrainReport` (pure Python + NumPy, imported eagerly);
* ``_options``    option defaults and checks, the run's fingerprint;
* ``_setup``      headers, network config, prepared cases, datasets;
* ``_data``       reading, resampling, normalising, MONAI datasets and sampling;
* ``_pseudo``     graph pseudo-labels, self-training labels, one-object structures;
* ``_network``    the BasicUNet and its sizes (:class:`PromptableUNet`: image + prompt
                  channels); ``_losses`` the loss terms;
* ``_prompts``    the interactive network's prompt channels; ``_simulate`` simulated
                  interaction sequences (used by ``_loop.InteractiveTrainer``);
* ``_pretrain``   the self-supervised stage;
* ``_loop``       :func:`train_steps` and :class:`Trainer` (one hybrid step, validation,
                  the checkpoint);
* ``_inference``  sliding-window probabilities, mixed precision (also prediction's);
* ``_checkpoint`` checkpoint and resume files (atomic writes; ``weights_only`` reads);
* ``_background`` :func:`train_in_background`, the same run in a spawned process.

Names from the torch modules are imported on first use (``import`` of this package
stays cheap for the CLI and the store).
"""

from ..._lazy import lazy_names

from ._spec import (KNOWN_OPTIONS, TrainCase, TrainProgress, TrainReport, TrainSpec, has_labels,
                    read_labels_snapshot, write_labels_snapshot)

#: name -> module of the lazily imported names (they import torch).
_LAZY = {
    "train_steps": "_loop", "Trainer": "_loop", "RunState": "_loop",
    "train_in_background": "_background",
    "DEFAULTS": "_options", "PSEUDO_BAND": "_options", "PSEUDO_WEIGHT": "_options",
    "SELF_CONFIDENCE": "_options", "check_options": "_options",
    "read_checkpoint": "_checkpoint", "safe_load": "_checkpoint",
    "autocast": "_inference", "sliding_window_probs": "_inference", "keep_largest": "_inference",
    "build_network": "_network", "encode": "_network", "transfer_state": "_network",
    "PromptableUNet": "_network",
    "image_channels": "_prompts", "n_prompt_channels": "_prompts", "encode_prompts": "_prompts",
    "box_channels": "_prompts", "PROMPT_LAYOUT": "_prompts", "simulate": "_simulate",
    "InteractiveTrainer": "_loop",
    "clip_zscore": "_data", "read_image": "_data", "resample_image": "_data",
    "resample_labels": "_data", "resample_mask": "_data", "PreparedCase": "_data",
    "build_supervision": "_data", "prepare_case": "_data",
    "single_component_classes": "_pseudo", "pseudo_labels": "_pseudo", "self_labels": "_pseudo",
}

__all__ = [
    "KNOWN_OPTIONS", "TrainCase", "TrainProgress", "TrainReport", "TrainSpec", "has_labels",
    "read_labels_snapshot", "write_labels_snapshot", *sorted(_LAZY),
]

__getattr__ = lazy_names(__name__, _LAZY)
