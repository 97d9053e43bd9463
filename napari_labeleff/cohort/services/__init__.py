"""Services room of the cohort: what a project does with its store and its model.

* ``_training``  :func:`prepare_training` / :func:`run_training` /
                 :func:`finish_training` (snapshot, learner, publish decision);
* ``_predict``   :class:`Predictor`: the published model's prediction of a volume;
* ``_refine``    refine a project volume: the graph method (with the model as prior,
                 :func:`prior_gate`) or the interactive network fused with the strokes;
* ``_interactive`` the running score, the learning curve (:func:`curve`) and how much
                 the network leads (:func:`network_lead`);
* ``_qa``        label QA: doubtful accepted or imported masks (:func:`label_qa`);
* ``_volume_al`` which volume to annotate next (:func:`suggest_volumes`);
* ``_rules``     the project's anatomical rules: stored, learned, checked
                 (:func:`project_rules`, :func:`propose_rules`, :func:`rule_qa`).

The :class:`~napari_labeleff.cohort.Project` facade calls these; they use the store,
training and prediction rooms, never the facade's internals.
"""

from ._interactive import (LEAD_FULL, LEAD_MIN, CurveItem, WorkLog, curve, network_lead,
                           curve_entry, score_before_accept)
from ._predict import Predictor
from ._qa import QA_THRESHOLD, QAItem, label_qa, write_qa
from ._rules import (RULES_FILE, accept_proposals, project_rules, propose_rules, rule_qa,
                     set_project_rules)
from ._refine import ADAPT_STEPS, MODES, NETWORK_METHOD, PRIOR_MIN_DICE, prior_gate, prior_use, refine_steps
from ._training import (VALIDATION_EVERY, VALIDATION_MIN, ProjectTrainReport, TrainOutcome,
                        TrainPlan, finish_training, prepare_training, publish_decision,
                        run_training, validation_ids)
from ._volume_al import VOLUME_STRATEGIES, VolumeSuggestion, suggest_volumes

__all__ = [
    "ADAPT_STEPS", "CurveItem", "LEAD_FULL", "LEAD_MIN", "MODES", "NETWORK_METHOD", "WorkLog", "curve",
    "network_lead", "curve_entry", "score_before_accept",
    "PRIOR_MIN_DICE", "QA_THRESHOLD", "RULES_FILE", "accept_proposals", "project_rules",
    "propose_rules", "rule_qa", "set_project_rules", "VALIDATION_EVERY", "VALIDATION_MIN", "VOLUME_STRATEGIES",
    "Predictor", "ProjectTrainReport", "QAItem", "TrainOutcome", "TrainPlan", "VolumeSuggestion",
    "finish_training", "label_qa", "prepare_training", "prior_gate", "prior_use",
    "publish_decision", "refine_steps", "run_training", "suggest_volumes", "validation_ids",
    "write_qa",
]
