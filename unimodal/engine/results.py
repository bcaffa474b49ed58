"""The results record of one evaluated task: the same entries after training (``results.json``) and from
``unimodal eval`` (its JSON)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from torch.utils.data import Dataset

from ..tasks.base import Task
from ..tasks.spec import TaskSpec

__all__ = ['describe_dataset', 'result_record']


def describe_dataset(root: Optional[Path], builtin: bool, task_name: str) -> str:
    """Where the evaluated data came from, in words."""
    if builtin:
        return f'built-in synthetic {task_name} data' + (f' ({root})' if root else '')
    return str(root)


def result_record(spec: TaskSpec, task: Task, metrics: Mapping[str, Any], datasets: Mapping[str, Dataset], *,
                  split: str, dataset: str, builtin: bool, kind_entries: bool = True,
                  protocol: Optional[str] = None, **context: Any) -> Dict[str, Any]:
    """One task's evaluation as a results entry.

    Args:
        spec: the evaluated task's spec (its kind decides the extra entries, e.g. the confusion matrix).
        task: the task (its note on the evaluation protocol).
        metrics: the meter's output.
        datasets: the evaluated split's dataset under ``split``, and any other split whose skipped samples the
            record reports (training: ``train``).
        split, dataset, builtin: the evaluated split, where its data came from (:func:`describe_dataset`) and
            whether it is the built-in synthetic set.
        kind_entries: include the kind's entries beside the metrics (a 1000-class confusion matrix of a released
            ImageNet model is left out).
        protocol: the ``eval.protocol`` that ran (``None``: the task's standard one); the record's
            ``eval_protocol`` text says which (:meth:`~unimodal.tasks.Task.describe_protocol`).
        context: entries of the caller placed after the metrics (checkpoint, model, best epoch's validation ...).
    """
    scalars, extra = spec.task_kind.split_results(dict(metrics))
    reports = {name: getattr(ds, 'skip_report', None) for name, ds in datasets.items()}
    record: Dict[str, Any] = {
        'task': spec.name, 'dataset': dataset, 'builtin_data': builtin, 'split': split,
        'num_samples': scalars['num_samples'], 'metrics': scalars, **context,
        'eval_protocol': task.describe_protocol(protocol, datasets[split]),
        'skip_report': {name: r.as_dict() if r is not None else None for name, r in reports.items()},
    }
    if kind_entries:
        record.update(extra)
    return record
