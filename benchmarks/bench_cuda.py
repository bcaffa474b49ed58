"""GPU speed table: UniRepLKNet (this project, the public code) and timm peers, side by side on one GPU.

Rows: deploy-form inference and one training step (forward + backward + AdamW), fp32 and bf16 autocast, at the
batch sizes users run (inference 128, training 64, 224^2); the public implementation with our weights copied in
(relative output error recorded); timm peers of similar ImageNet accuracy (ConvNeXt, Swin, DeiT); the fast path
(channels-last) against the plain module-by-module math (NCHW), and a peer in both layouts; ``torch.compile`` of
one variant. Rows run in priority order (ours and the public code first, paired) within a time budget; the rest is
recorded as skipped. Timing: CUDA events, median of ``--iters`` after ``--warmup``; peak memory from
``torch.cuda.max_memory_allocated``. Results merge into ``results/speed_cuda.json`` (keys ``speed``, ``compile``).

    python benchmarks/bench_cuda.py --public /path/to/unireplknet.py --sections speed compile
    python benchmarks/bench_cuda.py --device cpu --tiny --public unimodal/models/unireplknet.py \\
        --public-package unimodal.models --out /tmp/dry.json                       # dry run of the script
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from _device_util import RESULTS, ROOT, Budget, log, machine, merge_json, resolve_device, time_ms  # noqa: E402

sys.path.insert(0, str(ROOT))

VARIANTS = ('a', 'p', 't', 's', 'b')
PEERS = ('convnext_atto', 'convnext_pico', 'convnext_tiny', 'convnext_small', 'convnext_base',
         'swin_tiny_patch4_window7_224', 'swin_small_patch4_window7_224', 'swin_base_patch4_window7_224',
         'deit_tiny_patch16_224', 'deit_small_patch16_224', 'deit_base_patch16_224')
# Published ImageNet-1K top-1 at 224 (1K training only), for the accuracy / throughput front: UniRepLKNet
# (arXiv 2311.15599), ConvNeXt (arXiv 2201.03545), Swin (arXiv 2103.14030), DeiT (arXiv 2012.12877). Not measured
# here; the ConvNeXt atto/pico numbers are timm's own training runs (see their model cards) and left out.
PUBLISHED_TOP1 = {
    'unireplknet_a': 77.0, 'unireplknet_p': 80.2, 'unireplknet_t': 83.2, 'unireplknet_s': 83.9,
    'convnext_tiny': 82.1, 'convnext_small': 83.1, 'convnext_base': 83.8,
    'swin_tiny_patch4_window7_224': 81.3, 'swin_small_patch4_window7_224': 83.0, 'swin_base_patch4_window7_224': 83.5,
    'deit_tiny_patch16_224': 72.2, 'deit_small_patch16_224': 79.8, 'deit_base_patch16_224': 81.8,
}
LAYOUT_VARIANTS = ('p', 't')
LAYOUT_PEER = 'convnext_tiny'


def _dtype(name: str) -> torch.dtype:
    return {'fp32': torch.float32, 'bf16': torch.bfloat16}[name]


def _autocast(device: torch.device, dtype: str):
    if dtype == 'fp32':
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_dtype(dtype))


class Models:
    """Builds the models of the rows (on the device), with our randomised weights shared with the public model."""

    def __init__(self, args, device: torch.device):
        self.args, self.device = args, device
        self.public_module = None
        if args.public:
            from public_impl import load_public_module
            self.public_module = load_public_module(args.public, package=args.public_package)
        self.rel_err: Dict[str, float] = {}

    def ours(self, variant: str) -> torch.nn.Module:
        import timm
        from bench_speed import randomize_
        import unimodal.models.unireplknet  # noqa: F401  (registers the factories)
        with torch.device(self.device):
            model = timm.create_model(f'unireplknet_{variant}')
        return randomize_(model, seed=1)

    def public(self, variant: str, ours: torch.nn.Module) -> torch.nn.Module:
        from public_impl import build_public, copy_weights, rel_err
        model = build_public(self.public_module, variant).to(self.device)
        copy_weights(ours, model)
        key = f'unireplknet_{variant}'
        if key not in self.rel_err:  # the same function? (fp32, eval, training form, 2 images)
            x = torch.randn(2, 3, self.args.size, self.args.size, device=self.device)
            ours.eval()
            model.eval()
            with torch.no_grad():
                self.rel_err[key] = rel_err(model(x), ours(x))
            log(f'public {key}: relative output error vs ours {self.rel_err[key]:.2e}')
        return model

    def peer(self, name: str) -> torch.nn.Module:
        import timm
        kwargs = {'img_size': self.args.size} if name.startswith(('deit', 'vit', 'swin')) else {}
        with torch.device(self.device):
            return timm.create_model(name, **kwargs)


def _deploy(model: torch.nn.Module) -> torch.nn.Module:
    from public_impl import to_deploy
    model.eval()
    return to_deploy(model)


def run_row(row: Dict[str, Any], models: Models, args, device: torch.device) -> Dict[str, Any]:
    """Build the row's model, time it, free it."""
    impl, variant, mode, dtype, layout = row['impl'], row['variant'], row['mode'], row['dtype'], row['layout']
    if impl == 'timm':
        model = models.peer(variant)
    else:
        ours = models.ours(variant)
        model = ours if impl == 'unimodal' else models.public(variant, ours)
        if impl == 'public':
            del ours
    if impl == 'unimodal' and layout == 'plain':
        model.set_fast_path(False)
    if impl == 'unimodal' and layout in ('fast_cl', 'fast_nchw'):
        # the fast path with each explicit layout: what the table-driven default must choose between
        model.set_device_options(channels_last=layout == 'fast_cl')
    cl = layout == 'channels_last'
    if cl:
        model = model.to(memory_format=torch.channels_last)
    batch = args.infer_batch if mode == 'infer' else args.train_batch
    x = torch.randn(batch, 3, args.size, args.size, device=device)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    if mode == 'infer':
        if impl != 'timm':
            _deploy(model)
        model.eval()
        fn = _infer_fn(model, x, device, dtype)
    else:
        model.train()
        fn = _train_fn(model, x, device, dtype)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    ms = time_ms(fn, device, args.warmup, args.iters)
    med = statistics.median(ms)
    out = dict(row, batch=batch, size=args.size, ms_per_batch=med, images_per_s=batch / med * 1e3,
               ms_all=[round(v, 3) for v in ms], wall_s=round(time.perf_counter() - t, 2),
               params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2))
    if device.type == 'cuda':
        out['peak_mem_gib'] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 3)
    del model, fn, x
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return out


def _infer_fn(model, x, device, dtype) -> Callable[[], Any]:
    def fn():
        with torch.inference_mode(), _autocast(device, dtype):
            return model(x)
    return fn


def _train_fn(model, x, device, dtype) -> Callable[[], Any]:
    y = torch.randint(0, 1000, (x.shape[0],), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def fn():
        opt.zero_grad(set_to_none=True)
        with _autocast(device, dtype):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return fn


def speed_rows(args) -> List[Dict[str, Any]]:
    """The rows in priority order: ours vs public (bf16, then fp32; inference then training), peers, layouts."""
    rows: List[Dict[str, Any]] = []
    impls = ['unimodal'] + (['public'] if args.public else [])
    for dtype in args.dtypes:
        for mode in ('infer', 'train'):
            for v in args.variants:
                rows += [dict(impl=i, variant=v, mode=mode, dtype=dtype, layout='fast' if i == 'unimodal' else
                              'nchw') for i in impls]
    for dtype, mode in [(d, 'infer') for d in args.dtypes] + [(args.dtypes[0], 'train')]:
        rows += [dict(impl='timm', variant=p, mode=mode, dtype=dtype, layout='nchw') for p in args.peers]
    for mode in ('infer', 'train'):
        rows += [dict(impl='unimodal', variant=v, mode=mode, dtype=args.dtypes[0], layout=layout)
                 for v in args.layout_variants for layout in ('plain', 'fast_cl', 'fast_nchw')]
        rows += [dict(impl='timm', variant=p, mode=mode, dtype=args.dtypes[0], layout='channels_last')
                 for p in args.layout_peers]
    return rows


def _key(r: Dict[str, Any]) -> str:
    return f'{r["variant"]}/{r["mode"]}/{r["dtype"]}'


def section_speed(args, device: torch.device, out_path: Path) -> Dict[str, Any]:
    budget = Budget(args.budget_s)
    models = Models(args, device)
    rows = speed_rows(args)
    done: List[Dict[str, Any]] = []
    failed: List[Dict[str, Any]] = []
    skipped: List[Dict[str, Any]] = []
    result: Dict[str, Any] = {}
    for i, row in enumerate(rows):
        if budget.left() <= 0:
            skipped = rows[i:]
            log(f'budget spent: {len(skipped)} rows skipped')
            break
        try:
            r = run_row(row, models, args, device)
        except Exception as err:  # noqa: BLE001  (a row that fails, e.g. out of memory, is recorded, not fatal)
            failed.append(dict(row, error=repr(err)[:500]))
            log(f'FAILED {row}: {err!r}')
            gc.collect()
            if device.type == 'cuda':
                torch.cuda.empty_cache()
            continue
        done.append(r)
        log(f'[{budget.elapsed():5.1f}s] {r["impl"]:8s} {r["variant"]:30s} {r["mode"]:5s} {r["dtype"]} '
            f'{r["layout"]:13s} b{r["batch"]}: {r["images_per_s"]:9.1f} img/s {r["ms_per_batch"]:8.2f} ms'
            + (f' {r["peak_mem_gib"]:.2f} GiB' if 'peak_mem_gib' in r else ''))
        result = dict(settings=dict(infer_batch=args.infer_batch, train_batch=args.train_batch, size=args.size,
                                    warmup=args.warmup, iters=args.iters, public=args.public,
                                    optimizer='AdamW', loss='cross_entropy'),
                      rows=done, failed=failed, skipped=skipped, public_rel_err=models.rel_err,
                      summary=summarize(done), published_top1=PUBLISHED_TOP1, wall_s=round(budget.elapsed(), 1))
        merge_json(out_path, 'speed', result)  # after every row: a killed run keeps what it measured
    result.update(skipped=skipped, failed=failed, wall_s=round(budget.elapsed(), 1))
    merge_json(out_path, 'speed', result)
    return result


def summarize(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """unimodal / public speed per variant, mode and dtype (fast path, deploy form for inference)."""
    ours = {_key(r): r for r in rows if r['impl'] == 'unimodal' and r['layout'] == 'fast'}
    pub = {_key(r): r for r in rows if r['impl'] == 'public'}
    plain = {_key(r): r for r in rows if r['impl'] == 'unimodal' and r['layout'] == 'plain'}
    return dict(
        unimodal_over_public={k: ours[k]['images_per_s'] / pub[k]['images_per_s'] for k in ours if k in pub},
        fast_over_plain={k: ours[k]['images_per_s'] / plain[k]['images_per_s'] for k in ours if k in plain},
    )


def section_compile(args, device: torch.device, out_path: Path) -> Dict[str, Any]:
    """torch.compile of one variant: deploy inference, then (budget permitting) the training step; eager vs
    compiled, compile time, and the compiled output's relative error."""
    from public_impl import rel_err
    budget = Budget(args.budget_s)
    models = Models(argparse.Namespace(**dict(vars(args), public=None)), device)
    res: Dict[str, Any] = dict(variant=f'unireplknet_{args.compile_variant}', dtype=args.dtypes[0],
                               backend=args.compile_backend, size=args.size)
    for mode in ('infer', 'train'):
        if budget.left() <= 0:
            res[mode] = dict(skipped='budget')
            continue
        model = models.ours(args.compile_variant)
        batch = args.infer_batch if mode == 'infer' else args.train_batch
        x = torch.randn(batch, 3, args.size, args.size, device=device)
        if mode == 'infer':
            _deploy(model)
        else:
            model.train()
        compiled = torch.compile(model, backend=args.compile_backend)
        make = _infer_fn if mode == 'infer' else _train_fn
        t = time.perf_counter()
        if mode == 'infer':
            with torch.inference_mode(), _autocast(device, args.dtypes[0]):
                err = rel_err(compiled(x[:8]).float(), model(x[:8]).float())
        else:
            err = None
        eager_ms = statistics.median(time_ms(make(model, x, device, args.dtypes[0]), device, args.warmup, args.iters))
        fn = make(compiled, x, device, args.dtypes[0])
        fn()
        compile_s = time.perf_counter() - t
        comp_ms = statistics.median(time_ms(fn, device, args.warmup, args.iters))
        res[mode] = dict(batch=batch, eager_ms=eager_ms, compiled_ms=comp_ms, compiled_over_eager=eager_ms / comp_ms,
                         compile_and_eager_s=round(compile_s, 1), rel_err_vs_eager=err)
        log(f'compile {mode}: eager {eager_ms:.2f} ms, compiled {comp_ms:.2f} ms ({eager_ms / comp_ms:.2f}x), '
            f'compile+eager {compile_s:.0f}s')
        merge_json(out_path, 'compile', res)
        del model, compiled, fn
        torch._dynamo.reset()
    res['wall_s'] = round(budget.elapsed(), 1)
    merge_json(out_path, 'compile', res)
    return res


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sections', nargs='+', default=['speed', 'compile'], choices=['speed', 'compile'])
    p.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    p.add_argument('--tiny', action='store_true', help='dry run: tiny models and inputs, one timing per row')
    p.add_argument('--public', help='local copy of the public unireplknet.py (side-by-side rows); omitted: no rows')
    p.add_argument('--public-package', help='parent package for a --public file with relative imports')
    p.add_argument('--variants', nargs='+', default=list(VARIANTS))
    p.add_argument('--peers', nargs='*', default=list(PEERS))
    p.add_argument('--layout-variants', nargs='*', default=list(LAYOUT_VARIANTS))
    p.add_argument('--layout-peers', nargs='*', default=[LAYOUT_PEER])
    p.add_argument('--dtypes', nargs='+', default=['bf16', 'fp32'], choices=['bf16', 'fp32'])
    p.add_argument('--infer-batch', type=int, default=128)
    p.add_argument('--train-batch', type=int, default=64)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--iters', type=int, default=10)
    p.add_argument('--compile-variant', default='p')
    p.add_argument('--compile-backend', default='inductor')
    p.add_argument('--budget-s', type=float, default=150.0, help='per section: rows after this are skipped')
    p.add_argument('--out', default=str(RESULTS / 'speed_cuda.json'))
    args = p.parse_args(argv)
    if args.tiny:
        args.variants, args.layout_variants = ['test'], ['test']
        args.peers = [pp for pp in args.peers if pp in ('convnext_atto', 'deit_tiny_patch16_224')]
        args.layout_peers = ['convnext_atto']
        args.infer_batch = args.train_batch = 2
        args.size, args.warmup, args.iters = 64, 1, 1
        args.compile_variant, args.compile_backend = 'test', 'eager'
    device = resolve_device(args.device)
    out_path = Path(args.out)
    merge_json(out_path, 'machine', machine(device))
    for name in args.sections:
        t = time.perf_counter()
        {'speed': section_speed, 'compile': section_compile}[name](args, device, out_path)
        log(f'section {name}: {time.perf_counter() - t:.0f}s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
