"""The results record of one evaluated task: the same entries after training (``results.json``) and from
``unimodal eval`` (its JSON)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from torch.utils.data import Dataset

from ..tasks.base import Task
from .distributed import all_gather_objects
from ..tasks.spec import TaskSpec

__all__ = ['describe_dataset', 'result_record', 'skip_summaries']


def describe_dataset(root: Optional[Path], builtin: bool, task_name: str) -> str:
    """Where the evaluated data came from, in words."""
    if builtin:
        return f'built-in synthetic {task_name} data' + (f' ({root})' if root else '')
    return str(root)


def skip_summaries(datasets: Mapping[str, Dataset], task_name: str,
                   report_dir: Optional[Path] = None) -> Dict[str, Optional[Dict[str, Any]]]:
    """The compact skip report of each split (every rank's skips merged; call on every rank).

    With ``report_dir`` (rank 0's run directory), a split that skipped samples gets its full list in
    ``report_dir/skipped_<task>_<split>.jsonl`` and one log line; the summary names that file.
    """
    out: Dict[str, Optional[Dict[str, Any]]] = {}
    for split, ds in datasets.items():
        report = getattr(ds, 'skip_report', None)
        if report is None:
            out[split] = None
            continue
        for entries in all_gather_objects(report.entries()):
            report.merge(entries)
        if report.count and report_dir is not None:
            report.write(Path(report_dir) / f'skipped_{task_name}_{split}.jsonl')
            report.log_summary()
        out[split] = report.as_dict()
    return out


def result_record(spec: TaskSpec, task: Task, metrics: Mapping[str, Any], datasets: Mapping[str, Dataset], *,
                  split: str, dataset: str, builtin: bool, kind_entries: bool = True,
                  protocol: Optional[str] = None, report_dir: Optional[Path] = None,
                  **context: Any) -> Dict[str, Any]:
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
        report_dir: where the full lists of skipped samples go (see :func:`skip_summaries`); ``None``: not written.
        context: entries of the caller placed after the metrics (checkpoint, model, best epoch's validation ...).

    Every rank calls it (the skip reports are merged across ranks).
    """
    scalars, extra = spec.task_kind.split_results(dict(metrics))
    record: Dict[str, Any] = {
        'task': spec.name, 'dataset': dataset, 'builtin_data': builtin, 'split': split,
        'num_samples': scalars['num_samples'], 'metrics': scalars, **context,
        'eval_protocol': task.describe_protocol(protocol, datasets[split]),
        'skip_report': skip_summaries(datasets, spec.name, report_dir),
    }
    if kind_entries:
        record.update(extra)
    return record
