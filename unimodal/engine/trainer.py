"""The training loop: single- or multi-task, single process or DDP under ``torchrun``.

A run trains one :class:`~unimodal.engine.multitask.MultiTaskModel` (one shared trunk, an adapter and head per
task). Each step takes one batch of one task; the tasks' batches are interleaved round-robin or by weighted
sampling (the same order on every rank). Per task: loss (``ce``/``bce``/``mse``), label smoothing, mixup/cutmix,
loss weight. Shared: optimiser, per-step schedule with warm-up, AMP, gradient accumulation and clipping, EMA.

The run directory (rank 0 writes it) holds ``config.yaml``, ``metrics.jsonl`` (one record per epoch),
``last.pt``/``best.pt`` (atomic), ``results.json`` (test metrics of ``best.pt``) and PNG plots.
"""
from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ..config import (DEFAULTS, ConfigError, dump_config, joint_recipe, merge_config, resolve_config, task_config,
                      task_names, validate_config, _restrict)
from ..tasks.base import Task
from .build import (build_model, build_task_datasets, data_root, eval_loader, make_task_spec, resolve_task,
                    train_loader)
from .checkpoint import (CHECKPOINT_FORMAT, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state,
                         to_plain, is_engine_checkpoint)
from .distributed import (DistInfo, all_reduce_sum, barrier, broadcast_object, init_distributed)
from .evaluate import Progress, autocast, describe_dataset, evaluate, eval_weights, _no_progress
from .metrics import selection_score
from .mixup import MixupCutmix, smooth_one_hot, soft_target_cross_entropy
from .multitask import MultiTaskModel
from .optim import create_ema, create_optimizer, create_schedule

_logger = logging.getLogger(__name__)

__all__ = ['resolve_run_config', 'train', 'find_resume_checkpoint', 'TaskRun', 'seed_everything']


# ------------------------------------------------------------------------------------------------ config

def resolve_run_config(file_cfg: Optional[Mapping[str, Any]] = None, cli_overrides: Optional[Mapping[str, Any]] = None,
                       set_overrides: Optional[Mapping[str, Any]] = None, *, base: Optional[Mapping[str, Any]] = None,
                       file_origin: str = 'config file') -> Dict[str, Any]:
    """Resolve a run's config: defaults <- task default_config() <- file <- CLI flags <- --set.

    Joint runs get every task's per-task keys materialised under ``tasks.<name>`` so the saved config is
    self-contained. ``base`` (a resumed run's config) replaces the defaults and task layers.
    """
    layers = [layer or {} for layer in (file_cfg, cli_overrides, set_overrides)]
    task_value = None
    for layer in [base or {}, *layers]:
        if layer.get('task') is not None:
            task_value = layer['task']
    adapter_class = None
    for layer in [base or {}, *layers]:
        adapter_class = (layer.get('model') or {}).get('adapter_class', adapter_class)
    names = task_names(task_value)
    if len(names) != len(set(names)):
        raise ConfigError(f'task list {names} names a task twice')
    if base is not None:
        cfg = dict(base)
        for origin, layer in zip((file_origin, 'command-line flags', '--set'), layers):
            cfg = merge_config(cfg, layer, origin)
        validate_config(cfg)
        return cfg
    if len(names) <= 1:
        task = resolve_task(names[0] if names else None, adapter_class)
        defaults = _without_adapter_options(task.default_config()) if names and adapter_class else task.default_config()
        cfg = resolve_config(defaults, *layers, file_origin=file_origin)
        if not names:
            cfg['task'] = None
        return cfg
    shared, notes = joint_recipe({name: resolve_task(name).default_config() for name in names})
    user_train = set().union(*((layer.get('train') or {}).keys() for layer in layers))
    for key, note in notes.items():
        if key not in user_train:
            _logger.info('joint run, train.%s: %s (set train.%s to choose)', key, note, key)
    cfg = resolve_config(shared, *layers, file_origin=file_origin)
    cfg['task'] = names
    tasks_section = {}
    for name in names:
        task = resolve_task(name)
        defaults = task.default_config()
        if _restrict(task_config(cfg, name, {}, user_layers=layers)).get('model', {}).get('adapter_class'):
            defaults = _without_adapter_options(defaults)
        per = task_config(cfg, name, defaults, user_layers=layers)
        tasks_section[name] = _restrict(per)
    cfg['tasks'] = tasks_section
    validate_config(cfg)
    return cfg


def _without_adapter_options(defaults: Mapping[str, Any]) -> Dict[str, Any]:
    """A task's defaults minus its adapter options: they belong to the task's own adapter, not to a replacement
    given with ``--adapter`` (whose options come from the user's ``model.adapter``)."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in defaults.items()}
    if isinstance(out.get('model'), dict):
        out['model'].pop('adapter', None)
    return out


def run_task_names(cfg: Mapping[str, Any]) -> List[str]:
    names = task_names(cfg.get('task'))
    return names


# ------------------------------------------------------------------------------------------------ helpers

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _set_deterministic(on: bool) -> None:
    torch.backends.cudnn.benchmark = not on
    torch.backends.cudnn.deterministic = on
    torch.use_deterministic_algorithms(on, warn_only=True)


def find_resume_checkpoint(out: Optional[Path], task_label: str, runs_dir: Path = Path('runs')) -> Optional[Path]:
    """``--resume auto``: ``out/last.pt`` if ``out`` is given, else the newest ``runs/<task>-*/last.pt``."""
    if out is not None:
        p = Path(out) / 'last.pt'
        return p if p.is_file() else None
    candidates = sorted(runs_dir.glob(f'{task_label}-*/last.pt'), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


@dataclass
class TaskRun:
    """One task of a run: its config, data, loaders and spec."""
    name: str
    task: Task
    cfg: Dict[str, Any]
    root: Optional[Path]
    builtin: bool
    sets: Dict[str, Dataset]
    spec: Dict[str, Any]
    train_loader: DataLoader = None
    val_loader: Optional[DataLoader] = None
    mixer: Optional[MixupCutmix] = None
    batches: int = 0
    restarts: int = 0
    iterator: Optional[Iterator] = None
    loss_weight: float = 1.0
    sample_weight: float = 1.0


def _task_label(names: Sequence[str]) -> str:
    return '+'.join(names)


def _loss(spec: Mapping[str, Any], cfg: Mapping[str, Any], out: torch.Tensor, y: torch.Tensor,
          soft: Optional[torch.Tensor]) -> torch.Tensor:
    kind = spec['loss']
    out = out.float()
    smoothing = float(cfg['train']['label_smoothing'])
    if kind == 'ce':
        if soft is not None:
            return soft_target_cross_entropy(out, soft)
        return F.cross_entropy(out, y.long(), label_smoothing=smoothing)
    if kind == 'bce':
        target = soft if soft is not None else smooth_one_hot(y, out.shape[-1], smoothing)
        return F.binary_cross_entropy_with_logits(out, target)
    y = y.float()
    mask = torch.isfinite(y)
    if not bool(mask.all()):
        return F.mse_loss(out[mask], y[mask])
    return F.mse_loss(out, y)


def _epoch_plan(runs: Sequence[TaskRun], cfg: Mapping[str, Any], epoch: int) -> List[str]:
    """The task of every step of an epoch (identical on every rank)."""
    if len(runs) == 1:
        return [runs[0].name] * runs[0].batches
    steps = cfg['joint']['steps_per_epoch'] or sum(r.batches for r in runs)
    if cfg['joint']['sampling'] == 'round_robin':
        return [runs[i % len(runs)].name for i in range(steps)]
    g = torch.Generator().manual_seed(int(cfg['train']['seed']) * 1_000_003 + epoch)
    weights = torch.tensor([r.sample_weight for r in runs], dtype=torch.float64)
    idx = torch.multinomial(weights, steps, replacement=True, generator=g)
    return [runs[i].name for i in idx.tolist()]


def _next_batch(run: TaskRun, epoch: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The next training batch of a task; a task whose loader ran out starts another pass (joint runs)."""
    if run.iterator is None:
        run.train_loader.sampler.set_epoch(epoch * 1000 + run.restarts)
        run.iterator = iter(run.train_loader)
    try:
        return next(run.iterator)
    except StopIteration:
        run.restarts += 1
        run.train_loader.sampler.set_epoch(epoch * 1000 + run.restarts)
        run.iterator = iter(run.train_loader)
        return next(run.iterator)


def _unwrap(model: nn.Module) -> MultiTaskModel:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f'.{dst.name}.copy.tmp')
    try:
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load_init_from(model: MultiTaskModel, path: str) -> None:
    """Initialise the shared trunk from another run's checkpoint (or a released-layout file)."""
    from ..models.unireplknet import load_checkpoint as load_trunk
    ckpt = load_checkpoint(Path(path))
    if is_engine_checkpoint(ckpt):
        state, _ = eval_weights(ckpt)
        trunk_sd = {k[len('trunk.'):]: v for k, v in state.items() if k.startswith('trunk.')}
        if ckpt['model_meta'].get('deploy'):
            raise ConfigError(f'--init-from {path}: a deploy (re-parameterized) checkpoint cannot initialise a '
                              f'training-form trunk; use the training checkpoint')
        src = f'{path} (trunk of task(s) {", ".join(ckpt["tasks"])})'
    else:
        trunk_sd, src = ckpt, path
    try:
        report = load_trunk(model.trunk, trunk_sd)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ConfigError(f'--init-from {path}: the trunk does not fit this model ({str(e).splitlines()[0]})') from None
    _logger.info('initialised the trunk from %s%s', src,
                 f' (stem adapted {report["adapted_in_chans"][0]}->{report["adapted_in_chans"][1]} channels)'
                 if report.get('adapted_in_chans') else '')


# ------------------------------------------------------------------------------------------------ the run

def train(cfg: Mapping[str, Any], *, out_dir: Optional[Path] = None, resume: Optional[Path] = None,
          progress: Optional[Progress] = None, stop_after_epochs: Optional[int] = None,
          dist_info: Optional[DistInfo] = None) -> Dict[str, Any]:
    """Train (or resume) a run and evaluate its best checkpoint; return the results dict (also in results.json).

    Args:
        cfg: a resolved config (:func:`resolve_run_config`).
        out_dir: run directory (default ``runs/<task>-<timestamp>``).
        resume: a ``last.pt`` to continue from (its config is ``cfg``'s base; see the CLI).
        progress: wraps iterables for progress display, ``progress(iterable, desc=..., total=...)``.
        stop_after_epochs: stop (like a pre-emption) after this many epochs of this invocation, before the
            final test evaluation; ``last.pt`` allows resuming.
        dist_info: from :func:`init_distributed` (default: read the ``torchrun`` environment).
    """
    return _Run(dict(cfg), out_dir, resume, progress or _no_progress, stop_after_epochs, dist_info).run()


class _Run:
    def __init__(self, cfg: Dict[str, Any], out_dir: Optional[Path], resume: Optional[Path], progress: Progress,
                 stop_after: Optional[int], dist_info: Optional[DistInfo]) -> None:
        self.cfg = cfg
        self.progress = progress
        self.stop_after = stop_after
        self.resume = Path(resume) if resume else None
        self.dist = dist_info or init_distributed(cfg['train']['device'])
        self.device = self.dist.device
        self.names = run_task_names(cfg)
        self.label = _task_label(self.names) if self.names else None
        stamp = datetime.now().strftime('%Y%m%d-%H%M%S')
        default_out = None if out_dir is not None else f'runs/{{label}}-{stamp}'
        out = broadcast_object(str(out_dir) if out_dir is not None else default_out)
        self.out_template = out
        self.out: Optional[Path] = None

    # -------------------------------------------------------------------------------------------- set-up
    def _setup_tasks(self) -> List[TaskRun]:
        cfg = self.cfg
        tasks: List[Tuple[str, Task]] = []
        if self.names:
            for name in self.names:
                tasks.append((name, resolve_task(name)))
        else:
            task = resolve_task(None, cfg['model']['adapter_class'])
            tasks.append((task.name, task))
            self.names = [task.name]
            self.label = task.name
        runs = []
        for name, task in tasks:
            tcfg = task_config(cfg, name) if len(tasks) > 1 else cfg
            root, builtin = data_root(task, tcfg, self.dist)
            if builtin and self.dist.is_main:
                msg = (f'task {name}: no --data given, using the BUILT-IN SYNTHETIC data set'
                       f'{" at " + str(root) if root else ""}. To train on the real data set, pass --data DIR. '
                       f'{task.real_data}')
                _logger.warning(msg)
            sets = build_task_datasets(task, tcfg, root, splits=['train', 'val', 'test'])
            spec = make_task_spec(task, tcfg, sets)
            runs.append(TaskRun(name=name, task=task, cfg=tcfg, root=root, builtin=builtin, sets=sets, spec=spec,
                                loss_weight=float(tcfg['train']['loss_weight'])))
        return runs

    def _setup_loaders(self, runs: List[TaskRun]) -> None:
        seed = int(self.cfg['train']['seed'])
        for run in runs:
            t = run.cfg['train']
            run.train_loader = train_loader(run.sets['train'], int(t['batch_size']), self.dist, seed,
                                            int(run.cfg['data']['num_workers']))
            eval_bs = run.cfg['eval']['batch_size'] or int(t['batch_size'])
            run.val_loader = eval_loader(run.sets['val'], eval_bs, self.dist, int(run.cfg['data']['num_workers']))
            run.batches = len(run.train_loader)
            if t['max_steps_per_epoch']:
                run.batches = min(run.batches, int(t['max_steps_per_epoch']))
            run.sample_weight = float(t['sample_weight']) if t['sample_weight'] is not None else float(run.batches)
            if run.spec['kind'] == 'classification' and (t['mixup'] > 0 or t['cutmix'] > 0):
                run.mixer = MixupCutmix(run.spec['head_kwargs']['num_classes'], mixup_alpha=float(t['mixup']),
                                        cutmix_alpha=float(t['cutmix']), prob=float(t['mixup_prob']),
                                        switch_prob=float(t['mixup_switch_prob']),
                                        label_smoothing=float(t['label_smoothing']))

    def _model_meta(self, model: MultiTaskModel, deploy: bool = False) -> Dict[str, Any]:
        m = self.cfg['model']
        return {'variant': m['variant'], 'trunk': dict(m.get('trunk') or {}), 'trunk_chunk': m['trunk_chunk'],
                'trunk_chans': int(next(iter(model.adapters.values())).out_chans), 'drop_rate': m['drop_rate'],
                'drop_path_rate': m['drop_path_rate'], 'deploy': deploy}

    # -------------------------------------------------------------------------------------------- main
    def run(self) -> Dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        tcfg = cfg['train']
        _set_deterministic(bool(tcfg['deterministic']))
        seed_everything(int(tcfg['seed']))
        runs = self._setup_tasks()
        self.out = Path(self.out_template.replace('{label}', self.label))
        self._setup_loaders(runs)
        specs = {r.name: r.spec for r in runs}

        seed_everything(int(tcfg['seed']))  # identical initial weights on every rank and for every resume
        model = build_model(specs, cfg['model'], pretrained=cfg['model']['pretrained'])
        if cfg['model']['pretrained'] and self.dist.is_main:
            _logger.info('trunk initialised from pretrained weights: %s', cfg['model']['pretrained'])
        if cfg['model']['init_from'] and self.resume is None:
            _load_init_from(model, cfg['model']['init_from'])
        if tcfg['grad_checkpointing']:
            model.trunk.set_grad_checkpointing(True)
        model.to(self.device)
        if self.dist.distributed and tcfg['sync_bn']:
            if self.device.type == 'cuda':
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                _logger.warning('train.sync_bn needs GPUs (nccl); ignored on CPU')
        n_params = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        steps_per_epoch = max(1, math.ceil(len(_epoch_plan(runs, cfg, 0)) / int(tcfg['grad_accum'])))
        optimizer = create_optimizer(
            model, optimizer=tcfg['optimizer'], lr=tcfg['lr'], weight_decay=tcfg['weight_decay'], betas=tcfg['betas'],
            momentum=tcfg['momentum'], layer_decay=tcfg.get('layer_decay'))
        schedule = create_schedule(
            optimizer, schedule=tcfg['schedule'], epochs=tcfg['epochs'], steps_per_epoch=steps_per_epoch,
            warmup_epochs=tcfg['warmup_epochs'], min_lr=tcfg['min_lr'], step_size=tcfg['step_size'],
            gamma=tcfg['gamma'], step_start=tcfg['step_start'])
        amp = tcfg['amp'] if self.device.type == 'cuda' else 'none'
        if tcfg['amp'] != 'none' and amp == 'none':
            _logger.info('train.amp=%s ignored on %s (AMP is for GPUs)', tcfg['amp'], self.device)
        scaler = torch.amp.GradScaler('cuda') if amp == 'fp16' else None
        ema = create_ema(model, float(tcfg['ema_decay'])) if tcfg['ema'] else None

        start_epoch, step, best = 0, 0, {'epoch': None, 'score': None, 'metrics': None}
        if self.resume is not None:
            ckpt = load_checkpoint(self.resume)
            if not is_engine_checkpoint(ckpt):
                raise ConfigError(f'--resume {self.resume}: not a unimodal run checkpoint')
            if sorted(ckpt['tasks']) != sorted(specs):
                raise ConfigError(f'--resume {self.resume}: checkpoint holds task(s) {", ".join(ckpt["tasks"])}, '
                                  f'this run trains {", ".join(specs)}')
            model.load_state_dict(ckpt['model'])
            # the optimizer state carries each group's lr scale: a run cannot resume with other groups
            saved = ckpt.get('config') or {}
            for section, key in (('train', 'layer_decay'), ('model', 'freeze_trunk')):
                was = (saved.get(section) or {}).get(key, DEFAULTS[section][key])
                now = cfg[section].get(key)
                if was != now:
                    raise ConfigError(f'--resume {self.resume}: the run was trained with {section}.{key}={was!r}, '
                                      f'this run sets {now!r}; resume with the same value (or start a new run '
                                      f'with --init-from)')
            optimizer.load_state_dict(ckpt['optimizer'])
            schedule.load_state_dict(ckpt['scheduler'])
            if scaler is not None and ckpt.get('scaler'):
                scaler.load_state_dict(ckpt['scaler'])
            if ema is not None and ckpt.get('model_ema') is not None:
                ema.module.load_state_dict(ckpt['model_ema'])
            set_rng_state(ckpt.get('rng'))
            start_epoch, step, best = int(ckpt['epoch']), int(ckpt['step']), dict(ckpt['best'])
            if self.dist.is_main:
                _logger.info('resumed %s at epoch %d (step %d)', self.resume, start_epoch, step)
                self._truncate_log(start_epoch)

        if self.dist.is_main:  # only now: a run that fails to set up leaves no directory behind
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / 'config.yaml').write_text(dump_config(cfg))
        ddp_model = model
        if self.dist.distributed:
            ddp_model = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == 'cuda' else None,
                find_unused_parameters=len(runs) > 1)
        if self.dist.is_main:
            _logger.info('model %s: %.2fM parameters (%.2fM trainable), %d task(s): %s; %d process(es) on %s',
                         cfg['model']['variant'], n_params / 1e6, n_train / 1e6, len(runs), ', '.join(specs),
                         self.dist.world_size, self.device)

        epochs = int(tcfg['epochs'])
        epochs_done_here = 0
        for epoch in range(start_epoch, epochs):
            ep_start = time.perf_counter()
            # per-epoch reseeding: a resumed run draws exactly what the uninterrupted run drew
            seed_everything(int(tcfg['seed']) * 1000 + epoch * 16 + self.dist.rank)
            train_stats, step = self._train_epoch(ddp_model, model, runs, optimizer, schedule, scaler, ema,
                                                  epoch, step, amp)
            record: Dict[str, Any] = {'epoch': epoch + 1, 'step': step, 'lr': schedule.get_last_lr()[0],
                                      'train': train_stats}
            last_epoch = epoch + 1 == epochs
            if (epoch + 1) % int(tcfg['eval_every']) == 0 or last_epoch:
                eval_model = ema.module if ema is not None else model
                val = {}
                for r in runs:
                    metrics, _ = evaluate(eval_model.task_model(r.name), r.val_loader, r.spec, self.device, amp,
                                          progress=self.progress, desc=f'val {r.name}')
                    metrics.pop('confusion_matrix', None)
                    metrics.pop('classes', None)
                    val[r.name] = metrics
                record['val'] = val
                score = float(np.mean([selection_score(r.spec['kind'], val[r.name]) for r in runs]))
                record['score'] = score
                improved = best['score'] is None or score > best['score']
                if improved:
                    best = {'epoch': epoch + 1, 'score': score, 'metrics': val}
            else:
                improved = False
            record['time_s'] = round(time.perf_counter() - ep_start, 3)
            self._save(model, ema, optimizer, schedule, scaler, epoch + 1, step, best, specs, improved)
            if self.dist.is_main:
                with open(self.out / 'metrics.jsonl', 'a') as f:
                    f.write(json.dumps(to_plain(record)) + '\n')
                _logger.info('epoch %d/%d: %s', epoch + 1, epochs, _summary(record))
            epochs_done_here += 1
            if self.stop_after is not None and epochs_done_here >= self.stop_after and not last_epoch:
                _logger.info('stopping after %d epoch(s) as asked; resume with --resume %s', epochs_done_here,
                             self.out / 'last.pt')
                barrier()
                return {'stopped_at_epoch': epoch + 1, 'run_dir': str(self.out)}
        barrier()
        return self._finish(model, ema, runs, amp, best, t0, n_params)

    # -------------------------------------------------------------------------------------------- epoch
    def _train_epoch(self, ddp_model: nn.Module, model: MultiTaskModel, runs: List[TaskRun], optimizer, schedule,
                     scaler, ema, epoch: int, step: int, amp: str) -> Tuple[Dict[str, Any], int]:
        tcfg = self.cfg['train']
        accum = int(tcfg['grad_accum'])
        plan = _epoch_plan(runs, self.cfg, epoch)
        by_name = {r.name: r for r in runs}
        for r in runs:
            r.iterator, r.restarts = None, 0
        loss_sum = {r.name: torch.zeros((), dtype=torch.float64) for r in runs}
        loss_n = {r.name: torch.zeros((), dtype=torch.int64) for r in runs}
        ddp_model.train()
        model.train()
        optimizer.zero_grad(set_to_none=True)
        params = [p for p in model.parameters() if p.requires_grad]
        log_every = int(tcfg['log_every'])
        for i, name in enumerate(self.progress(plan, desc=f'epoch {epoch + 1}', total=len(plan))):
            run = by_name[name]
            x, y = _next_batch(run, epoch)
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            soft = None
            if run.mixer is not None:
                x, soft = run.mixer(x, y)
            boundary = (i + 1) % accum == 0 or i + 1 == len(plan)
            sync = nullcontext() if boundary or not isinstance(ddp_model, DistributedDataParallel) else ddp_model.no_sync()
            with sync:
                with autocast(self.device, amp):
                    out = ddp_model(x, task=name)
                loss = _loss(run.spec, run.cfg, out, y, soft)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f'loss of task {name} is {loss.item()} at epoch {epoch + 1}, step {i}: '
                                             f'lower train.lr or enable train.clip_grad')
                scaled = loss * run.loss_weight / accum
                if scaler is not None:
                    scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            loss_sum[name] += float(loss.detach())
            loss_n[name] += 1
            if boundary:
                if tcfg['clip_grad']:
                    if scaler is not None:
                        scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, float(tcfg['clip_grad']))
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                schedule.step()
                step += 1
                if ema is not None:
                    ema.update(model, step=step)
            if log_every and (i + 1) % log_every == 0 and self.dist.is_main:
                _logger.debug('epoch %d step %d/%d: %s loss %.4f', epoch + 1, i + 1, len(plan), name, loss.item())
        stats: Dict[str, Any] = {}
        total, count = 0., 0
        for r in runs:
            s, n = all_reduce_sum(loss_sum[r.name]), all_reduce_sum(loss_n[r.name])
            stats[r.name] = {'loss': float(s) / max(int(n), 1), 'steps': int(n) // self.dist.world_size}
            total += float(s)
            count += int(n)
        stats['loss'] = total / max(count, 1)
        return stats, step

    # -------------------------------------------------------------------------------------------- state
    def _checkpoint(self, model, ema, optimizer, schedule, scaler, epoch, step, best, specs) -> Dict[str, Any]:
        return {
            'format': CHECKPOINT_FORMAT, 'version': 1,
            'model': model.state_dict(),
            'model_ema': ema.module.state_dict() if ema is not None else None,
            'optimizer': optimizer.state_dict(), 'scheduler': schedule.state_dict(),
            'scaler': scaler.state_dict() if scaler is not None else None,
            'rng': get_rng_state(), 'epoch': epoch, 'step': step,
            'config': to_plain(self.cfg), 'config_yaml': dump_config(self.cfg),
            'model_meta': self._model_meta(model),
            'tasks': to_plain(specs), 'best': to_plain(best),
        }

    def _save(self, model, ema, optimizer, schedule, scaler, epoch, step, best, specs, improved) -> None:
        if self.dist.is_main:
            ckpt = self._checkpoint(model, ema, optimizer, schedule, scaler, epoch, step, best, specs)
            save_checkpoint(ckpt, self.out / 'last.pt')
            if improved:
                _copy_atomic(self.out / 'last.pt', self.out / 'best.pt')
        barrier()

    def _truncate_log(self, epoch: int) -> None:
        path = self.out / 'metrics.jsonl'
        if not path.is_file():
            return
        keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)['epoch'] <= epoch]
        path.write_text(''.join(line + '\n' for line in keep))

    # -------------------------------------------------------------------------------------------- end
    def _finish(self, model: MultiTaskModel, ema, runs: List[TaskRun], amp: str, best: Dict[str, Any], t0: float,
                n_params: int) -> Dict[str, Any]:
        from . import plots
        best_path = self.out / 'best.pt'
        best_path = broadcast_object(str(best_path) if best_path.is_file() else str(self.out / 'last.pt'))
        state, which = eval_weights(load_checkpoint(best_path))
        eval_model = ema.module if ema is not None else model
        if which == 'model_ema' and ema is None:
            eval_model = model
        eval_model.load_state_dict(state)
        split = self.cfg['eval']['split']
        results: Dict[str, Any] = {
            'task': self.label, 'tasks': {}, 'split': split, 'run_dir': str(self.out), 'checkpoint': str(best_path),
            'best_epoch': best['epoch'], 'best_val_score': best['score'], 'epochs': int(self.cfg['train']['epochs']),
            'model': {'variant': self.cfg['model']['variant'], 'params': n_params, 'weights': which},
            'world_size': self.dist.world_size, 'device': str(self.device),
        }
        plot_files: List[str] = []
        for r in runs:
            ds = r.sets[split] if split in r.sets else build_task_datasets(r.task, r.cfg, r.root, [split])[split]
            loader = eval_loader(ds, r.cfg['eval']['batch_size'] or int(r.cfg['train']['batch_size']), self.dist,
                                 int(r.cfg['data']['num_workers']))
            spec = {**r.spec, 'metric_info': {**r.spec['metric_info'], **r.task.metric_info(ds)}}
            metrics, example = evaluate(eval_model.task_model(r.name), loader, spec, self.device, amp,
                                        progress=self.progress, desc=f'{split} {r.name}', keep_example=True)
            cm = metrics.pop('confusion_matrix', None)
            classes = metrics.pop('classes', None)
            report = getattr(ds, 'skip_report', None)
            train_report = getattr(r.sets['train'], 'skip_report', None)
            entry = {
                'dataset': describe_dataset(r.root, r.builtin, r.name), 'builtin_data': r.builtin, 'split': split,
                'num_samples': metrics['num_samples'], 'metrics': metrics,
                'val_metrics': (best['metrics'] or {}).get(r.name),
                'eval_protocol': r.task.eval_views(ds),
                'skip_report': {'train': train_report.as_dict() if train_report is not None else None,
                                split: report.as_dict() if report is not None else None},
            }
            if cm is not None:
                entry['confusion_matrix'] = cm
                entry['classes'] = classes
            results['tasks'][r.name] = entry
            if self.dist.is_main:
                try:
                    if cm is not None:
                        plot_files.append(str(plots.plot_confusion(
                            cm, classes, self.out / f'confusion_{r.name}.png',
                            title=f'{r.name} {split}: top-1 {metrics["top1"]:.1f}%')))
                    if r.spec['kind'] == 'forecast' and example is not None:
                        plot_files.append(str(plots.plot_forecast(
                            example, self.out / f'forecast_{r.name}.png',
                            title=f'{r.name} {split}: forecast vs truth (first window; mse {metrics["mse"]:.4g})')))
                except Exception as e:  # a plot must never cost the results
                    _logger.warning('plotting failed for %s: %s', r.name, e)
        if len(runs) == 1:
            only = results['tasks'][runs[0].name]
            results.update({'dataset': only['dataset'], 'num_samples': only['num_samples'],
                            'metrics': only['metrics']})
        results['wall_time_s'] = round(time.perf_counter() - t0, 2)
        if self.dist.is_main:
            try:
                curves = plots.plot_curves(plots.read_metrics_log(self.out / 'metrics.jsonl'), self.out / 'curves.png')
                if curves:
                    plot_files.insert(0, str(curves))
            except Exception as e:
                _logger.warning('plotting the curves failed: %s', e)
            results['plots'] = plot_files
            (self.out / 'results.json').write_text(json.dumps(to_plain(results), indent=2))
        barrier()
        return results


def _summary(record: Mapping[str, Any]) -> str:
    parts = [f'train loss {record["train"]["loss"]:.4f}']
    for name, m in (record.get('val') or {}).items():
        if 'top1' in m:
            parts.append(f'val {name} top1 {m["top1"]:.2f}% loss {m["loss"]:.4f}')
        else:
            parts.append(f'val {name} mse {m["mse"]:.4g} mae {m["mae"]:.4g}')
    parts.append(f'lr {record["lr"]:.3g}')
    parts.append(f'{record["time_s"]:.1f}s')
    return ' | '.join(parts)
