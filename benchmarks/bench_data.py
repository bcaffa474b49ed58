#!/usr/bin/env python
"""Data pipeline vs trunk: which side limits training? (issue 4)

For every task (audio, point, video, timeseries; built-in data, the task recipe's reader options and batch size):

* loader samples/s: the training split's reader (file decoding + the reader's per-sample preprocessing:
  WAV read/pad, point sampling from the npz cache, video decode + clip sampling + crop, window slicing) through a
  shuffled ``DataLoader`` with 0 and 2 worker processes; the first batch (worker start-up) is timed separately;
* adapter samples/s: the adapter's batched encoding (log-mel filterbank, depth projection, frame layout, series
  embedding) forward only, on a cached batch;
* training-step samples/s: forward + backward + AdamW of the whole task model (adapter + trunk + head,
  ``--variant`` default ``unireplknet_test``) on a cached batch, and of the trunk + head alone on the adapter output.

If the loader's samples/s is below the training step's, the data side limits training. On this 2-core machine the
2 workers compete with the training process for the same cores, so the loader and the step are measured apart.
Run ``python benchmarks/bench_data.py --help``; more samples: ``--batches 20 --steps 20``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch.utils.data import DataLoader

from unimodal.data.inputs import batch_size as samples_in

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_util import RESULTS_DIR, finish_machine, machine_info, markdown_table, save_json, set_threads  # noqa: E402


def loader_rate(ds, batch_size: int, workers: int, batches: int, seed: int) -> Dict[str, float]:
    g = torch.Generator().manual_seed(seed)
    # persistent workers as in the engine; the timed batches run on over epoch ends (a new shuffled pass)
    dl = DataLoader(ds, batch_size=batch_size, shuffle=True, generator=g, num_workers=workers, drop_last=True,
                    persistent_workers=workers > 0)
    t0 = time.perf_counter()
    it = iter(dl)
    next(it)
    first = time.perf_counter() - t0
    n = 0
    t1 = time.perf_counter()
    for _ in range(batches):
        try:
            x, _ = next(it)
        except StopIteration:
            it = iter(dl)
            x, _ = next(it)
        n += samples_in(x)  # a tensor or a structured (tensor, ...) batch
    dt = time.perf_counter() - t1
    del it
    return {'samples_per_s': round(n / dt, 1) if n else None, 'first_batch_s': round(first, 3),
            'samples_timed': n, 'time_s': round(dt, 3)}


def step_rate(model: torch.nn.Module, x: torch.Tensor, loss_fn, steps: int) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()

    def step() -> None:
        loss = loss_fn(model(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (allocations, lazy init)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return round(steps * samples_in(x) / (time.perf_counter() - t0), 1)


class TrunkWithHead(torch.nn.Module):
    """The trunk and a classification head on ready-made trunk inputs (the trunk's share of a training step)."""

    def __init__(self, trunk: torch.nn.Module, head: torch.nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk.forward_head(self.trunk.forward_features(grid), pre_logits=True))


def bench_task(name: str, args: argparse.Namespace) -> Dict[str, Any]:
    import unimodal
    from unimodal.config import resolve_run_config
    from unimodal.engine.build import build_task_datasets, data_root
    from unimodal.models.task_model import create_trunk
    from unimodal.tasks import make_task_spec
    from unimodal.models.heads import create_head

    torch.manual_seed(args.seed)
    cfg = resolve_run_config({'task': name, 'model': {'variant': args.variant}})
    from unimodal.tasks import get_task
    task = get_task(name)
    settings = cfg.task_settings(task.name)
    root, builtin = data_root(task, settings.data)
    sets = build_task_datasets(task, settings.data, root, ['train'])
    spec = make_task_spec(task, settings, sets)
    ds = sets['train']
    bs = args.batch_size or settings.train.batch_size
    out: Dict[str, Any] = {'batch_size': bs, 'train_samples': len(ds), 'reader': type(ds).__name__,
                           'reader_options': settings.data.options, 'adapter': spec.adapter,
                           'adapter_kwargs': spec.adapter_kwargs, 'input_shape': spec.input_shape,
                           'loader': {}}
    for w in args.workers:
        print(f'  {name}: loader, {w} worker(s)', flush=True)
        out['loader'][f'workers_{w}'] = loader_rate(ds, bs, w, args.batches, args.seed)
    # a cached batch for the compute side
    x, y = next(iter(DataLoader(ds, batch_size=bs, shuffle=False)))
    adapter = unimodal.get_adapter_class(spec.adapter)(**spec.adapter_kwargs)
    with torch.no_grad():
        adapter.eval()
        adapter(x)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            grid, _ = adapter(x)
        out['adapter_samples_per_s'] = round(args.steps * bs / (time.perf_counter() - t0), 1)
    out['trunk_input_shape'] = list(grid.shape)
    adapter.set_progress(settings.train.epochs)  # time the training step with augmentation at full strength
    model = unimodal.create_model(adapter, args.variant, **spec.head_kwargs)
    loss_fn = lambda o: spec.task_kind.train_loss(spec, o, y, None, 0.0)  # noqa: E731
    print(f'  {name}: training step (task model)', flush=True)
    out['train_step_samples_per_s'] = step_rate(model, x, loss_fn, args.steps)
    # the trunk + head alone on the adapter's output (what the trunk costs per sample)
    trunk = create_trunk(args.variant, in_chans=grid.shape[1])
    tmodel = TrunkWithHead(trunk, create_head('classification', trunk.num_features, num_classes=8))
    tgt = torch.zeros(grid.shape[0], dtype=torch.long)
    print(f'  {name}: training step (trunk only)', flush=True)
    out['trunk_step_images_per_s'] = step_rate(
        tmodel, grid.detach(), lambda o: torch.nn.functional.cross_entropy(o, tgt), args.steps)
    out['trunk_images_per_sample'] = grid.shape[0] // bs
    out['limited_by'] = {k: ('data' if (v['samples_per_s'] or 0) < out['train_step_samples_per_s'] else 'compute')
                         for k, v in out['loader'].items()}
    return out


def render_table(record: Dict[str, Any]) -> str:
    """The markdown table of a result record (samples/s unless said otherwise)."""
    workers = record['settings']['workers']
    rows = []
    for name, r in record['tasks'].items():
        if 'error' in r:
            rows.append([name, r['error']] + ['-'] * (len(workers) + 5))
            continue
        limited = r['limited_by']
        limited = limited if isinstance(limited, dict) else {f'workers_{w}': limited for w in workers}
        rows.append([name, r['batch_size']] + [r['loader'].get(f'workers_{w}', {}).get('samples_per_s')
                                              for w in workers]
                    + [r['adapter_samples_per_s'], r['train_step_samples_per_s'],
                       f"{r['trunk_step_images_per_s']} ({r['trunk_images_per_sample']}/sample)",
                       'x'.join(str(s) for s in r['trunk_input_shape'][1:]),
                       ', '.join(f"{k.split('_')[1]} workers: {v}" for k, v in limited.items())])
    header = (['task', 'batch'] + [f'loader {w} workers' for w in workers]
              + ['adapter fwd', 'train step (task model)', 'train step trunk only, images/s', 'trunk input CxHxW',
                 'limited by'])
    return markdown_table(header, rows)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--tasks', default='audio,point,video,timeseries')
    p.add_argument('--variant', default='unireplknet_test')
    p.add_argument('--batch-size', type=int, default=0, help='0 = the task recipe\'s batch size')
    p.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    p.add_argument('--batches', type=int, default=20,
                   help='loader batches timed (after the first; with workers up to 2 x workers of them may be '
                        'prefetched while the first is waited for)')
    p.add_argument('--steps', type=int, default=5, help='training steps timed (after one warm-up)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default=str(RESULTS_DIR / 'data_cpu.json'))
    p.add_argument('--threads', type=int, default=0, help='torch threads (0 = torch default)')
    args = p.parse_args(argv)
    set_threads(args.threads)
    t0 = time.perf_counter()
    info = machine_info()
    record: Dict[str, Any] = {'benchmark': 'data pipeline vs training step (issue 4)', 'machine': info,
                              'settings': vars(args), 'tasks': {}}
    for name in [t.strip() for t in args.tasks.split(',') if t.strip()]:
        print(f'=== {name}', flush=True)
        t1 = time.perf_counter()
        try:
            record['tasks'][name] = bench_task(name, args)
        except Exception as e:
            print(f'task {name} failed: {type(e).__name__}: {e}', flush=True)
            record['tasks'][name] = {'error': f'{type(e).__name__}: {e}'}
        record['tasks'][name]['wall_s'] = round(time.perf_counter() - t1, 1)
        save_json(record, Path(args.out))
    table = render_table(record)
    finish_machine(info, t0)
    record['table_markdown'] = table
    save_json(record, Path(args.out))
    print(table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
