"""Headless cohort projects: many volumes, one store, a network learned across them.

Public API: :class:`Project` (the facade users hold), :class:`VolumeRecord`,
:class:`Prediction`, :class:`PublishedModel`, :class:`ProjectTrainReport`,
:class:`TrainPlan`, :class:`TrainOutcome`, :func:`run_training`, :data:`STATUSES`.

Rooms (sub-packages), each with its own ``__init__`` naming what it offers:

* ``store``       the project folder, persistence only (project.json, volumes,
                  annotation stores, annotation log, model versions);
* ``training``    the learner: spec, data, losses, network, the training loop;
* ``prediction``  a trained checkpoint applied to volumes, evaluation, scores;
* ``jobs``        batch predict / score / export on Dask;
* ``services``    training orchestration and publishing, prediction with scores,
                  refine with the model, label QA, volume suggestions.

Never imports Qt, napari or magicgui (nor torch, until training or prediction runs).
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
