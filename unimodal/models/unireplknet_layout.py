"""The published UniRepLKNet layout facts: per-block kernel sizes by depth, the layer-decay groups, and the
validation of explicit depths and kernel sizes (used by :mod:`unimodal.models.unireplknet`)."""
from __future__ import annotations

import difflib
import math
import operator
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

__all__ = ['DEFAULT_KERNEL_SIZES', 'INIT_ARGS', 'STEM_STRIDES', 'WEIGHT_INITS', 'check_arch_args']

# Published per-block kernel sizes, keyed by depths.
DEFAULT_KERNEL_SIZES: Dict[Tuple[int, ...], Tuple[Tuple[int, ...], ...]] = {
    (2, 2, 6, 2): ((3, 3), (13, 13), (13,) * 6, (13, 13)),
    (2, 2, 8, 2): ((3, 3), (13, 13), (13,) * 8, (13, 13)),
    (3, 3, 18, 3): ((3, 3, 3), (13, 13, 13), (13, 3) * 9, (13, 13, 13)),
    (3, 3, 27, 3): ((3, 3, 3), (13, 13, 13), (13, 3, 3) * 9, (13, 13, 13)),
}

_MIN_DRB_KERNEL = 7  # blocks with a smaller kernel use a plain depthwise conv

# Layer-decay groups after the stem (see UniRepLKNet.group_matcher): (regex, (group,)), groups as numbered by the
# published get_num_layer_for_convnext; stage 2 in threes of blocks, blocks 24 on with the last three.
_LAYER_DECAY_GROUPS: List[Tuple[str, Tuple[int]]] = [
    (r'^stages\.0\.', (1,)),
    (r'^(?:downsample_layers|stages)\.1\.', (2,)),
    (r'^downsample_layers\.2\.', (3,)),
    *[(rf'^stages\.2\.(?:{3 * g}|{3 * g + 1}|{3 * g + 2})\.', (3 + g,)) for g in range(8)],
    (r'^stages\.2\.', (11,)),
    (r'^(?:downsample_layers|stages)\.3\.', (12,)),
]


def _int_tuple(name: str, values: Any, lo: int) -> Tuple[int, ...]:
    """``values`` as a tuple of ints ``>= lo`` (a ``ValueError`` naming ``name`` otherwise)."""
    try:
        out = tuple(operator.index(v) for v in values if not isinstance(v, bool))
        ok = len(out) == len(values) and all(v >= lo for v in out)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f'{name} must be a sequence of integers >= {lo}, got {values!r}')
    return out


def _resolve_kernel_sizes(
        depths: Sequence[int],
        kernel_sizes: Optional[Sequence[Union[int, Sequence[int]]]],
) -> Tuple[Tuple[int, ...], ...]:
    """Per-block kernel sizes: the published default for the depths, or validated explicit ones."""
    if kernel_sizes is None:
        if tuple(depths) not in DEFAULT_KERNEL_SIZES:
            raise ValueError(
                f'no published kernel sizes for depths {tuple(depths)}; pass kernel_sizes explicitly '
                f'(one sequence per stage, one entry per block)')
        return DEFAULT_KERNEL_SIZES[tuple(depths)]
    if len(kernel_sizes) != len(depths):
        raise ValueError(f'kernel_sizes needs one entry per stage ({len(depths)}), got {len(kernel_sizes)}')
    out = []
    for i, (d, ks) in enumerate(zip(depths, kernel_sizes)):
        ks = (int(ks),) * d if isinstance(ks, int) else tuple(int(k) for k in ks)
        if len(ks) != d:
            raise ValueError(f'stage {i}: {d} blocks but {len(ks)} kernel sizes ({ks})')
        out.append(ks)
    return tuple(out)


_POOLS = ('avg', 'max', 'avgmax')
INIT_ARGS = (
    'in_chans', 'num_classes', 'depths', 'dims', 'kernel_sizes', 'drop_rate', 'drop_path_rate',
    'layer_scale_init_value', 'head_init_scale', 'global_pool', 'deploy', 'use_sync_bn', 'dense_norms',
    'dw_backend', 'channels_last', 'device', 'dtype', 'weight_init', 'stem_stride',
)
#: ``weight_init`` choices: the published truncated normal (std .02) or one scaled by each layer's fan-in.
WEIGHT_INITS = ('trunc_normal', 'fan_in')
#: ``stem_stride`` choices: the published 4, or 2 (the stem's first conv at stride 1).
STEM_STRIDES = (4, 2)


def check_arch_args(unknown: Dict[str, Any], *, depths: Sequence[int], dims: Sequence[int],
                    kernel_sizes: Optional[Sequence[Union[int, Sequence[int]]]], drop_rate: float,
                    drop_path_rate: float, layer_scale_init_value: Optional[float], head_init_scale: float,
                    global_pool: str, weight_init: str = 'trunc_normal', stem_stride: int = 4
                    ) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[Tuple[int, ...], ...]]:
    """Check the constructor's arguments (``unknown``: its stray keyword arguments, an error with a suggestion,
    never swallowed); return ``(depths, dims, kernel_sizes)`` resolved."""
    if unknown:
        hints = []
        for k in sorted(unknown):
            close = difflib.get_close_matches(k, INIT_ARGS, n=1)
            hints.append(f'{k!r}' + (f' (did you mean {close[0]!r}?)' if close else ''))
        raise TypeError(f'UniRepLKNet got unexpected keyword argument(s): {", ".join(hints)}')
    depths, dims = _int_tuple('depths', depths, 1), _int_tuple('dims', dims, 2)
    if len(depths) != 4 or len(dims) != 4:
        raise ValueError(f'depths and dims need 4 entries, got {depths} and {dims}')
    for name, value in (('drop_rate', drop_rate), ('drop_path_rate', drop_path_rate)):
        if not (isinstance(value, (int, float)) and 0 <= value <= 1):
            raise ValueError(f'{name} must be a number in [0, 1], got {value!r}')
    for name, value in (('layer_scale_init_value', layer_scale_init_value), ('head_init_scale', head_init_scale)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ValueError(f'{name} must be a finite number{" or None" if name[0] == "l" else ""}, got {value!r}')
    if global_pool not in _POOLS:
        raise ValueError(f'global_pool must be one of {", ".join(_POOLS)}, got {global_pool!r}')
    if weight_init not in WEIGHT_INITS:
        raise ValueError(f'weight_init must be one of {", ".join(WEIGHT_INITS)}, got {weight_init!r}')
    if isinstance(stem_stride, bool) or stem_stride not in STEM_STRIDES:
        raise ValueError(f'stem_stride must be one of {", ".join(map(str, STEM_STRIDES))}, got {stem_stride!r}')
    return depths, dims, _resolve_kernel_sizes(depths, kernel_sizes)
