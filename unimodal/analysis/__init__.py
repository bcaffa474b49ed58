"""Analyses of trained or random-init models: the effective receptive field (``unimodal analyze erf``).

Exports resolve on first use, so the CLI can register ``analyze erf`` (``unimodal.analysis.erf_cli``) without
importing torch.
"""
import importlib
from typing import Any

_EXPORTS = {
    'THRESHOLDS': 'erf', 'adapter_grid': 'erf', 'area_ratios': 'erf', 'erf_map': 'erf', 'log_scale': 'erf',
    'task_model_erf': 'erf', 'save_comparison': 'erf_plot', 'save_heatmap': 'erf_plot',
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'.{_EXPORTS[name]}', __name__), name)


def __dir__():
    return sorted(list(globals()) + __all__)
