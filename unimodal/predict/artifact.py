"""Deploy artifacts: a folder with the deploy-form model as safetensors and its facts as plain JSON (no pickle).

Layout (written by ``unimodal reparam CKPT OUT_DIR`` / :func:`write_artifact`, read by :func:`read_artifact`)::

    OUT_DIR/model.safetensors   every task's adapter and head and the shared trunk, deploy form
                                (keys ``trunk.*``, ``adapters.<task>.*``, ``heads.<task>.*``: MultiTaskModel's)
    OUT_DIR/trunk.safetensors   the trunk alone under its own keys: timm loads it with
                                ``timm.create_model(variant, pretrained=True, pretrained_cfg_overlay=dict(file=...),
                                **config['trunk']['timm_kwargs'])``
    OUT_DIR/config.json         format, variant and trunk options, each task's spec (adapter and its settings,
                                head, classes or horizon, metric facts) and its input-reader settings

Each file is written atomically (temporary file + rename) and ``config.json`` last, so a folder with a
``config.json`` is complete.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Tuple, Union

import numpy as np
import torch

from ..engine.checkpoint import CheckpointError, atomic_file, write_text_atomic
from ..tasks.spec import TaskSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.multitask import MultiTaskModel

_logger = logging.getLogger(__name__)

__all__ = ['ARTIFACT_FORMAT', 'CONFIG_FILE', 'MODEL_FILE', 'TRUNK_FILE', 'jsonable', 'save_safetensors',
           'write_artifact', 'read_artifact', 'artifact_dir', 'timm_kwargs']

ARTIFACT_FORMAT = 'unimodal-deploy'
CONFIG_FILE, MODEL_FILE, TRUNK_FILE = 'config.json', 'model.safetensors', 'trunk.safetensors'


def jsonable(obj: Any) -> Any:
    """Tensors and arrays as (nested) lists, tuples as lists, Paths as strings: plain JSON values."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if torch.is_tensor(obj):
        return obj.detach().cpu().tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def save_safetensors(state: Mapping[str, torch.Tensor], path: Union[str, Path]) -> Path:
    """Write a state dict as safetensors, atomically (each tensor its own contiguous CPU copy: safetensors refuses
    tensors that share memory)."""
    from safetensors.torch import save
    data = save({k: v.detach().cpu().contiguous().clone() for k, v in state.items()})
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def timm_kwargs(meta: Mapping[str, Any], trunk_state: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """``timm.create_model`` keyword arguments that rebuild the trunk in deploy form (its stem's input channels are
    the adapters' output channels)."""
    stem = trunk_state.get('downsample_layers.0.0.weight')
    in_chans = int(stem.shape[1]) if stem is not None else int(meta.get('trunk_chans') or 3)
    return {'in_chans': in_chans, 'num_classes': 0, 'deploy': True, **dict(meta.get('trunk') or {})}


def write_artifact(out_dir: Union[str, Path], model: 'MultiTaskModel', meta: Mapping[str, Any],
                   specs: Mapping[str, TaskSpec], inputs: Mapping[str, Mapping[str, Any]],
                   source: Mapping[str, Any]) -> Path:
    """Write the deploy artifact of ``model`` (already re-parameterized) into ``out_dir``.

    Args:
        meta: the checkpoint's model facts (``model_meta``: variant, trunk options, ...).
        specs: the task specs of ``model``'s tasks.
        inputs: each task's input-reader settings (:meth:`unimodal.predict.inputs.InputReader.settings`).
        source: where it came from (checkpoint path, epoch, which weights).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f'{out} exists and is not a folder (a deploy artifact is a folder)')
    trunk_state = {k[len('trunk.'):]: v for k, v in model.state_dict().items() if k.startswith('trunk.')}
    save_safetensors(model.state_dict(), out / MODEL_FILE)
    save_safetensors(trunk_state, out / TRUNK_FILE)
    from .. import __version__
    config = {
        'format': ARTIFACT_FORMAT, 'version': 1, 'unimodal_version': __version__,
        'model': {**jsonable(meta), 'deploy': True},
        'trunk': {'file': TRUNK_FILE, 'timm_model': meta['variant'], 'timm_kwargs': timm_kwargs(meta, trunk_state)},
        'tasks': {n: jsonable(s.to_dict()) for n, s in specs.items()},
        'inputs': jsonable({n: (dict(v) if v is not None else None) for n, v in inputs.items()}),
        'source': jsonable(dict(source)),
    }
    write_text_atomic(out / CONFIG_FILE, json.dumps(config, indent=1) + '\n')
    return out


def artifact_dir(path: Union[str, Path]) -> Path:
    """The artifact folder of ``path`` (the folder itself, or its ``config.json`` / ``model.safetensors``)."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def read_artifact(path: Union[str, Path]) -> Tuple['MultiTaskModel', Dict[str, TaskSpec], Dict[str, Any]]:
    """``(model in eval mode, task specs, config)`` of a deploy artifact (folder, ``config.json`` or
    ``model.safetensors``); weights loaded strictly from safetensors."""
    from safetensors.torch import load_file

    from ..config.schema import ModelConfig
    from ..engine.build import build_model
    folder = artifact_dir(path)
    cfg_path, weights = folder / CONFIG_FILE, folder / MODEL_FILE
    for f in (cfg_path, weights):
        if not f.is_file():
            raise CheckpointError(f'{folder}: not a deploy artifact ({f.name} missing; write one with unimodal '
                                  f'reparam CKPT OUT_DIR)')
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f'{cfg_path}: unreadable ({e})') from None
    if not isinstance(config, dict) or config.get('format') != ARTIFACT_FORMAT:
        raise CheckpointError(f'{cfg_path}: not a unimodal deploy artifact config (format {ARTIFACT_FORMAT!r})')
    try:
        specs = {n: TaskSpec.from_dict(s, name=n) for n, s in config['tasks'].items()}
        m = config['model']
        model_cfg = ModelConfig(variant=m['variant'], trunk=dict(m.get('trunk') or {}),
                                trunk_chunk=m.get('trunk_chunk'), trunk_chans=m.get('trunk_chans'))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f'{cfg_path}: incomplete config ({type(e).__name__}: {e})') from None
    model = build_model(specs, model_cfg, deploy=True)
    try:
        state = load_file(str(weights))
    except Exception as e:  # noqa: BLE001  (a damaged file: say which and why)
        raise CheckpointError(f'{weights}: unreadable safetensors file ({e})') from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f'{weights}: the weights do not fit the model of {cfg_path.name} '
                              f'({str(e).splitlines()[0]})') from None
    return model.eval(), specs, config
