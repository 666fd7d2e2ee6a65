"""Whether a pipeline's `run()` may wait for the job it just started, or must hand it to the runner.

Stage: end of run (shared plumbing of every job).

After `p.run()` a pipeline normally waits, logs its counters and finishes its outputs. Three launches
start no job this process can (or should) wait for:

- `--template_location=...` on the DataflowRunner: the job description is written to a file instead of
  being submitted (classic template creation, and what the Dataflow flex-template launcher does with
  the job it builds from a flex template);
- `--dry_run=True` on the DataflowRunner: the job is built and nothing is submitted;
- `--no_wait_until_finish` (Beam's own flag) on a remote runner: submit and return.

`run()` then logs where to follow the job and returns the result without reading counters or outputs
(there are none yet); steps that need the finished outputs are run later (docs/dataflow.md).
"""

from __future__ import annotations

import logging

from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    StandardOptions,
    TestOptions,
)

_LOG = logging.getLogger(__name__)


def job_detached(result, options=None) -> bool:
    """True when `result` (of `p.run()`) is not a job this process can wait for (see module docstring).

    Args:
      result: the PipelineResult returned by `pipeline.run()`.
      options: the pipeline's PipelineOptions (`pipeline.options`), for the flags.
    """
    if options is not None:
        if options.view_as(TestOptions).dry_run:
            return True
        if options.view_as(GoogleCloudOptions).template_location:
            return True
        runner = str(options.view_as(StandardOptions).runner or "")
        if options.view_as(StandardOptions).no_wait_until_finish and "Direct" not in runner and runner:
            return True
    if hasattr(result, "has_job") and not result.has_job:  # Dataflow: template written, no job
        return True
    return getattr(result, "job", None) is not None and not hasattr(result, "has_job")  # dry run


#: Runner names whose work runs inside the launching process (in_memory / multi_threading modes).
_LOCAL_RUNNERS = ("", "DirectRunner", "SwitchingDirectRunner", "FnApiRunner")


def runs_in_this_process(options) -> bool:
    """True when the pipeline's workers will be threads of this process (the local runner's in_memory
    and multi_threading modes), so work done here ahead (importing TensorFlow) is what they use."""
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    mode = options.view_as(DirectOptions).direct_running_mode or "in_memory"
    return str(name or "").rsplit(".", 1)[-1] in _LOCAL_RUNNERS and mode in ("in_memory", "multi_threading")


def log_detached(result, options, what: str) -> None:
    """Logs what happened to a detached launch and where to follow the job."""
    cloud = options.view_as(GoogleCloudOptions)
    if options.view_as(TestOptions).dry_run:
        _LOG.info("%s: --dry_run, the Dataflow job was built and not submitted", what)
    elif cloud.template_location:
        _LOG.info(
            "%s: job description written to %s (not submitted from here)", what, cloud.template_location
        )
    else:
        job_id = result.job_id() if getattr(result, "has_job", False) else "?"
        _LOG.info(
            "%s: submitted Dataflow job %s; follow it at https://console.cloud.google.com/dataflow/jobs/%s/%s"
            "?project=%s (counters appear under 'Job metrics' > 'Custom counters')",
            what,
            job_id,
            cloud.region,
            job_id,
            cloud.project,
        )
