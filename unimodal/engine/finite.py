"""NaN / inf in a run: the error that says where (task, split, epoch, step, batch), which samples, and whether the
data or the model produced it.

Only a failed check looks further: each batch costs one ``isfinite`` over the loss or the outputs; the inputs are
inspected, and the samples of the batch looked up, after a non-finite value was found.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, List, Mapping, Optional

import torch
from torch.utils.data import DataLoader

from ..data.inputs import Inputs, batch_size, is_structured

__all__ = ['NonFiniteError', 'sample_source', 'batch_sources', 'non_finite_rows', 'non_finite_training_loss',
           'check_eval_outputs', 'check_metrics']

_NAMED = 5  # samples named in a message


class NonFiniteError(FloatingPointError):
    """A loss, output or metric is NaN or infinite; the message names the task and place and, when known, the
    samples of the batch."""


def sample_source(dataset: Any, index: int) -> str:
    """Where sample ``index`` comes from: the dataset's ``sample_source(index)`` (a file name, a line of a list
    file, ...) when it has one, else ``sample #index``."""
    describe = getattr(dataset, 'sample_source', None)
    if callable(describe):
        try:
            return str(describe(index))
        except Exception:  # noqa: BLE001  (a naming hook must never hide the error being reported)
            pass
    return f'sample #{index}'


def batch_sources(loader: DataLoader, batch_no: int, rows: List[int]) -> List[str]:
    """The sources (:func:`sample_source`) of ``rows`` of batch ``batch_no`` of ``loader``'s current pass.

    The loaders of the engine draw their indices from seeded samplers, so iterating the batch sampler again
    yields the same batches; a loader without one gives ``[]``.
    """
    sampler = getattr(loader, 'batch_sampler', None)
    if sampler is None:
        return []
    try:
        indices = next(itertools.islice(iter(sampler), batch_no, None))
    except (StopIteration, TypeError):
        return []
    return [sample_source(loader.dataset, indices[r]) for r in rows if r < len(indices)]


def non_finite_rows(x: Inputs) -> List[int]:
    """Rows (samples) of a batch ``x`` (a tensor or a structured input) holding a NaN or inf in any floating-point
    part."""
    rows: set = set()
    for t in (x if is_structured(x) else (x,)):
        if torch.is_tensor(t) and t.is_floating_point() and t.dim() > 0:
            rows.update((~torch.isfinite(t.detach().reshape(t.shape[0], -1))).any(1).nonzero().flatten().tolist())
    return sorted(rows)


def _samples(loader: Optional[DataLoader], batch_no: int, rows: List[int]) -> str:
    names = batch_sources(loader, batch_no, rows[:_NAMED]) if loader is not None else []
    if not names:
        return ''
    more = f' and {len(rows) - len(names)} more' if len(rows) > len(names) else ''
    return f' (samples: {", ".join(names)}{more})'


def non_finite_training_loss(task: str, loss: float, *, epoch: int, step: int, x: Inputs,
                             loader: Optional[DataLoader], batch_no: int, from_files: bool) -> NonFiniteError:
    """The error for a NaN/inf training loss of ``task`` at ``epoch`` (1-based) and ``step`` of the epoch, on the
    un-mixed input batch ``x`` (batch ``batch_no`` of ``loader``'s current pass)."""
    where = f'the training loss of task {task} is {loss} at epoch {epoch}, step {step}'
    bad = non_finite_rows(x)
    data = 'a data file' if from_files else 'the data'
    if bad:
        return NonFiniteError(f'{where}: {len(bad)} input sample(s) of the batch hold NaN/inf values'
                              f'{_samples(loader, batch_no, bad)}; {data} holds bad values: fix it, or pass '
                              f'--skip-bad to skip samples the reader finds unreadable')
    check = (f'; if it persists, check the data (targets of batch {batch_no}'
             f'{_samples(loader, batch_no, list(range(batch_size(x))))}) or pass --skip-bad') if from_files else ''
    return NonFiniteError(f'{where} with finite inputs: training diverged; lower train.lr or set train.clip_grad'
                          f'{check}')


def check_eval_outputs(desc: str, out: torch.Tensor, x: Inputs, loader: Optional[DataLoader],
                       batch_no: int) -> None:
    """Raise :class:`NonFiniteError` when the outputs ``out`` of batch ``batch_no`` hold NaN/inf (metrics would
    silently skip or propagate them), saying whether the inputs ``x`` or the model produced them."""
    if bool(torch.isfinite(out).all()):
        return
    bad_in = non_finite_rows(x)
    if bad_in:
        raise NonFiniteError(f'{desc}: {len(bad_in)} input sample(s) of batch {batch_no} hold NaN/inf values'
                             f'{_samples(loader, batch_no, bad_in)}; the data holds bad values: fix it, or pass '
                             f'--skip-bad to skip samples the reader finds unreadable')
    bad_out = non_finite_rows(out)
    raise NonFiniteError(f'{desc}: the model outputs NaN/inf for {len(bad_out)} sample(s) of batch {batch_no}'
                         f'{_samples(loader, batch_no, bad_out)} whose inputs are finite: the weights are not '
                         f'finite (a diverged run or a damaged checkpoint?)')


def check_metrics(desc: str, metrics: Mapping[str, Any]) -> None:
    """Raise :class:`NonFiniteError` for a NaN/inf scalar metric."""
    bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise NonFiniteError(f'{desc}: non-finite metric(s) {", ".join(f"{k}={v}" for k, v in bad.items())}')
