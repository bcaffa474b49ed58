"""``unimodal data prepare``: make a task's splits ready before training, in parallel and sharded by rank.

:func:`prepare_datasets` calls a reader's own ``prepare(workers=, rank=, world_size=, progress=)`` where it has one
(ModelNet40: sample and cache every mesh), and otherwise reads every sample of the rank's share once through a
DataLoader with ``workers`` processes, so every file is checked (and, with ``skip_bad``, every bad one reported).
Progress goes to a ``progress(split, done, total)`` callback (the CLI draws bars with it); this module only logs.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Mapping, Optional

from torch.utils.data import DataLoader, Dataset, Subset

_logger = logging.getLogger(__name__)

__all__ = ['prepare_datasets']

SplitProgress = Callable[[str, int, int], None]


def _discard(sample: Any) -> None:
    return None  # samples are read for their side effects (caches, checks); nothing is kept


def _base(ds: Dataset) -> Dataset:
    """The reader under a subset wrapper (the engine's ``EvenSubset``, torch's ``Subset``)."""
    while hasattr(ds, 'base') or isinstance(ds, Subset):
        ds = ds.dataset if isinstance(ds, Subset) else ds.base
    return ds


def prepare_datasets(sets: Mapping[str, Dataset], *, workers: int = 0, rank: int = 0, world_size: int = 1,
                     progress: Optional[SplitProgress] = None) -> Dict[str, Dict[str, Any]]:
    """Prepare every split of ``sets`` (this rank's share ``rank::world_size``) with ``workers`` processes.

    Returns:
        ``{split: {'samples': n, 'seconds': t, 'skip_report': compact summary or None}}``.

    Raises:
        DataError: a bad file (without ``skip_bad``), naming it.
    """
    out: Dict[str, Dict[str, Any]] = {}
    for split, ds in sets.items():
        t0 = time.perf_counter()
        base = _base(ds)

        def tick(done: int, total: int, split: str = split) -> None:
            if progress is not None:
                progress(split, done, total)

        if callable(getattr(base, 'prepare', None)):
            base.prepare(workers=workers, rank=rank, world_size=world_size, progress=tick)
            n = len(base)
        else:
            share = Subset(ds, range(rank, len(ds), world_size))
            tick(0, len(share))
            loader = DataLoader(share, batch_size=None, num_workers=workers, collate_fn=_discard)
            for done, _ in enumerate(loader, 1):
                tick(done, len(share))
            n = len(share)
        report = getattr(base, 'skip_report', None)
        seconds = time.perf_counter() - t0
        _logger.info('%s: %d samples prepared in %.1f s (rank %d of %d, %d workers)%s', split, n, seconds, rank,
                     world_size, workers, f', {report.count} skipped' if report is not None and report.count else '')
        if report is not None:
            report.log_summary()
        out[split] = {'samples': n, 'seconds': round(seconds, 3),
                      'skip_report': report.as_dict() if report is not None else None}
    return out
