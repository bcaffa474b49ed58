"""Evaluation: exact across ranks, for one task of a (joint) model, from a run checkpoint or a released .pth."""
from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config.errors import ConfigError
from ..config.schema import RunConfig
from ..tasks.base import Predictor
from ..tasks.plugin import absolute_adapter_spec, resolve_task
from ..tasks.spec import TaskSpec
from .build import build_task_datasets, data_root, eval_loader
from .checkpoint import RunCheckpoint
from .distributed import DistInfo, resolve_device
from ..data.inputs import primary, to_device
from .results import describe_dataset, result_record

_logger = logging.getLogger(__name__)

__all__ = ['Progress', 'no_progress', 'autocast', 'evaluate', 'evaluate_dataset', 'evaluate_checkpoint',
           'evaluate_released_image']

Progress = Callable[..., Iterable]


def no_progress(iterable: Iterable, desc: str = '', total: Optional[int] = None) -> Iterable:
    """The progress hook that shows nothing."""
    return iterable


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on GPU; a no-op on CPU or with ``amp: none``."""
    if amp == 'none' or device.type != 'cuda':
        return contextlib.nullcontext()
    return torch.autocast(device_type='cuda', dtype=torch.bfloat16 if amp == 'bf16' else torch.float16)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, spec: TaskSpec, device: torch.device,
             amp: str = 'none', progress: Optional[Progress] = None, desc: str = 'eval',
             keep_example: bool = False, predict: Optional[Predictor] = None,
             ) -> Tuple[Dict[str, Any], Optional[Dict[str, torch.Tensor]]]:
    """Metrics of ``model`` (a task model) over ``loader`` reduced over every rank.

    Every rank must call this (the metric state is all-reduced). Returns the metrics and, with
    ``keep_example``, the first batch's inputs/targets/predictions (forecast plots). ``predict``: the task's
    evaluation protocol (:meth:`~unimodal.tasks.Task.eval_predictor`; default one ``model(x)`` per sample).
    """
    progress = progress or no_progress
    kind = spec.task_kind
    meter = kind.create_meter(spec)
    was_training = model.training
    model.eval()
    example = None
    try:
        for x, y in progress(loader, desc=desc, total=len(loader)):
            x = to_device(x, device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with autocast(device, amp):
                out, y = (model(x), y) if predict is None else predict(model, x, y)
            out = out.float()
            meter.update(out, y, kind.eval_loss_sum(spec.loss, out, y), x=kind.meter_input(primary(x)))
            if keep_example and example is None:
                example = {'x': primary(x)[:4].float().cpu(), 'y': y[:4].cpu(), 'pred': out[:4].cpu()}
    finally:
        model.train(was_training)
    meter.reduce()
    return meter.compute(), example


def evaluate_dataset(model: nn.Module, ds: Dataset, spec: TaskSpec, batch_size: int, num_workers: int,
                     dist_info: DistInfo, amp: str = 'none', progress: Optional[Progress] = None, desc: str = 'eval',
                     keep_example: bool = False, predict: Optional[Predictor] = None,
                     ) -> Tuple[Dict[str, Any], Optional[Dict[str, torch.Tensor]]]:
    """:func:`evaluate` over a whole split: every sample exactly once across ranks."""
    loader = eval_loader(ds, batch_size, dist_info, num_workers)
    return evaluate(model, loader, spec, dist_info.device, amp, progress=progress, desc=desc,
                    keep_example=keep_example, predict=predict)


def evaluate_checkpoint(ckpt: RunCheckpoint, cfg: RunConfig, task_name: Optional[str] = None, *,
                        split: Optional[str] = None, dist_info: Optional[DistInfo] = None,
                        progress: Optional[Progress] = None, adapter_class: Optional[str] = None) -> Dict[str, Any]:
    """Evaluate one task of a run checkpoint.

    Args:
        ckpt: from :func:`~unimodal.engine.checkpoint.load_run_checkpoint` (``best.pt``/``last.pt``, joint or
            single, or a ``reparam`` output).
        cfg: the run's config with the evaluation's changes:
            ``resolve_run_config(cli_overrides=..., base=ckpt.config)`` (data root, batch size, device, ...).
        task_name: the task to evaluate (may be omitted for single-task checkpoints).
        split: split to evaluate (default ``eval.split`` of ``cfg``, usually ``test``).
        adapter_class: replaces the stored plug-in adapter path (if the file moved).

    Returns:
        The results record (:func:`~unimodal.engine.results.result_record`) with the checkpoint, the model and the
        evaluation time.
    """
    name = ckpt.task_name(task_name)
    spec = ckpt.specs[name]
    if adapter_class:
        spec = spec.replace(adapter=absolute_adapter_spec(adapter_class))
    settings = cfg.task_settings(name)
    split = split or cfg.eval.split
    dist_info = dist_info or DistInfo(device=resolve_device(cfg.train.device))
    task = resolve_task(None, spec.adapter) if spec.plugin else resolve_task(name)
    root, builtin = data_root(task, settings.data, dist_info)
    ds = build_task_datasets(task, settings.data, root, splits=[split])[split]
    classes = getattr(ds, 'classes', None)
    if spec.classes is not None and classes is not None and list(classes) != list(spec.classes):
        raise ConfigError(f'the {split} data at {root} has classes {list(classes)[:8]}... but the checkpoint was '
                          f'trained on {list(spec.classes)[:8]}... ({len(spec.classes)} classes)')
    spec = spec.with_metric_info(task.metric_info(ds))
    model, which = ckpt.build_model([name], specs={name: spec})
    model.to(dist_info.device)
    start = time.perf_counter()
    protocol = settings.eval.protocol
    metrics, _ = evaluate_dataset(model.task_model(name), ds, spec, settings.eval_batch_size,
                                  settings.data.num_workers, dist_info, cfg.train.amp, progress=progress,
                                  desc=f'eval {name}/{split}', predict=task.eval_predictor(protocol))
    return result_record(spec, task, metrics, {split: ds}, split=split, dataset=describe_dataset(root, builtin, name),
                         builtin=builtin, protocol=protocol, checkpoint=str(ckpt.path),
                         model={'variant': ckpt.meta['variant'], 'deploy': ckpt.deploy, 'weights': which,
                                'epoch': ckpt.raw.get('epoch')},
                         eval_time_s=round(time.perf_counter() - start, 3))


def _variant_from_filename(path: Path) -> Optional[str]:
    m = re.match(r'(unireplknet_[a-z]+)_', path.name)
    return m.group(1) if m else None


def evaluate_released_image(path: Path, state: Any, cfg: RunConfig, *, split: Optional[str] = None,
                            dist_info: Optional[DistInfo] = None, progress: Optional[Progress] = None,
                            variant: Optional[str] = None) -> Dict[str, Any]:
    """A released UniRepLKNet ImageNet classifier on an ImageFolder (the published top-1 protocol).

    Args:
        path: the released file (its name tells the variant unless ``variant`` is given).
        state: its contents (:func:`~unimodal.engine.checkpoint.load_checkpoint`).
        cfg: the image task's config (``resolve_run_config(cli_overrides={'task': 'image', 'data': {'root': ...}})``).
    """
    from ..models.task_model import create_model
    from ..tasks.image import load_released_classifier
    task = resolve_task('image')
    variant = variant or _variant_from_filename(path)
    if variant is None:
        raise ConfigError(f'cannot tell the model variant from the file name {path.name}: give --model '
                          f'(e.g. unireplknet_a)')
    if cfg.data.root is None:
        raise ConfigError('evaluating a released ImageNet checkpoint needs --data pointing at an ImageFolder '
                          '(DIR/val/<wnid>/*.JPEG)')
    split = split or 'val'
    dist_info = dist_info or DistInfo(device=resolve_device(cfg.train.device))
    root, _ = data_root(task, cfg.data, dist_info)
    ds = build_task_datasets(task, cfg.data, root, splits=[split])[split]
    sd = state.get('model', state) if isinstance(state, dict) else state
    head_w = sd.get('head.weight') if isinstance(sd, dict) else None
    num_classes = int(head_w.shape[0]) if head_w is not None else len(ds.classes)
    model = create_model('image', variant=variant, num_classes=num_classes, **cfg.model.adapter)
    load_released_classifier(model, state)
    model.to(dist_info.device)
    info: Dict[str, Any] = {'classes': list(ds.classes) if len(ds.classes) == num_classes else None}
    if len(ds.classes) != num_classes:
        _logger.warning('the ImageFolder has %d classes, the checkpoint %d: labels are taken as indices into the '
                        'sorted folder names', len(ds.classes), num_classes)
        info = {}
    spec = TaskSpec(name='image', kind=task.kind, adapter='image', head_kwargs={'num_classes': num_classes},
                    metric_info=info, loss='ce')
    metrics, _ = evaluate_dataset(model, ds, spec, cfg.eval.batch_size or cfg.train.batch_size, cfg.data.num_workers,
                                  dist_info, cfg.train.amp, progress=progress, desc=f'eval image/{split}')
    return result_record(spec, task, metrics, {split: ds}, split=split, dataset=str(root), builtin=False,
                         kind_entries=False, checkpoint=str(path), model={'variant': variant, 'released': True})
