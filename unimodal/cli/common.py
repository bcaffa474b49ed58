"""What every ``unimodal`` command shares: the usage error, logging set-up, progress bars and tables."""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Dict, Iterable, List, Optional

_logger = logging.getLogger('unimodal.cli')

TASK_CHOICES = 'audio, point, video, timeseries, image'


class UsageError(Exception):
    """A command-line problem reported with exit code 2."""

def _setup_logging(verbose: bool = False) -> None:
    rank = int(os.environ.get('RANK', '0'))
    level = logging.DEBUG if verbose else logging.INFO
    if rank != 0:
        level = logging.WARNING
    root = logging.getLogger()
    for h in root.handlers:
        if getattr(h, '_unimodal_cli', False):
            h.stream = sys.stderr  # follow a replaced sys.stderr (repeated in-process calls)
    if not any(getattr(h, '_unimodal_cli', False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter('%(asctime)s %(levelname).1s %(name)s: %(message)s', '%H:%M:%S'))
        handler._unimodal_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger('unimodal').setLevel(level)


def _progress(enabled: bool):
    """A tqdm wrapper for the engine's progress hook (rank 0, interactive terminals only)."""
    if not enabled or int(os.environ.get('RANK', '0')) != 0:
        return None
    from tqdm.auto import tqdm

    def wrap(iterable: Iterable, desc: str = '', total: Optional[int] = None) -> Iterable:
        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, disable=None)
    return wrap


def _is_main() -> bool:
    return int(os.environ.get('RANK', '0')) == 0


def _say(*args: Any) -> None:
    if _is_main():
        print(*args)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f'{v:.4f}' if abs(v) < 1e4 else f'{v:.4g}'
    return str(v)


def _metrics_table(metrics: Dict[str, Any]) -> List[str]:
    lines = []
    for k, v in metrics.items():
        if isinstance(v, (list, dict)):
            if k == 'baselines':
                for name, m in v.items():
                    if isinstance(m, dict):
                        values = '  '.join(f'{kk} {_fmt(vv)}' for kk, vv in m.items())
                        lines.append(f'  {"baseline " + name:<24} ' + values)
            continue
        lines.append(f'  {k:<24} {_fmt(v)}')
    return lines


def _rel_diff(a, b) -> float:
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))
