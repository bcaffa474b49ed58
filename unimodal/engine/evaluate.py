"""Evaluation: exact across ranks, for one task of a (joint) model, from a run checkpoint or a released .pth."""
from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..config import ConfigError, merge_config, task_config, validate_config
from .build import (build_model, build_task_datasets, data_root, eval_loader, resolve_task, absolute_adapter_spec)
from .checkpoint import is_engine_checkpoint, load_checkpoint
from .distributed import DistInfo
from .metrics import create_meter
from .mixup import smooth_one_hot

_logger = logging.getLogger(__name__)

__all__ = ['Progress', 'evaluate', 'eval_loss_sum', 'autocast', 'evaluate_checkpoint', 'describe_dataset',
           'eval_weights', 'split_task_state']

Progress = Callable[..., Iterable]


def _no_progress(iterable: Iterable, desc: str = '', total: Optional[int] = None) -> Iterable:
    return iterable


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on GPU; a no-op on CPU or with ``amp: none``."""
    if amp == 'none' or device.type != 'cuda':
        return contextlib.nullcontext()
    return torch.autocast(device_type='cuda', dtype=torch.bfloat16 if amp == 'bf16' else torch.float16)


def eval_loss_sum(loss: str, out: torch.Tensor, y: torch.Tensor) -> float:
    """Per-sample loss summed over the batch (no smoothing or mixing: comparable across runs)."""
    out = out.float()
    if loss == 'ce':
        return float(F.cross_entropy(out, y.long(), reduction='sum'))
    if loss == 'bce':
        target = smooth_one_hot(y, out.shape[-1])
        return float(F.binary_cross_entropy_with_logits(out, target, reduction='none').mean(-1).sum())
    err = (out - y.float()) ** 2
    err = torch.where(torch.isfinite(err), err, torch.zeros_like(err))
    return float(err.flatten(1).mean(1).sum())


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, spec: Mapping[str, Any], device: torch.device,
             amp: str = 'none', progress: Optional[Progress] = None, desc: str = 'eval',
             keep_example: bool = False) -> Tuple[Dict[str, Any], Optional[Dict[str, torch.Tensor]]]:
    """Metrics of ``model`` (a task model) over ``loader`` reduced over every rank.

    Every rank must call this (the metric state is all-reduced). Returns the metrics and, with
    ``keep_example``, the first batch's inputs/targets/predictions (forecast plots).
    """
    progress = progress or _no_progress
    kind = spec['kind']
    meter = create_meter(kind, spec['metric_info'], num_classes=spec['head_kwargs'].get('num_classes'),
                         horizon=spec['head_kwargs'].get('horizon'))
    was_training = model.training
    model.eval()
    example = None
    try:
        for x, y in progress(loader, desc=desc, total=len(loader)):
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with autocast(device, amp):
                out = model(x)
            out = out.float()
            meter.update(out, y, eval_loss_sum(spec['loss'], out, y), x=x if kind == 'forecast' else None)
            if keep_example and example is None:
                example = {'x': x[:4].float().cpu(), 'y': y[:4].cpu(), 'pred': out[:4].cpu()}
    finally:
        model.train(was_training)
    meter.reduce()
    return meter.compute(), example


def describe_dataset(root: Optional[Path], builtin: bool, task_name: str) -> str:
    if builtin:
        return f'built-in synthetic {task_name} data' + (f' ({root})' if root else '')
    return str(root)


def eval_weights(ckpt: Mapping[str, Any]) -> Tuple[Dict[str, torch.Tensor], str]:
    """The weights a checkpoint is evaluated with: EMA when the run kept one."""
    if ckpt.get('model_ema') is not None:
        return ckpt['model_ema'], 'model_ema'
    return ckpt['model'], 'model'


def split_task_state(state: Mapping[str, torch.Tensor], name: str) -> Dict[str, torch.Tensor]:
    """The shared trunk plus one task's adapter and head out of a (joint) model state dict."""
    keep = ('trunk.', f'adapters.{name}.', f'heads.{name}.')
    return {k: v for k, v in state.items() if k.startswith(keep)}


def _variant_from_filename(path: Path) -> Optional[str]:
    m = re.match(r'(unireplknet_[a-z]+)_', path.name)
    return m.group(1) if m else None


def evaluate_checkpoint(checkpoint: Path, task_name: Optional[str], *, data: Optional[str] = None,
                        split: Optional[str] = None, overrides: Optional[Mapping[str, Any]] = None,
                        dist_info: Optional[DistInfo] = None, progress: Optional[Progress] = None,
                        adapter_class: Optional[str] = None, variant: Optional[str] = None) -> Dict[str, Any]:
    """Evaluate one task of a run checkpoint (or a released ImageNet ``.pth`` with ``task_name='image'``).

    Args:
        checkpoint: ``best.pt``/``last.pt`` of a run (joint or single), a ``reparam`` output, or a released file.
        task_name: the task to evaluate (may be omitted for single-task checkpoints).
        data: data root (default: the one the run used; built-in data when it used built-in data).
        split: split to evaluate (default ``eval.split`` of the run, usually ``test``).
        overrides: config overrides (e.g. ``{'eval': {'batch_size': 64}, 'train': {'device': 'cpu'}}``).
        adapter_class: replaces the stored plug-in adapter path (if the file moved).
        variant: trunk variant for a released file whose name does not say it.

    Returns:
        ``{"task", "dataset", "split", "num_samples", "metrics", "checkpoint", "model", ...}``.
    """
    from .distributed import DistInfo as _DI, resolve_device
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    if not is_engine_checkpoint(ckpt):
        if task_name == 'image':
            return _evaluate_released_image(checkpoint, ckpt, data=data, split=split or 'val', overrides=overrides,
                                            dist_info=dist_info, progress=progress, variant=variant)
        raise ConfigError(f'{checkpoint} is not a unimodal run checkpoint (no "format: {"unimodal-run"}" entry); '
                          f'released ImageNet .pth files are evaluated with --task image')
    tasks = ckpt['tasks']
    if task_name is None:
        if len(tasks) != 1:
            raise ConfigError(f'{checkpoint} holds the tasks {", ".join(tasks)}: choose one with --task')
        task_name = next(iter(tasks))
    if task_name not in tasks:
        raise ConfigError(f'{checkpoint} was trained for task(s) {", ".join(tasks)}, not {task_name!r}')
    spec = dict(tasks[task_name])
    if adapter_class:
        spec['adapter'] = absolute_adapter_spec(adapter_class)
    cfg = task_config(ckpt['config'], task_name)
    cfg = merge_config(cfg, overrides or {}, 'eval options')
    if data is not None:
        cfg['data']['root'] = str(data)
    validate_config({**cfg, 'tasks': {}})
    split = split or cfg['eval']['split']
    dist_info = dist_info or _DI(device=resolve_device(cfg['train']['device']))
    task = resolve_task(None, spec['adapter']) if spec.get('plugin') else resolve_task(task_name)
    root, builtin = data_root(task, cfg, dist_info)
    sets = build_task_datasets(task, cfg, root, splits=[split])
    ds = sets[split]
    classes = getattr(ds, 'classes', None)
    if spec['classes'] is not None and classes is not None and list(classes) != list(spec['classes']):
        raise ConfigError(f'the {split} data at {root} has classes {list(classes)[:8]}... but the checkpoint was '
                          f'trained on {list(spec["classes"])[:8]}... ({len(spec["classes"])} classes)')
    spec['metric_info'] = {**spec['metric_info'], **task.metric_info(ds)}
    meta = ckpt['model_meta']
    model = build_model({task_name: spec}, {**cfg['model'], **meta, 'freeze_trunk': False},
                        deploy=bool(meta.get('deploy')))
    state, which = eval_weights(ckpt)
    model.load_state_dict(split_task_state(state, task_name), strict=True)
    model.to(dist_info.device)
    loader = eval_loader(ds, cfg['eval']['batch_size'] or cfg['train']['batch_size'], dist_info,
                         int(cfg['data']['num_workers']))
    start = time.perf_counter()
    metrics, _ = evaluate(model.task_model(task_name), loader, spec, dist_info.device, cfg['train']['amp'],
                          progress=progress, desc=f'eval {task_name}/{split}')
    report = getattr(ds, 'skip_report', None)
    cm = metrics.pop('confusion_matrix', None)
    class_names = metrics.pop('classes', None)
    out = {
        'task': task_name, 'dataset': describe_dataset(root, builtin, task_name), 'split': split,
        'num_samples': metrics['num_samples'], 'metrics': metrics, 'checkpoint': str(checkpoint),
        'model': {'variant': meta['variant'], 'deploy': bool(meta.get('deploy')), 'weights': which,
                  'epoch': ckpt.get('epoch')},
        'eval_protocol': task.eval_views(ds), 'skip_report': report.as_dict() if report is not None else None,
        'eval_time_s': round(time.perf_counter() - start, 3),
    }
    if cm is not None:
        out['confusion_matrix'] = cm
        out['classes'] = class_names
    return out


def _evaluate_released_image(path: Path, ckpt: Any, *, data: Optional[str], split: str,
                             overrides: Optional[Mapping[str, Any]], dist_info: Optional[DistInfo],
                             progress: Optional[Progress], variant: Optional[str]) -> Dict[str, Any]:
    """A released UniRepLKNet ImageNet classifier on an ImageFolder (the published top-1 protocol)."""
    from ..config import default_config
    from ..models.task_model import create_model
    from ..tasks.base import get_task
    from ..tasks.image import load_released_classifier
    from .distributed import DistInfo as _DI, resolve_device
    task = get_task('image')
    variant = variant or _variant_from_filename(path)
    if variant is None:
        raise ConfigError(f'cannot tell the model variant from the file name {path.name}: give --model '
                          f'(e.g. unireplknet_a)')
    cfg = merge_config(merge_config(default_config(), task.default_config(), 'image task'), overrides or {}, 'eval options')
    if data is None:
        raise ConfigError('evaluating a released ImageNet checkpoint needs --data pointing at an ImageFolder '
                          '(DIR/val/<wnid>/*.JPEG)')
    cfg['data']['root'] = str(data)
    dist_info = dist_info or _DI(device=resolve_device(cfg['train']['device']))
    root, builtin = data_root(task, cfg, dist_info)
    ds = build_task_datasets(task, cfg, root, splits=[split])[split]
    sd = ckpt.get('model', ckpt) if isinstance(ckpt, dict) else ckpt
    head_w = sd.get('head.weight') if isinstance(sd, dict) else None
    num_classes = int(head_w.shape[0]) if head_w is not None else len(ds.classes)
    model = create_model('image', variant=variant, num_classes=num_classes, **(cfg['model'].get('adapter') or {}))
    load_released_classifier(model, ckpt)
    model.to(dist_info.device)
    spec = {'kind': 'classification', 'head_kwargs': {'num_classes': num_classes}, 'loss': 'ce',
            'metric_info': {'classes': list(ds.classes) if len(ds.classes) == num_classes else None}}
    if len(ds.classes) != num_classes:
        _logger.warning('the ImageFolder has %d classes, the checkpoint %d: labels are taken as indices into the '
                        'sorted folder names', len(ds.classes), num_classes)
        spec['metric_info'] = {}
    loader = eval_loader(ds, cfg['eval']['batch_size'] or cfg['train']['batch_size'], dist_info,
                         int(cfg['data']['num_workers']))
    metrics, _ = evaluate(model, loader, spec, dist_info.device, cfg['train']['amp'], progress=progress,
                          desc=f'eval image/{split}')
    metrics.pop('confusion_matrix', None)
    metrics.pop('classes', None)
    return {'task': 'image', 'dataset': str(root), 'split': split, 'num_samples': metrics['num_samples'],
            'metrics': metrics, 'checkpoint': str(path), 'model': {'variant': variant, 'released': True},
            'eval_protocol': task.eval_views(ds)}
