"""The end-to-end runs of the device check: one short training epoch per task through the CLI (AMP), and the
multi-process (``torchrun``, nccl) run. Each run is a child process with its own time limit; results merge into
``results/speed_cuda.json`` (keys ``epochs``, ``ddp``).

    python benchmarks/device_runs.py --sections epochs ddp                    # on the GPU machine
    python benchmarks/device_runs.py --device cpu --tiny --out /tmp/dry.json  # dry run (timeseries only, gloo)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _device_util import RESULTS, ROOT, log, merge_json  # noqa: E402

TASKS = ('audio', 'point', 'video', 'timeseries', 'image')


def _tail(text: str, n: int = 15) -> List[str]:
    return text.strip().splitlines()[-n:]


def _env() -> Dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
                PYTHONUNBUFFERED='1')


def _train_cmd(task: str, amp: str, args, out: Path) -> List[str]:
    return [sys.executable, '-m', 'unimodal.cli', 'train', '--task', task, '--epochs', '1', '--device', args.device,
            '--set', f'train.amp={amp}', '--set', f'train.max_steps_per_epoch={args.steps}',
            '--set', f'data.limit_eval={args.limit_eval}', '--workers', str(args.workers), '--no-progress',
            '--out', str(out)]


def _summary(run_dir: Path) -> Dict[str, Any]:
    path = run_dir / 'results.json'
    if not path.exists():
        return {}
    res = json.loads(path.read_text())
    metrics = {k: v for k, v in res.get('metrics', {}).items() if isinstance(v, (int, float))}
    return dict(metrics=metrics, train_wall_time_s=res.get('wall_time_s'), best_val_score=res.get('best_val_score'),
                device=res.get('device'), num_samples=res.get('num_samples'))


def section_epochs(args, out_path: Path) -> Dict[str, Any]:
    """Every task at once (one process each: the GPU is shared, the built-in data are generated on the CPUs in
    parallel), plus an fp16 run (loss scaling) of the first task."""
    work = Path(tempfile.mkdtemp(prefix='unimodal_epochs_'))
    runs = [(t, args.amp) for t in args.tasks] + ([(args.tasks[0], 'fp16')] if args.fp16_run else [])
    procs = {}
    t0 = time.perf_counter()
    for task, amp in runs:
        key = f'{task}/{amp}'
        cmd = _train_cmd(task, amp, args, work / key.replace('/', '_'))
        procs[key] = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                                       cwd=ROOT), cmd, time.perf_counter())
    res: Dict[str, Any] = dict(steps=args.steps, limit_eval=args.limit_eval, device=args.device, runs={})
    for key, (proc, cmd, start) in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=max(1.0, args.timeout_s - (time.perf_counter() - t0)))
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            rc = 'timeout'
        entry = dict(cmd=' '.join(cmd[1:]), rc=rc, wall_s=round(time.perf_counter() - start, 1),
                     **_summary(work / key.replace('/', '_')))
        if rc != 0:
            entry['stderr_tail'] = _tail(stderr)
            entry['stdout_tail'] = _tail(stdout, 5)
        res['runs'][key] = entry
        log(f'epoch {key}: rc={rc} {entry["wall_s"]}s {entry.get("metrics", "")}')
        merge_json(out_path, 'epochs', res)
    res['ok'] = all(r['rc'] == 0 for r in res['runs'].values())
    merge_json(out_path, 'epochs', res)
    return res


def section_ddp(args, out_path: Path) -> Dict[str, Any]:
    """``torchrun`` with 2 processes when 2 GPUs are visible, else 1 (the nccl group still initialises); on 2+
    GPUs also a 2-process CLI training run with SyncBatchNorm."""
    import torch
    gpus = torch.cuda.device_count() if args.device == 'cuda' else 0
    nproc = 2 if gpus >= 2 else 1
    run = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}']
    jobs = {'ddp_check': run + [str(ROOT / 'benchmarks' / 'ddp_check.py'), '--device', args.device,
                                '--amp', args.amp] + (['--variant', 'test', '--size', '64', '--batch', '4']
                                                      if args.tiny else [])}
    if nproc == 2:
        jobs['cli_train_2proc'] = run + ['-m', 'unimodal.cli'] + _train_cmd(
            args.tasks[0], args.amp, args, Path(tempfile.mkdtemp(prefix='unimodal_ddp_')))[3:] + [
            '--set', 'train.sync_bn=true']
    res: Dict[str, Any] = dict(gpus=gpus, nproc=nproc, runs={})
    for name, cmd in jobs.items():
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s, env=_env(), cwd=ROOT)
            rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as err:
            rc, stdout, stderr = 'timeout', err.stdout or '', err.stderr or ''
            stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
            stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
        entry: Dict[str, Any] = dict(cmd=' '.join(cmd[1:]), rc=rc, wall_s=round(time.perf_counter() - t, 1))
        lines = [ln for ln in stdout.splitlines() if ln.startswith('{')]
        if lines:
            entry['result'] = json.loads(lines[-1])
        if rc != 0:
            entry['stderr_tail'] = _tail(stderr)
        res['runs'][name] = entry
        log(f'{name} ({nproc} process{"es" if nproc > 1 else ""}): rc={rc} {entry["wall_s"]}s '
            f'{entry.get("result", "")}')
        merge_json(out_path, 'ddp', res)
    res['ok'] = all(r['rc'] == 0 for r in res['runs'].values())
    merge_json(out_path, 'ddp', res)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sections', nargs='+', default=['epochs', 'ddp'], choices=['epochs', 'ddp'])
    p.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    p.add_argument('--tiny', action='store_true', help='dry run: timeseries only, 1 step')
    p.add_argument('--tasks', nargs='+', default=list(TASKS))
    p.add_argument('--amp', default='bf16', choices=['bf16', 'fp16', 'none'])
    p.add_argument('--no-fp16-run', dest='fp16_run', action='store_false', help='skip the fp16 (GradScaler) run')
    p.add_argument('--steps', type=int, default=20, help='train.max_steps_per_epoch')
    p.add_argument('--limit-eval', type=int, default=64, help='data.limit_eval (val and test samples)')
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--timeout-s', type=float, default=70.0, help='per section: runs still going are killed')
    p.add_argument('--out', default=str(RESULTS / 'speed_cuda.json'))
    args = p.parse_args(argv)
    if args.tiny:
        args.tasks, args.steps, args.limit_eval, args.workers, args.fp16_run = ['timeseries'], 1, 8, 0, False
    out_path = Path(args.out)
    ok = True
    for name in args.sections:
        t = time.perf_counter()
        res = {'epochs': section_epochs, 'ddp': section_ddp}[name](args, out_path)
        ok = ok and res['ok']
        log(f'section {name}: {"ok" if res["ok"] else "FAILED"} {time.perf_counter() - t:.0f}s')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
