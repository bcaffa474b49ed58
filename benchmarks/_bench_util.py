"""Shared helpers of the accuracy / joint / data benchmarks: machine description, JSON output, run config."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Dict

import torch

RESULTS_DIR = Path(__file__).resolve().parent / 'results'


def cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> Dict[str, Any]:
    """What the numbers were measured on (the load average matters: the machine may be shared)."""
    import unimodal
    return {
        'cpu': cpu_name(), 'cpu_count': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
        'torch': torch.__version__, 'python': platform.python_version(), 'unimodal': unimodal.__version__,
        'platform': platform.platform(), 'cuda': torch.cuda.is_available(),
        'loadavg_start': list(os.getloadavg()), 'time_start': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
    }


def finish_machine(info: Dict[str, Any], t0: float) -> Dict[str, Any]:
    info['loadavg_end'] = list(os.getloadavg())
    info['total_wall_s'] = round(time.perf_counter() - t0, 1)
    return info


def save_json(record: Dict[str, Any], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str))
    print(f'saved {path}')
    return path


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return '-'
    if isinstance(v, float):
        return f'{v:.{digits}g}' if abs(v) < 1e4 else f'{v:.3e}'
    return str(v)


def markdown_table(header, rows) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    lines += ['| ' + ' | '.join(fmt(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)


def set_threads(n: int) -> None:
    """``--threads N`` (0 = torch's default). On a shared, oversubscribed CPU one thread per process avoids
    OpenMP threads waiting on each other; the value used is recorded in the machine info."""
    if n:
        torch.set_num_threads(n)
