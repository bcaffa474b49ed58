"""``--threads``: the intra-op CPU threads of a command and of the processes it starts.

The default comes from benchmarks/bench_threads.py (numbers in benchmarks/README.md): on a 2-core machine one thread
trains the tiny task models about as fast as two when idle, and many times faster when another process keeps a core
busy (OpenMP's spinning threads then wait on each other), so the default is 1 on machines with at most 2 usable cores
and, above that, the usable cores less the busy ones (1-minute load average), at least 1.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Optional

#: environment variables read by OpenMP/MKL/OpenBLAS at start: they reach DataLoader workers and torchrun ranks
THREAD_ENV = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_threads(cores: Optional[int] = None, load: Optional[float] = None) -> int:
    """Threads for a command without ``--threads`` (see the module doc for the measurement behind it)."""
    cores = usable_cores() if cores is None else cores
    if cores <= 2:
        return 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cores, cores - math.ceil(load - 0.5)))


def parse_threads(text: str) -> int:
    """``--threads`` value: a positive int or ``auto`` (0 stands for auto)."""
    import argparse
    if text == 'auto':
        return 0
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 1:
        raise argparse.ArgumentTypeError(f'expected a positive number of threads or auto, got {text!r}')
    return n


def apply_threads(requested: Optional[int]) -> Optional[int]:
    """Set the thread count for this process and its children; returns it (``None``: left as the user set it).

    Without ``--threads`` (``requested`` None or 0 for auto) an ``OMP_NUM_THREADS`` already in the environment is the
    user's choice and wins (torchrun sets it to 1 per rank, too); otherwise :func:`default_threads`.
    """
    if not requested:
        if os.environ.get('OMP_NUM_THREADS'):
            return None
        requested = default_threads()
    for name in THREAD_ENV:
        os.environ[name] = str(requested)
    torch = sys.modules.get('torch')
    if torch is not None:  # already imported (in-process calls); otherwise it reads OMP_NUM_THREADS when imported
        torch.set_num_threads(requested)
    return requested
