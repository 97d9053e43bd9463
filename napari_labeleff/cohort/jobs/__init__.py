"""Jobs room of the cohort: batch predict / score / export over a project on Dask.

:func:`job_steps` (generator) and :func:`run_job` (blocking) run a job from an open
project (read-only is enough); :func:`run_task` is what one worker does for one
volume. See ``_jobs`` for the kinds and the failure handling.
"""

from ._jobs import (CONNECT_TIMEOUT, JOB_KINDS, WRITING_KINDS, JobReport, VolumeResult, job_steps,
                    run_job, run_task)

__all__ = ["CONNECT_TIMEOUT", "JOB_KINDS", "WRITING_KINDS", "JobReport", "VolumeResult",
           "job_steps", "run_job", "run_task"]
