#!/usr/bin/env python
"""Single-task vs joint vs frozen-transferred trunk on the built-in data sets (issue 7).

For every task in ``--tasks`` (default audio, point, timeseries) it records the test metric after

(a) single-task training: ``unimodal train --task T`` for ``--epochs`` × ``--max-steps`` steps;
(b) joint training: ``unimodal train --task audio,point,timeseries`` with one shared trunk, round-robin batches and
    ``joint.steps_per_epoch = max_steps × number of tasks``, i.e. the same total number of optimizer steps as the
    single-task runs together (each task gets the same number of its own batches as in (a));
(c) a frozen trunk from another task: ``--init-from <(a) checkpoint of the next task in the list> --freeze-trunk``
    (adapter and head trained only), same steps as (a).

All runs go through the real engine in-process (``unimodal.cli.main``), with the same seed, lr and model variant.
Run ``python benchmarks/bench_joint.py --help``; more budget: ``--epochs 8 --max-steps 0`` (0 = full epochs).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_util import RESULTS_DIR, finish_machine, machine_info, markdown_table, save_json, set_threads  # noqa: E402


def headline(metrics: Dict[str, Any]) -> Optional[float]:
    """Test top-1 (%) for classification, test MSE (z-scored) for forecasting."""
    if 'top1' in metrics:
        return metrics['top1']
    return metrics.get('mse')


def run_train(argv: List[str], out: Path) -> Dict[str, Any]:
    from unimodal.cli import main
    argv = argv + ['--out', str(out), '--no-progress']
    t0 = time.perf_counter()
    rc = main(argv)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f'unimodal {" ".join(argv)} failed with exit code {rc}')
    res = json.loads((out / 'results.json').read_text())
    cfg = yaml.safe_load((out / 'config.yaml').read_text())
    per_task = {name: {k: v for k, v in entry['metrics'].items() if not k.endswith('_per_step')
                       and k not in ('confusion_matrix', 'classes')}
                for name, entry in res['tasks'].items()}
    return {'argv': argv, 'wall_s': round(wall, 1), 'metrics': per_task, 'best_epoch': res['best_epoch'],
            'checkpoint': res['checkpoint'], 'train_config': cfg['train'],
            'joint_config': cfg.get('joint'), 'model_config': cfg['model']}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--tasks', default='audio,point,timeseries', help='comma list of tasks (two or more)')
    p.add_argument('--variant', default='unireplknet_test')
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--max-steps', type=int, default=10, help='steps per epoch per task (0 = full epochs; the joint '
                   'run then uses the sum of the tasks\' batches, the engine default)')
    p.add_argument('--lr', type=float, default=2e-3, help='one lr for every run (the joint run shares one optimizer)')
    p.add_argument('--limit-train', type=int, default=0, help='data.limit_train (0 = all)')
    p.add_argument('--limit-eval', type=int, default=0, help='data.limit_eval (0 = whole val/test splits)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--work-dir', default=None, help='run directories (default: a temporary directory)')
    p.add_argument('--out', default=str(RESULTS_DIR / 'joint_cpu.json'))
    p.add_argument('--threads', type=int, default=0, help='torch threads (0 = torch default)')
    args = p.parse_args(argv)
    set_threads(args.threads)
    tasks = [t.strip() for t in args.tasks.split(',') if t.strip()]
    if len(tasks) < 2:
        p.error('--tasks needs at least two tasks')
    t0 = time.perf_counter()
    info = machine_info()
    tmp = None if args.work_dir else tempfile.TemporaryDirectory(prefix='bench_joint_')
    work = Path(args.work_dir or tmp.name)
    common = ['--model', args.variant, '--epochs', str(args.epochs), '--lr', str(args.lr),
              '--set', f'train.seed={args.seed}']
    if args.max_steps:
        common += ['--set', f'train.max_steps_per_epoch={args.max_steps}']
    if args.limit_train:
        common += ['--set', f'data.limit_train={args.limit_train}']
    if args.limit_eval:
        common += ['--set', f'data.limit_eval={args.limit_eval}']
    record: Dict[str, Any] = {'benchmark': 'single vs joint vs frozen transferred trunk (issue 7)', 'machine': info,
                              'settings': vars(args), 'single': {}, 'joint': None, 'frozen': {}}

    def save() -> None:
        save_json(record, Path(args.out))

    for t in tasks:  # (a)
        print(f'=== (a) single-task {t}', flush=True)
        record['single'][t] = run_train(['train', '--task', t] + common, work / f'single_{t}')
        save()
    print(f'=== (b) joint {",".join(tasks)}', flush=True)  # (b)
    joint = ['train', '--task', ','.join(tasks)] + common
    if args.max_steps:
        joint += ['--set', f'joint.steps_per_epoch={args.max_steps * len(tasks)}']
    record['joint'] = run_train(joint, work / 'joint')
    save()
    for i, t in enumerate(tasks):  # (c)
        src = tasks[(i + 1) % len(tasks)]
        print(f'=== (c) {t} on the frozen trunk of {src}', flush=True)
        entry = run_train(['train', '--task', t, '--init-from', record['single'][src]['checkpoint'],
                           '--freeze-trunk'] + common, work / f'frozen_{t}_from_{src}')
        entry['trunk_from'] = src
        record['frozen'][t] = entry
        save()
    rows = []
    for t in tasks:
        single = record['single'][t]['metrics'][t]
        metric = 'test top-1 %' if 'top1' in single else 'test MSE (z-scored; lower is better)'
        fr = record['frozen'][t]
        rows.append([t, metric, headline(single), headline(record['joint']['metrics'][t]),
                     headline(fr['metrics'][t]), fr['trunk_from'],
                     record['single'][t]['wall_s'], fr['wall_s']])
    header = ['task', 'metric', '(a) single-task', '(b) joint (same total steps)', '(c) frozen trunk from',
              'trunk source', '(a) wall s', '(c) wall s']
    table = markdown_table(header, rows)
    single_s = sum(record["single"][t]["wall_s"] for t in tasks)
    table += (f'\n\nJoint run wall time: {record["joint"]["wall_s"]} s (vs {single_s:.1f} s for the single-task runs '
              'together).')
    finish_machine(info, t0)
    record['table_markdown'] = table
    save()
    print(table)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == '__main__':
    sys.exit(main())
