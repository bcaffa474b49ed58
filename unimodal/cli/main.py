"""Entry point of the ``unimodal`` console script: dispatch and the mapping of errors to exit codes."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

from .analyze_commands import cmd_analyze
from .common import UsageError, _setup_logging
from ..predict.cli import run_predict
from .data_commands import cmd_data
from .model_commands import cmd_bench, cmd_export, cmd_models, cmd_reparam
from .parser import build_parser
from .run_commands import cmd_eval, cmd_train
from .task_commands import cmd_tasks
from .threads import apply_threads


_COMMANDS = {'train': cmd_train, 'eval': cmd_eval, 'reparam': cmd_reparam, 'export': cmd_export,
             'bench': cmd_bench, 'models': cmd_models, 'tasks': cmd_tasks, 'data': cmd_data, 'analyze': cmd_analyze,
             'predict': run_predict}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``unimodal`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_threads(getattr(args, 'threads', None))  # before torch is imported: it reads OMP_NUM_THREADS once
    _setup_logging(args.verbose)
    try:
        return _COMMANDS[args.command](args) or 0
    except Exception as e:
        if not isinstance(e, _reported_errors()):
            raise
        msg = ' '.join(str(e).split())  # one line
        if isinstance(e, FileNotFoundError) and e.filename and str(e.filename) not in msg:
            msg = f'{e.filename}: {msg}'
        print(f'unimodal {args.command}: error: {msg}', file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f'unimodal {args.command}: interrupted{_resume_hint(args.command, getattr(e, "run_dir", None))}',
              file=sys.stderr)
        return 130


# error classes reported in one line with exit code 2, by module: a module not imported raised none of them, so the
# check does not import torch for `--help`, `tasks` or a usage error
_REPORTED = (('unimodal.config.errors', ('ConfigError',)), ('unimodal.data.errors', ('DataError',)),
             ('unimodal.engine.checkpoint', ('CheckpointError', 'WriteError')),
             ('unimodal.engine.finite', ('NonFiniteError',)), ('unimodal.modalities.base', ('InputShapeError',)))


def _reported_errors() -> Tuple[type, ...]:
    classes = [UsageError, FileNotFoundError, NotADirectoryError]
    for module, names in _REPORTED:
        if module in sys.modules:
            classes += [getattr(sys.modules[module], n) for n in names]
    return tuple(classes)


def _resume_hint(command: str, run_dir: Optional[Path]) -> str:
    if command != 'train' or run_dir is None:
        return ''
    if not (Path(run_dir) / 'last.pt').is_file():
        return f' before the first checkpoint of {run_dir}: nothing to resume, start the run again'
    return (f'; {run_dir}/last.pt holds the last finished epoch: continue with '
            f'unimodal train --resume auto --out {run_dir}')
