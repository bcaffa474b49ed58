"""unimodal: one UniRepLKNet large-kernel ConvNet trunk for images, audio, point clouds, video and time series.

The public names load on first use (PEP 562), so ``import unimodal`` and the CLI's ``--help`` do not import torch;
the first of them loads the trunk (registered with timm) and the built-in adapters, as an eager import used to.
"""
import importlib
import logging as _logging
from typing import Any

from . import _timm_hook

__version__ = '0.1.0'

_logging.getLogger(__name__).addHandler(_logging.NullHandler())

_EXPORTS = {
    'UniRepLKNet': 'models.unireplknet', 'load_checkpoint': 'models.unireplknet',
    'ClassificationHead': 'models.heads', 'ForecastHead': 'models.heads', 'create_head': 'models.heads',
    'TaskModel': 'models.task_model', 'create_model': 'models.task_model', 'create_trunk': 'models.task_model',
    'Adapter': 'modalities', 'InputShapeError': 'modalities', 'get_adapter_class': 'modalities',
    'list_adapters': 'modalities', 'register_adapter': 'modalities', 'Predictor': 'predict.predictor',
}
_SUBPACKAGES = ('analysis', 'cli', 'config', 'data', 'engine', 'layers', 'modalities', 'models', 'predict', 'tasks')

__all__ = [*_EXPORTS, '__version__']

# timm finds the UniRepLKNet variants whichever of the two is imported first
_timm_hook.install()


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        importlib.import_module('.modalities', __name__)  # the built-in adapters register on import
        value = getattr(importlib.import_module(f'.{_EXPORTS[name]}', __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f'.{name}', __name__)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBPACKAGES))
