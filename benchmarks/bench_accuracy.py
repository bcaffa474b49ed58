#!/usr/bin/env python
"""Accuracy on the built-in data sets: UniRepLKNet against simple baselines trained with the same budget (issue 6).

For every task (audio, point, video, timeseries) it trains

* UniRepLKNet (``--variant``, default ``unireplknet_test``) through the real engine
  (``unimodal.cli.main(['train', ...])`` in-process; the run's ``config.yaml`` and ``results.json`` are read back);
* a small plain CNN (3 conv-BN-ReLU stages, global average pool) in place of the trunk, on the SAME adapter output
  and head, with the same data subset, epochs, steps per epoch, batch size, optimizer, lr, schedule, loss, seed and
  the same best-on-validation selection, in a plain training loop;
* timeseries only: persistence and seasonal-naive forecasts (reported by the engine's forecast meter on the same test
  windows) and the least-squares linear forecaster (``unimodal.models.baselines.fit_linear_forecaster``) fitted on
  the same training windows.

Run ``python benchmarks/bench_accuracy.py --help``; more budget: ``--epochs 10 --max-steps 0`` (0 = full epochs).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_util import RESULTS_DIR, finish_machine, machine_info, markdown_table, save_json, set_threads  # noqa: E402

ALL_TASKS = ('audio', 'point', 'video', 'timeseries')


class SmallCNN(nn.Module):
    """Plain baseline trunk: 3 × (3×3 conv stride 2, BN, ReLU) + global average (or ``pool='max'``) pool
    (timm-style interface)."""

    def __init__(self, in_chans: int, widths=(32, 64, 128), pool: str = 'avg') -> None:
        super().__init__()
        if pool not in ('avg', 'max'):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        layers: List[nn.Module] = []
        c = in_chans
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.num_features = c

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        return x.amax((2, 3)) if self.pool == 'max' else x.mean((2, 3))

    def reparameterize(self) -> 'SmallCNN':
        return self


def train_unireplknet(task: str, args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    """One engine run; returns its results.json, resolved config and wall time."""
    from unimodal.cli import main
    out = work / f'unireplknet_{task}'
    argv = ['train', '--task', task, '--model', args.variant, '--out', str(out), '--no-progress',
            '--set', f'train.seed={args.seed}', '--set', f'data.num_workers={args.workers}']
    if args.epochs:
        argv += ['--epochs', str(args.epochs)]
    if args.max_steps:
        argv += ['--set', f'train.max_steps_per_epoch={args.max_steps}']
    if args.limit_train:
        argv += ['--set', f'data.limit_train={args.limit_train}']
    if args.limit_eval:
        argv += ['--set', f'data.limit_eval={args.limit_eval}']
    if args.cache_dir:
        argv += ['--set', f'data.cache_dir={args.cache_dir}']
    t0 = time.perf_counter()
    rc = main(argv)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f'unimodal train {task} failed with exit code {rc}')
    results = json.loads((out / 'results.json').read_text())
    cfg = yaml.safe_load((out / 'config.yaml').read_text())
    return {'results': results, 'config': cfg, 'wall_s': round(wall, 1), 'argv': argv}


def train_baseline(task_name: str, stored: Dict[str, Any], args: argparse.Namespace) -> Dict[str, Any]:
    """The small CNN (and, for timeseries, the least-squares linear model) on the engine run's exact settings
    (``stored``: the run's config.yaml)."""
    import unimodal
    from unimodal.config import resolve_run_config
    from unimodal.engine.build import build_task_datasets, data_root
    from unimodal.engine.evaluate import evaluate
    from unimodal.engine.optim import create_optimizer, create_schedule
    from unimodal.tasks import get_task, make_task_spec

    torch.manual_seed(args.seed)
    cfg = resolve_run_config(base=stored)
    task = get_task(task_name)
    settings = cfg.task_settings(task.name)
    root, _ = data_root(task, settings.data)
    sets = build_task_datasets(task, settings.data, root, ['train', 'val', 'test'])
    spec = make_task_spec(task, settings, sets)
    kind = spec.task_kind
    val_spec = spec.with_metric_info(task.metric_info(sets['val']))
    spec = spec.with_metric_info(task.metric_info(sets['test']))
    # built as a user would: the task's adapter class + a small conv net + the shared head of the task's kind
    adapter = unimodal.get_adapter_class(spec.adapter)(**spec.adapter_kwargs)
    pool = getattr(args, 'cnn_pool', 'avg')
    trunk = SmallCNN(adapter.out_chans, pool=pool)
    head = kind.create_head(trunk.num_features, num_views=adapter.num_views, view_pool=adapter.view_pool,
                            series_per_view=adapter.series_per_view, **spec.head_kwargs)
    model = unimodal.TaskModel(adapter, trunk, head)
    bs = settings.train.batch_size
    ebs = settings.eval_batch_size
    g = torch.Generator().manual_seed(args.seed)
    train_dl = DataLoader(sets['train'], batch_size=bs, shuffle=True, generator=g, num_workers=args.workers,
                          drop_last=len(sets['train']) > bs, collate_fn=getattr(sets['train'], 'collate_fn', None))
    val_dl = DataLoader(sets['val'], batch_size=ebs, num_workers=args.workers)
    test_dl = DataLoader(sets['test'], batch_size=ebs, num_workers=args.workers)
    steps = len(train_dl)
    cap = settings.train.max_steps_per_epoch
    if cap:
        steps = min(steps, int(cap))
    t = cfg.train
    opt = create_optimizer(model, optimizer=t.optimizer, lr=t.lr, weight_decay=t.weight_decay, betas=t.betas,
                           momentum=t.momentum, layer_decay=t.layer_decay)
    sched = create_schedule(opt, schedule=t.schedule, epochs=t.epochs, steps_per_epoch=steps,
                            warmup_epochs=t.warmup_epochs, min_lr=t.min_lr, step_size=t.step_size, gamma=t.gamma,
                            step_start=t.step_start)
    clip = t.clip_grad
    device = torch.device('cpu')
    t0 = time.perf_counter()
    best_score, best_state, best_epoch = None, None, 0
    for epoch in range(cfg.train.epochs):
        model.train()
        for i, (x, y) in enumerate(train_dl):
            if i >= steps:
                break
            adapter.set_progress(epoch + i / steps)  # as the engine does: augmentation that grows over training
            loss = kind.train_loss(spec, model(x), y, None, settings.train.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), float(clip))
            opt.step()
            sched.step()
        val, _ = evaluate(model, val_dl, val_spec, device)
        score = kind.selection_score(val)
        if best_score is None or score > best_score:
            best_score, best_state, best_epoch = score, copy.deepcopy(model.state_dict()), epoch + 1
    if cfg.eval.checkpoint == 'best':  # the run's protocol: the best validation epoch, or the last one
        model.load_state_dict(best_state)
    test, _ = evaluate(model, test_dl, spec, device)
    wall = round(time.perf_counter() - t0, 1)
    out = {'small_cnn': {'metrics': _plain(test), 'best_epoch': best_epoch, 'wall_s': wall, 'pool': pool,
                         'tested': cfg.eval.checkpoint,
                         'params': sum(p.numel() for p in model.parameters()), 'steps_per_epoch': steps}}
    if hasattr(sets['train'], 'horizon'):  # forecasting windows
        from unimodal.models.baselines import fit_linear_forecaster
        t1 = time.perf_counter()
        lin = fit_linear_forecaster(DataLoader(sets['train'], batch_size=256), int(sets['train'].input_len),
                                    int(sets['train'].horizon))
        test_lin, _ = evaluate(lin, test_dl, spec, device)
        out['linear_lsq'] = {'metrics': _plain(test_lin), 'wall_s': round(time.perf_counter() - t1, 1),
                             'fit_on': f'the same {len(sets["train"])} training windows'}
    return out


def _plain(m: Dict[str, Any]) -> Dict[str, Any]:
    drop = ('confusion_matrix', 'classes', 'mse_per_step', 'mae_per_step', 'mse_phys_per_step', 'mae_phys_per_step')
    out = {}
    for k, v in m.items():
        if k in drop:
            continue
        out[k] = _plain(v) if isinstance(v, dict) else v
    return out


def table_rows(record: Dict[str, Any]) -> List[List[Any]]:
    rows = []
    for name, r in record['tasks'].items():
        if 'error' in r:
            rows.append([name, 'error', r['error'], '-', '-', '-', '-'])
            continue
        m = r['unireplknet']['metrics']
        cnn = r['baselines']['small_cnn']
        if 'top1' in m:
            rows.append([name, 'test top-1 % (chance {:.1f})'.format(100. / r['num_classes']), m['top1'],
                         cnn['metrics']['top1'], '-',
                         r['unireplknet']['wall_s'], cnn['wall_s']])
        else:
            base = m.get('baselines', {})
            lin = r['baselines']['linear_lsq']['metrics']
            others = (f"persistence {base.get('persistence', {}).get('mse', float('nan')):.4f}, "
                      f"seasonal naive {base.get('seasonal_naive', {}).get('mse', float('nan')):.4f}, "
                      f"linear LSQ {lin['mse']:.4f}")
            rows.append([name, 'test MSE (z-scored, lower is better)', m['mse'], cnn['metrics']['mse'], others,
                         r['unireplknet']['wall_s'], cnn['wall_s']])
    return rows


HEADER = ['task', 'metric', 'UniRepLKNet', 'small CNN (same adapter, budget)', 'other baselines',
          'UniRepLKNet wall s', 'CNN wall s']


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--tasks', default=','.join(ALL_TASKS), help='comma list of tasks')
    p.add_argument('--variant', default='unireplknet_test')
    p.add_argument('--epochs', type=int, default=4, help='epochs (0 = the task recipe\'s epochs)')
    p.add_argument('--max-steps', type=int, default=20, help='train.max_steps_per_epoch (0 = full epochs)')
    p.add_argument('--limit-train', type=int, default=0, help='data.limit_train (0 = all)')
    p.add_argument('--limit-eval', type=int, default=0, help='data.limit_eval (0 = the whole val/test splits)')
    p.add_argument('--workers', type=int, default=0)
    p.add_argument('--cache-dir', default=None,
                   help='data.cache_dir for the built-in data sets (default: the engine\'s)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--work-dir', default=None, help='run directories (default: a temporary directory)')
    p.add_argument('--out', default=str(RESULTS_DIR / 'accuracy_cpu.json'))
    p.add_argument('--threads', type=int, default=0, help='torch threads (0 = torch default)')
    args = p.parse_args(argv)
    set_threads(args.threads)
    t0 = time.perf_counter()
    info = machine_info()
    tmp = None if args.work_dir else tempfile.TemporaryDirectory(prefix='bench_accuracy_')
    work = Path(args.work_dir or tmp.name)
    record: Dict[str, Any] = {'benchmark': 'accuracy on the built-in data sets (issue 6)', 'machine': info,
                              'settings': vars(args), 'tasks': {}}
    for name in [t.strip() for t in args.tasks.split(',') if t.strip()]:
        print(f'=== {name}: UniRepLKNet ({args.variant}) via the engine', flush=True)
        try:
            uni = train_unireplknet(name, args, work)
            print(f'=== {name}: baselines with the same budget', flush=True)
            base = train_baseline(name, uni['config'], args)
        except Exception as e:  # record and go on: one broken task must not cost the others
            print(f'task {name} failed: {type(e).__name__}: {e}', flush=True)
            record['tasks'][name] = {'error': f'{type(e).__name__}: {e}'}
            continue
        res = uni['results']
        cfg = uni['config']
        record['tasks'][name] = {
            'unireplknet': {'metrics': _plain(res['metrics']), 'best_epoch': res['best_epoch'],
                            'params': res['model']['params'], 'wall_s': uni['wall_s'],
                            'engine_wall_s': res.get('wall_time_s'), 'argv': uni['argv']},
            'baselines': base,
            'num_classes': len(res['tasks'][name].get('classes') or []) or None,
            'num_test_samples': res['num_samples'],
            'settings': {'train': cfg['train'], 'data': cfg['data'], 'model': cfg['model'], 'eval': cfg['eval']},
        }
        save_json(record, Path(args.out))  # partial results survive an interrupted run
    finish_machine(info, t0)
    table = markdown_table(HEADER, table_rows(record))
    record['table_markdown'] = table
    save_json(record, Path(args.out))
    print(table)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == '__main__':
    sys.exit(main())
