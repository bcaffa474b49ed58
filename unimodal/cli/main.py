"""Entry point of the ``unimodal`` console script: dispatch and the mapping of errors to exit codes."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from .common import UsageError, _setup_logging
from ..predict.cli import run_predict
from .data_commands import cmd_data
from .model_commands import cmd_bench, cmd_export, cmd_models, cmd_reparam, cmd_tasks
from .parser import build_parser
from .run_commands import cmd_eval, cmd_train


_COMMANDS = {'train': cmd_train, 'eval': cmd_eval, 'reparam': cmd_reparam, 'export': cmd_export,
             'bench': cmd_bench, 'models': cmd_models, 'tasks': cmd_tasks, 'data': cmd_data,
             'predict': run_predict}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``unimodal`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    from ..config import ConfigError
    from ..data.errors import DataError
    from ..engine.checkpoint import CheckpointError, WriteError
    from ..engine.finite import NonFiniteError
    from ..modalities.base import InputShapeError
    try:
        return _COMMANDS[args.command](args) or 0
    except (UsageError, ConfigError, DataError, InputShapeError, CheckpointError, WriteError, NonFiniteError,
            FileNotFoundError, NotADirectoryError) as e:
        msg = ' '.join(str(e).split())  # one line
        if isinstance(e, FileNotFoundError) and e.filename and str(e.filename) not in msg:
            msg = f'{e.filename}: {msg}'
        print(f'unimodal {args.command}: error: {msg}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
