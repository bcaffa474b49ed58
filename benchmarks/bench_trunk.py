"""CPU inference speed of the UniRepLKNet trunk: training form (eval mode) vs deploy form (vs torch.compile).

Side by side in one run: ``unireplknet_a`` / ``unireplknet_p`` in training form and deploy form (and
``torch.compile`` of the deploy form, in a child process with a time limit), timm's ``convnext_atto/femto/pico/nano``,
and a 4096^3 fp32 matmul as the machine's reference GFLOP/s. Timing rounds are interleaved across models (so load
drift on a shared machine hits all of them alike); images/s is the median over rounds.

    python benchmarks/bench_trunk.py                # writes benchmarks/results/trunk_cpu.json
    python benchmarks/bench_trunk.py --rounds 3 --no-compile
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_logger = logging.getLogger('bench_trunk')

UNIREP = ('unireplknet_a', 'unireplknet_p')
CONVNEXT = ('convnext_atto', 'convnext_femto', 'convnext_pico', 'convnext_nano')


def _import_trunk():
    """Register the UniRepLKNet factories (the module only; the package ``__init__`` pulls in much more)."""
    try:
        import unimodal.models.unireplknet  # noqa: F401
    except ImportError:  # package half-built: load the module files directly
        import importlib.util
        import types
        for name, path in (('unimodal', ROOT / 'unimodal'), ('unimodal.models', ROOT / 'unimodal' / 'models')):
            mod = types.ModuleType(name)
            mod.__path__ = [str(path)]
            sys.modules[name] = mod
        for name in ('reparam', 'unireplknet'):
            spec = importlib.util.spec_from_file_location(
                f'unimodal.models.{name}', ROOT / 'unimodal' / 'models' / f'{name}.py')
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod
            spec.loader.exec_module(mod)


def machine_info() -> Dict[str, Any]:
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')), cpu)
    except OSError:
        pass
    import timm
    return dict(
        cpu=cpu, logical_cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
        torch=torch.__version__, timm=timm.__version__, python=platform.python_version(),
        mkldnn=torch.backends.mkldnn.is_available(), load_avg_start=os.getloadavg(),
    )


def matmul_gflops(n: int = 4096, reps: int = 3) -> float:
    """Median fp32 GFLOP/s of an ``n x n @ n x n`` matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def count_gflops(model: torch.nn.Module, size: int) -> float:
    """FLOPs (2 x MACs) of one image, from torch's FLOP counter (convs, matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(torch.randn(1, 3, size, size))
    return fc.get_total_flops() / 1e9


def build(name: str, deploy: bool = False) -> torch.nn.Module:
    import timm
    kwargs = dict(deploy=True) if deploy else {}
    return timm.create_model(name, **kwargs).eval()


def timed_rounds(fns: Dict[str, Callable[[], Any]], rounds: int, iters: int, warmup: int) -> Dict[str, List[float]]:
    """Seconds per call for each function, interleaved: round r times every function ``iters`` times."""
    with torch.inference_mode():
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        out = {k: [] for k in fns}
        for _ in range(rounds):
            for k, fn in fns.items():
                t = time.perf_counter()
                for _ in range(iters):
                    fn()
                out[k].append((time.perf_counter() - t) / iters)
    return out


def compiled_child(name: str, batch: int, size: int, rounds: int, iters: int, warmup: int) -> Dict[str, Any]:
    """Run in a child process: compile the deploy form and time it (prints one JSON line)."""
    _import_trunk()
    model = build(name, deploy=True)
    x = torch.randn(batch, 3, size, size)
    t = time.perf_counter()
    cmodel = torch.compile(model)
    with torch.inference_mode():
        ref = model(x)
        out = cmodel(x)
    compile_s = time.perf_counter() - t
    err = ((out - ref).norm() / ref.norm()).item()
    secs = timed_rounds({'c': lambda: cmodel(x)}, rounds, iters, warmup)['c']
    return dict(compile_s=compile_s, rel_err_vs_eager=err, sec_per_batch=secs)


def run_compiled(name: str, args: argparse.Namespace, timeout: int) -> Dict[str, Any]:
    cmd = [sys.executable, __file__, '--child-compile', name, '--batch', str(args.batch), '--size', str(args.size),
           '--rounds', str(args.rounds), '--iters', str(args.iters), '--warmup', str(args.warmup),
           '--threads', str(args.threads)]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(ok=False, reason=f'torch.compile + timing exceeded the {timeout}s limit (CPU inductor build)')
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return dict(ok=False, reason=' | '.join(tail) or f'exit code {proc.returncode}')
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update(ok=True, wall_s=time.perf_counter() - t)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--rounds', type=int, default=5, help='interleaved timing rounds (median reported)')
    p.add_argument('--iters', type=int, default=1, help='forward calls per round')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--threads', type=int, default=0, help='torch intra-op threads (0: torch default)')
    p.add_argument('--no-compile', action='store_true')
    p.add_argument('--compile-timeout', type=int, default=180, help='seconds per compiled model (child process)')
    p.add_argument('--budget', type=int, default=480, help='overall seconds; compile timeouts shrink to fit')
    p.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'trunk_cpu.json'))
    p.add_argument('--child-compile', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child_compile:
        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(compiled_child(args.child_compile, args.batch, args.size, args.rounds, args.iters,
                                        args.warmup)))
        return 0

    logging.basicConfig(level=logging.INFO, format='%(message)s')
    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    _import_trunk()
    torch.manual_seed(0)
    info = machine_info()
    _logger.info('machine: %s', info)

    peak = matmul_gflops()
    _logger.info('matmul 4096^3 fp32: %.1f GFLOP/s', peak)

    models: Dict[str, torch.nn.Module] = {}
    for name in UNIREP:
        models[f'{name}/train'] = build(name)
        dep = copy.deepcopy(models[f'{name}/train'])
        dep.reparameterize()
        models[f'{name}/deploy'] = dep
    for name in CONVNEXT:
        models[name] = build(name)
    flops = {k: count_gflops(m, args.size) for k, m in models.items()}

    x = torch.randn(args.batch, 3, args.size, args.size)
    with torch.inference_mode():  # the deploy form is the same function
        for name in UNIREP:
            a, b = models[f'{name}/train'](x), models[f'{name}/deploy'](x)
            _logger.info('%s deploy vs train rel err %.2e', name, ((a - b).norm() / a.norm()).item())
    secs = timed_rounds({k: (lambda m=m: m(x)) for k, m in models.items()}, args.rounds, args.iters, args.warmup)

    results = {}
    for k, s in secs.items():
        med = statistics.median(s)
        ips = args.batch / med
        results[k] = dict(images_per_s=ips, sec_per_batch_median=med, sec_per_batch_all=s, gflops_per_image=flops[k],
                          pct_of_matmul=100 * ips * flops[k] / peak)
        _logger.info('%-28s %8.1f img/s  %.2f GFLOP/img  %.1f%% of matmul', k, ips, flops[k],
                     results[k]['pct_of_matmul'])

    compiled = {}
    if not args.no_compile:
        for i, name in enumerate(UNIREP):
            left = args.budget - (time.perf_counter() - t0)
            timeout = int(min(args.compile_timeout, left / (len(UNIREP) - i)))
            if timeout < 30:
                compiled[name] = dict(ok=False, reason=f'skipped: {left:.0f}s of the {args.budget}s budget left')
                continue
            res = run_compiled(name, args, timeout)
            if res.get('ok'):
                med = statistics.median(res['sec_per_batch'])
                res['images_per_s'] = args.batch / med
                res['pct_of_matmul'] = 100 * res['images_per_s'] * flops[f'{name}/deploy'] / peak
                _logger.info('%-28s %8.1f img/s (compile %.0fs)', f'{name}/deploy+compile', res['images_per_s'],
                             res['compile_s'])
            else:
                _logger.info('%s torch.compile failed: %s', name, res['reason'])
            compiled[name] = res

    ratios = {name: results[f'{name}/deploy']['images_per_s'] / results[f'{name}/train']['images_per_s']
              for name in UNIREP}
    info['load_avg_end'] = os.getloadavg()
    out = dict(
        machine=info, config=dict(batch=args.batch, size=args.size, rounds=args.rounds, iters=args.iters,
                                  warmup=args.warmup, dtype='float32', mode='torch.inference_mode, eval'),
        matmul_4096_gflops=peak, results=results, compiled_deploy=compiled, deploy_over_train=ratios,
        total_wall_s=time.perf_counter() - t0,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(out, f, indent=2)
    _logger.info('deploy / train speed: %s', {k: round(v, 2) for k, v in ratios.items()})
    _logger.info('wrote %s (%.0fs)', args.out, out['total_wall_s'])
    return 0


if __name__ == '__main__':
    sys.exit(main())
