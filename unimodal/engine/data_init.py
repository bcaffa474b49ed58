"""Initialising parts of a new model from its training data before the first step: the least-squares linear skip
of a forecast head (:class:`unimodal.models.heads.LinearSkipForecastHead` with ``init='lsq'``, the time-series
adapter's ``linear_skip: lsq``).

The fit reads every training window once, without augmentation, in float64 (deterministic): every rank of a
distributed run computes the same weights from the same (unsharded) training set.
"""
from __future__ import annotations

import logging
from typing import Any, Iterator, Mapping, Tuple

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.inputs import primary

_logger = logging.getLogger(__name__)

__all__ = ['init_heads_from_data']

_BATCH = 256


def _normalised_pairs(adapter: Any, ds: Dataset) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """``(normalised window (B, L, N), target in the head's output space (B, H, N))`` over a training set."""
    for x, y in DataLoader(ds, batch_size=_BATCH, shuffle=False, num_workers=0):
        window = adapter.split_input(x)[0] if hasattr(adapter, 'split_input') else primary(x)
        xn, state = adapter.normalize(window.float())
        yield xn, adapter.normalize_target(y.float(), state)


@torch.no_grad()
def init_heads_from_data(model: Any, train_sets: Mapping[str, Dataset]) -> None:
    """Fit every head of ``model`` (a :class:`~unimodal.engine.multitask.MultiTaskModel`) that asks for it
    (``needs_data_init``) on its task's training set ``train_sets[name]``."""
    for name, ds in train_sets.items():
        task_model = model.task_model(name)
        head = task_model.head
        if not getattr(head, 'needs_data_init', False):
            continue
        n = head.fit_least_squares(_normalised_pairs(task_model.adapter, ds))
        _logger.info('task %s: linear skip of the forecast head fitted by least squares on %d training windows',
                     name, n)
