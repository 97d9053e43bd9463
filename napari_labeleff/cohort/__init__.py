"""Headless cohort projects: many volumes, one store, a network learned across them.

Public API: :class:`Project` (the store: volumes, weak labels, accepted masks, model
versions, annotation log), :class:`VolumeRecord`, :class:`Prediction`,
:class:`PublishedModel`, :class:`ProjectTrainReport`. Training itself lives in the
learner's modules (``_spec``, ``_train``, ``_predict``); the store builds a
``TrainSpec`` for them and never runs inside them.

Never imports Qt, napari or magicgui.
"""

from ._project import (
    STATUSES,
    Prediction,
    Project,
    ProjectTrainReport,
    PublishedModel,
    TrainOutcome,
    TrainPlan,
    VolumeRecord,
    run_training,
)

__all__ = [
    "STATUSES",
    "Prediction",
    "Project",
    "ProjectTrainReport",
    "PublishedModel",
    "TrainOutcome",
    "TrainPlan",
    "VolumeRecord",
    "run_training",
]
