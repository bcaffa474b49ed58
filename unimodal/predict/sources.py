"""The four things a trained model can be loaded from for prediction, behind one result (:class:`LoadedModel`).

* a training run checkpoint (``best.pt`` / ``last.pt``, single-task or joint, or a ``reparam`` ``.pt``) through
  :func:`unimodal.engine.checkpoint.load_run_checkpoint`; the reader settings from the run's stored config;
* a deploy artifact folder (or its ``config.json`` / ``model.safetensors``): :mod:`.artifact`;
* an ONNX export with its sidecar JSON: :mod:`.onnx_export` (run by onnxruntime).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from torch import nn

from ..config.errors import ConfigError
from ..tasks.base import canonical_task_name
from ..tasks.spec import TaskSpec
from .inputs import get_input_reader

_logger = logging.getLogger(__name__)

__all__ = ['LoadedModel', 'load_model', 'checkpoint_inputs', 'choose_task']


@dataclass
class LoadedModel:
    """A task model ready to predict: the model (PyTorch or onnxruntime), its task spec and reader settings."""
    task: str
    spec: TaskSpec
    inputs: Dict[str, Any]
    model: nn.Module
    source: str
    form: str  # 'checkpoint', 'artifact' or 'onnx'


def choose_task(names: Sequence[str], requested: Optional[str], source: Union[str, Path]) -> str:
    """``requested`` (an old spelling too) among ``names``, or the only one; the error lists the tasks."""
    if requested is None:
        if len(names) != 1:
            raise ConfigError(f'{source} holds the tasks {", ".join(names)}: choose one with --task')
        return names[0]
    name = canonical_task_name(requested)
    if name not in names:
        raise ConfigError(f'{source} was trained for task(s) {", ".join(names)}, not {requested!r}')
    return name


def checkpoint_inputs(ckpt: Any, name: str) -> Dict[str, Any]:
    """The input-reader settings of task ``name`` of a run checkpoint: its stored ``data.options`` over the
    reader's defaults (and, for readers that need it, the reader defaults the run's data folder declares), and the
    run's named evaluation protocol (``eval_protocol``) if it has one."""
    from ..config import resolve_run_config
    spec = ckpt.specs[name]
    reader = get_input_reader(name if not spec.plugin else spec.adapter)
    options: Dict[str, Any] = {}
    root, protocol = None, None
    if ckpt.config:
        settings = resolve_run_config(None, None, None, base=ckpt.config).task_settings(name)
        options, protocol = dict(settings.data.options), settings.eval.protocol
        if reader.needs_root:
            from ..engine.build import data_root
            from ..tasks import resolve_task
            try:
                root = data_root(resolve_task(name), settings.data)[0]
            except (ConfigError, OSError) as e:
                _logger.warning('%s: the run\'s data folder is not available (%s); the reader\'s defaults apply',
                                ckpt.path, e)
    out = reader.settings(spec, options, root)
    if protocol is not None:  # a named evaluation protocol of the task (e.g. the point task's published_8pose)
        out['eval_protocol'] = protocol
    return out


def _inputs_of(stored: Optional[Dict[str, Any]], name: str, path: Path) -> Dict[str, Any]:
    get_input_reader(name)  # a task without a file reader (a plug-in) is refused here, naming the task
    if not stored:
        raise ConfigError(f'{path}: no input-reader settings for task {name} (written by an older unimodal?); '
                          f'predict from the run checkpoint, or write the artifact again')
    return dict(stored)


def _from_checkpoint(path: Path, task: Optional[str]) -> LoadedModel:
    from ..engine.checkpoint import load_run_checkpoint
    ckpt = load_run_checkpoint(path)
    name = ckpt.task_name(task)
    inputs = checkpoint_inputs(ckpt, name)
    model, which = ckpt.build_model([name])
    _logger.debug('%s: task %s, %s weights (%s form)', path, name, which, 'deploy' if ckpt.deploy else 'training')
    return LoadedModel(name, ckpt.specs[name], inputs, model.task_model(name), str(path), 'checkpoint')


def _from_artifact(path: Path, task: Optional[str]) -> LoadedModel:
    from .artifact import read_artifact
    model, specs, config = read_artifact(path)
    name = choose_task(list(specs), task, path)
    return LoadedModel(name, specs[name], _inputs_of(config.get('inputs', {}).get(name), name, path),
                       model.task_model(name), str(path), 'artifact')


def _from_onnx(path: Path, task: Optional[str]) -> LoadedModel:
    from .onnx_export import load_onnx
    model = load_onnx(path)
    side = model.sidecar
    name = choose_task([side['task']], task, path)
    spec = TaskSpec.from_dict(side['spec'], name=name)
    return LoadedModel(name, spec, _inputs_of(side.get('inputs'), name, path), model, str(path), 'onnx')


def load_model(path: Union[str, Path], task: Optional[str] = None) -> LoadedModel:
    """Load a model for prediction from a run checkpoint (``.pt``/``.pth``), a deploy artifact (folder,
    ``config.json`` or ``model.safetensors``) or an ONNX export (``.onnx`` + sidecar); ``task`` picks the task of
    a joint model."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'model {path} does not exist (a run checkpoint .pt, a deploy artifact folder or an '
                                f'.onnx export)')
    if path.suffix == '.onnx':
        return _from_onnx(path, task)
    if path.is_dir() or path.name in ('config.json', 'model.safetensors'):
        return _from_artifact(path, task)
    return _from_checkpoint(path, task)
