"""ONNX export of a task model with a sidecar JSON that says what is inside the graph, and running it with
onnxruntime behind the same interface as a PyTorch task model.

The whole task model (adapter, trunk, head) goes into the graph when the TorchScript exporter can trace it. An
adapter whose feature extraction cannot be exported (the audio adapter's log-mel fbank uses ``torch.fft.rfft``,
which has no ONNX export in the TorchScript exporter) is split: the graph starts at the adapter's encoded grid
(channel projection, trunk, head inside) and ``unimodal predict`` runs the adapter's ``encode`` in PyTorch before
the graph. The split is made only when that ``encode`` has no learned weights (an adapter rebuilt from the task
spec reproduces it), so the sidecar and the spec are all predict needs.

Sidecar ``<name>.onnx.json``::

    {"format": "unimodal-onnx", "version": 1, "task": ..., "kind": "classification" | "forecast",
     "classes": [...] | null, "spec": {TaskSpec}, "inputs": {reader settings}, "model": {variant, ...},
     "graph": {"inputs": [{"name", "shape", "dtype"}], "output": "output", "returns": "logits" | ...},
     "adapter": {"name", "in_graph": "whole" | "after_encode", "before_graph": what predict applies first}}
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ..data.inputs import is_structured
from ..engine.checkpoint import CheckpointError, write_text_atomic
from ..models.backend_select import export_onnx as export_onnx_file
from ..tasks.spec import TaskSpec
from .artifact import jsonable

_logger = logging.getLogger(__name__)

__all__ = ['SIDECAR_FORMAT', 'sidecar_path', 'export_onnx', 'OnnxTaskModel', 'load_onnx']

SIDECAR_FORMAT = 'unimodal-onnx'


def sidecar_path(onnx_path: Union[str, Path]) -> Path:
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + '.json')


class _AfterEncode(nn.Module):
    """A task model from its adapter's encoded grid on: channel projection, trunk, head, decode (state ``None``)."""

    def __init__(self, task_model: nn.Module) -> None:
        super().__init__()
        self.task_model = task_model

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        tm = self.task_model
        proj = getattr(tm.adapter, 'channel_proj', None)
        if proj is not None:
            grid = proj(grid)
        out = tm.head(tm._trunk_features(grid))
        return tm.adapter.decode(out, None)


def _fresh_adapter(spec: TaskSpec) -> nn.Module:
    from ..tasks.plugin import adapter_class
    return adapter_class(spec.adapter)(**spec.adapter_kwargs).eval()


def _export(model: nn.Module, x: Any, path: Path, opset: int) -> List[str]:
    names = [f'input_{i}' for i in range(len(x))] if is_structured(x) else ['input']
    export_onnx_file(model, x, path, opset, input_names=names)
    return names


def export_onnx(task_model: nn.Module, spec: TaskSpec, inputs: Optional[Mapping[str, Any]], meta: Mapping[str, Any],
                path: Union[str, Path], opset: int = 17) -> Tuple[Dict[str, Any], Optional[float]]:
    """Export ``task_model`` (deploy form, eval mode) to ``path`` and write its sidecar; check it with
    onnxruntime. Returns ``(sidecar, max relative difference onnxruntime vs PyTorch)`` (``None``: onnxruntime is
    not installed, nothing checked)."""
    path = Path(path)
    task_model = task_model.eval()
    x = spec.example_input()
    with torch.no_grad():
        ref = task_model(x)
    in_graph, before, graph_x, module = 'whole', None, x, task_model
    try:
        names = _export(task_model, x, path, opset)
    except torch.onnx.errors.OnnxExporterError as e:
        with torch.no_grad():
            grid, state = task_model.adapter.encode(x)
            fresh, _ = _fresh_adapter(spec).encode(x)
        if state is not None or not torch.allclose(grid, fresh, rtol=1e-5, atol=1e-6):
            raise CheckpointError(f'task {spec.name}: the model cannot be exported to ONNX ({e}) and its adapter\'s '
                                  f'encode has learned parts, so it cannot run before the graph') from None
        _logger.info('task %s: the adapter\'s feature extraction has no ONNX export (%s); the graph starts at its '
                     'encoded grid and predict runs %s.encode first', spec.name, str(e).splitlines()[0],
                     type(task_model.adapter).__name__)
        in_graph, graph_x, module = 'after_encode', grid, _AfterEncode(task_model)
        before = (f'{type(task_model.adapter).__name__}.encode (in PyTorch, from the spec\'s adapter settings): '
                  f'{getattr(task_model.adapter, "input_desc", "raw input")} -> {tuple(grid.shape[1:])} grid; the '
                  f'graph holds the rest (channel projection, trunk, head). Reason: {str(e).splitlines()[0]}')
        names = _export(module, graph_x, path, opset)
    parts = graph_x if is_structured(graph_x) else (graph_x,)
    sidecar = {
        'format': SIDECAR_FORMAT, 'version': 1, 'task': spec.name, 'kind': spec.kind, 'classes': spec.classes,
        'spec': jsonable(spec.to_dict()), 'inputs': jsonable(dict(inputs)) if inputs is not None else None,
        'model': jsonable(dict(meta)),
        'graph': {'inputs': [{'name': n, 'shape': ['batch', *t.shape[1:]], 'dtype': str(t.dtype).replace('torch.', '')}
                             for n, t in zip(names, parts)],
                  'output': 'output', 'returns': 'logits' if spec.kind == 'classification' else
                  'forecast (model space: predict converts to the input units)'},
        'adapter': {'name': spec.adapter, 'in_graph': in_graph,
                    'before_graph': before or 'nothing: the whole adapter is inside the graph (predict gives it the '
                                              'reader\'s output)'},
    }
    write_text_atomic(sidecar_path(path), json.dumps(sidecar, indent=1) + '\n')
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return sidecar, None
    got = OnnxTaskModel(path, sidecar)(x)
    diff = float((ref - got).abs().max() / ref.abs().max().clamp_min(1e-12))
    return sidecar, diff


class OnnxTaskModel(nn.Module):
    """An exported task model run by onnxruntime, called like the PyTorch one (``model(x) -> outputs``)."""

    def __init__(self, path: Union[str, Path], sidecar: Mapping[str, Any]) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError('running an ONNX export needs onnxruntime (pip install onnxruntime)') from e
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: shape-inference notes (VerifyOutputSizes) are not the user's
        self.session = ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])
        self.sidecar = dict(sidecar)
        spec = TaskSpec.from_dict(sidecar['spec'], name=sidecar['task'])
        # the adapter rebuilt from the spec: its encode runs before a split graph; its facts (a point adapter's
        # up axis for rotation voting) are read like a PyTorch task model's
        self.adapter = _fresh_adapter(spec)
        self.split = sidecar['adapter']['in_graph'] == 'after_encode'
        self.names = [i.name for i in self.session.get_inputs()]
        self.input_rank = len(self.session.get_inputs()[0].shape)

    @torch.no_grad()
    def forward(self, x: Any) -> torch.Tensor:
        if self.split:
            x, _ = self.adapter.encode(x)
        parts = x if is_structured(x) else (x,)
        feed = {n: t.detach().cpu().numpy() for n, t in zip(self.names, parts)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def load_onnx(path: Union[str, Path]) -> OnnxTaskModel:
    """An ONNX export and its sidecar (``<file>.onnx.json``, written by ``unimodal export``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'ONNX file {path} does not exist')
    side = sidecar_path(path)
    if not side.is_file():
        raise CheckpointError(f'{path}: no sidecar {side.name} beside it (export with unimodal export --format onnx: '
                              f'it says what the graph holds and how inputs are read)')
    try:
        sidecar = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f'{side}: unreadable ({e})') from None
    if not isinstance(sidecar, dict) or sidecar.get('format') != SIDECAR_FORMAT:
        raise CheckpointError(f'{side}: not a unimodal ONNX sidecar (format {SIDECAR_FORMAT!r})')
    return OnnxTaskModel(path, sidecar)
