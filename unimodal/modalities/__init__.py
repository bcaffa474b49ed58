"""Modality adapters: each turns one kind of raw input into a 2D grid-like input for the shared trunk."""
from .base import Adapter, InputShapeError, get_adapter_class, list_adapters, register_adapter
from . import audio, image, point, timeseries, video  # noqa: F401  (register the built-in adapters)

__all__ = ['Adapter', 'InputShapeError', 'get_adapter_class', 'list_adapters', 'register_adapter']
