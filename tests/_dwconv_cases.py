"""Shapes on which the Triton depthwise conv is checked against ``F.conv2d``, and the check itself.

Shared by the interpreter test (run in a child process with ``TRITON_INTERPRET=1``, see
``test_dwconv_triton.py``) and the CUDA test (``test_dwconv_cuda.py``). Importing this module does not import
Triton (the interpreter flag must be set before that).

    python tests/_dwconv_cases.py            # every case on CPU under Triton's interpreter, one JSON line each
"""
from __future__ import annotations

import json
import zlib
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

# (name, batch, channels, height, width, kernel, dilation, channels_last, dtype, config)
# config: (BLOCK_P, BLOCK_C, num_warps) or None (default tiles). The interpreter's cost is (programs x taps), so the
# 13x13 cases run as one program per pass while small kernels use small tiles: several pixel tiles (crossing image
# boundaries), channel tiles with masked channels (channels not a multiple of the block), and a grad weight split
# into several pixel chunks ('k3_b2_split')
CASES: List[Tuple[str, int, int, int, int, int, int, bool, str, Optional[Tuple[int, int, int]]]] = [
    ('k3_b2_nchw', 2, 5, 9, 7, 3, 1, False, 'float32', None),
    ('k3_b2_split', 2, 5, 12, 12, 3, 1, False, 'float32', (16, 4, 4)),
    ('k5_b1_cl', 1, 6, 11, 8, 5, 1, True, 'float32', (32, 4, 4)),
    ('k13_b2_nchw', 2, 3, 13, 13, 13, 1, False, 'float32', (512, 4, 4)),
    ('k13_b1_cl_odd', 1, 7, 13, 11, 13, 1, True, 'float32', (256, 8, 4)),
    ('k5r2_b2_cl', 2, 3, 9, 10, 5, 2, True, 'float32', (64, 2, 4)),
    ('k3r5_b1_nchw', 1, 5, 12, 9, 3, 5, False, 'float32', (32, 2, 4)),
    ('k7r2_b2_nchw_small_map', 2, 4, 5, 6, 7, 2, False, 'float32', None),
    ('k13_b2_cl_bf16', 2, 6, 9, 9, 13, 1, True, 'bfloat16', None),
    ('k5r2_b1_nchw_fp16', 1, 5, 8, 7, 5, 2, False, 'float16', None),
]

# relative error bounds against an fp64 reference: fp32 accumulation of <= 169 * B * H * W terms, or one rounding of
# the output / input to the low-precision dtype
TOL = {'float32': 1e-5, 'bfloat16': 1.6e-2, 'float16': 2e-3}


def _rel(a, b) -> float:
    import torch
    with torch.no_grad():
        return float((a.double() - b).norm() / b.norm().clamp_min(1e-30))


def check_case(case, device: str = 'cpu') -> Dict[str, Any]:
    """Output and gradients (input, weight, bias) of the Triton conv vs ``F.conv2d`` in fp64 on the same
    (rounded) inputs; returns the relative errors and the tolerance."""
    import torch
    import torch.nn.functional as F
    from unimodal.layers.dwconv_triton import depthwise_conv2d_triton

    name, b, c, h, w, k, d, cl, dtype, cfg = case
    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    x = torch.randn(b, c, h, w, generator=g).to(device=device, dtype=dt)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = (torch.randn(c, 1, k, k, generator=g) / k).to(device=device, dtype=dt)
    bias = torch.randn(c, generator=g).to(device=device, dtype=dt)
    dy = torch.randn(b, c, h, w, generator=g).to(device=device, dtype=dt)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    y = depthwise_conv2d_triton(x, weight, bias, d, cfg)
    gx, gw, gb = torch.autograd.grad(y, (x, weight, bias), dy)

    ref_in = [t.detach().double().requires_grad_(True) for t in (x, weight, bias)]
    y_ref = F.conv2d(ref_in[0], ref_in[1], ref_in[2], 1, d * (k - 1) // 2, d, c)
    rx, rw, rb = torch.autograd.grad(y_ref, ref_in, dy.double())
    return dict(
        name=name, tol=TOL[dtype], y=_rel(y, y_ref), dx=_rel(gx, rx), dw=_rel(gw, rw), db=_rel(gb, rb),
        dtypes=[str(t.dtype) for t in (y, gx, gw, gb)],
        same_layout=bool(y.is_contiguous(memory_format=torch.channels_last) == cl or c == 1),
    )


def main() -> int:
    os.environ['TRITON_INTERPRET'] = '1'  # before Triton is imported anywhere in this process
    import torch
    torch.set_num_threads(1)
    for case in CASES:
        print(json.dumps(check_case(case, 'cpu')), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
