"""Use a trained model: :class:`Predictor` (files or tensors -> labels / forecasts), deploy artifacts
(:mod:`.artifact`: safetensors + JSON) and ONNX exports with their sidecar (:mod:`.onnx_export`)."""
from typing import Any

__all__ = ['Predictor', 'Predictions', 'load_model', 'write_artifact', 'read_artifact', 'export_onnx']

_WHERE = {'Predictor': 'predictor', 'Predictions': 'output', 'load_model': 'sources', 'write_artifact': 'artifact',
          'read_artifact': 'artifact', 'export_onnx': 'onnx_export'}


def __getattr__(name: str) -> Any:  # imported on first use: `unimodal --help` does not pay for torch here
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(f'.{_WHERE[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
