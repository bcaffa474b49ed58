"""Depthwise 2-D convolution for large kernels in Triton: forward, grad input, grad weight (direct method).

For an input ``x`` of shape ``(B, C, H, W)`` (any memory layout: the kernels take strides), a depthwise kernel
``w`` of shape ``(C, 1, K, K)`` (``K`` odd), dilation ``d``, stride 1 and 'same' padding ``p = d (K - 1) / 2``::

    y[b, c, h, w]  = bias[c] + sum_{i, j < K} w[c, i, j] * x[b, c, h + d i - p, w + d j - p]     (x = 0 outside)
    dx[b, c, h, w] = sum_{i, j} w[c, K-1-i, K-1-j] * dy[b, c, h + d i - p, w + d j - p]     (the same conv, flipped w)
    dw[c, i, j]    = sum_{b, h, w} dy[b, c, h, w] * x[b, c, h + d i - p, w + d j - p]
    dbias[c]       = sum_{b, h, w} dy[b, c, h, w]

Every product is accumulated in fp32 whatever the input dtype (fp32, bf16, fp16); outputs take the input's dtype
(``y``, ``dx``) or the weight's (``dw``, ``dbias``).

Why a direct kernel and not an implicit GEMM: a depthwise conv has one input channel per output channel, so its
"GEMM" per channel is a matrix-vector product (K^2 taps against one pixel column) that cannot use tensor cores;
what matters is reading each input element from cache rather than DRAM for its K^2 uses. Each program owns a tile
of ``BLOCK_P`` output pixels x ``BLOCK_C`` channels, keeps the tile's sums in registers and walks the K^2 taps;
the halo reuse between taps comes from L1/L2. The grad weight is a per-(channel, tap) reduction over all
``B * H * W`` pixels, split over pixel chunks into an fp32 workspace and summed by a second (deterministic,
atomic-free) pass.

Layout: the kernels take element strides, so NCHW and channels-last (NHWC) tensors run without copies; the tile
shape follows the layout (:func:`block_config`): channels-last tiles are wide in channels (contiguous loads across
channels), NCHW tiles are long in pixels (contiguous loads along a row). Which layout is faster on a GPU is
measured (``benchmarks/bench_dwconv.py``), not assumed.

Importing this module imports Triton; :mod:`unimodal.layers.dwconv` imports it only when the Triton backend is
chosen. On CPU it runs under Triton's interpreter (``TRITON_INTERPRET=1`` set before Triton is imported), which is
how the tests check it without a GPU.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

__all__ = ['depthwise_conv2d_triton', 'dwconv_forward', 'dwconv_grad_input', 'dwconv_grad_weight', 'block_config',
           'check_args']

Tensor = torch.Tensor

# int32 offset arithmetic inside the kernels (int64 would cost every tap an extra multiply-add pair)
_MAX_ELEMENTS = 2 ** 31 - 1


@triton.jit
def _dw_fwd_kernel(
        x_ptr, w_ptr, b_ptr, y_ptr,
        B, C, H, W,
        sxb, sxc, sxh, sxw,
        syb, syc, syh, syw,
        K: tl.constexpr, DIL: tl.constexpr, HAS_BIAS: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """One (pixel tile, channel tile): ``y = sum_taps w_tap * x_shifted (+ bias)``; ``w_ptr`` is ``(K*K, C)``."""
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    hw = H * W
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)  # flattened (b, h, w) over the whole batch
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_p = offs_p < B * hw
    mask_c = offs_c < C
    b = offs_p // hw
    h = (offs_p % hw) // W
    w = offs_p % W
    pad = DIL * (K - 1) // 2
    # per-tap work is the inner loop: keep its integer arithmetic to one add and one multiply per pixel vector
    x_base = x_ptr + (b * sxb)[:, None] + (offs_c * sxc)[None, :]
    w_base = w_ptr + offs_c
    h0 = h - pad
    w0 = w - pad
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for i in range(K):
        hh = h0 + i * DIL
        mask_h = mask_p & (hh >= 0) & (hh < H)
        x_row = x_base + (hh * sxh)[:, None]
        for j in range(K):
            ww = w0 + j * DIL
            m = mask_h & (ww >= 0) & (ww < W)
            xv = tl.load(x_row + (ww * sxw)[:, None], mask=m[:, None] & mask_c[None, :], other=0.0)
            wv = tl.load(w_base + (i * K + j) * C, mask=mask_c, other=0.0)
            acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    y_off = b[:, None] * syb + offs_c[None, :] * syc + h[:, None] * syh + w[:, None] * syw
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=mask_p[:, None] & mask_c[None, :])


@triton.jit
def _dw_wgrad_kernel(
        x_ptr, g_ptr, part_ptr,
        B, C, H, W,
        sxb, sxc, sxh, sxw,
        sgb, sgc, sgh, sgw,
        PIX_PER_PROG,
        K: tl.constexpr, DIL: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """One (pixel chunk, channel tile, tap): ``part[chunk, tap, c] = sum_chunk dy * x_shifted`` in fp32."""
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    tap = tl.program_id(2)
    i = tap // K
    j = tap % K
    hw = H * W
    n = B * hw
    pad = DIL * (K - 1) // 2
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    # a 2-D accumulator reduced once at the end: fewer cross-thread reductions, and chunk sums of fp32 terms
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    start = pid_s * PIX_PER_PROG
    dh = i * DIL - pad
    dw = j * DIL - pad
    g_base = g_ptr + (offs_c * sgc)[None, :]
    x_base = x_ptr + (offs_c * sxc)[None, :]
    for p0 in range(start, start + PIX_PER_PROG, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        b = offs_p // hw
        h = (offs_p % hw) // W
        w = offs_p % W
        hh = h + dh
        ww = w + dw
        m = (offs_p < n) & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        m2 = m[:, None] & mask_c[None, :]
        g = tl.load(g_base + (b * sgb + h * sgh + w * sgw)[:, None], mask=m2, other=0.0)
        xv = tl.load(x_base + (b * sxb + hh * sxh + ww * sxw)[:, None], mask=m2, other=0.0)
        acc += g.to(tl.float32) * xv.to(tl.float32)
    part = tl.sum(acc, axis=0)
    tl.store(part_ptr + (pid_s * K * K + tap) * C + offs_c, part, mask=mask_c)


def block_config(channels: int, channels_last: bool) -> Tuple[int, int, int]:
    """``(BLOCK_P, BLOCK_C, num_warps)`` for a layout: the tile's long side runs along the contiguous dimension
    (channels for channels-last, pixels for NCHW) so that neighbouring threads read neighbouring addresses."""
    if channels_last:
        block_c = min(64, triton.next_power_of_2(max(channels, 1)))
        return max(16, 4096 // block_c // 2), block_c, 4
    return 256, 4, 4


def check_args(x: Tensor, weight: Tensor, bias: Optional[Tensor], dilation: int) -> int:
    """Validate a depthwise 'same' conv's arguments; returns ``K``."""
    if x.ndim != 4:
        raise ValueError(f'depthwise conv: input must be (B, C, H, W), got shape {tuple(x.shape)}')
    c = x.shape[1]
    if weight.ndim != 4 or weight.shape[0] != c or weight.shape[1] != 1 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f'depthwise conv: weight must be (C={c}, 1, K, K), got shape {tuple(weight.shape)}')
    k = weight.shape[-1]
    if k % 2 != 1:
        raise ValueError(f'depthwise conv: kernel size must be odd for \'same\' padding, got {k}')
    if int(dilation) != dilation or dilation < 1:
        raise ValueError(f'depthwise conv: dilation must be an integer >= 1, got {dilation}')
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != c):
        raise ValueError(f'depthwise conv: bias must be (C={c},), got shape {tuple(bias.shape)}')
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f'depthwise conv: input dtype must be float32, bfloat16 or float16, got {x.dtype}')
    devices = {t.device for t in (x, weight, bias) if t is not None}
    if len(devices) != 1:
        raise ValueError(f'depthwise conv: tensors on different devices: {sorted(map(str, devices))}')
    if x.numel() > _MAX_ELEMENTS:
        raise ValueError(f'depthwise conv (Triton): {x.numel()} elements exceed the int32 offsets of the kernel '
                         f'({_MAX_ELEMENTS}); split the batch or use the cuDNN backend')
    return k


def _is_channels_last(x: Tensor) -> bool:
    return x.shape[1] > 1 and x.stride(1) == 1


def _blocks(x: Tensor, config: Optional[Tuple[int, int, int]]) -> Tuple[int, int, int]:
    return tuple(config) if config is not None else block_config(x.shape[1], _is_channels_last(x))


def _taps_by_channel(weight: Tensor) -> Tensor:
    """``(C, 1, K, K)`` -> ``(K*K, C)``: a tap's weights for a channel tile are then one contiguous load."""
    return weight.reshape(weight.shape[0], -1).t().contiguous()


def dwconv_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, dilation: int = 1,
                   config: Optional[Tuple[int, int, int]] = None) -> Tensor:
    """``y`` of the module docstring; ``y`` keeps ``x``'s memory format (NCHW or channels-last) and dtype.

    Args:
        x: ``(B, C, H, W)``, fp32 / bf16 / fp16, any strides.
        weight: ``(C, 1, K, K)``, ``K`` odd (any float dtype; read as fp32).
        bias: ``(C,)`` or ``None``.
        dilation: ``d >= 1``.
        config: ``(BLOCK_P, BLOCK_C, num_warps)`` (powers of two); default :func:`block_config`.
    """
    k = check_args(x, weight, bias, dilation)
    bsz, c, h, w = x.shape
    y = torch.empty_like(x)  # preserves channels-last
    if y.numel() == 0:
        return y
    block_p, block_c, warps = _blocks(x, config)
    grid = (triton.cdiv(bsz * h * w, block_p), triton.cdiv(c, block_c))
    w_t = _taps_by_channel(weight)
    _dw_fwd_kernel[grid](
        x, w_t, bias if bias is not None else w_t, y, bsz, c, h, w, *x.stride(), *y.stride(),
        K=k, DIL=int(dilation), HAS_BIAS=bias is not None, BLOCK_P=block_p, BLOCK_C=block_c, num_warps=warps)
    return y


def dwconv_grad_input(grad_out: Tensor, weight: Tensor, dilation: int = 1,
                      config: Optional[Tuple[int, int, int]] = None) -> Tensor:
    """``dx``: the forward conv of ``dy`` with the spatially flipped kernel (exact for stride 1, 'same')."""
    return dwconv_forward(grad_out, weight.flip(-1, -2), None, dilation, config)


def _wgrad_chunks(pixels: int, channel_tiles: int, taps: int, block_p: int, device: torch.device) -> int:
    """Pixel chunks for the grad-weight split: enough programs to fill the GPU (~8 waves of its multiprocessors)
    while each program still sums at least 8 tiles (fewer partial sums to write and add)."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == 'cuda' else 8
    want = triton.cdiv(8 * sms, channel_tiles * taps)
    return max(1, min(want, triton.cdiv(pixels, 8 * block_p)))


def dwconv_grad_weight(x: Tensor, grad_out: Tensor, kernel_size: int, dilation: int = 1,
                       config: Optional[Tuple[int, int, int]] = None) -> Tensor:
    """``dw`` of the module docstring, ``(C, 1, K, K)`` in fp32 (the caller casts to the weight's dtype)."""
    if x.shape != grad_out.shape:
        raise ValueError(f'grad weight: input {tuple(x.shape)} and grad {tuple(grad_out.shape)} differ')
    bsz, c, h, w = x.shape
    k = int(kernel_size)
    if x.numel() == 0:
        return x.new_zeros((c, 1, k, k), dtype=torch.float32)
    block_p, block_c, warps = _blocks(x, config)
    pixels = bsz * h * w
    chunks = _wgrad_chunks(pixels, triton.cdiv(c, block_c), k * k, block_p, x.device)
    per_prog = triton.cdiv(triton.cdiv(pixels, chunks), block_p) * block_p
    chunks = triton.cdiv(pixels, per_prog)
    part = torch.empty((chunks, k * k, c), device=x.device, dtype=torch.float32)
    grid = (chunks, triton.cdiv(c, block_c), k * k)
    _dw_wgrad_kernel[grid](
        x, grad_out, part, bsz, c, h, w, *x.stride(), *grad_out.stride(), per_prog,
        K=k, DIL=int(dilation), BLOCK_P=block_p, BLOCK_C=block_c, num_warps=warps)
    return part.sum(0).t().reshape(c, 1, k, k)


class _DepthwiseConv2dTriton(torch.autograd.Function):
    """Autograd wrapper: the three kernels above plus the bias gradient (a plain ``sum``: one memory-bound
    reduction that PyTorch already does at bandwidth)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], dilation: int,
                config: Optional[Tuple[int, int, int]]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        ctx.config = config
        ctx.bias_dtype = None if bias is None else bias.dtype
        return dwconv_forward(x, weight, bias, dilation, config)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = dwconv_grad_input(grad_out, weight, ctx.dilation, ctx.config)
        if ctx.needs_input_grad[1]:
            gw = dwconv_grad_weight(x, grad_out, weight.shape[-1], ctx.dilation, ctx.config).to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            gb = grad_out.sum((0, 2, 3), dtype=torch.float32).to(ctx.bias_dtype)
        return gx, gw, gb, None, None


def depthwise_conv2d_triton(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, dilation: int = 1,
                            config: Optional[Tuple[int, int, int]] = None) -> Tensor:
    """Differentiable depthwise 'same' conv (stride 1): ``F.conv2d(x, weight, bias, 1, d*(K-1)//2, d, C)``.

    Inputs as in :func:`dwconv_forward`. Under autocast the caller casts (see
    :func:`unimodal.layers.dwconv.depthwise_conv`); this function computes in the dtypes it is given.
    """
    check_args(x, weight, bias, dilation)
    return _DepthwiseConv2dTriton.apply(x, weight, bias, int(dilation), config)
