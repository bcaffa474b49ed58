"""The ``unimodal`` command line: train, eval, reparam, export, bench, models, tasks, data, analyze.

Exit codes: 0 success; 2 usage, config, data, checkpoint or run-directory errors, a failed write (disk full) and
NaN/inf losses or outputs (one line naming the problem, no traceback); 1 anything unexpected (with the traceback).
"""
from .common import UsageError
from .main import main
from .parser import build_parser
from .run_commands import _train_overrides  # noqa: F401  (used by the device-check tests)

__all__ = ['main', 'build_parser', 'UsageError']
