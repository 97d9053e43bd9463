"""Tests of napari_labeleff.cohort (project store, learner, batch jobs)."""
