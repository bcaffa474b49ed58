"""The fast forward of UniRepLKNet blocks and stem: the same function as the module-by-module reference math,
with fewer passes over memory.

On any device: frozen BatchNorms folded into the convs on the fly, the SE and GRN per-sample scales folded into the
FFN, the training-form Dilated Reparam Block's branches as their own dilated convs. The device-dependent choices
are kept apart: on CPU, channels-last memory, private oneDNN ops with fused GELU / residual sum, inference in batch
chunks that stay in cache, 13x13 depthwise convs on NCHW copies in inference, the branches as Toeplitz matmuls on
small maps (and as dense convs without AVX-512); on CUDA, the depthwise convs through
:func:`unimodal.layers.dwconv.depthwise_conv` (cuDNN or the Triton kernel, as chosen) and the memory layout the
recorded depthwise table measured faster (NCHW without one). Every path is tested against the reference forward
(``tests/test_speed_paths.py``); measurements are in ``benchmarks/README.md``.
"""
from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from timm.layers import LayerNorm2d

from ..models.reparam import dilate_kernel, fold_bias_through_linear, fuse_conv_bn, fuse_linear_bn, scale_linear
from .dilated_reparam import DilatedReparamBlock
from .dwconv import BACKENDS, ENV_BACKEND, branch_convs, cuda_channels_last, depthwise_conv, resolve_backend

__all__ = [
    'block_forward', 'drb_branches', 'chunked_stem_applies', 'chunked_stem', 'depthwise_as_matmul',
    'is_frozen_bn', 'tracing', 'check_options', 'channels_last',
]

# Inference runs the blocks in batch chunks whose 4C-wide hidden tensor stays under this size: it stays in cache and
# under glibc's mmap threshold (fresh mmap'd pages cost a page fault each, measured ~30% of the FFN at stage 0).
# 8 MB: 3 % faster than 4 MB on P as a whole (stage 1 of P, stage 2 of T 5-8 %; AVX-512 Zen 4, 1 MB L2).
_FFN_CHUNK_BYTES = 8 << 20
# ... unless the two FFN weight matrices are larger than this: chunks would re-read them from memory (stage 3 of P:
# 5 % slower in chunks)
_FFN_WEIGHTS_CHUNKED_MAX_BYTES = 4 << 20
# Inference runs the stem in batch chunks whose first (half-resolution) map stays under this size, so its
# LayerNorm and GELU passes read from cache instead of DRAM (the largest tensors of the network).
_STEM_CHUNK_BYTES = 4 << 20
# Maps with at least this many pixels run the FFN Linears as oneDNN 1x1 convs (faster there on CPU), smaller ones
# as matmuls.
_CONV1X1_MIN_HW = 128
# Training on maps with at most this many pixels runs the depthwise convs as Toeplitz matmuls.
_DW_MATMUL_MAX_HW = 100
# CPU inference runs depthwise kernels at least this large on an NCHW copy of the chunk: oneDNN then uses its blocked
# (nChw16c) direct kernel, 2.0-2.4x faster than its channels-last one for 13x13 on the stage 1-3 maps (1.5-1.7x with
# the copies, stages 1-2; AVX-512 Zen 4); a 3x3 is faster channels-last (3 vs 24 ms on stage 0 of P).
_DW_NCHW_MIN_K = 7

_HAS_ONEDNN_OPS = all(hasattr(torch.ops.mkldnn, op) for op in (
    '_convolution_pointwise', '_convolution_pointwise_', '_linear_pointwise'))

# the published stem layout; only it may run in chunks (see chunked_stem_applies)
_STEM_LAYOUT = [nn.Conv2d, LayerNorm2d, nn.GELU, nn.Conv2d, LayerNorm2d]


def tracing() -> bool:
    """Compiling / exporting: use one whole-batch graph (no Python batch loop, no ``out=``)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _device(x: torch.Tensor) -> str:
    """The device kind the path choices key on (one place, so a test can route CPU tensors down the CUDA path)."""
    return x.device.type


def check_options(dw_backend: Optional[str], channels_last: Optional[bool]) -> Optional[str]:
    """Validate the trunk's device options (``UniRepLKNet(dw_backend=..., channels_last=...)``); returns the
    backend normalized (lower case) or ``None``."""
    if dw_backend is not None:
        if not isinstance(dw_backend, str) or dw_backend.strip().lower() not in BACKENDS:
            raise ValueError(f'dw_backend: unknown depthwise conv backend {dw_backend!r}; expected None (read '
                             f'${ENV_BACKEND} at run time, default auto) or one of {BACKENDS}')
        dw_backend = dw_backend.strip().lower()
    if channels_last is not None and not isinstance(channels_last, bool):
        raise ValueError(f'channels_last: expected None (per device: see fast_path.channels_last), True or False, '
                         f'got {channels_last!r}')
    return dw_backend


def channels_last(option: Optional[bool], x: torch.Tensor) -> bool:
    """The fast path's memory layout for ``x``: ``option`` when given; else on CPU channels-last (oneDNN's
    depthwise conv is ~10x faster on it), on CUDA the layout the recorded depthwise table measured faster on this
    GPU (:func:`unimodal.layers.dwconv.cuda_channels_last`; NCHW without a table), elsewhere NCHW."""
    if option is not None:
        return option
    kind = _device(x)
    if kind == 'cpu':
        return True
    if kind != 'cuda':
        return False
    dtype = torch.get_autocast_dtype('cuda') if torch.is_autocast_enabled('cuda') and x.dtype == torch.float32 \
        else x.dtype
    return cuda_channels_last(x.device, str(dtype).replace('torch.', ''), torch.is_grad_enabled())


def _memory_format(cl: bool) -> torch.memory_format:
    return torch.channels_last if cl else torch.contiguous_format


def is_frozen_bn(bn: nn.Module) -> bool:
    """True when a BatchNorm normalizes with its running statistics (so it can be folded)."""
    return isinstance(bn, _BatchNorm) and not bn.training and bn.running_mean is not None \
        and bn.running_var is not None


def _use_onednn(x: torch.Tensor) -> bool:
    """oneDNN's fused conv ops (GELU / residual-sum post-ops) apply: fp32 CPU tensors, oneDNN enabled."""
    return _HAS_ONEDNN_OPS and _device(x) == 'cpu' and x.dtype == torch.float32 \
        and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


def _small_map_matmul(x: torch.Tensor) -> bool:
    return _device(x) == 'cpu' and x.shape[-1] * x.shape[-2] <= _DW_MATMUL_MAX_HW and torch.is_grad_enabled() \
        and not tracing()


# ----- depthwise convs as Toeplitz matmuls (small maps, training) -----

@functools.lru_cache(maxsize=64)
def _toeplitz_index(height: int, width: int, k: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """For a ``k x k`` 'same' conv on an ``H x W`` map: the kernel tap linking each (output, input) pixel pair
    (``(HW, HW)`` indices into the flattened kernel) and whether that pair is linked at all."""
    ii, jj = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing='ij')
    ii, jj = ii.reshape(-1), jj.reshape(-1)
    dy = ii[None, :] - ii[:, None] + k // 2  # [out, in]
    dx = jj[None, :] - jj[:, None] + k // 2
    valid = (dy >= 0) & (dy < k) & (dx >= 0) & (dx < k)
    return (dy.clamp(0, k - 1) * k + dx.clamp(0, k - 1)), valid


def depthwise_as_matmul(x: torch.Tensor, kernels: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Depthwise 'same' convs (stride 1, no bias) of ``x`` with each ``(C, 1, k, k)`` kernel, as one batched
    matmul per kernel against its ``(C, HW, HW)`` Toeplitz matrix.

    Exact (the Toeplitz entries are the kernel taps or zeros). On small maps a large kernel mostly overlaps the
    zero padding, so this does fewer multiply-adds than the conv, and its backward is two more matmuls instead
    of oneDNN's slow depthwise backward.
    """
    b, c, height, width = x.shape
    length = height * width
    xm = x.permute(1, 0, 2, 3).reshape(c, b, length)  # (C, B, HW)
    outs = []
    for kernel in kernels:
        k = kernel.shape[-1]
        idx, valid = _toeplitz_index(height, width, k, x.device)
        toeplitz = kernel.reshape(c, k * k)[:, idx] * valid.to(kernel.dtype)  # (C, HW_out, HW_in)
        y = torch.bmm(xm, toeplitz.transpose(1, 2))  # (C, B, HW_out)
        outs.append(y.reshape(c, b, height, width).permute(1, 0, 2, 3).contiguous(
            memory_format=torch.channels_last))
    return outs


def _dense_dilated_branches(x: torch.Tensor) -> bool:
    """CPU without AVX-512: dilated branches as dense convs. oneDNN's AVX2 dilated depthwise kernels (backward
    especially) were 3-6x slower than a dense one of the expanded size (Zen 3); with AVX-512 (its brdgmm kernel) the
    dilated convs are faster: forward + backward of the K=13 branches 86 vs 137 ms (16x16 maps, batch 32, Zen 4)."""
    return _device(x) == 'cpu' and torch.backends.cpu.get_cpu_capability() not in ('AVX512', 'AVX512_VNNI')


def drb_branches(drb: DilatedReparamBlock, x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    """Training-form Dilated Reparam Block (BatchNorms with batch statistics: every branch's output is needed).

    Each branch as its own dilated conv through :func:`~unimodal.layers.dwconv.branch_convs` (on CUDA the
    ``backend`` chosen, on CPU ``F.conv2d``). On CPU, small maps run every branch as one matmul against a Toeplitz
    matrix of its dense-expanded kernel (see :func:`depthwise_as_matmul`), and CPUs without AVX-512 run the
    dilated branches as dense convs with zeros inserted (see :func:`_dense_dilated_branches`)."""
    if _small_map_matmul(x) or _dense_dilated_branches(x):
        kernels = [drb.lk_origin.weight] + [
            dilate_kernel(getattr(drb, f'dil_conv_k{k}_{r}').weight, r) for k, r in drb.branches]
        if _small_map_matmul(x):
            ys = depthwise_as_matmul(x, kernels)
        else:
            ys = [F.conv2d(x, k, None, 1, k.shape[-1] // 2, 1, drb.channels) for k in kernels]
    else:
        ys = branch_convs(x, drb.lk_origin.weight, [
            (getattr(drb, f'dil_conv_k{k}_{r}').weight, r) for k, r in drb.branches], backend)
    bns = drb.branch_bns()
    out = bns[0](ys[0])
    for bn, y in zip(bns[1:], ys[1:]):
        out = out + bn(y)
    return out


# ----- the block -----

def _batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, weight: Optional[torch.Tensor],
                bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``bn(x)`` with another affine (``weight``, ``bias``), same running-statistics update as ``bn.forward``."""
    eaf = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        eaf = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats
    return F.batch_norm(
        x, bn.running_mean if track else None, bn.running_var if track else None, weight, bias,
        use_batch, eaf, bn.eps)


def _se_scale(se: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The SE block's per-sample channel scale ``(B, C)`` (the multiply is folded into Linear1)."""
    s = y.mean((2, 3))
    s = F.relu(F.linear(s, se.down.weight.flatten(1), se.down.bias))
    return torch.sigmoid(F.linear(s, se.up.weight.flatten(1), se.up.bias))


def _conv(block: nn.Module, conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor,
          bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``conv`` with another weight / bias. On CUDA a depthwise 'same' conv goes through
    :func:`~unimodal.layers.dwconv.depthwise_conv` on the block's ``dw_backend`` (cuDNN or the Triton kernel);
    when compiling, ``auto`` stays on ``F.conv2d`` (its per-shape table lookup reads a file, which a traced graph
    cannot), an explicit backend is kept."""
    k, (d, _), (p, _) = weight.shape[-1], conv.dilation, conv.padding
    if _device(x) == 'cuda' and conv.groups == conv.in_channels == conv.out_channels and conv.stride == (1, 1) \
            and k % 2 == 1 and weight.shape[-2] == k and conv.dilation == (d, d) and conv.padding == (p, p) \
            and p == d * (k - 1) // 2:
        backend = getattr(block, 'dw_backend', None)
        if not (tracing() and resolve_backend(backend) == 'auto'):
            return depthwise_conv(x, weight, bias, d, p, backend)
    if weight.is_leaf and weight.requires_grad and weight.shape[1] == 1 and not tracing():
        # oneDNN returns a (C, 1, K, K) weight's gradient with channels-last strides from channels-last inputs: the
        # same memory order, but strides differ in the size-1 dim, which DDP's bucket check flags on every rank
        # ("Grad strides do not match bucket view strides"); these two views hand it back in the parameter's strides
        weight = weight.squeeze(1).unsqueeze(1)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _dw_folded(block: nn.Module) -> Optional[Tuple[nn.Conv2d, torch.Tensor, Optional[torch.Tensor]]]:
    """The block's depthwise conv + BN1 as one conv ``(geometry, weight, bias)``: the Dilated Reparam Block's
    branches merged and the BatchNorms folded. ``None`` when there is no conv or a BatchNorm uses batch
    statistics."""
    dw, norm = block.dwconv, block.norm
    if isinstance(dw, nn.Identity) or (isinstance(norm, _BatchNorm) and not is_frozen_bn(norm)):
        return None
    if isinstance(dw, DilatedReparamBlock):
        conv = dw.lk_origin
        if dw.deploy:
            weight, bias = conv.weight, conv.bias
        elif all(is_frozen_bn(bn) for bn in dw.branch_bns()):
            weight, bias = dw.merged_kernel()
        else:
            return None
    else:
        conv = dw
        weight, bias = conv.weight, conv.bias
    if isinstance(norm, _BatchNorm):
        weight, bias = fuse_conv_bn(weight, norm, bias)
    return conv, weight, bias


def _dw(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Depthwise conv + BN1, as one conv when every BatchNorm involved is frozen (eval statistics)."""
    folded = _dw_folded(block)
    if folded is not None:
        return _conv(block, folded[0], x, folded[1], folded[2])
    dw, norm = block.dwconv, block.norm
    if isinstance(dw, nn.Identity):
        return norm(x)
    if isinstance(dw, DilatedReparamBlock) and not dw.deploy and not all(is_frozen_bn(bn) for bn in dw.branch_bns()):
        return norm(drb_branches(dw, x, getattr(block, 'dw_backend', None)))  # batch statistics
    conv = dw.lk_origin if isinstance(dw, DilatedReparamBlock) else dw
    weight, bias = dw.merged_kernel() if conv is not dw and not dw.deploy else (conv.weight, conv.bias)
    return norm(_conv(block, conv, x, weight, bias))  # BN1 with batch statistics


def _linear2_params(block: nn.Module, fold_bn2: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Weight and bias of Linear2 with GRN beta folded in (and BN2 + layer scale when BN2 is frozen)."""
    linear, grn = block.pwconv2[0], block.act[1]
    weight, bias = linear.weight, linear.bias
    if grn.beta is not None:
        bias = fold_bias_through_linear(weight, bias, grn.beta)
    if fold_bn2 and not block.deploy:
        weight, bias = fuse_linear_bn(weight, bias, block.pwconv2[2])
        if block.gamma is not None:
            weight, bias = scale_linear(weight, bias, block.gamma)
    return weight, bias


def _onednn_ffn_(block: nn.Module, out: torch.Tensor, y: torch.Tensor, s: Optional[torch.Tensor], w2: torch.Tensor,
                 b2: Optional[torch.Tensor]) -> None:
    """Inference FFN as two oneDNN 1x1 convs with fused GELU (erf) and fused residual sum into ``out``
    (``s=None``: ``y`` is already scaled by SE)."""
    linear1, grn = block.pwconv1[1], block.act[1]
    hid = torch.ops.mkldnn._convolution_pointwise(
        y if s is None else y * s[:, :, None, None], linear1.weight[:, :, None, None], linear1.bias,
        [0, 0], [1, 1], [1, 1], 1, 'gelu', [], 'none')
    n, hidden, height, width = hid.shape
    # over the (n, H*W, 4C) rows view of the channels-last output: up to 2x faster than summing dims (2, 3)
    gx = hid.permute(0, 2, 3, 1).reshape(n, height * width, hidden).square().sum(1).sqrt()
    scale = grn.gamma.reshape(1, -1) * (gx / (gx.mean(-1, keepdim=True) + 1e-6)) + 1
    hid.mul_(scale[:, :, None, None])
    torch.ops.mkldnn._convolution_pointwise_.binary(
        out, hid, w2[:, :, None, None], b2, [0, 0], [1, 1], [1, 1], 1, 'add', 1.0, None, [], None)


def _onednn_ffn_rows_(block: nn.Module, out: torch.Tensor, y: torch.Tensor, w2: torch.Tensor,
                      b2: Optional[torch.Tensor]) -> None:
    """Inference FFN of small maps as two oneDNN matmuls on the ``(n * H * W, C)`` rows of channels-last ``y``
    (already SE-scaled), fused GELU (erf) and fused residual sum, written into the channels-last ``out``. oneDNN's
    matmul ran 12-18 % faster than MKL's sgemm on the stage-3 shapes (AVX-512 Zen 4)."""
    linear1, grn = block.pwconv1[1], block.act[1]
    n, c, height, width = y.shape
    length = height * width
    hid = torch.ops.mkldnn._linear_pointwise(
        y.permute(0, 2, 3, 1).reshape(n * length, c), linear1.weight, linear1.bias, 'gelu', [], 'none')
    rows = hid.view(n, length, -1)
    gx = rows.square().sum(1).sqrt()
    scale = grn.gamma.reshape(1, -1) * (gx / (gx.mean(-1, keepdim=True) + 1e-6)) + 1
    rows.mul_(scale.unsqueeze(1))
    res = out.permute(0, 2, 3, 1).view(n * length, c)  # the residual: a view of channels-last out
    res.copy_(torch.ops.mkldnn._linear_pointwise.binary(hid, res, w2, b2, 'add'))


def _ffn_as_conv(y: torch.Tensor) -> bool:
    """Run the FFN Linears as 1x1 convs on the ``(n, C, H, W)`` map (else as matmuls on its NHWC view).

    CPU: maps of at least ``_CONV1X1_MIN_HW`` pixels (oneDNN's 1x1 conv beat MKL's sgemm there, measured).
    Elsewhere by layout: an NCHW map as a 1x1 conv (no permute copy), a channels-last one as the GEMM on its view.
    """
    if _device(y) == 'cpu':
        return y.shape[-1] * y.shape[-2] >= _CONV1X1_MIN_HW
    return not (y.shape[1] > 1 and y.stride(1) == 1)


def _ffn(block: nn.Module, y: torch.Tensor, s: Optional[torch.Tensor], w2: torch.Tensor, b2: Optional[torch.Tensor],
         inplace: bool) -> torch.Tensor:
    """``Linear2(GRN(GELU(Linear1(y * s))))`` on an ``(n, C, H, W)`` map (``s=None``: ``y`` is already scaled).

    As 1x1 convolutions or as matmuls on a ``(n, H*W, C)`` view (see :func:`_ffn_as_conv`); the per-sample
    scales (SE, GRN's ``gamma * Nx + 1``) are applied to the activations, or, on CPU with small maps, folded into
    per-sample weights of a batched matmul when those are smaller than the activations. GRN's reduction
    accumulates in fp32 under autocast (as the plain math's ``torch.norm`` does).
    """
    linear1, gelu, grn = block.pwconv1[1], block.act[0], block.act[1]
    n, c, height, width = y.shape
    length = height * width
    hidden = linear1.out_features
    conv = _ffn_as_conv(y)
    fold = _device(y) == 'cpu'  # per-sample weights: measured on CPU; one large GEMM suits a GPU better
    if conv:
        hid = F.conv2d(y if s is None else y * s[:, :, None, None], linear1.weight[:, :, None, None], linear1.bias)
    else:
        yl = y.permute(0, 2, 3, 1).reshape(n, length, c)  # a view of channels-last memory
        if s is None:
            hid = F.linear(yl, linear1.weight, linear1.bias)
        elif fold and hidden < length:  # scale the (n, C, 4C) weights rather than the (n, L, C) rows
            w1 = linear1.weight.t().unsqueeze(0) * s.unsqueeze(2)
            hid = torch.bmm(yl, w1) if linear1.bias is None else torch.baddbmm(linear1.bias, yl, w1)
        else:
            hid = F.linear(yl * s.unsqueeze(1), linear1.weight, linear1.bias)
    if inplace and gelu.approximate == 'none':
        hid = torch.ops.aten.gelu_(hid)
    else:
        hid = F.gelu(hid, approximate=gelu.approximate)
    # GRN: per-channel spatial L2 norm as sqrt(sum of squares) (torch.norm over dims is ~3x slower here)
    # clamped so an all-zero channel (possible after GELU) gets gradient 0 like torch.norm, not inf * 0 = NaN
    ss = hid.square().sum((2, 3) if conv else 1, dtype=torch.float32 if hid.element_size() < 4 else None)
    gx = ss.clamp_min(torch.finfo(ss.dtype).tiny).sqrt()
    scale = grn.gamma.reshape(1, -1) * (gx / (gx.mean(-1, keepdim=True) + 1e-6)) + 1  # (n, 4C)
    scale = scale.to(hid.dtype)
    if conv:
        scale = scale[:, :, None, None]
        hid = hid.mul_(scale) if inplace else hid * scale
        return F.conv2d(hid, w2[:, :, None, None], b2)
    if fold and c < length:  # fold the scale into per-sample (n, C, 4C) weights
        w2s = (w2.unsqueeze(0) * scale.unsqueeze(1)).transpose(1, 2)
        z = torch.bmm(hid, w2s) if b2 is None else torch.baddbmm(b2, hid, w2s)
    else:
        hid = hid.mul_(scale.unsqueeze(1)) if inplace else hid * scale.unsqueeze(1)
        z = F.linear(hid, w2, b2)
    return z.reshape(n, height, width, c).permute(0, 3, 1, 2)


def _inference_ffn(block: nn.Module, x: torch.Tensor, y: torch.Tensor, s: torch.Tensor, w2: torch.Tensor,
                   b2: Optional[torch.Tensor], fmt: torch.memory_format) -> torch.Tensor:
    """``x + FFN(y)`` without autograd, in memory format ``fmt``: in-place ops, and on CPU batch chunks
    accumulated straight into the output (chunks keep the hidden tensor in a CPU's caches; on a GPU they would
    only add launches)."""
    b, _, h, w = x.shape
    step = max(1, _FFN_CHUNK_BYTES // (h * w * block.pwconv1[1].out_features * x.element_size())) \
        if _device(x) == 'cpu' else b
    if _use_onednn(x) and h * w >= _CONV1X1_MIN_HW:
        out = x.clone(memory_format=fmt)
        for i in range(0, b, step):
            _onednn_ffn_(block, out[i:i + step], y[i:i + step], s[i:i + step], w2, b2)
        return out
    out = torch.empty_like(x, memory_format=fmt)
    for i in range(0, b, step):
        z = _ffn(block, y[i:i + step], s[i:i + step], w2, b2, inplace=True)
        torch.add(x[i:i + step], z, out=out[i:i + step])
    return out


def _inference_block(block: nn.Module, x: torch.Tensor, w2: torch.Tensor, b2: Optional[torch.Tensor],
                     fmt: torch.memory_format) -> torch.Tensor:
    """The whole block without autograd. On CPU with the depthwise conv foldable (frozen BatchNorms), in batch
    chunks: each chunk's depthwise conv, SE and FFN run back to back while its maps are in cache, large kernels on
    an NCHW copy (see ``_DW_NCHW_MIN_K``), and the SE-scaled map written channels-last for the FFN in the same
    pass. Elsewhere: the depthwise conv on the whole batch, then :func:`_inference_ffn`."""
    folded = _dw_folded(block) if _device(x) == 'cpu' and fmt == torch.channels_last else None
    if folded is None:
        y = _dw(block, x)
        return _inference_ffn(block, x, y, _se_scale(block.se, y), w2, b2, fmt)
    conv, weight, bias = folded
    b, c, h, w = x.shape
    step = max(1, _FFN_CHUNK_BYTES // (h * w * block.pwconv1[1].out_features * x.element_size()))
    if 2 * c * block.pwconv1[1].out_features * x.element_size() > _FFN_WEIGHTS_CHUNKED_MAX_BYTES:
        step = b
    nchw = conv.groups == conv.in_channels == weight.shape[0] and weight.shape[-1] >= _DW_NCHW_MIN_K
    onednn = _use_onednn(x)
    out = x.clone(memory_format=fmt) if onednn else torch.empty_like(x, memory_format=fmt)
    for i in range(0, b, step):
        xc = x[i:i + step]
        y = F.conv2d(xc.contiguous() if nchw else xc, weight, bias, conv.stride, conv.padding, conv.dilation,
                     conv.groups)
        s = _se_scale(block.se, y)
        ys = torch.mul(y, s[:, :, None, None], out=torch.empty_like(y, memory_format=torch.channels_last))
        if onednn and h * w >= _CONV1X1_MIN_HW:
            _onednn_ffn_(block, out[i:i + step], ys, None, w2, b2)
        elif onednn:
            _onednn_ffn_rows_(block, out[i:i + step], ys, w2, b2)
        else:
            torch.add(xc, _ffn(block, ys, None, w2, b2, inplace=True), out=out[i:i + step])
    return out


def block_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A ``UniRepLKNetBlock`` in one memory layout throughout (:func:`channels_last`; no permute copies on CPU),
    with BatchNorms folded on the fly where they are frozen, SE and GRN scales folded into the FFN, and, in CPU
    inference, the FFN run in batch chunks so its 4x-wide hidden tensor stays cache- and allocator-friendly."""
    fmt = _memory_format(channels_last(getattr(block, 'channels_last', None), x))
    x = x.contiguous(memory_format=fmt)
    bn2 = None if block.deploy else block.pwconv2[2]
    fold_bn2 = bn2 is None or is_frozen_bn(bn2)
    w2, b2 = _linear2_params(block, fold_bn2)
    grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in block.parameters()))
    if not grad and fold_bn2 and not tracing() and (
            not block.training or isinstance(block.drop_path, nn.Identity)):
        return _inference_block(block, x, w2, b2, fmt)
    y = _dw(block, x)
    s = _se_scale(block.se, y)
    z = _ffn(block, y, s, w2, b2, inplace=not grad)
    if not fold_bn2:  # BN2 with batch statistics; layer scale folded into its affine
        g = block.gamma
        if type(bn2) is nn.BatchNorm2d and (g is None or (bn2.weight is not None and bn2.bias is not None)):
            weight = bn2.weight if g is None else bn2.weight * g
            bias = bn2.bias if g is None else bn2.bias * g
            z = _batch_norm(bn2, z, weight, bias)
        else:
            z = bn2(z)
            if g is not None:
                z = z * g.reshape(1, -1, 1, 1)
    return (x + block.drop_path(z)).contiguous(memory_format=fmt)


# ----- the stem -----

def chunked_stem_applies(stem: nn.Module, x: torch.Tensor) -> bool:
    """CPU inference with the published stem layout and no hooks on it. Its layers must be per-sample (a
    swapped-in BatchNorm would see chunk statistics) and hooks would miss the Sequential's call or see a
    tensor that the in-place GELU then overwrites."""
    if torch.is_grad_enabled() or tracing() or _device(x) != 'cpu' or x.shape[0] < 2:  # 1 image: no gain
        return False
    if type(stem) is not nn.Sequential or [type(m) for m in stem] != _STEM_LAYOUT:
        return False
    hooks = torch.nn.modules.module
    return not (hooks._global_forward_hooks or hooks._global_forward_pre_hooks
                or any(m._forward_hooks or m._forward_pre_hooks for m in stem.modules()))


def chunked_stem(stem: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The stem in batch chunks with GELU in place: its 112x112 maps are the largest tensors in the network
    and, whole-batch, each pass over them (LayerNorm, GELU) ran from DRAM into freshly faulted-in pages;
    in chunks they stay in cache (measured 1.8x on the stem of P, batch 16)."""
    conv1, norm1, act, conv2, norm2 = stem
    b, _, height, width = x.shape
    s = conv1.stride[0]
    sample_bytes = conv1.out_channels * ((height + s - 1) // s) * ((width + s - 1) // s) * x.element_size()
    step = max(1, _STEM_CHUNK_BYTES // sample_bytes)
    out = None
    for i in range(0, b, step):
        h = norm1(conv1(x[i:i + step]))
        h = norm2(conv2(torch.ops.aten.gelu_(h, approximate=act.approximate)))
        if step >= b:
            return h
        if out is None:
            out = torch.empty((b,) + h.shape[1:], dtype=h.dtype, device=h.device,
                              memory_format=torch.channels_last)
        out[i:i + step] = h
    return out
