"""The training loop: single- or multi-task, single process or DDP under ``torchrun``.

A run trains one :class:`~unimodal.engine.multitask.MultiTaskModel` (one shared trunk, an adapter and head per
task). Each step takes one batch of one task; the tasks' batches are interleaved round-robin or by weighted
sampling (the same order on every rank). Per task: its kind's loss (:mod:`unimodal.tasks.kinds`), label smoothing,
mixup/cutmix, loss weight. Shared: optimiser, per-step schedule with warm-up, AMP, gradient accumulation and
clipping, EMA.

The run directory (rank 0 writes it, locked for the run's life: :mod:`unimodal.engine.rundir`) holds
``config.yaml``, ``metrics.jsonl`` (one record per epoch, written before that epoch's checkpoints),
``last.pt``/``best.pt`` (atomic), ``results.json`` (test metrics of ``best.pt``, or of ``last.pt`` with
``eval.checkpoint: last``; it records which as ``tested_checkpoint``), the lists of skipped samples and PNG plots.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ..config.errors import ConfigError
from ..config.files import dump_config
from ..config.schema import JointConfig, ModelConfig, RunConfig, TaskSettings, TrainConfig
from ..data.inputs import to_device
from ..tasks.base import Task
from ..tasks.plugin import resolve_task
from ..tasks.spec import TaskSpec, make_task_spec
from .build import build_model, build_task_datasets, data_root, eval_loader, train_loader
from .checkpoint import (CHECKPOINT_FORMAT, CheckpointError, RunCheckpoint, copy_atomic, get_rng_state,
                         init_trunk_from, load_run_checkpoint, load_weights, model_meta, save_checkpoint,
                         set_rng_state, to_plain, write_text_atomic)
from .data_init import init_heads_from_data
from .distributed import DistInfo, all_reduce_sum, barrier, broadcast_object, init_distributed
from .evaluate import Progress, autocast, evaluate, evaluate_dataset, no_progress
from .finite import non_finite_training_loss
from .multitask import MultiTaskModel
from .optim import create_ema, create_optimizer, create_schedule
from .precise_bn import recompute_bn_stats, round_robin_batches
from .results import describe_dataset, result_record
from .rundir import (RunDirError, RunDirLock, append_metrics, check_run_dir, remove_run_files, repair_best,
                     remove_stale_temp_files, truncate_metrics_log)

_logger = logging.getLogger(__name__)

__all__ = ['train', 'find_resume_checkpoint', 'TaskRun', 'seed_everything']


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
    """One task of a run: its settings, data, loaders and spec."""
    name: str
    task: Task
    settings: TaskSettings
    root: Optional[Path]
    builtin: bool
    sets: Dict[str, Dataset]
    spec: TaskSpec
    train_loader: DataLoader = None
    val_loader: Optional[DataLoader] = None
    mixer: Any = None
    batches: int = 0
    restarts: int = 0
    iterator: Optional[Iterator] = None
    position: int = 0  # batches drawn from the current iterator (names a bad batch's samples)
    loss_weight: float = 1.0
    sample_weight: float = 1.0


def _task_label(names: Sequence[str]) -> str:
    return '+'.join(names)


def _epoch_plan(runs: Sequence[TaskRun], joint: JointConfig, seed: int, epoch: int) -> List[str]:
    """The task of every step of an epoch (identical on every rank)."""
    if len(runs) == 1:
        return [runs[0].name] * runs[0].batches
    steps = joint.steps_per_epoch or sum(r.batches for r in runs)
    if joint.sampling == 'round_robin':
        return [runs[i % len(runs)].name for i in range(steps)]
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    weights = torch.tensor([r.sample_weight for r in runs], dtype=torch.float64)
    idx = torch.multinomial(weights, steps, replacement=True, generator=g)
    return [runs[i].name for i in idx.tolist()]


def _next_batch(run: TaskRun, epoch: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The next training batch of a task; a task whose loader ran out starts another pass (joint runs)."""
    if run.iterator is None:
        run.train_loader.sampler.set_epoch(epoch * 1000 + run.restarts)
        run.iterator, run.position = iter(run.train_loader), 0
    try:
        batch = next(run.iterator)
    except StopIteration:
        run.restarts += 1
        run.train_loader.sampler.set_epoch(epoch * 1000 + run.restarts)
        run.iterator, run.position = iter(run.train_loader), 0
        batch = next(run.iterator)
    run.position += 1
    return batch


def _stored(stored: Mapping[str, Any], section: str, key: str, default: Any) -> Any:
    return (stored.get(section) or {}).get(key, default)


# ------------------------------------------------------------------------------------------------ the run

def train(cfg: RunConfig, *, out_dir: Optional[Path] = None, resume: Optional[Path] = None,
          progress: Optional[Progress] = None, stop_after_epochs: Optional[int] = None,
          dist_info: Optional[DistInfo] = None, overwrite: bool = False) -> Dict[str, Any]:
    """Train (or resume) a run and evaluate its best checkpoint; return the results dict (also in results.json).

    Args:
        cfg: the run's config, resolved once by the caller: ``unimodal.config.resolve_run_config(...)``.
        out_dir: run directory (default ``runs/<task>-<timestamp>``).
        resume: a ``last.pt`` to continue from (resolve ``cfg`` on its stored config: ``base=ckpt.config``).
        progress: wraps iterables for progress display, ``progress(iterable, desc=..., total=...)``.
        stop_after_epochs: stop (like a pre-emption) after this many epochs of this invocation, before the
            final test evaluation; ``last.pt`` allows resuming.
        dist_info: from :func:`init_distributed` (default: read the ``torchrun`` environment).
        overwrite: replace the run in ``out_dir`` (its checkpoints, results, log and plots are removed); without
            it a directory holding a run or other files is refused unless ``resume`` is a checkpoint in it
            (:func:`unimodal.engine.rundir.check_run_dir`).
    """
    if not isinstance(cfg, RunConfig):
        raise TypeError(f'train() takes a RunConfig, got {type(cfg).__name__}: resolve a config mapping with '
                        f'unimodal.config.resolve_run_config(...) first')
    return _Run(cfg, out_dir, resume, progress or no_progress, stop_after_epochs, dist_info, overwrite).run()


class _Run:
    def __init__(self, cfg: RunConfig, out_dir: Optional[Path], resume: Optional[Path], progress: Progress,
                 stop_after: Optional[int], dist_info: Optional[DistInfo], overwrite: bool = False) -> None:
        self.cfg = cfg
        self.overwrite = overwrite
        self.lock: Optional[RunDirLock] = None
        self.progress = progress
        self.stop_after = stop_after
        self.resume = Path(resume) if resume else None
        self.dist = dist_info or init_distributed(cfg.train.device)
        self.device = self.dist.device
        self.names = cfg.task_names
        self.label = _task_label(self.names) if self.names else None
        stamp = datetime.now().strftime('%Y%m%d-%H%M%S')
        default_out = None if out_dir is not None else f'runs/{{label}}-{stamp}'
        out = broadcast_object(str(out_dir) if out_dir is not None else default_out)
        self.out_template = out
        self.out: Optional[Path] = None

    # -------------------------------------------------------------------------------------------- set-up
    def _setup_tasks(self) -> List[TaskRun]:
        cfg = self.cfg
        if self.names:
            tasks = [(name, resolve_task(name)) for name in self.names]
        else:
            task = resolve_task(None, cfg.model.adapter_class)
            tasks = [(task.name, task)]
            self.names = [task.name]
            self.label = task.name
        runs = []
        for name, task in tasks:
            settings = cfg.task_settings(name)
            root, builtin = data_root(task, settings.data, self.dist)
            if builtin and self.dist.is_main:
                _logger.warning(f'task {name}: BUILT-IN SYNTHETIC data{" at " + str(root) if root else ""} (no --data '
                                f'DIR; `unimodal tasks {name}` says where the real data comes from and its layout)')
            sets = build_task_datasets(task, settings.data, root, splits=['train', 'val', 'test'])
            spec = make_task_spec(task, settings, sets)
            runs.append(TaskRun(name=name, task=task, settings=settings, root=root, builtin=builtin, sets=sets,
                                spec=spec, loss_weight=settings.train.loss_weight))
        return runs

    def _setup_loaders(self, runs: List[TaskRun]) -> None:
        seed = self.cfg.train.seed
        for run in runs:
            t, workers = run.settings.train, run.settings.data.num_workers
            run.train_loader = train_loader(run.sets['train'], t.batch_size, self.dist, seed, workers)
            run.val_loader = eval_loader(run.sets['val'], run.settings.eval_batch_size, self.dist, workers)
            run.batches = len(run.train_loader)
            if t.max_steps_per_epoch:
                run.batches = min(run.batches, t.max_steps_per_epoch)
            run.sample_weight = t.sample_weight if t.sample_weight is not None else float(run.batches)
            run.mixer = run.spec.task_kind.create_mixer(run.spec, t)
            if run.mixer is not None and getattr(run.sets['train'], 'soft_targets', False):
                raise ConfigError(f'task {run.name}: its reader already mixes the training samples (soft targets); '
                                  f'one mixup per purpose: set train.mixup=0 and train.cutmix=0, or drop the '
                                  f"reader's mixing option")

    # -------------------------------------------------------------------------------------------- main
    def run(self) -> Dict[str, Any]:
        try:
            return self._run()
        except KeyboardInterrupt as e:  # the CLI names the run to resume (None: no run directory taken yet)
            e.run_dir = self.out if self.lock is not None else None
            raise
        finally:
            if self.lock is not None:
                self.lock.release()

    def _run(self) -> Dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        tcfg = cfg.train
        ckpt = None
        if self.resume is not None:  # checked before the data is read: a wrong checkpoint fails in seconds
            ckpt = load_run_checkpoint(self.resume)
            ckpt.check_resumable(self.names, cfg.model)
        if '{label}' not in self.out_template:
            self._main_only(check_run_dir, Path(self.out_template), resume=self.resume, overwrite=self.overwrite)
        _set_deterministic(tcfg.deterministic)
        seed_everything(tcfg.seed)
        runs = self._setup_tasks()
        self.out = Path(self.out_template.replace('{label}', self.label))
        self._setup_loaders(runs)
        specs = {r.name: r.spec for r in runs}

        seed_everything(tcfg.seed)  # identical initial weights on every rank and for every resume
        model = build_model(specs, cfg.model, pretrained=cfg.model.pretrained)
        if cfg.model.pretrained and self.dist.is_main:
            _logger.info('trunk initialised from pretrained weights: %s', cfg.model.pretrained)
        if cfg.model.init_from and self.resume is None:
            init_trunk_from(model, cfg.model.init_from)
        if self.resume is None:  # e.g. a forecast head's least-squares linear skip
            init_heads_from_data(model, {r.name: r.sets['train'] for r in runs})
        if tcfg.grad_checkpointing:
            model.trunk.set_grad_checkpointing(True)
        model.to(self.device)
        if self.dist.distributed and tcfg.sync_bn:
            if self.device.type == 'cuda':
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                _logger.warning('train.sync_bn needs GPUs (nccl); ignored on CPU')
        n_params = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.grad_accum = cfg.grad_accum_steps(self.dist.world_size)
        if tcfg.global_batch_size is not None and self.dist.is_main:
            _logger.info('train.global_batch_size %d: %d per process x %d process(es) x grad_accum %d',
                         tcfg.global_batch_size, tcfg.global_batch_size // (self.grad_accum * self.dist.world_size),
                         self.dist.world_size, self.grad_accum)
        steps_per_epoch = max(1, math.ceil(len(_epoch_plan(runs, cfg.joint, tcfg.seed, 0)) / self.grad_accum))
        optimizer = create_optimizer(model, optimizer=tcfg.optimizer, lr=tcfg.lr, weight_decay=tcfg.weight_decay,
                                     betas=tcfg.betas, momentum=tcfg.momentum, layer_decay=tcfg.layer_decay)
        schedule = create_schedule(optimizer, schedule=tcfg.schedule, epochs=tcfg.epochs,
                                   steps_per_epoch=steps_per_epoch, warmup_epochs=tcfg.warmup_epochs,
                                   min_lr=tcfg.min_lr, step_size=tcfg.step_size, gamma=tcfg.gamma,
                                   step_start=tcfg.step_start)
        amp = tcfg.amp if self.device.type == 'cuda' else 'none'
        if tcfg.amp != 'none' and amp == 'none':
            _logger.info('train.amp=%s ignored on %s (AMP is for GPUs)', tcfg.amp, self.device)
        scaler = torch.amp.GradScaler('cuda') if amp == 'fp16' else None
        ema = create_ema(model, tcfg.ema_decay) if tcfg.ema else None

        start_epoch, step, best = 0, 0, {'epoch': None, 'score': None, 'metrics': None}
        if ckpt is not None:
            if sorted(ckpt.specs) != sorted(specs):
                raise ConfigError(f'--resume {self.resume}: checkpoint holds task(s) {", ".join(ckpt.specs)}, '
                                  f'this run trains {", ".join(specs)}')
            load_weights(model, ckpt.raw['model'], f'--resume {self.resume}')
            # the optimizer state carries each group's lr scale and its own kind of moments: a run cannot resume
            # with other groups or another optimizer
            for section, key, now, default in (('train', 'optimizer', tcfg.optimizer, TrainConfig().optimizer),
                                               ('train', 'layer_decay', tcfg.layer_decay, TrainConfig().layer_decay),
                                               ('model', 'freeze_trunk', cfg.model.freeze_trunk,
                                                ModelConfig().freeze_trunk)):
                was = _stored(ckpt.config, section, key, default)
                if was != now:
                    raise ConfigError(f'--resume {self.resume}: the run was trained with {section}.{key}={was!r}, '
                                      f'this run sets {now!r}; resume with the same value (or start a new run '
                                      f'with --init-from)')
            try:
                optimizer.load_state_dict(ckpt.raw['optimizer'])
                schedule.load_state_dict(ckpt.raw['scheduler'])
                if scaler is not None and ckpt.raw.get('scaler'):
                    scaler.load_state_dict(ckpt.raw['scaler'])
            except (KeyError, TypeError, ValueError, RuntimeError) as e:
                raise CheckpointError(f'--resume {self.resume}: its optimizer / schedule state does not fit this run '
                                      f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}); resume '
                                      f'with the run\'s train.optimizer and train.schedule') from None
            if ema is not None and ckpt.raw.get('model_ema') is not None:
                load_weights(ema.module, ckpt.raw['model_ema'], f'--resume {self.resume} (model_ema)')
            set_rng_state(ckpt.raw.get('rng'))
            start_epoch, step = int(ckpt.raw['epoch']), int(ckpt.raw.get('step', 0))
            best = dict(ckpt.raw.get('best') or best)
            if self.dist.is_main:
                _logger.info('resumed %s at epoch %d (step %d)', self.resume, start_epoch, step)

        # only now: a run that fails to set up leaves no directory behind
        self._main_only(self._take_run_dir, ckpt, start_epoch)
        ddp_model = model
        if self.dist.distributed:
            ddp_model = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == 'cuda' else None,
                find_unused_parameters=len(runs) > 1)
        if self.dist.is_main:
            _logger.info('model %s: %.2fM parameters (%.2fM trainable), %d task(s): %s; %d process(es) on %s',
                         cfg.model.variant, n_params / 1e6, n_train / 1e6, len(runs), ', '.join(specs),
                         self.dist.world_size, self.device)

        epochs = tcfg.epochs
        epochs_done_here = 0
        for epoch in range(start_epoch, epochs):
            ep_start = time.perf_counter()
            # per-epoch reseeding: a resumed run draws exactly what the uninterrupted run drew
            seed_everything(tcfg.seed * 1000 + epoch * 16 + self.dist.rank)
            train_stats, step = self._train_epoch(ddp_model, model, runs, optimizer, schedule, scaler, ema,
                                                  epoch, step, amp)
            record: Dict[str, Any] = {'epoch': epoch + 1, 'step': step, 'lr': schedule.get_last_lr()[0],
                                      'train': train_stats}
            last_epoch = epoch + 1 == epochs
            if (epoch + 1) % tcfg.eval_every == 0 or last_epoch:
                eval_model = ema.module if ema is not None else model
                if tcfg.precise_bn:
                    self._precise_bn(eval_model, runs, epoch, amp)
                val = {}
                for r in runs:
                    metrics, _ = evaluate(eval_model.task_model(r.name), r.val_loader, r.spec, self.device, amp,
                                          progress=self.progress, desc=f'val {r.name}',
                                          predict=r.task.eval_predictor(r.settings.eval.protocol))
                    val[r.name], _ = r.spec.task_kind.split_results(metrics)
                record['val'] = val
                score = float(np.mean([r.spec.task_kind.selection_score(val[r.name]) for r in runs]))
                record['score'] = score
                improved = best['score'] is None or score > best['score']
                if improved:
                    best = {'epoch': epoch + 1, 'score': score, 'metrics': val}
            else:
                improved = False
            record['time_s'] = round(time.perf_counter() - ep_start, 3)
            if self.dist.is_main:  # the log line first: a crash while checkpointing re-runs the epoch on resume
                append_metrics(self.out, to_plain(record))
            self._save(model, ema, optimizer, schedule, scaler, epoch + 1, step, best, specs, improved)
            if self.dist.is_main:
                _logger.info('epoch %d/%d: %s', epoch + 1, epochs, _summary(record, runs))
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
        tcfg = self.cfg.train
        accum = self.grad_accum
        plan = _epoch_plan(runs, self.cfg.joint, tcfg.seed, epoch)
        by_name = {r.name: r for r in runs}
        for r in runs:
            r.iterator, r.restarts = None, 0
        loss_sum = {r.name: torch.zeros((), dtype=torch.float64) for r in runs}
        loss_n = {r.name: torch.zeros((), dtype=torch.int64) for r in runs}
        ddp_model.train()
        model.train()
        optimizer.zero_grad(set_to_none=True)
        params = [p for p in model.parameters() if p.requires_grad]
        for i, name in enumerate(self.progress(plan, desc=f'epoch {epoch + 1}', total=len(plan))):
            run = by_name[name]
            model.adapters[name].set_progress(epoch + i / len(plan))
            x, y = _next_batch(run, epoch)
            x = x_in = to_device(x, self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            soft = None
            if run.mixer is not None:
                x, soft = run.mixer(x, y)
            boundary = (i + 1) % accum == 0 or i + 1 == len(plan)
            plain = boundary or not isinstance(ddp_model, DistributedDataParallel)
            sync = nullcontext() if plain else ddp_model.no_sync()
            with sync:
                with autocast(self.device, amp):
                    out = ddp_model(x, task=name)
                loss = run.spec.task_kind.train_loss(run.spec, out, y, soft, run.settings.train.label_smoothing)
                if not torch.isfinite(loss):
                    raise non_finite_training_loss(name, loss.item(), epoch=epoch + 1, step=i + 1, x=x_in,
                                                   loader=run.train_loader, batch_no=run.position - 1,
                                                   from_files=run.root is not None and not run.builtin)
                scaled = loss * run.loss_weight / accum
                if scaler is not None:
                    scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            loss_sum[name] += float(loss.detach())
            loss_n[name] += 1
            if boundary:
                if tcfg.clip_grad:
                    if scaler is not None:
                        scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, tcfg.clip_grad)
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
            if tcfg.log_every and (i + 1) % tcfg.log_every == 0 and self.dist.is_main:
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

    def _precise_bn(self, model: MultiTaskModel, runs: List[TaskRun], epoch: int, amp: str) -> None:
        """:mod:`~unimodal.engine.precise_bn` on <= ``train.precise_bn`` batches a task (the next epoch reseeds)."""
        batches = round_robin_batches({r.name: r.train_loader for r in runs},
                                      {r.name: min(self.cfg.train.precise_bn, r.batches) for r in runs},
                                      set_epoch=epoch * 1000 + 999)

        def forward(item: Tuple[str, Any]) -> None:
            with autocast(self.device, amp):
                model.task_model(item[0])(to_device(item[1], self.device, non_blocking=True))

        report = recompute_bn_stats(model, batches, forward, world_size=self.dist.world_size)
        _logger.debug('epoch %d: precise BN: %s', epoch + 1, report)

    # -------------------------------------------------------------------------------------------- state
    def _checkpoint(self, model, ema, optimizer, schedule, scaler, epoch, step, best, specs) -> Dict[str, Any]:
        trunk_chans = next(iter(model.adapters.values())).out_chans
        return {
            'format': CHECKPOINT_FORMAT, 'version': 1,
            'model': model.state_dict(),
            'model_ema': ema.module.state_dict() if ema is not None else None,
            'optimizer': optimizer.state_dict(), 'scheduler': schedule.state_dict(),
            'scaler': scaler.state_dict() if scaler is not None else None,
            'rng': get_rng_state(), 'epoch': epoch, 'step': step,
            'config': to_plain(self.cfg.to_dict()), 'config_yaml': dump_config(self.cfg),
            'model_meta': model_meta(self.cfg.model, trunk_chans),
            'tasks': {name: to_plain(spec.to_dict()) for name, spec in specs.items()}, 'best': to_plain(best),
        }

    def _save(self, model, ema, optimizer, schedule, scaler, epoch, step, best, specs, improved) -> None:
        if self.dist.is_main:
            ckpt = self._checkpoint(model, ema, optimizer, schedule, scaler, epoch, step, best, specs)
            save_checkpoint(ckpt, self.out / 'last.pt')
            if improved:
                copy_atomic(self.out / 'last.pt', self.out / 'best.pt')
        barrier()

    def _main_only(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """``fn`` on rank 0; its error is raised on every rank (no rank waits at a barrier for a failed one)."""
        error = None
        if self.dist.is_main:
            try:
                fn(*args, **kwargs)
            except (ConfigError, OSError) as e:  # RunDirError, CheckpointError and WriteError among them
                error = e
        message = broadcast_object(None if error is None else str(error))
        if error is not None:
            raise error
        if message is not None:
            raise RunDirError(message)

    def _take_run_dir(self, ckpt: Optional[RunCheckpoint], start_epoch: int) -> None:
        """Create and lock the run directory, check (again, under the lock) that this run may write it, remove what
        interrupted runs left behind, and write ``config.yaml``."""
        out = self.out
        check_run_dir(out, resume=self.resume, overwrite=self.overwrite)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f'cannot create the run directory {out}: {e.strerror or e}') from None
        self.lock = RunDirLock(out).acquire()
        check_run_dir(out, resume=self.resume, overwrite=self.overwrite)  # another run may have finished there
        remove_stale_temp_files(out, self.lock.acquired_at)
        same_dir = self.resume is not None and self.resume.resolve().parent == out.resolve()
        if ckpt is None or (self.overwrite and not same_dir):
            remove_run_files(out)  # --overwrite, or what a run that never saved a checkpoint left
        if ckpt is not None:
            truncate_metrics_log(out, start_epoch)
            if same_dir:
                repair_best(out, ckpt.path, int(ckpt.raw['epoch']), (ckpt.raw.get('best') or {}).get('epoch'))
        write_text_atomic(out / 'config.yaml', dump_config(self.cfg))

    # -------------------------------------------------------------------------------------------- end
    def _finish(self, model: MultiTaskModel, ema, runs: List[TaskRun], amp: str, best: Dict[str, Any], t0: float,
                n_params: int) -> Dict[str, Any]:
        from . import plots
        choice = self.cfg.eval.checkpoint
        if choice == 'best' and not (self.out / 'best.pt').is_file():
            choice = 'last'  # no validation score was ever recorded
        tested_path = broadcast_object(str(self.out / f'{choice}.pt'))
        tested = load_run_checkpoint(tested_path)
        state, which = tested.eval_state()
        eval_model = ema.module if ema is not None else model
        if which == 'model_ema' and ema is None:
            eval_model = model
        load_weights(eval_model, state, tested_path)
        split = self.cfg.eval.split
        results: Dict[str, Any] = {
            'task': self.label, 'tasks': {}, 'split': split, 'run_dir': str(self.out), 'checkpoint': str(tested_path),
            'tested_checkpoint': choice, 'tested_epoch': int(tested.raw['epoch']),
            'best_epoch': best['epoch'], 'best_val_score': best['score'], 'epochs': self.cfg.train.epochs,
            'model': {'variant': self.cfg.model.variant, 'params': n_params, 'weights': which},
            'world_size': self.dist.world_size, 'device': str(self.device),
        }
        plot_files: List[str] = []
        for r in runs:
            ds = (r.sets[split] if split in r.sets
                  else build_task_datasets(r.task, r.settings.data, r.root, [split])[split])
            spec = r.spec.with_metric_info(r.task.metric_info(ds))
            protocol = r.settings.eval.protocol
            metrics, example = evaluate_dataset(eval_model.task_model(r.name), ds, spec, r.settings.eval_batch_size,
                                                r.settings.data.num_workers, self.dist, amp, progress=self.progress,
                                                desc=f'{split} {r.name}', keep_example=True,
                                                predict=r.task.eval_predictor(protocol))
            entry = result_record(spec, r.task, metrics, {'train': r.sets['train'], split: ds}, split=split,
                                  dataset=describe_dataset(r.root, r.builtin, r.name), builtin=r.builtin,
                                  protocol=protocol, val_metrics=(best['metrics'] or {}).get(r.name),
                                  report_dir=self.out if self.dist.is_main else None)
            results['tasks'][r.name] = entry
            if self.dist.is_main:
                try:  # a plot must never cost the results
                    path = spec.task_kind.plot(r.name, split, entry['metrics'], entry, example, self.out)
                    if path is not None:
                        plot_files.append(str(path))
                except Exception as e:
                    _logger.warning('plotting failed for %s: %s', r.name, e)
        if len(runs) == 1:
            only = results['tasks'][runs[0].name]
            results.update({'dataset': only['dataset'], 'num_samples': only['num_samples'],
                            'metrics': only['metrics']})
        results['wall_time_s'] = round(time.perf_counter() - t0, 2)
        if self.dist.is_main:
            try:
                curves = plots.plot_curves(plots.read_metrics_log(self.out / 'metrics.jsonl'), self.out / 'curves.png',
                                           main_metrics={r.name: r.spec.task_kind.main_metric for r in runs})
                if curves:
                    plot_files.insert(0, str(curves))
            except Exception as e:
                _logger.warning('plotting the curves failed: %s', e)
            results['plots'] = plot_files
            write_text_atomic(self.out / 'results.json', json.dumps(to_plain(results), indent=2))
        barrier()
        return results


def _summary(record: Mapping[str, Any], runs: Sequence[TaskRun]) -> str:
    kinds = {r.name: r.spec.task_kind for r in runs}
    parts = [f'train loss {record["train"]["loss"]:.4f}']
    for name, m in (record.get('val') or {}).items():
        parts.append(f'val {name} {kinds[name].summary(m)}')
    parts.append(f'lr {record["lr"]:.3g}')
    parts.append(f'{record["time_s"]:.1f}s')
    return ' | '.join(parts)
