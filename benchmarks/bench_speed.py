"""Speed of the UniRepLKNet trunk on this machine: fast vs plain implementation, side by side with timm peers.

Sections (each can be run alone; results are merged into one JSON per device under ``benchmarks/results/``):

* ``infer``: variant x form (train-form in eval mode, deploy form) x implementation (``plain`` = the module-by-module
  reference math, ``fast`` = the default fast path) -> images/s, ms/batch, GFLOP/s, % of the fp32 GEMM rate (timed
  right before and after each row), peak RSS delta; plus timm peers (ConvNeXt atto..tiny, ResNet-50), onnxruntime
  on our ONNX export of the deploy form (``onnxruntime``), and with ``--public PATH`` the public implementation with
  our weights (``public``, both forms); each with its relative error in ``equality``.
* ``ceiling``: the deploy-form fast path profiled by kind of op (FFN GEMMs, dense convs, depthwise convs, the rest)
  and the % of GEMM it could reach if everything but the GEMM-class ops were free.
* ``train``: one training step (forward + backward + AdamW) per setting (default A, 1 channel, 128^2, batch 32 and
  P, 224^2, batch 16): plain vs fast vs (``--public``) the public code with the same weights; seconds per step, peak
  RSS growth of a step, and the gradients against the plain math.
* ``compile``: ``torch._dynamo.explain`` graph-break count of both forms and torch.compile speed (child process,
  time limit).

Timing: every round times every row once, interleaved (load drift hits all rows alike); the GEMM reference
(4096^3 fp32 matmul) is timed between every two rows, and each row is divided by the GEMMs on either side of it.
With ``--threads 1`` (default: the machine is shared) time is the process CPU time, which excludes time the OS gave
to other processes; with more threads it is wall time.

    python benchmarks/bench_speed.py                          # all sections, defaults
    python benchmarks/bench_speed.py --sections infer --variants p --batch 16 --rounds 3
    python benchmarks/bench_speed.py --sections infer --variants a p t --peers --public ~/UniRepLKNet/unireplknet.py
    python benchmarks/bench_speed.py --sections ceiling --variants p --rounds 5
    python benchmarks/bench_speed.py --sections train --public .public/unireplknet.py --train a:1:128:32 p:3:224:16
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

PEERS = ('convnext_atto', 'convnext_femto', 'convnext_pico', 'convnext_nano', 'convnext_tiny', 'resnet50')


def _import_trunk() -> Any:
    import unimodal.models.unireplknet as U  # registers the timm factories
    return U


def _clock(threads: int) -> Callable[[], float]:
    return time.process_time if threads == 1 else time.perf_counter


def machine_info(threads: int) -> Dict[str, Any]:
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')), cpu)
    except OSError:
        pass
    import timm
    return dict(
        cpu=cpu, logical_cpus=os.cpu_count(), torch_threads=threads, torch=torch.__version__,
        timm=timm.__version__, python=platform.python_version(), mkldnn=torch.backends.mkldnn.is_available(),
        timer='process CPU time' if threads == 1 else 'wall time', load_avg_start=os.getloadavg(),
    )


def _trim() -> None:
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except OSError:
        pass


def _status_kb(key: str) -> int:
    with open('/proc/self/status') as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(key))


def peak_rss_mb(fn: Callable[[], Any]) -> Optional[float]:
    """Peak resident memory growth (MB) during ``fn()``: resets the kernel's high-water mark first (Linux)."""
    try:
        _trim()
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        base = _status_kb('VmRSS')
        fn()
        return (_status_kb('VmHWM') - base) / 1024
    except (OSError, StopIteration):
        return None


def gemm_seconds(a: torch.Tensor, b: torch.Tensor, clock) -> float:
    t = clock()
    torch.mm(a, b)
    return clock() - t


def count_gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """FLOPs (2 x MACs) per image from torch's FLOP counter (convs, matmuls), on the plain implementation."""
    from torch.utils.flop_counter import FlopCounterMode
    fast = getattr(model, 'fast_path', None)
    if fast is not None:
        model.set_fast_path(False)  # the fast path uses fused oneDNN ops the counter does not know
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(x[:1])
    if fast is not None:
        model.set_fast_path(fast)
    return fc.get_total_flops() / 1e9


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics, GRN and layer scales, so fast-vs-plain differences cannot hide."""
    U = _import_trunk()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(1 + torch.randn(n, generator=g) * 0.3)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)
            elif isinstance(m, U.GRN):
                m.gamma.copy_(torch.randn(m.gamma.shape, generator=g) * 0.5)
                if m.beta is not None:
                    m.beta.copy_(torch.randn(m.beta.shape, generator=g) * 0.5)
            elif isinstance(m, U.UniRepLKNetBlock) and m.gamma is not None:
                m.gamma.copy_(torch.randn(m.gamma.shape, generator=g) * 0.5)
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


class _Plain(torch.nn.Module):
    """The same model object run with the plain reference math (shares weights with the fast one)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        self.model.set_fast_path(False)
        try:
            return self.model(x)
        finally:
            self.model.set_fast_path(True)


class _OrtRow:
    """onnxruntime (CPUExecutionProvider) on our ONNX export of a deploy-form model: what a deploying user would
    run instead. Same intra-op thread count as torch; the export and session are the library's
    (``unimodal.models.backend_select``, used by inference's ``auto`` backend)."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, threads: int, path: Path):
        from unimodal.models.backend_select import OrtModule, export_onnx
        self.ort = OrtModule(export_onnx(model, x[:1], path), threads=threads)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.ort(x)


def _public_rows(args, variant: str, train_form: torch.nn.Module) -> Dict[str, torch.nn.Module]:
    """The public implementation (``--public``) of the variant with our weights: training form (eval) and deploy."""
    from public_impl import build_public, copy_weights, load_public_module, to_deploy
    if not hasattr(args, '_public_module'):
        args._public_module = load_public_module(args.public, package=args.public_package)
    public = build_public(args._public_module, variant)
    copy_weights(train_form, public)
    public.eval()
    deploy = to_deploy(copy.deepcopy(public))
    name = f'unireplknet_{variant}'
    return {f'{name}/train-eval/public': public, f'{name}/deploy/public': deploy}


def section_infer(args, clock, out: Dict[str, Any]) -> None:
    import timm
    _import_trunk()
    x = torch.randn(args.batch, 3, args.size, args.size)
    rows: Dict[str, Any] = {}  # name -> module or callable (onnxruntime)
    checks = {}
    if args.onnxruntime:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise SystemExit('--onnxruntime rows need onnxruntime (pip install onnxruntime), or pass --no-onnxruntime')
    onnx_dir = Path(tempfile.mkdtemp(prefix='bench_speed_onnx_'))
    for v in args.variants:
        name = f'unireplknet_{v}'
        train_form = randomize_(timm.create_model(name), seed=1).eval()
        deploy = copy.deepcopy(train_form)
        deploy.reparameterize()
        for form, m in (('train-eval', train_form), ('deploy', deploy)):
            rows[f'{name}/{form}/plain'] = _Plain(m)
            rows[f'{name}/{form}/fast'] = m
        if args.public:
            rows.update(_public_rows(args, v, train_form))
        if args.onnxruntime:
            rows[f'{name}/deploy/onnxruntime'] = _OrtRow(deploy, x, args.threads, onnx_dir / f'{name}.onnx')
        with torch.inference_mode():
            ref = _Plain(train_form)(x[:2])
            checks[name] = dict(
                deploy_fast_vs_deploy_plain=rel_err(deploy(x[:2]), _Plain(deploy)(x[:2])),
                train_fast_vs_train_plain=rel_err(train_form(x[:2]), ref),
                deploy_plain_vs_train_plain=rel_err(_Plain(deploy)(x[:2]), ref),
            )
            for impl in ('public', 'onnxruntime'):
                for form in ('train-eval', 'deploy'):
                    k = f'{name}/{form}/{impl}'
                    if k in rows:
                        checks[name][f'{form}_{impl}_vs_train_plain'] = rel_err(rows[k](x[:2]), ref)
        print(f'{name} equality (rel err): {checks[name]}', flush=True)
    for p in args.peers:
        rows[p] = timm.create_model(p).eval()
    flops = {}
    for k, m in rows.items():
        if isinstance(m, _OrtRow):  # the same network as our deploy form
            continue
        base = m.model if isinstance(m, _Plain) else m
        flops[k] = count_gflops(base, x)
    for k, m in rows.items():
        if isinstance(m, _OrtRow):
            flops[k] = flops[k.replace('/onnxruntime', '/fast')]
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    secs: Dict[str, List[float]] = {k: [] for k in rows}
    # % of GEMM per row and round, against the mean of the GEMMs timed right before and right after the row:
    # the GEMM rate of this shared VM drifts by +-15% within minutes, a run-wide median would add that noise
    pct: Dict[str, List[float]] = {k: [] for k in rows}
    gemm: List[float] = []
    with torch.inference_mode():
        for m in rows.values():
            m(x)
        torch.mm(a, b)
        gemm.append(2 * 4096 ** 3 / gemm_seconds(a, b, clock) / 1e9)
        for r in range(args.rounds):
            for k, m in rows.items():
                t = clock()
                m(x)
                secs[k].append(clock() - t)
                gemm.append(2 * 4096 ** 3 / gemm_seconds(a, b, clock) / 1e9)
                pct[k].append(100 * flops[k] * args.batch / secs[k][-1] / (0.5 * (gemm[-2] + gemm[-1])))
            print(f'round {r + 1}/{args.rounds}: gemm {min(gemm[-len(rows):]):.1f}-{max(gemm[-len(rows):]):.1f} '
                  f'GFLOP/s, load {os.getloadavg()[0]:.1f}', flush=True)
        mem = {k: peak_rss_mb(lambda m=m: m(x)) for k, m in rows.items()}
    peak = statistics.median(gemm)
    table = {}
    for k, s in secs.items():
        med = statistics.median(s)
        gfs = flops[k] * args.batch / med
        table[k] = dict(batch=args.batch, size=args.size, images_per_s=args.batch / med, ms_per_batch=1e3 * med,
                        ms_all=[1e3 * t for t in s], gflops_per_image=flops[k], gflop_per_s=gfs,
                        pct_of_gemm=statistics.median(pct[k]), pct_of_gemm_all=pct[k],
                        pct_of_gemm_best=max(pct[k]), peak_rss_mb=mem[k])
    ratios = {}
    others: Dict[str, float] = {}  # fast over the public code / onnxruntime: median of per-round ratios
    for v in args.variants:
        name = f'unireplknet_{v}'
        for form in ('train-eval', 'deploy'):
            fast = secs[f'{name}/{form}/fast']
            ratios[f'{name}/{form}'] = statistics.median([p / f for p, f in zip(secs[f'{name}/{form}/plain'], fast)])
            for impl in ('public', 'onnxruntime'):
                k = f'{name}/{form}/{impl}'
                if k in secs:
                    others[f'{name}/{form}: fast over {impl}'] = statistics.median(
                        [o / f for o, f in zip(secs[k], fast)])
    out['infer'] = dict(gemm_gflop_per_s=peak, gemm_all=gemm, rows=table, fast_over_plain_speed=ratios,
                        fast_over_other_speed=others, equality=checks, public=args.public,
                        onnxruntime=_ort_version() if args.onnxruntime else None, load_avg_end=os.getloadavg())
    print(f'\nfp32 GEMM 4096^3: {peak:.1f} GFLOP/s (median of {len(gemm)}, {min(gemm):.1f}-{max(gemm):.1f}); '
          f'%GEMM = median over rounds of the row against the GEMMs timed just before and after it')
    print(f'{"row":40s} {"img/s":>8s} {"ms/batch":>9s} {"GFLOP/img":>9s} {"GFLOP/s":>8s} {"%GEMM":>6s} {"best":>6s} '
          f'{"peakMB":>7s}')
    for k, r in table.items():
        pm = '-' if r['peak_rss_mb'] is None else f'{r["peak_rss_mb"]:.0f}'
        print(f'{k:40s} {r["images_per_s"]:8.1f} {r["ms_per_batch"]:9.0f} {r["gflops_per_image"]:9.2f} '
              f'{r["gflop_per_s"]:8.1f} {r["pct_of_gemm"]:6.1f} {r["pct_of_gemm_best"]:6.1f} {pm:>7s}')
    print('fast / plain speed:', {k: round(v, 2) for k, v in ratios.items()})
    if others:
        print('fast / other speed:', {k: round(v, 2) for k, v in others.items()})


def _ort_version() -> str:
    import onnxruntime
    return onnxruntime.__version__


_FFN_OPS = ('mkldnn::_convolution_pointwise', 'mkldnn::_convolution_pointwise_', 'mkldnn::_linear_pointwise',
            'aten::addmm', 'aten::mm', 'aten::bmm', 'aten::baddbmm')


def _op_class(name: str, shapes: List[Any]) -> str:
    """Which kind of work a profiled op is: the FFN GEMMs, dense (stem / downsample) convs, depthwise convs, or
    everything else (normalizations, GELU, GRN / SE reductions and scales, copies, Python)."""
    if name in _FFN_OPS:
        return 'ffn_gemm'
    if name == 'aten::mkldnn_convolution':
        inp, weight = (shapes[0], shapes[1]) if len(shapes) > 1 else ([], [])
        # depthwise: one input channel per group and as many groups as channels (a 1-channel stem conv is dense)
        depthwise = len(weight) == 4 and len(inp) == 4 and weight[1] == 1 and inp[1] == weight[0] > 1
        return 'depthwise_conv' if depthwise else 'dense_conv'
    return 'other'


def section_ceiling(args, clock, out: Dict[str, Any]) -> None:
    """Where the deploy-form fast path spends its time, by kind of op (torch.profiler, self CPU time), and the
    ceiling that implies: FLOPs / (time of the GEMM-class ops alone) as a % of the GEMM rate of the same rounds,
    i.e. the % GEMM the network would reach if every non-GEMM pass took no time at all."""
    import timm
    from torch.profiler import ProfilerActivity, profile
    _import_trunk()
    x = torch.randn(args.batch, 3, args.size, args.size)
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    res = {}
    for v in args.variants:
        name = f'unireplknet_{v}'
        model = randomize_(timm.create_model(name), seed=1).eval()
        model.reparameterize()
        gflops = count_gflops(model, x) * args.batch
        classes: Dict[str, List[float]] = {}
        others: Dict[str, List[float]] = {}
        totals, gemm, ceiling, profiled = [], [], [], []
        with torch.inference_mode():
            model(x)
            torch.mm(a, b)
            gemm.append(2 * 4096 ** 3 / gemm_seconds(a, b, clock) / 1e9)
            for r in range(args.rounds):
                with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                    model(x)
                gemm.append(2 * 4096 ** 3 / gemm_seconds(a, b, clock) / 1e9)
                by_class: Dict[str, float] = {}
                by_other: Dict[str, float] = {}
                for ev in prof.key_averages(group_by_input_shape=True):
                    k = _op_class(ev.key, ev.input_shapes)
                    ms = ev.self_cpu_time_total / 1e3
                    by_class[k] = by_class.get(k, 0.0) + ms
                    if k == 'other':
                        by_other[ev.key] = by_other.get(ev.key, 0.0) + ms
                for k, ms in by_class.items():
                    classes.setdefault(k, []).append(ms)
                for k, ms in by_other.items():
                    others.setdefault(k, []).append(ms)
                totals.append(sum(by_class.values()))
                rate = 0.5 * (gemm[-2] + gemm[-1])  # the GEMMs just before and after this forward
                gemm_class = sum(by_class.get(k, 0.0) for k in ('ffn_gemm', 'dense_conv', 'depthwise_conv'))
                ceiling.append(100 * gflops / (gemm_class / 1e3) / rate)
                profiled.append(100 * gflops / (totals[-1] / 1e3) / rate)
        peak = statistics.median(gemm)
        ms = {k: statistics.median(vs) for k, vs in classes.items()}
        total = statistics.median(totals)
        top_other = sorted(((statistics.median(vs), k) for k, vs in others.items()), reverse=True)[:8]
        res[name] = dict(
            batch=args.batch, size=args.size, gflop_per_batch=gflops, gemm_gflop_per_s=peak, gemm_all=gemm,
            ms_by_class=ms, ms_total_profiled=total,
            pct_of_gemm_profiled=statistics.median(profiled), pct_of_gemm_profiled_all=profiled,
            ceiling_pct_of_gemm=statistics.median(ceiling), ceiling_pct_of_gemm_all=ceiling,
            top_other_ms={k: round(t, 2) for t, k in top_other},
        )
        print(f'{name}: GEMM {peak:.1f} GFLOP/s; profiled {total:.0f} ms/batch = '
              f'{res[name]["pct_of_gemm_profiled"]:.1f}% of GEMM; by kind (ms): '
              + ', '.join(f'{k} {t:.0f}' for k, t in sorted(ms.items(), key=lambda kv: -kv[1]))
              + f'; ceiling (non-GEMM work free) {res[name]["ceiling_pct_of_gemm"]:.1f}% of GEMM '
              f'(rounds: {", ".join(f"{c:.1f}" for c in ceiling)})', flush=True)
        print('  largest other ops (ms):', res[name]['top_other_ms'], flush=True)
    out['ceiling'] = dict(variants=res, load_avg_end=os.getloadavg())


def _grad_check(models: Dict[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor) -> Dict[str, Any]:
    """Gradients of every implementation against the plain math on identical weights, before any optimizer step:
    max |diff| / max |grad| (and the worst tensor), max relative error over tensors with a non-negligible
    gradient, and the loss difference."""
    losses, grads = {}, {}
    for k, m in models.items():
        m.zero_grad()
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        losses[k] = loss.item()
        grads[k] = dict(m.named_parameters())
    ref = grads['plain']
    gmax = max(p.grad.abs().max().item() for p in ref.values())
    res = {}
    for k in models:
        if k == 'plain':
            continue
        worst = max(((grads[k][n].grad - p.grad).abs().max().item() / gmax, n) for n, p in ref.items())
        rel = max(rel_err(grads[k][n].grad, p.grad) for n, p in ref.items() if p.grad.norm() > 1e-6 * gmax)
        res[f'{k}_vs_plain'] = dict(max_abs_diff_over_max_grad=worst[0], worst_param=worst[1],
                                    max_rel_err_nonzero=rel, loss_diff=abs(losses[k] - losses['plain']))
    return res


def section_train(args, clock, out: Dict[str, Any]) -> None:
    """One training step (forward + cross-entropy + backward + AdamW) per setting ``VARIANT:IN_CHANS:SIZE:BATCH``:
    plain math, fast path and (``--public``) the public code with the same weights, interleaved rounds; seconds
    per step, peak RSS growth of a step, gradients against the plain math."""
    import timm
    _import_trunk()
    runs = {}
    for setting in args.train:
        variant, in_chans, size, batch = _train_setting(setting)
        name = f'unireplknet_{variant}'
        torch.manual_seed(0)
        fast = timm.create_model(name, in_chans=in_chans, num_classes=10).train()
        models = {'plain': copy.deepcopy(fast), 'fast': fast}
        models['plain'].set_fast_path(False)
        if args.public:
            from public_impl import build_public, copy_weights, load_public_module
            if not hasattr(args, '_public_module'):
                args._public_module = load_public_module(args.public, package=args.public_package)
            public = build_public(args._public_module, variant, in_chans=in_chans, num_classes=10)
            copy_weights(fast, public)
            models['public'] = public.train()
        g = torch.Generator().manual_seed(1)
        x = torch.randn(batch, in_chans, size, size, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        grads = _grad_check(models, x, y)
        opts = {k: torch.optim.AdamW(m.parameters(), 1e-3) for k, m in models.items()}

        def step(k, opts=opts, models=models):
            opts[k].zero_grad(set_to_none=True)
            F.cross_entropy(models[k](x), y).backward()
            opts[k].step()

        for k in models:
            step(k)
        secs: Dict[str, List[float]] = {k: [] for k in models}
        for r in range(args.train_rounds):
            for k in models:
                t = clock()
                step(k)
                secs[k].append(clock() - t)
            print(f'{setting} round {r + 1}/{args.train_rounds}: '
                  + ', '.join(f'{k} {v[-1]:.2f}s' for k, v in secs.items()) + f'; load {os.getloadavg()[0]:.1f}',
                  flush=True)
        mem = {k: peak_rss_mb(lambda k=k: step(k)) for k in models}
        fast_over = {k: statistics.median([o / f for o, f in zip(secs[k], secs['fast'])]) for k in models
                     if k != 'fast'}
        runs[f'{name}/in{in_chans}/{size}/b{batch}'] = dict(
            variant=name, in_chans=in_chans, size=size, batch=batch, optimizer='AdamW', loss='cross_entropy',
            s_per_step={k: statistics.median(v) for k, v in secs.items()}, s_all=secs,
            images_per_s={k: batch / statistics.median(v) for k, v in secs.items()},
            peak_rss_mb=mem, fast_over=fast_over, grad_check=grads)
        print(f'training step {name} b{batch} {size}px in_chans={in_chans}: '
              + ', '.join(f'{k} {statistics.median(v):.2f}s ({mem[k] or 0:.0f} MB)' for k, v in secs.items())
              + '; fast over ' + ', '.join(f'{k} {v:.2f}x' for k, v in fast_over.items()) + '; grads vs plain: '
              + ', '.join(f'{k} max|diff|/max|g| {v["max_abs_diff_over_max_grad"]:.1e}' for k, v in grads.items()),
              flush=True)
        del models, opts
    out['train'] = dict(runs=runs, public=args.public, load_avg_end=os.getloadavg())


def _train_setting(text: str):
    try:
        variant, in_chans, size, batch = text.split(':')
        return variant, int(in_chans), int(size), int(batch)
    except ValueError:
        raise SystemExit(f'--train {text!r}: expected VARIANT:IN_CHANS:SIZE:BATCH, e.g. a:1:128:32') from None


def compile_child(args) -> Dict[str, Any]:
    """In a child process: graph breaks of both forms, compile time and compiled vs eager-fast speed."""
    import timm
    _import_trunk()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = _clock(args.threads)
    res = {}
    x = torch.randn(args.compile_batch, 3, args.compile_size, args.compile_size)
    model = randomize_(timm.create_model(f'unireplknet_{args.compile_variant}'), seed=2).eval()
    for form in ('train-eval', 'deploy'):
        if form == 'deploy':
            model.reparameterize()
        torch._dynamo.reset()
        ex = torch._dynamo.explain(model)(x)
        torch._dynamo.reset()
        t = time.perf_counter()
        cm = torch.compile(model, fullgraph=True)
        with torch.inference_mode():
            ref = model(x)
            got = cm(x)
        compile_s = time.perf_counter() - t
        secs = {'eager': [], 'compiled': []}
        with torch.inference_mode():
            for _ in range(args.rounds):
                for k, f in (('eager', model), ('compiled', cm)):
                    t = clock()
                    f(x)
                    secs[k].append(clock() - t)
        res[form] = dict(graph_breaks=ex.graph_break_count, graphs=ex.graph_count, compile_s=compile_s,
                         rel_err_vs_eager=rel_err(got, ref),
                         ms_per_batch={k: 1e3 * statistics.median(v) for k, v in secs.items()},
                         compiled_over_eager_speed=statistics.median(
                             [e / c for e, c in zip(secs['eager'], secs['compiled'])]))
    return res


def section_compile(args, out: Dict[str, Any]) -> None:
    cmd = [sys.executable, __file__, '--child-compile', '--threads', str(args.threads), '--rounds', str(args.rounds),
           '--compile-variant', args.compile_variant, '--compile-batch', str(args.compile_batch),
           '--compile-size', str(args.compile_size)]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.compile_timeout)
    except subprocess.TimeoutExpired:
        res = dict(ok=False, reason=f'exceeded the {args.compile_timeout}s limit (CPU inductor build)')
    else:
        if proc.returncode != 0:
            res = dict(ok=False, reason=' | '.join((proc.stderr or proc.stdout).strip().splitlines()[-3:]))
        else:
            res = dict(ok=True, **json.loads(proc.stdout.strip().splitlines()[-1]))
    res.update(variant=f'unireplknet_{args.compile_variant}', batch=args.compile_batch, size=args.compile_size,
               wall_s=time.perf_counter() - t)
    runs = out.get('compile') or {}
    if 'ok' in runs:  # one unkeyed run (older files): keep it under its own key
        runs = {f'{runs["variant"]}/b{runs["batch"]}/{runs["size"]}': runs}
    runs[f'{res["variant"]}/b{args.compile_batch}/{args.compile_size}'] = res
    out['compile'] = runs
    print('torch.compile:', json.dumps(res, indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sections', nargs='+', default=['infer', 'ceiling', 'train', 'compile'],
                   choices=['infer', 'ceiling', 'train', 'compile'])
    p.add_argument('--variants', nargs='+', default=['a', 'p', 't'])
    p.add_argument('--peers', nargs='*', default=list(PEERS))
    p.add_argument('--public', help='infer, train: add rows of the public implementation (a local copy of its '
                                    'unireplknet.py; not in this repository) with our weights')
    # parent package of a --public file with relative imports
    p.add_argument('--public-package', help=argparse.SUPPRESS)
    p.add_argument('--no-onnxruntime', dest='onnxruntime', action='store_false',
                   help='infer: no onnxruntime rows (default: our ONNX export of the deploy form on onnxruntime)')
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--rounds', type=int, default=3, help='interleaved timing rounds (median reported)')
    p.add_argument('--threads', type=int, default=1, help='torch intra-op threads (1: CPU-time timing)')
    p.add_argument('--train', nargs='+', default=['a:1:128:32', 'p:3:224:16'], metavar='V:IN_CHANS:SIZE:BATCH',
                   help='train: the training-step settings')
    p.add_argument('--train-rounds', type=int, default=3)
    p.add_argument('--compile-variant', default='a')
    p.add_argument('--compile-batch', type=int, default=4)
    p.add_argument('--compile-size', type=int, default=128)
    p.add_argument('--compile-timeout', type=int, default=420)
    p.add_argument('--out', default=None, help='JSON path (default benchmarks/results/speed_<device>.json)')
    p.add_argument('--child-compile', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child_compile:
        print(json.dumps(compile_child(args)))
        return 0
    torch.set_num_threads(args.threads)
    clock = _clock(args.threads)
    out_path = Path(args.out or ROOT / 'benchmarks' / 'results' / 'speed_cpu.json')
    out: Dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    out.setdefault('machine', {})
    out['machine'].update(machine_info(args.threads))
    print('machine:', out['machine'], flush=True)
    t0 = time.perf_counter()
    runs = {'infer': lambda: section_infer(args, clock, out), 'ceiling': lambda: section_ceiling(args, clock, out),
            'train': lambda: section_train(args, clock, out), 'compile': lambda: section_compile(args, out)}
    for name, run in runs.items():
        if name in args.sections:
            info = machine_info(args.threads)
            run()
            # sections of one file may come from different runs: each keeps the machine state it ran under
            machine = dict(info, load_avg_end=os.getloadavg(), date=time.strftime('%Y-%m-%d %H:%M %Z'))
            if name == 'compile':  # keyed by setting: the machine goes with the run just made
                out[name][f'unireplknet_{args.compile_variant}/b{args.compile_batch}/{args.compile_size}'][
                    'machine'] = machine
            else:
                out[name]['machine'] = machine
    out['machine']['load_avg_end'] = os.getloadavg()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=1))
    print(f'wrote {out_path} ({time.perf_counter() - t0:.0f}s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
