"""Benchmark tasks: adapter + reader + kind (head, loss, metrics, plots) + default config.

Names load on first use (PEP 562): :mod:`.catalog` (what each task is, where its data comes from) is read by
``unimodal tasks`` without importing torch.
"""
import importlib
from typing import Any

_EXPORTS = {
    'Task': 'base', 'get_task': 'base', 'list_tasks': 'base', 'register_task': 'base', 'canonical_task_name': 'base',
    'resolve_task': 'plugin', 'PluginTask': 'plugin', 'TaskKind': 'kinds', 'get_kind': 'kinds', 'TaskSpec': 'spec',
    'make_task_spec': 'spec', 'TaskInfo': 'catalog', 'TASK_INFO': 'catalog',
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(f'.{_EXPORTS[name]}', __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
