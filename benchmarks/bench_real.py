#!/usr/bin/env python
"""The trunk with each task's defaults against simple baselines on small real data sets (issue 11, section 2).

The sets come from ``benchmarks/real_data/prepare.py`` (see ``real_data/PROVENANCE.md``). Per task and seed:

* the trunk through the CLI as a new user runs it: ``python -m unimodal.cli train --task T --data DIR --out RUN
  --set train.seed=S`` (the task's default recipe; ``results.json`` for the test metrics, ``metrics.jsonl`` for the
  epoch at which validation first leaves chance);
* the small CNN of ``bench_accuracy.py`` (imported, not copied) on the same adapter, head, data and budget, and for
  forecasting the least-squares linear model fitted on the same training windows;
* classification: k-nearest-neighbour on simple descriptors (k chosen on the validation split);
* forecasting: persistence and seasonal naive, from the engine's own meter on the same test windows.

``python benchmarks/bench_real.py --data-root DIR`` runs all four tasks, 3 seeds, and merges the results into
``results/real_cpu.json`` task by task. Quick check: ``--tasks audio --seeds 0 --epochs 2``.

The baselines do not depend on the trunk's settings. ``--baselines-from OLD.json`` takes a task's baseline rows
(small CNN, k-NN, least-squares linear) for a seed from an earlier record instead of training them again, when the
prepared set is the same one: its provenance must match the record's (the digest of every prepared file,
``data_sha256``, where the old record has it; else the recorded summary: builder, seed, classes, counts, package
versions). A mismatch is an error; reused rows carry ``reused_from``. (The audio CNN costs ~100-300 s per seed.)

The small CNN is tested at the epoch the trunk's run tests (``eval.checkpoint``: best on validation, or last);
rows tested otherwise are not reused. ``--cnn-pool max`` gives the small CNN global max pooling instead of average
(a reference for the trunk defaults that pool by max; rows record ``pool``, and rows pooled another way are not
reused).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_util import RESULTS_DIR, finish_machine, machine_info, markdown_table, save_json, set_threads  # noqa: E402
from bench_accuracy import _plain, train_baseline  # noqa: E402

TASK_DATA = {'audio': 'speech_digits', 'point': 'furniture_meshes', 'video': 'camera_motion_video',
             'weather': 'tmy3_weather'}
KNN_KS = (1, 3, 5, 7, 9)
CHANCE_SDS = 3.0  # "clearly past chance": validation top-1 this many binomial SDs above 1/classes


# --------------------------------------------------------------------------------------------- the trunk
def run_trunk(task: str, data: Path, seed: int, args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    out = work / f'{task}_seed{seed}'
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, '-m', 'unimodal.cli', 'train', '--task', task, '--data', str(data), '--out', str(out),
           '--no-progress', '--set', f'train.seed={seed}', '--set', f'data.num_workers={args.workers}']
    if args.epochs:
        cmd += ['--epochs', str(args.epochs)]
    if args.max_steps:
        cmd += ['--set', f'train.max_steps_per_epoch={args.max_steps}']
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    t0 = time.perf_counter()
    with open(work / f'{task}_seed{seed}.log', 'w') as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        tail = (work / f'{task}_seed{seed}.log').read_text()[-3000:]
        raise RuntimeError(f'unimodal train --task {task} (seed {seed}) failed with exit code {rc}:\n{tail}')
    results = json.loads((out / 'results.json').read_text())
    cfg = yaml.safe_load((out / 'config.yaml').read_text())
    curve = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines() if line.strip()]
    return {'results': results, 'config': cfg, 'curve': curve, 'wall_s': round(wall, 1), 'argv': cmd[1:]}


def past_chance(task: str, curve: List[Dict[str, Any]], num_classes: Optional[int]) -> Dict[str, Any]:
    """First epoch whose validation score is clearly better than a trivial predictor.

    Classification: top-1 above ``1/classes`` by ``CHANCE_SDS`` binomial standard deviations of the validation
    set's size. Forecasting: MSE below both persistence and seasonal naive on the same validation windows.
    """
    rows = []
    for rec in curve:
        val = rec['val'][task]
        rows.append({'epoch': rec['epoch'], 'val': val.get('top1', val.get('mse'))})
    if num_classes:
        n = curve[0]['val'][task]['num_samples']
        p = 1.0 / num_classes
        threshold = 100 * (p + CHANCE_SDS * math.sqrt(p * (1 - p) / n))
        first = next((r['epoch'] for r in rows if r['val'] > threshold), None)
        rule = f'val top-1 > {threshold:.1f} % (chance {100 * p:.1f} % + {CHANCE_SDS:g} SD, {n} val samples)'
    else:
        def trivial(rec):
            base = rec['val'][task]['baselines']
            return min(base['persistence']['mse'], base['seasonal_naive']['mse'])
        first = next((rec['epoch'] for rec in curve if rec['val'][task]['mse'] < trivial(rec)), None)
        rule = 'val MSE < min(persistence, seasonal naive) on the validation windows'
    return {'epoch': first, 'rule': rule, 'val_curve': rows}


# --------------------------------------------------------------------------------------------- descriptors
def _audio_descriptor(wav: torch.Tensor, mel) -> np.ndarray:
    spec = torch.log(mel(wav) + 1e-6)  # (mels, frames)
    return torch.cat([spec.mean(1), spec.std(1)]).numpy()


def _point_descriptor(pts: torch.Tensor) -> np.ndarray:
    xyz = pts[:, :3].numpy()  # unit sphere, y up (the reader's pose)
    extents = xyz.max(0) - xyz.min(0)
    dist = np.histogram(np.linalg.norm(xyz, axis=1), bins=16, range=(0, 1))[0] / len(xyz)
    height = np.histogram(xyz[:, 1], bins=16, range=(-1, 1))[0] / len(xyz)
    return np.concatenate([extents, dist, height])


def _video_descriptor(clip: torch.Tensor) -> np.ndarray:
    """Per-frame colour means and standard deviations, mean absolute frame difference and the global shift
    between consecutive frames by phase correlation (``(3, T, S, S)`` clip)."""
    colour = torch.cat([clip.mean((2, 3)).flatten(), clip.std((2, 3)).flatten()])
    grey = clip.mean(0)  # (T, S, S)
    diff = (grey[1:] - grey[:-1]).abs().mean((1, 2))
    spec = torch.fft.fft2(grey)
    cross = spec[1:] * spec[:-1].conj()
    corr = torch.fft.ifft2(cross / cross.abs().clamp_min(1e-8)).real  # (T-1, S, S)
    s = grey.shape[-1]
    peak = corr.flatten(1).argmax(1)
    dy, dx = (peak // s).float(), (peak % s).float()
    dy, dx = torch.where(dy > s / 2, dy - s, dy), torch.where(dx > s / 2, dx - s, dx)
    return torch.cat([colour, diff, dx, dy]).numpy()


def descriptors(task: str, cfg: Dict[str, Any]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{split: (features (n, d), labels (n,))}`` from the same readers and options as the trunk's run."""
    from unimodal.config import resolve_run_config
    from unimodal.data.inputs import primary
    from unimodal.engine.build import build_task_datasets, data_root
    from unimodal.tasks import get_task
    t = get_task(task)
    data = resolve_run_config(base=cfg).task_settings(t.name).data  # the stored config.yaml, resolved
    root, _ = data_root(t, data)
    sets = build_task_datasets(t, data, root, ['train', 'val', 'test'])
    if task == 'audio':
        import torchaudio
        mel = torchaudio.transforms.MelSpectrogram(sample_rate=sets['train'].sample_rate, n_fft=400, hop_length=160,
                                                   n_mels=40)
        fn = lambda x: _audio_descriptor(primary(x), mel)  # noqa: E731  (the waveform of (waveform, length))
    elif task == 'point':
        fn = _point_descriptor
    elif task == 'video':
        # every split read as the validation split reads (one centre clip, centre crop): no random crops
        from unimodal.data.kinetics import Kinetics
        opts = {k: (tuple(v) if isinstance(v, list) else v)
                for k, v in t.split_options(cfg['data']['options'], 'val').items()}  # no train-only repeats
        sets = {s: Kinetics(root, 'val', annotation=ds.annotation, classes=sets['train'].classes, **opts)
                for s, ds in sets.items()}
        fn = _video_descriptor
    else:
        raise ValueError(f'no descriptor for task {task}')
    out = {}
    for split, ds in sets.items():
        feats, labels = zip(*[(fn(x), int(y)) for x, y in (ds[i] for i in range(len(ds)))])
        out[split] = (np.stack(feats).astype(np.float64), np.asarray(labels))
    return out


def knn(feats: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> Dict[str, Any]:
    """k-NN (Euclidean on train-standardised features, majority vote, ties to the nearer class); k from val."""
    xtr, ytr = feats['train']
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-8

    def predict(x: np.ndarray, k: int) -> np.ndarray:
        d = torch.cdist(torch.from_numpy((x - mu) / sd), torch.from_numpy((xtr - mu) / sd))
        idx = d.topk(k, largest=False).indices.numpy()  # nearest first
        preds = []
        for row in idx:
            votes = np.bincount(ytr[row], minlength=int(ytr.max()) + 1)
            best = np.flatnonzero(votes == votes.max())
            preds.append(next(ytr[j] for j in row if ytr[j] in best))  # tie: the class of the nearest
        return np.asarray(preds)

    val_acc = {k: float((predict(feats['val'][0], k) == feats['val'][1]).mean() * 100) for k in KNN_KS}
    k = max(KNN_KS, key=lambda q: (val_acc[q], -q))
    test = float((predict(feats['test'][0], k) == feats['test'][1]).mean() * 100)
    return {'top1': test, 'k': k, 'val_top1_by_k': val_acc, 'dims': int(xtr.shape[1]),
            'num_train': len(ytr), 'num_test': len(feats['test'][1])}


# --------------------------------------------------------------------------------------------- one task
def run_task(task: str, data: Path, seeds: List[int], args: argparse.Namespace, work: Path,
             save: Callable[[Dict[str, Any]], None]) -> Dict[str, Any]:
    """All seeds of one task; ``save`` receives the record after every seed (partial results survive)."""
    runs: List[Dict[str, Any]] = []
    rec: Dict[str, Any] = {}
    reuse = reusable_baselines(Path(args.baselines_from), task, data, args.cnn_pool) if args.baselines_from else {}
    for seed in seeds:
        print(f'=== {task} seed {seed}: trunk via the CLI', flush=True)
        trunk = run_trunk(task, data, seed, args, work)
        res, cfg = trunk['results'], trunk['config']
        key = next(iter(res['tasks']))  # the task's current name (weather runs as timeseries)
        classes = res['tasks'][key].get('classes') or []
        chance = past_chance(key, trunk['curve'], len(classes) or None)
        run: Dict[str, Any] = {'seed': seed, 'trunk': {
            'metrics': _plain(res['metrics']), 'best_epoch': res['best_epoch'], 'epochs': cfg['train']['epochs'],
            'params': res['model']['params'], 'wall_s': trunk['wall_s'], 'past_chance': chance,
            'argv': trunk['argv']}}
        tested = reuse.get(seed, {}).get('small_cnn', {}).get('tested', 'best')
        if seed in reuse and tested != cfg['eval']['checkpoint']:
            raise ValueError(f'--baselines-from {args.baselines_from}: its small CNN of {task} was tested at the '
                             f'{tested} epoch, this run tests the {cfg["eval"]["checkpoint"]} one (eval.checkpoint); '
                             f'run without --baselines-from')
        if seed in reuse:
            print(f'=== {task} seed {seed}: baselines reused from {args.baselines_from}', flush=True)
            run['baselines'] = reuse[seed]
        else:
            print(f'=== {task} seed {seed}: small CNN, same settings', flush=True)
            torch.manual_seed(seed)
            run['baselines'] = train_baseline(task, cfg, argparse.Namespace(seed=seed, workers=args.workers,
                                                                            cnn_pool=args.cnn_pool))
        if classes and 'knn' not in run['baselines']:
            print(f'=== {task} seed {seed}: k-NN on descriptors', flush=True)
            t0 = time.perf_counter()
            run['baselines']['knn'] = {**knn(descriptors(task, cfg)), 'wall_s': round(time.perf_counter() - t0, 1)}
        runs.append(run)
        print(f'    {summary_line(task, run)}', flush=True)
        rec = {'data': str(data), 'num_classes': len(classes) or None, 'runs': runs, 'summary': summarise(runs),
               'settings': {k: cfg[k] for k in ('train', 'data', 'model', 'eval')},
               'provenance': provenance_summary(data), 'seeds_done': [r['seed'] for r in runs]}
        save(rec)
    return rec


def method_scores(run: Dict[str, Any]) -> Dict[str, float]:
    m = run['trunk']['metrics']
    b = run['baselines']
    if 'top1' in m:
        out = {'trunk': m['top1'], 'small_cnn': b['small_cnn']['metrics']['top1']}
        if 'knn' in b:
            out['knn'] = b['knn']['top1']
        return out
    return {'trunk': m['mse'], 'small_cnn': b['small_cnn']['metrics']['mse'],
            'linear_lsq': b['linear_lsq']['metrics']['mse'], 'persistence': m['baselines']['persistence']['mse'],
            'seasonal_naive': m['baselines']['seasonal_naive']['mse']}


def summarise(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    scores = [method_scores(r) for r in runs]
    out = {}
    for name in scores[0]:
        v = np.asarray([s[name] for s in scores])
        out[name] = {'mean': float(v.mean()), 'std': float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                     'min': float(v.min()), 'max': float(v.max()), 'n': len(v)}
    out['past_chance_epochs'] = [r['trunk']['past_chance']['epoch'] for r in runs]
    out['trunk_wall_s'] = [r['trunk']['wall_s'] for r in runs]
    out['cnn_wall_s'] = [r['baselines']['small_cnn']['wall_s'] for r in runs]
    return out


def summary_line(task: str, run: Dict[str, Any]) -> str:
    return ', '.join(f'{k} {v:.4g}' for k, v in method_scores(run).items()) + \
        f'; past chance at epoch {run["trunk"]["past_chance"]["epoch"]}'


def provenance_summary(data: Path) -> Dict[str, Any]:
    prov = data / 'provenance.json'
    if not prov.is_file():
        return {}
    p = json.loads(prov.read_text())
    keep = ('builder', 'seed', 'classes', 'counts', 'speaker_groups', 'sites', 'rows', 'columns', 'scenes',
            'clips_per_class')
    return {**{k: p[k] for k in keep if k in p},
            'packages': sorted({f"{s['package']} {s['version']}" for s in p.get('sources', [])})
            + sorted(f'{k} {v}' for k, v in p.get('programs', {}).items()),
            'data_sha256': data_digest(data)}


def data_digest(data: Path) -> str:
    """sha256 over every prepared file of a set (relative path and content, in path order)."""
    h = hashlib.sha256()
    for f in sorted(p for p in data.rglob('*') if p.is_file()):
        h.update(str(f.relative_to(data)).encode() + b'\0')
        with open(f, 'rb') as fh:
            for block in iter(lambda: fh.read(1 << 20), b''):
                h.update(block)
    return h.hexdigest()


def reusable_baselines(path: Path, task: str, data: Path, cnn_pool: str = 'avg') -> Dict[int, Dict[str, Any]]:
    """``{seed: baselines}`` of ``task`` in the record at ``path`` when its data set is this one and its small CNN
    pools the same way (see the module docstring); raises ``ValueError`` naming what differs."""
    old = json.loads(path.read_text())['tasks'].get(task)
    if not old or not old.get('runs'):
        return {}
    pools = {r['baselines']['small_cnn'].get('pool', 'avg') for r in old['runs'] if r.get('baselines')}
    if pools - {cnn_pool}:
        raise ValueError(f'--baselines-from {path}: task {task} has small-CNN rows with {"/".join(sorted(pools))} '
                         f'pooling, not --cnn-pool {cnn_pool}; run without --baselines-from')
    was, now = old.get('provenance') or {}, provenance_summary(data)
    if 'data_sha256' in was:
        keys, how = ['data_sha256'], 'digest of the prepared files'
    else:
        keys = sorted(k for k in now if k != 'data_sha256')
        how = 'provenance summary (the old record has no file digest): ' + ', '.join(keys)
    differ = [k for k in keys if was.get(k) != now.get(k)]
    if differ:
        raise ValueError(f'--baselines-from {path}: task {task} was recorded on another data set ({", ".join(differ)} '
                         f'differ from {data}); run without --baselines-from')
    src = f'{path.name} (seed\'s baselines reused: same data set by {how})'
    return {int(r['seed']): {name: {**row, 'reused_from': src} for name, row in r['baselines'].items()}
            for r in old['runs'] if r.get('baselines')}


def fmt_ms(s: Dict[str, float]) -> str:
    return f"{s['mean']:.4g} ± {s['std']:.2g}" if s['n'] > 1 else f"{s['mean']:.4g}"


def table(record: Dict[str, Any]) -> str:
    rows = []
    for task, r in record['tasks'].items():
        if 'summary' not in r:
            rows.append([task, 'error: ' + r['error'][:80]] + ['-'] * 6)
            continue
        s = r['summary']
        if r['num_classes']:
            metric = f"test top-1 % (chance {100 / r['num_classes']:.1f})"
            others = f"k-NN {fmt_ms(s['knn'])}" if 'knn' in s else '-'
        else:
            metric = 'test MSE (z-scored, lower is better)'
            others = (f"persistence {fmt_ms(s['persistence'])}, seasonal naive {fmt_ms(s['seasonal_naive'])}, "
                      f"linear LSQ {fmt_ms(s['linear_lsq'])}")
        rows.append([task, metric, fmt_ms(s['trunk']), fmt_ms(s['small_cnn']), others,
                     ' '.join(str(e) for e in s['past_chance_epochs']),
                     f"{np.mean(s['trunk_wall_s']):.0f}", f"{np.mean(s['cnn_wall_s']):.0f}"])
    return markdown_table(['task', 'metric', 'trunk (defaults)', 'small CNN', 'other baselines',
                           'epoch past chance (per seed)', 'trunk wall s', 'CNN wall s'], rows)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data-root', required=True, help='the folder prepare.py wrote (one sub-folder per set)')
    p.add_argument('--tasks', default=','.join(TASK_DATA), help='comma list of ' + ', '.join(TASK_DATA))
    p.add_argument('--seeds', default='0,1,2', help='comma list of seeds')
    p.add_argument('--epochs', type=int, default=0, help='override the recipe\'s epochs (0 = the task default)')
    p.add_argument('--max-steps', type=int, default=0, help='train.max_steps_per_epoch (0 = full epochs)')
    p.add_argument('--workers', type=int, default=0)
    p.add_argument('--threads', type=int, default=1, help='torch threads here and OMP_NUM_THREADS of the CLI runs '
                                                          '(0 = torch default)')
    p.add_argument('--baselines-from', default=None,
                   help='reuse the baseline rows of this earlier record where its data set is the same (see above)')
    p.add_argument('--cnn-pool', default='avg', choices=('avg', 'max'),
                   help='global pooling of the small CNN baseline (avg: the recorded baseline; max: a reference for '
                        'a trunk that pools by max)')
    p.add_argument('--work-dir', default=None, help='keep the run folders here (default: a temporary folder)')
    p.add_argument('--out', default=str(RESULTS_DIR / 'real_cpu.json'), help='results JSON (tasks are merged in)')
    args = p.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(',') if t.strip()]
    unknown = [t for t in tasks if t not in TASK_DATA]
    if unknown:
        p.error(f'unknown task(s) {unknown}; choose from {list(TASK_DATA)}')
    seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
    root = Path(args.data_root).expanduser()
    missing = [str(root / TASK_DATA[t]) for t in tasks if not (root / TASK_DATA[t]).is_dir()]
    if missing:
        p.error(f'missing data set folder(s) {missing}: run benchmarks/real_data/prepare.py --out {root}')
    set_threads(args.threads)
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.is_file() else {
        'benchmark': 'trunk defaults vs simple baselines on small real data (issue 11)', 'tasks': {}}
    info = machine_info()
    t0 = time.perf_counter()
    tmp = None if args.work_dir else tempfile.TemporaryDirectory(prefix='bench_real_')
    work = Path(args.work_dir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        t1 = time.perf_counter()
        partial: Dict[str, Any] = {}

        def save(rec: Dict[str, Any], task: str = task, t1: float = t1, partial: Dict[str, Any] = partial) -> None:
            partial.update(rec)
            rec['machine'] = {**info, 'loadavg_end': list(os.getloadavg())}
            rec['options'] = {k: v for k, v in vars(args).items() if k not in ('out',)}
            rec['total_wall_s'] = round(time.perf_counter() - t1, 1)
            record['tasks'][task] = rec
            record['table_markdown'] = table(record)
            save_json(record, out)

        try:
            run_task(task, root / TASK_DATA[task], seeds, args, work, save)
        except Exception as e:  # record and go on: one broken task must not cost the others
            print(f'task {task} failed: {type(e).__name__}: {e}', flush=True)
            save({**partial, 'error': f'{type(e).__name__}: {e}'})  # keeps the seeds that finished
    finish_machine(info, t0)
    print(record['table_markdown'])
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == '__main__':
    sys.exit(main())
