#!/usr/bin/env python
"""How fast the trunk leaves chance on the built-in sets: the task defaults before and after issue 11's fix.

For every built-in task and seed it trains the task's defaults through the engine (``unimodal.engine.train``, the
full schedule of the defaults, stopped after ``--epochs`` epochs so the learning rate is what the full run has) in
two settings:

* ``before``: the published layer scale (``model.trunk.layer_scale_init_value=1e-6``) and validation with the
  BatchNorm running averages (``train.precise_bn=0``): the defaults before the fix;
* ``after``: the task defaults as they are (layer scale 1.0, precise BN on 20 batches).

It records the validation curve and the first epoch past chance by ``bench_real.past_chance``'s rule (top-1 above
chance + 3 binomial SDs of the validation set; forecasting: MSE below persistence and seasonal naive).
``python benchmarks/bench_start.py`` writes ``results/start_cpu.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_util import RESULTS_DIR, finish_machine, machine_info, markdown_table, save_json, set_threads  # noqa: E402
from bench_real import past_chance  # noqa: E402

TASKS = ('audio', 'point', 'video', 'timeseries', 'image')
SETTINGS = {'before': ['model.trunk.layer_scale_init_value=1e-6', 'train.precise_bn=0'], 'after': []}


def run_one(task: str, seed: int, setting: str, epochs: int, work: Path, extra: List[str]) -> Dict[str, Any]:
    from unimodal.config import parse_set_overrides, resolve_run_config
    from unimodal.engine.trainer import train
    out = work / f'{task}_{setting}_{seed}'
    if out.exists():
        shutil.rmtree(out)
    sets = ['train.device=cpu', f'train.seed={seed}', *SETTINGS[setting], *extra]
    cfg = resolve_run_config({}, {'task': task}, parse_set_overrides(sets))
    t0 = time.perf_counter()
    train(cfg, out_dir=out, stop_after_epochs=min(epochs, cfg.train.epochs))
    wall = time.perf_counter() - t0
    curve = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines() if line.strip()]
    spec = torch.load(out / 'last.pt', map_location='cpu', weights_only=True)['tasks'][task]
    classes = spec.get('classes') or []
    chance = past_chance(task, curve, len(classes) or None)
    train_loss = [r['train'].get(task, {}).get('loss') for r in curve]
    return {'seed': seed, 'setting': setting, 'epochs_run': len(curve), 'schedule_epochs': cfg.train.epochs,
            'past_chance_epoch': chance['epoch'], 'rule': chance['rule'], 'val_curve': chance['val_curve'],
            'train_loss': train_loss, 'wall_s': round(wall, 1), 'overrides': SETTINGS[setting] + extra,
            'num_classes': len(classes) or None}


def summarise(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for setting in SETTINGS:
        rows = [r for r in runs if r['setting'] == setting]
        if not rows:
            continue
        first = [r['past_chance_epoch'] for r in rows]
        out[setting] = {'past_chance_epochs': first,
                        'all_within_2': all(e is not None and e <= 2 for e in first),
                        'val_by_epoch_mean': [float(np.mean([r['val_curve'][i]['val'] for r in rows]))
                                              for i in range(min(len(r['val_curve']) for r in rows))],
                        'wall_s_mean': float(np.mean([r['wall_s'] for r in rows]))}
    return out


def table(record: Dict[str, Any]) -> str:
    rows = []
    for task, rec in record['tasks'].items():
        s = rec['summary']
        metric = 'val MSE' if task == 'timeseries' else 'val top-1 %'
        for setting in SETTINGS:
            if setting in s:
                rows.append([task, setting, ' '.join(str(e) for e in s[setting]['past_chance_epochs']),
                             f'{metric}: ' + ' / '.join(f'{v:.3g}' for v in s[setting]['val_by_epoch_mean']),
                             f"{s[setting]['wall_s_mean']:.0f}"])
    return markdown_table(['task', 'defaults', 'epoch past chance (per seed)', 'validation by epoch (seed mean)',
                           'wall s per run'], rows)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--tasks', default=','.join(TASKS))
    p.add_argument('--seeds', default='0,1,2')
    p.add_argument('--settings', default='before,after')
    p.add_argument('--epochs', type=int, default=3, help='stop after this many epochs (the schedule is the full one)')
    p.add_argument('--set', dest='extra', action='append', default=[], metavar='KEY=VALUE',
                   help='a further config override for every run (trying a change to the defaults)')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=str(RESULTS_DIR / 'start_cpu.json'))
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(',') if t]
    unknown = sorted(set(tasks) - set(TASKS))
    settings = [s for s in args.settings.split(',') if s]
    if unknown or set(settings) - set(SETTINGS):
        p.error(f'tasks from {TASKS}, settings from {tuple(SETTINGS)}')
    set_threads(args.threads)
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.is_file() else {
        'benchmark': 'epoch past chance on the built-in sets, task defaults before/after (issue 11)', 'tasks': {}}
    info = machine_info()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix='bench_start_') as tmp:
        for task in tasks:
            old = record['tasks'].get(task, {}).get('runs', [])
            runs = [r for r in old if r['setting'] not in settings]
            for seed in [int(s) for s in args.seeds.split(',') if s]:
                for setting in settings:
                    print(f'=== {task} seed {seed} {setting}', flush=True)
                    runs.append(run_one(task, seed, setting, args.epochs, Path(tmp), args.extra))
                    print(f"    past chance at epoch {runs[-1]['past_chance_epoch']}: "
                          f"{[round(r['val'], 3) for r in runs[-1]['val_curve']]}", flush=True)
                    record['tasks'][task] = {'runs': runs, 'summary': summarise(runs), 'epochs': args.epochs}
                    record['machine'] = {**info, 'loadavg_end': list(os.getloadavg())}
                    record['table_markdown'] = table(record)
                    save_json(record, out)
    finish_machine(info, t0)
    save_json(record, out)
    print(record['table_markdown'])
    return 0


if __name__ == '__main__':
    sys.exit(main())
