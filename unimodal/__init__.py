"""unimodal: one UniRepLKNet large-kernel ConvNet trunk for images, audio, point clouds, video and time series."""
import logging as _logging

from .models import unireplknet as _unireplknet  # registers the timm factories  # noqa: F401
from .models.unireplknet import UniRepLKNet, load_checkpoint
from .models.heads import ClassificationHead, ForecastHead, create_head
from .models.task_model import TaskModel, create_model, create_trunk
from .modalities.base import Adapter, InputShapeError, get_adapter_class, list_adapters, register_adapter
from . import modalities as _modalities  # registers the built-in adapters  # noqa: F401

__version__ = '0.1.0'

_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    'UniRepLKNet', 'load_checkpoint', 'ClassificationHead', 'ForecastHead', 'create_head', 'TaskModel',
    'create_model', 'create_trunk', 'Adapter', 'InputShapeError', 'get_adapter_class', 'list_adapters',
    'register_adapter', 'Predictor', '__version__',
]


def __getattr__(name: str):
    if name == 'Predictor':  # imported on first use (the predict package reads files of every modality)
        from .predict.predictor import Predictor
        return Predictor
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
