"""Engine checkpoints: atomic writes, ``weights_only`` loading, RNG state capture.

A checkpoint is a dict of plain containers and tensors (loadable with ``torch.load(weights_only=True)``)::

    {'format': 'unimodal-run', 'version': 1,
     'model': state_dict,               # shared trunk + every task's adapter and head (see MultiTaskModel)
     'model_ema': state_dict | None,    # EMA weights (evaluated instead of 'model' when present)
     'optimizer', 'scheduler', 'scaler': state dicts (None where unused),
     'rng': {'python', 'numpy', 'torch', 'cuda'},
     'epoch': completed epochs, 'step': optimiser steps,
     'config': resolved config (dict), 'config_yaml': the same as YAML text,
     'model_meta': {'variant', 'trunk_kwargs', 'trunk_chans', 'drop_rate', 'trunk_chunk', 'deploy'},
     'tasks': {name: {'kind', 'adapter', 'adapter_kwargs', 'head_kwargs', 'classes', 'metric_info',
                      'dataset', 'input_shape', 'input_dtype'}},
     'best': {'epoch', 'score', 'metrics'}}
"""
from __future__ import annotations

import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import torch

_logger = logging.getLogger(__name__)

__all__ = ['CHECKPOINT_FORMAT', 'CheckpointError', 'save_checkpoint', 'load_checkpoint', 'get_rng_state', 'set_rng_state',
           'to_plain', 'is_engine_checkpoint']

CHECKPOINT_FORMAT = 'unimodal-run'


class CheckpointError(ValueError):
    """A checkpoint file cannot be read (corrupt, not a torch file, or holding disallowed objects)."""


def save_checkpoint(obj: Mapping[str, Any], path: Union[str, Path]) -> Path:
    """Write ``obj`` to ``path`` atomically.

    The data goes to a temporary file in the same directory, is flushed and fsync'ed, then ``os.replace``
    swaps it in: a crash at any point leaves either the old file or the new one, never a torn file, and the
    temporary file is removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(dict(obj), f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = 'cpu') -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a corrupt or non-torch file: say which file and why
        # PyTorch's own message advises weights_only=False, i.e. executing the file: never pass that on
        reason = ('corrupt, not a PyTorch checkpoint, or holding objects other than tensors and plain containers '
                  '(refused: only weights_only loading is allowed)') if 'weights_only' in str(e) else \
            f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
        raise CheckpointError(f'{path}: not a loadable checkpoint ({reason})') from None


def is_engine_checkpoint(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and ckpt.get('format') == CHECKPOINT_FORMAT


def get_rng_state() -> Dict[str, Any]:
    """Python, NumPy, torch and CUDA generator states as tensors/lists (``weights_only``-safe)."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        'python': [py_version, list(py_state), py_gauss],
        'numpy': [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: Optional[Mapping[str, Any]]) -> None:
    """Restore what :func:`get_rng_state` captured (missing parts are left alone)."""
    if not state:
        return
    if state.get('python'):
        version, values, gauss = state['python']
        random.setstate((version, tuple(values), gauss))
    if state.get('numpy'):
        name, keys, pos, has_gauss, cached = state['numpy']
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if state.get('torch') is not None:
        torch.set_rng_state(state['torch'])
    cuda = state.get('cuda') or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def to_plain(obj: Any) -> Any:
    """Convert NumPy values, Paths and tuples to types ``torch.load(weights_only=True)`` accepts."""
    if isinstance(obj, Mapping):
        return {str(k) if not isinstance(k, (int, str)) else k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)
