"""Training and evaluation: transform, train, evaluate, analyze, evaluate_events (see docs/training.md).

Its modules import TensorFlow at module level, so `python -m training.MODULE` is quietened here,
before the module body runs (see gunshot_core.logs.configure_if_run_as_module).
"""

from gunshot_core import logs as _logs

_logs.configure_if_run_as_module(__name__)
