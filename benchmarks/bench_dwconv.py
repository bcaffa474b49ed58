"""Depthwise conv per trunk shape: cuDNN (``F.conv2d``) vs the Triton kernel, forward and forward + backward.

Writes the table :mod:`unimodal.layers.dwconv` reads for ``UNIMODAL_DWCONV=auto`` (``results/dwconv_table_cuda.json``;
copy it to ``unimodal/layers/dwconv_table_cuda.json`` to ship it, or point ``UNIMODAL_DWCONV_TABLE`` at it).
Shapes: every depthwise conv of the chosen variants at 224 (stage maps 56/28/14/7): the 3x3 blocks, the 13x13
kernels and the Dilated Reparam Block branches (5x5, 7x7 r2, 3x3 r3/r4/r5), NCHW and channels-last, bf16 then
fp32, in that priority order until the time budget ends. Each entry also records the relative difference between
the two kernels' outputs and gradients (a wrong kernel is never picked).

    python benchmarks/bench_dwconv.py                          # CUDA, ~60 s
    python benchmarks/bench_dwconv.py --device cpu --tiny      # dry run: the Triton kernel under its interpreter
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from _device_util import RESULTS, ROOT, Budget, log, machine, resolve_device, summary, time_ms  # noqa: E402

sys.path.insert(0, str(ROOT))

VARIANT_DIMS = {'a': (40, 80, 160, 320), 'p': (64, 128, 256, 512), 't': (80, 160, 320, 640),
                's': (96, 192, 384, 768), 'b': (128, 256, 512, 1024)}
DRB13 = ((13, 1), (5, 1), (7, 2), (3, 3), (3, 4), (3, 5))  # the K=13 kernel and its branches (kernel, dilation)
# a Triton entry must agree with cuDNN this closely (relative L2, outputs and both gradients) to be picked
AGREE = {'float32': 1e-4, 'bfloat16': 3e-2, 'float16': 5e-3}
MARGIN = 0.95  # Triton is picked only when at least 5 % faster (below that it is noise, and cuDNN is the default)

Shape = Tuple[int, int, int, int, int, int]  # batch, channels, height, width, kernel, dilation


def trunk_shapes(variants: List[str], batch: int, size: int) -> List[Shape]:
    """Every distinct depthwise conv of the variants' trunks (published kernel sizes): stage 0 3x3, stages 1-3
    the K=13 block with its branches, the 3x3 blocks of stage 2 (T, S, B)."""
    out: List[Shape] = []
    for v in variants:
        dims = VARIANT_DIMS[v]
        maps = [size // 4 // 2 ** i for i in range(4)]
        shapes = [(batch, dims[0], maps[0], maps[0], 3, 1)]
        for s in (1, 2, 3):
            shapes += [(batch, dims[s], maps[s], maps[s], k, d) for k, d in DRB13]
        if v in ('t', 's', 'b'):
            shapes.append((batch, dims[2], maps[2], maps[2], 3, 1))
        out += [s for s in shapes if s not in out]
    return out


def measure(shape: Shape, dtype: torch.dtype, channels_last: bool, device: torch.device, warmup: int,
            iters: int) -> Dict[str, Any]:
    from unimodal.layers.dwconv_triton import block_config, depthwise_conv2d_triton
    b, c, h, w, k, d = shape
    pad = d * (k - 1) // 2
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(b, c, h, w, device=device, dtype=dtype, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    weight = (torch.randn(c, 1, k, k, device=device, generator=g) / k).to(dtype).requires_grad_(True)
    dy = torch.randn_like(x)
    cfg = block_config(c, channels_last)
    impls = {'cudnn': lambda: F.conv2d(x, weight, None, 1, pad, d, c),
             'triton': lambda: depthwise_conv2d_triton(x, weight, None, d, cfg)}
    res: Dict[str, Any] = {}
    outs = {}
    for name, fn in impls.items():
        t = time.perf_counter()
        y = fn()  # first call: Triton compiles here
        outs[name] = [y.detach()] + [t_.detach() for t_ in torch.autograd.grad(y, (x, weight), dy)]
        first_s = time.perf_counter() - t

        def fwd(fn=fn):
            with torch.no_grad():
                fn()

        def train(fn=fn):
            torch.autograd.grad(fn(), (x, weight), dy)

        res[name] = dict(forward=summary(time_ms(fwd, device, warmup, iters)),
                         train=summary(time_ms(train, device, warmup, iters)), first_call_s=round(first_s, 3))
    from public_impl import rel_err
    agree = max(rel_err(a.float(), r.float()) for a, r in zip(outs['triton'], outs['cudnn']))
    ok = agree < AGREE[str(dtype).replace('torch.', '')]

    def winner(mode: str) -> str:
        return 'triton' if ok and res['triton'][mode]['median_ms'] < MARGIN * res['cudnn'][mode]['median_ms'] \
            else 'cudnn'

    return dict(batch=b, channels=c, height=h, width=w, kernel_size=k, dilation=d,
                dtype=str(dtype).replace('torch.', ''), channels_last=channels_last,
                cudnn_ms={m: res['cudnn'][m]['median_ms'] for m in ('forward', 'train')},
                triton_ms={m: res['triton'][m]['median_ms'] for m in ('forward', 'train')},
                triton_first_call_s=res['triton']['first_call_s'], triton_config=list(cfg),
                triton_vs_cudnn_rel_diff=agree, triton_agrees=ok,
                winner_forward=winner('forward'), winner_train=winner('train'))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    p.add_argument('--tiny', action='store_true', help='dry run: one tiny shape, fp32, 1 timing')
    p.add_argument('--variants', nargs='+', default=['t', 'a', 'b'], choices=sorted(VARIANT_DIMS))
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--dtypes', nargs='+', default=['bfloat16', 'float32'], choices=['bfloat16', 'float32', 'float16'])
    p.add_argument('--budget-s', type=float, default=60.0, help='stop measuring after this long (rest: skipped)')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--iters', type=int, default=10)
    p.add_argument('--out', default=str(RESULTS / 'dwconv_table_cuda.json'))
    args = p.parse_args(argv)
    if args.device == 'cpu':
        os.environ.setdefault('TRITON_INTERPRET', '1')  # before Triton's first import (the kernel module's)
    device = resolve_device(args.device)
    budget = Budget(args.budget_s)
    if args.tiny:
        shapes: List[Shape] = [(2, 5, 6, 7, 3, 2)]
        dtypes, args.warmup, args.iters = [torch.float32], 0, 1
    else:
        shapes = trunk_shapes(args.variants, args.batch, args.size)
        dtypes = [getattr(torch, d) for d in args.dtypes]
    from unimodal.layers.dwconv import TABLE_FORMAT, load_table
    info = machine(device)
    table: Dict[str, Any] = dict(
        format=TABLE_FORMAT, device_name=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
        machine=info, margin=MARGIN, entries=[], skipped=[], failed=[])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    todo = [(s, dt, cl) for dt in dtypes for cl in (True, False) for s in shapes]
    log(f'dwconv table: {len(todo)} entries, budget {args.budget_s:.0f}s, device {table["device_name"]}')
    for i, (shape, dt, cl) in enumerate(todo):
        if budget.left() <= 0:
            table['skipped'] = [dict(shape=s, dtype=str(d), channels_last=c) for s, d, c in todo[i:]]
            log(f'budget spent: {len(todo) - i} entries skipped')
            break
        try:
            e = measure(shape, dt, cl, device, args.warmup, args.iters)
        except Exception as err:  # noqa: BLE001  (one failing shape must not lose the table; recorded)
            table['failed'].append(dict(shape=shape, dtype=str(dt), channels_last=cl, error=repr(err)[:500]))
            log(f'FAILED {shape} {dt} cl={cl}: {err!r}')
            continue
        table['entries'].append(e)
        log(f'[{budget.elapsed():5.1f}s] B{shape[0]} C{shape[1]} {shape[2]}x{shape[3]} k{shape[4]} r{shape[5]} '
            f'{e["dtype"]} {"CL" if cl else "NCHW"}: fwd cudnn {e["cudnn_ms"]["forward"]:.3f} triton '
            f'{e["triton_ms"]["forward"]:.3f} ms | fwd+bwd cudnn {e["cudnn_ms"]["train"]:.3f} triton '
            f'{e["triton_ms"]["train"]:.3f} ms | diff {e["triton_vs_cudnn_rel_diff"]:.1e} -> '
            f'{e["winner_forward"]}/{e["winner_train"]}')
        tmp = out.with_suffix('.tmp')
        tmp.write_text(json.dumps(table, indent=1))
        os.replace(tmp, out)  # after every entry: a killed run keeps what it measured
    table['wall_s'] = round(budget.elapsed(), 1)
    out.write_text(json.dumps(table, indent=1))
    load_table(out)  # the file must be one the runtime accepts
    wins = sum(e['winner_train'] == 'triton' for e in table['entries'])
    log(f'wrote {out}: {len(table["entries"])} entries (Triton faster for training on {wins}), '
        f'{len(table["failed"])} failed, {len(table["skipped"])} skipped, {table["wall_s"]}s')
    return 1 if table['failed'] else 0


if __name__ == '__main__':
    sys.exit(main())
