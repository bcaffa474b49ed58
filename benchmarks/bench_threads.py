"""CPU threads for the main job: ``unimodal train --task audio`` (built-in data, shortened to --epochs) with
``--threads 1`` and ``--threads 2``, on the machine as it is and with a competing busy loop on one core.

Each run is a fresh process (the command as a user runs it); wall time and CPU time (user + sys of the child, from
``resource.getrusage``) are recorded with the 1-minute load average before the run and the core count. Writes
benchmarks/results/threads_cpu.json. The default of ``--threads`` (unimodal/cli/threads.py) is chosen from it.

    python benchmarks/bench_threads.py --epochs 3 --threads 1 2

The main job as the README runs it (30 epochs, the CLI's default threads, no competing load):

    python benchmarks/bench_threads.py --epochs 30 --threads 1 --loads 'as is' --out results/main_job_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSY = 'while True:\n    pass\n'
LOADS = ('as is', 'one busy core')


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for name in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
        env.pop(name, None)  # --threads alone decides
    return env


def run_once(threads: int, epochs: int, out: Path, timeout: float) -> dict:
    cmd = [sys.executable, '-m', 'unimodal', 'train', '--task', 'audio', '--epochs', str(epochs), '--threads',
           str(threads), '--out', str(out), '--overwrite', '--no-progress']
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
        code = proc.returncode
        err = proc.stderr[-2000:] if code else ''
    except subprocess.TimeoutExpired:
        code, err = None, f'timed out after {timeout:.0f} s'
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    entry = {'threads': threads, 'wall_s': round(wall, 1), 'cpu_s': round(cpu, 1), 'load_avg_1min_before': load,
             'exit_code': code}
    results = out / 'results.json'
    if code == 0 and results.is_file():
        metrics = json.loads(results.read_text())['tasks']['audio']['metrics']
        entry['test_top1'] = metrics.get('top1')
    if err:
        entry['error'] = err
    return entry


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--epochs', type=int, default=3, help='epochs of the audio task (its recipe: 30)')
    ap.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    ap.add_argument('--timeout', type=float, default=900, help='per run, seconds')
    ap.add_argument('--loads', nargs='+', choices=LOADS, default=list(LOADS),
                    help='machine states to run under ("as is" alone records the main job as a user runs it)')
    ap.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results' / 'threads_cpu.json')
    args = ap.parse_args()

    # the built-in data set is written once, before any timed run
    subprocess.run([sys.executable, '-m', 'unimodal', 'data', 'prepare', '--task', 'audio'], env=_env(), check=True,
                   capture_output=True)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for load in args.loads:
            busy = subprocess.Popen([sys.executable, '-c', BUSY]) if load != 'as is' else None
            try:
                if busy is not None:
                    time.sleep(5)  # let the load average see it
                for n in args.threads:
                    entry = {'competing_load': load, **run_once(n, args.epochs, Path(tmp) / f'run{n}', args.timeout)}
                    print(json.dumps(entry), flush=True)
                    runs.append(entry)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    report = {'command': f'unimodal train --task audio --epochs {args.epochs} --threads N (built-in data)',
              'cores': len(os.sched_getaffinity(0)), 'cpu': platform.processor() or platform.machine(),
              'python': platform.python_version(), 'note': 'the machine is shared: load_avg_1min_before says how busy '
              'it was before each run; "one busy core" adds a python busy loop for the whole run',
              'runs': runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(f'.{args.out.name}.tmp')
    tmp_out.write_text(json.dumps(report, indent=2) + '\n')
    os.replace(tmp_out, args.out)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
