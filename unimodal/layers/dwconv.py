"""Which kernel runs a depthwise 'same' conv on CUDA (cuDNN or the Triton kernel), and the branch-merge identity.

* :func:`depthwise_conv` - the call the trunk makes for its depthwise convs (``F.conv2d(groups=C)`` semantics).
* :func:`choose_backend` - the kernel for one call: an explicit option (``backend=`` argument, else the
  ``UNIMODAL_DWCONV`` environment variable: ``cudnn`` | ``triton`` | ``auto``), where ``auto`` looks the shape up
  in a per-shape table measured on the same GPU model (``benchmarks/bench_dwconv.py`` writes it) and uses cuDNN
  when there is no table, no entry or another GPU. Never chosen by trying an import. Tensors not on CUDA always
  take the existing ``F.conv2d`` path (oneDNN on CPU), whatever the option.
* :func:`cuda_channels_last` - the memory layout the trunk's fast path uses on CUDA by default: the one the same
  table measured faster (:func:`layout_choice`), NCHW when there is no table or it cannot tell.
* :func:`merged_branch_kernel` - the Dilated Reparam Block's branches as one ``K x K`` kernel:
  ``W = s_0 * w_0 + sum_i s_i * pad_K(dilate(w_i, r_i))``.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..models.reparam import dilate_kernel, dilated_kernel_size, pad_kernel

__all__ = ['BACKENDS', 'ENV_BACKEND', 'ENV_TABLE', 'DEFAULT_TABLE', 'TABLE_FORMAT', 'resolve_backend', 'load_table',
           'choose_backend', 'table_choice', 'layout_choice', 'cuda_channels_last', 'depthwise_conv',
           'merged_branch_kernel', 'branch_convs']

_logger = logging.getLogger(__name__)

Tensor = torch.Tensor

BACKENDS = ('auto', 'cudnn', 'triton')
ENV_BACKEND = 'UNIMODAL_DWCONV'
ENV_TABLE = 'UNIMODAL_DWCONV_TABLE'
# a measured table shipped with the package (copied from benchmarks/results/ after a GPU run); absent until then
DEFAULT_TABLE = Path(__file__).with_name('dwconv_table_cuda.json')
TABLE_FORMAT = 'unimodal-dwconv-table/1'
_ENTRY_KEYS = ('batch', 'channels', 'height', 'width', 'kernel_size', 'dilation', 'dtype', 'channels_last',
               'winner_forward', 'winner_train')


def resolve_backend(option: Optional[str] = None) -> str:
    """The backend option: ``option`` if given, else ``$UNIMODAL_DWCONV``, else ``'auto'``; checked."""
    source = 'backend argument'
    if option is None:
        option, source = os.environ.get(ENV_BACKEND) or 'auto', f'${ENV_BACKEND}'
    value = str(option).strip().lower()
    if value not in BACKENDS:
        raise ValueError(f'{source}: unknown depthwise conv backend {option!r}; expected one of {BACKENDS}')
    return value


def _check_entry(entry: Any, where: str) -> Dict[str, Any]:
    if not isinstance(entry, dict):
        raise ValueError(f'{where}: expected an object, got {type(entry).__name__}')
    missing = [k for k in _ENTRY_KEYS if k not in entry]
    if missing:
        raise ValueError(f'{where}: missing field(s) {missing}')
    for k in ('winner_forward', 'winner_train'):
        if entry[k] not in ('cudnn', 'triton'):
            raise ValueError(f'{where}.{k}: expected "cudnn" or "triton", got {entry[k]!r}')
    cfg = entry.get('triton_config')
    if cfg is not None and (not isinstance(cfg, list) or len(cfg) != 3 or not all(isinstance(v, int) for v in cfg)):
        raise ValueError(f'{where}.triton_config: expected [BLOCK_P, BLOCK_C, num_warps], got {cfg!r}')
    return entry


@functools.lru_cache(maxsize=8)
def _load_table_cached(path: str, mtime: float) -> Dict[str, Any]:
    try:
        table = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f'{path}: not valid JSON ({err})') from err
    if not isinstance(table, dict) or table.get('format') != TABLE_FORMAT:
        raise ValueError(f'{path}: field "format" must be {TABLE_FORMAT!r} (a table written by '
                         f'benchmarks/bench_dwconv.py)')
    if not isinstance(table.get('device_name'), str):
        raise ValueError(f'{path}: field "device_name" (the GPU the table was measured on) is missing')
    entries = table.get('entries')
    if not isinstance(entries, list):
        raise ValueError(f'{path}: field "entries" must be a list')
    table['entries'] = [_check_entry(e, f'{path}: entries[{i}]') for i, e in enumerate(entries)]
    return table


def load_table(path: Optional[os.PathLike] = None) -> Optional[Dict[str, Any]]:
    """The per-shape table: ``path``, else ``$UNIMODAL_DWCONV_TABLE``, else :data:`DEFAULT_TABLE` if present.

    Returns ``None`` when no path is given and the packaged table does not exist. A path that is named (argument
    or environment) but missing is an error.
    """
    named = path if path is not None else os.environ.get(ENV_TABLE)
    if named:
        p = Path(named)
        if not p.is_file():
            raise FileNotFoundError(f'depthwise conv table {p} (from {"argument" if path else "$" + ENV_TABLE}) '
                                    f'does not exist')
    else:
        p = DEFAULT_TABLE
        if not p.is_file():
            return None
    return _load_table_cached(str(p.resolve()), p.stat().st_mtime)


def _nearest_entry(entries: Iterable[Dict[str, Any]], batch: int, channels: int, pixels: int
                   ) -> Optional[Dict[str, Any]]:
    """The entry closest in (log batch x pixels, log channels): the work per channel and the channel count are
    what the two kernels scale with."""
    best, best_d = None, math.inf
    for e in entries:
        d = (math.log(batch * pixels) - math.log(e['batch'] * e['height'] * e['width'])) ** 2 \
            + (math.log(channels) - math.log(e['channels'])) ** 2
        if d < best_d:
            best, best_d = e, d
    return best


@functools.lru_cache(maxsize=None)
def _log_once(level: int, msg: str) -> None:
    _logger.log(level, msg)


def choose_backend(
        x: Tensor,
        weight: Tensor,
        dilation: int = 1,
        backend: Optional[str] = None,
        table: Optional[Dict[str, Any]] = None,
        training: Optional[bool] = None,
) -> Tuple[str, Optional[Tuple[int, int, int]]]:
    """``(kernel, triton_config)`` for one depthwise conv: kernel is ``'torch'`` (not CUDA: the existing path),
    ``'cudnn'`` or ``'triton'``.

    Args:
        x, weight, dilation: the conv (weight ``(C, 1, K, K)``).
        backend: ``'auto'`` | ``'cudnn'`` | ``'triton'``; ``None`` reads ``$UNIMODAL_DWCONV`` (default auto).
        table: the per-shape table for ``auto`` (default :func:`load_table`).
        training: pick by forward + backward time (default: whether autograd will need this conv's backward).
    """
    option = resolve_backend(backend)
    if x.device.type != 'cuda':
        return 'torch', None
    if option != 'auto':
        return option, None
    table = table if table is not None else load_table()
    if table is None:
        _log_once(logging.INFO, 'depthwise conv: no measured table, using cuDNN (run benchmarks/bench_dwconv.py '
                                'on this GPU to record one)')
        return 'cudnn', None
    dtype = x.dtype
    if torch.is_autocast_enabled('cuda') and x.dtype == torch.float32:
        dtype = torch.get_autocast_dtype('cuda')
    if training is None:
        training = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    b, c, h, w = x.shape
    return table_choice(table, torch.cuda.get_device_name(x.device), b, c, h, w, weight.shape[-1], dilation, dtype,
                        c > 1 and x.stride(1) == 1, training)


def table_choice(
        table: Dict[str, Any],
        device_name: str,
        batch: int, channels: int, height: int, width: int,
        kernel_size: int, dilation: int,
        dtype: torch.dtype,
        channels_last: bool,
        training: bool,
) -> Tuple[str, Optional[Tuple[int, int, int]]]:
    """The table's pick for one conv: among entries of the same kernel size, dilation, dtype and layout
    measured on this GPU model, the nearest shape's winner (forward time, or forward + backward when
    ``training``); ``('cudnn', None)`` when the table has nothing that applies."""
    if table['device_name'] != device_name:
        _log_once(logging.WARNING, f'depthwise conv: the table was measured on {table["device_name"]!r}, this GPU '
                                   f'is {device_name!r}: using cuDNN')
        return 'cudnn', None
    dt = str(dtype).replace('torch.', '')
    same = [e for e in table['entries'] if e['kernel_size'] == kernel_size and e['dilation'] == dilation
            and e['dtype'] == dt and bool(e['channels_last']) == channels_last]
    entry = _nearest_entry(same, batch, channels, height * width)
    if entry is None:
        _log_once(logging.INFO, f'depthwise conv: no table entry for K={kernel_size} d={dilation} {dt} '
                                f'{"channels-last" if channels_last else "NCHW"}: using cuDNN')
        return 'cudnn', None
    winner = entry['winner_train' if training else 'winner_forward']
    cfg = entry.get('triton_config')
    return winner, (tuple(cfg) if cfg is not None and winner == 'triton' else None)


def layout_choice(table: Dict[str, Any], device_name: str, dtype: str, training: bool) -> Optional[bool]:
    """Whether the table measured channels-last faster than NCHW on this GPU model for ``dtype``: over the shapes
    measured in both layouts, the summed time of the faster kernel per shape (forward, or forward + backward when
    ``training``). ``None`` when the table is for another GPU or has no shape measured in both layouts."""
    if table['device_name'] != device_name:
        return None
    mode = 'train' if training else 'forward'
    best: Dict[Tuple[Any, ...], Dict[bool, float]] = {}
    for e in table['entries']:
        if e['dtype'] != dtype or not isinstance(e.get('cudnn_ms'), dict) or not isinstance(e.get('triton_ms'), dict):
            continue
        times = [t[mode] for t in (e['cudnn_ms'], e['triton_ms']) if isinstance(t.get(mode), (int, float))]
        if not times:
            continue
        key = tuple(e[k] for k in ('batch', 'channels', 'height', 'width', 'kernel_size', 'dilation'))
        best.setdefault(key, {})[bool(e['channels_last'])] = min(times)
    pairs = [v for v in best.values() if len(v) == 2]
    if not pairs:
        return None
    return sum(v[True] for v in pairs) < sum(v[False] for v in pairs)


@torch.compiler.assume_constant_result
def cuda_channels_last(device: torch.device, dtype: str, training: bool) -> bool:
    """The trunk's default memory layout on CUDA (``UniRepLKNet(channels_last=None)``): what :func:`layout_choice`
    reads from the per-shape table (:func:`load_table`) for this GPU, ``dtype`` (``'bfloat16'``, ``'float32'``,
    ...) and mode; NCHW (``False``) without a table or an answer. A constant of a compiled graph."""
    table = load_table()
    if table is None:
        return False
    choice = layout_choice(table, torch.cuda.get_device_name(device), dtype, training)
    _log_once(logging.INFO, f'fast path layout on CUDA ({dtype}, {"training" if training else "inference"}): '
                            + ('NCHW (the depthwise table cannot tell)' if choice is None else
                               'channels-last' if choice else 'NCHW') + ' (from the depthwise table)')
    return bool(choice)


@functools.lru_cache(maxsize=1)
def _triton_conv():
    """The Triton kernel module, imported on first use because it was chosen (explicitly or by the table)."""
    try:
        from . import dwconv_triton
    except ImportError as err:
        raise RuntimeError(
            f'the Triton depthwise conv was selected (backend option or ${ENV_BACKEND}, or the measured table) but '
            f'Triton cannot be imported ({err}); install triton or set {ENV_BACKEND}=cudnn') from err
    return dwconv_triton.depthwise_conv2d_triton


def depthwise_conv(
        x: Tensor,
        weight: Tensor,
        bias: Optional[Tensor] = None,
        dilation: Union[int, Tuple[int, int]] = 1,
        padding: Optional[Union[int, Tuple[int, int]]] = None,
        backend: Optional[str] = None,
) -> Tensor:
    """``F.conv2d(x, weight, bias, stride=1, padding, dilation, groups=C)`` on the chosen kernel.

    Args:
        x: ``(B, C, H, W)``.
        weight: ``(C, 1, K, K)``, ``K`` odd.
        bias: ``(C,)`` or ``None``.
        dilation: dilation rate (an int, or a ``Conv2d``'s equal pair).
        padding: must be the 'same' padding ``dilation * (K - 1) // 2`` (the default) unless the tensors are not
            on CUDA (then any padding ``F.conv2d`` takes).
        backend: see :func:`choose_backend`.
    """
    dilation, padding = _square('dilation', dilation), _square('padding', padding)
    k = weight.shape[-1]
    same = dilation * (k - 1) // 2
    padding = same if padding is None else padding
    kernel, cfg = choose_backend(x, weight, dilation, backend)
    if kernel == 'torch':
        return F.conv2d(x, weight, bias, 1, padding, dilation, x.shape[1])
    if padding != same or k % 2 != 1:
        raise ValueError(f'depthwise_conv on CUDA supports odd kernels with \'same\' padding {same} '
                         f'(K={k}, dilation={dilation}), got padding {padding}')
    if kernel == 'cudnn':
        return F.conv2d(x, weight, bias, 1, padding, dilation, x.shape[1])
    if torch.is_autocast_enabled('cuda'):
        # what autocast does for F.conv2d: compute in the autocast dtype; .to() keeps the graph to fp32 masters
        dt = torch.get_autocast_dtype('cuda')
        x, weight = x.to(dt), weight.to(dt)
        bias = bias.to(dt) if bias is not None else None
    return _triton_conv()(x, weight, bias, dilation, cfg)


def _square(name: str, value: Any) -> Any:
    """An int from an int or an equal pair (``nn.Conv2d`` stores ``dilation`` / ``padding`` as pairs)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f'depthwise_conv: {name} must be one int or an equal pair, got {value!r}')
        return int(value[0])
    return value


def merged_branch_kernel(
        kernel: Tensor,
        branches: Sequence[Tuple[Tensor, int]],
        scales: Optional[Sequence[Optional[Tensor]]] = None,
) -> Tensor:
    """The parallel depthwise branches of a Dilated Reparam Block as one ``K x K`` kernel.

    ``W = s_0 * w_0 + sum_i s_i * pad_K(dilate(w_i, r_i))`` with per-channel scales ``s`` (1 when ``None``), so
    ``conv(x, W) == s_0 * conv(x, w_0) + sum_i s_i * conv_{r_i}(x, w_i)`` exactly (convolution is linear in the
    kernel). Differentiable: autograd carries the merged kernel's gradient back to every ``w_i`` (the matching
    taps of ``dW``, times ``s_i``) and to the scales, so forward and gradients equal the branch-by-branch sum.

    It is exact only while each branch's scale is a constant of the step (no BatchNorm, frozen BatchNorm, eval):
    a BatchNorm with batch statistics scales each branch by ``1 / std`` of that branch's own output, which is not
    known without running the branch.

    Args:
        kernel: the main ``(C, 1, K, K)`` kernel.
        branches: ``(weight (C, 1, k, k), dilation)`` per branch, each ``r (k - 1) + 1 <= K``.
        scales: per-channel ``(C,)`` scales, first for ``kernel`` then one per branch (``None`` entries = 1).
    """
    size = kernel.shape[-1]
    if scales is not None and len(scales) != len(branches) + 1:
        raise ValueError(f'scales: expected {len(branches) + 1} entries (main kernel + branches), got {len(scales)}')
    scales = list(scales) if scales is not None else [None] * (len(branches) + 1)

    def scaled(w: Tensor, s: Optional[Tensor]) -> Tensor:
        return w if s is None else w * s.reshape(-1, 1, 1, 1)

    out = scaled(kernel, scales[0])
    for (w, r), s in zip(branches, scales[1:]):
        span = dilated_kernel_size(w.shape[-1], r)
        if span > size:
            raise ValueError(f'branch {w.shape[-1]}x{w.shape[-1]} at dilation {r} spans {span} > K={size}')
        out = out + pad_kernel(dilate_kernel(scaled(w, s), r), size)
    return out


def branch_convs(x: Tensor, kernel: Tensor, branches: Sequence[Tuple[Tensor, int]],
                 backend: Optional[str] = None) -> List[Tensor]:
    """Each branch's own conv output (main kernel first) through :func:`depthwise_conv`: the training form with
    batch-statistics BatchNorms needs every branch's output separately (see :func:`merged_branch_kernel`)."""
    return [depthwise_conv(x, kernel, None, 1, None, backend)] + [
        depthwise_conv(x, w, None, r, None, backend) for w, r in branches]
