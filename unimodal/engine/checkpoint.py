"""Engine checkpoints: atomic writes, ``weights_only`` loading, RNG state capture, and reading a run checkpoint
back (:func:`load_run_checkpoint`: the one way eval, reparam, export, ``--init-from`` and ``--resume`` read one).

A checkpoint is a dict of plain containers and tensors (loadable with ``torch.load(weights_only=True)``)::

    {'format': 'unimodal-run', 'version': 1,
     'model': state_dict,               # shared trunk + every task's adapter and head (see MultiTaskModel)
     'model_ema': state_dict | None,    # EMA weights (evaluated instead of 'model' when present)
     'optimizer', 'scheduler', 'scaler': state dicts (None where unused),
     'rng': {'python', 'numpy', 'torch', 'cuda'},
     'epoch': completed epochs, 'step': optimiser steps,
     'config': the resolved RunConfig (RunConfig.to_dict()), 'config_yaml': the same as YAML text,
     'model_meta': {'variant', 'trunk', 'trunk_chans', 'drop_rate', 'drop_path_rate', 'trunk_chunk', 'deploy'},
     'tasks': {name: TaskSpec.to_dict()},
     'best': {'epoch', 'score', 'metrics'}}
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..config.errors import ConfigError
from ..models.unireplknet_checkpoint import CheckpointError, load_failure_reason, state_dict_mismatch
from ..tasks.base import canonical_task_name
from ..tasks.spec import TaskSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..config.schema import ModelConfig
    from .multitask import MultiTaskModel

_logger = logging.getLogger(__name__)

__all__ = ['init_trunk_from', 'CHECKPOINT_FORMAT', 'CheckpointError', 'WriteError', 'atomic_file', 'save_checkpoint',
           'write_text_atomic', 'copy_atomic', 'load_checkpoint', 'get_rng_state', 'set_rng_state',
           'to_plain', 'is_engine_checkpoint', 'model_meta', 'RunCheckpoint', 'load_run_checkpoint', 'load_weights']

CHECKPOINT_FORMAT = 'unimodal-run'
_RUN_KEYS = ('model', 'tasks', 'model_meta')


class WriteError(OSError):
    """A run file could not be written (disk full, read-only, no permission); the file's previous version, if any,
    is intact. The message names the file; ``errno`` and ``filename`` are the failed write's."""

    def __init__(self, path: Union[str, Path], reason: str, errno: Optional[int] = None) -> None:
        super().__init__(errno, reason, str(path))
        self.message = f'could not write {path}: {reason}'

    def __str__(self) -> str:
        return self.message


@contextlib.contextmanager
def atomic_file(path: Union[str, Path], mode: str = 'wb') -> Iterator[IO]:
    """A file object whose contents replace ``path`` only when the block completes.

    The data goes to ``.<name>.<random>.tmp`` in the same directory, is flushed and fsync'ed, then ``os.replace``
    swaps it in: a crash at any point leaves either the old file or the new one, never a torn file, and the
    temporary file is removed on failure (a ``kill -9`` leaves it behind: :func:`unimodal.engine.rundir` removes
    such files when the next run takes the directory). An ``OSError`` becomes a :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            kept = '; its previous version is unchanged' if path.exists() else ''
            raise WriteError(path, f'{err.strerror or err}{kept}', err.errno) from err
        raise


def save_checkpoint(obj: Mapping[str, Any], path: Union[str, Path]) -> Path:
    """Write ``obj`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as f:
        torch.save(dict(obj), f)
    return Path(path)


def write_text_atomic(path: Union[str, Path], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path, 'w') as f:
        f.write(text)
    return Path(path)


def copy_atomic(src: Union[str, Path], dst: Union[str, Path]) -> Path:
    """Copy ``src`` to ``dst`` atomically (:func:`atomic_file`)."""
    with open(src, 'rb') as fin, atomic_file(dst) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    return Path(dst)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = 'cpu') -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary unpickling), or a ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    try:
        if path.suffix == '.safetensors':
            from safetensors.torch import load_file
            return load_file(str(path), device=str(map_location))
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001  (a corrupt or non-torch file: say which file and why)
        raise CheckpointError(f'{path}: not a loadable checkpoint ({load_failure_reason(e)})') from None


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


# ------------------------------------------------------------------------------------------------ run checkpoints

def model_meta(model: 'ModelConfig', trunk_chans: int, deploy: bool = False) -> Dict[str, Any]:
    """The architecture facts a checkpoint stores to rebuild its model without the run's config."""
    return {'variant': model.variant, 'trunk': dict(model.trunk), 'trunk_chunk': model.trunk_chunk,
            'trunk_chans': int(trunk_chans), 'drop_rate': model.drop_rate, 'drop_path_rate': model.drop_path_rate,
            'deploy': deploy}


def _renamed_state(state: Optional[Mapping[str, Any]], renames: Mapping[str, str]) -> Optional[Dict[str, Any]]:
    if state is None or not renames:
        return None if state is None else dict(state)
    out = {}
    for key, value in state.items():
        for old, new in renames.items():
            for part in ('adapters.', 'heads.'):
                if key.startswith(f'{part}{old}.'):
                    key = f'{part}{new}.{key[len(part) + len(old) + 1:]}'
        out[key] = value
    return out


@dataclass
class RunCheckpoint:
    """A run checkpoint read back: its task specs, model facts, weights and the stored config.

    Older checkpoints are read as this version's: their dict specs become :class:`TaskSpec`, and a task saved
    under an old name (``weather``) takes its current name (``timeseries``), in the specs and in the weights.
    ``config`` is the stored config as saved (resolve it with :func:`unimodal.config.resolve_run_config`,
    ``base=ckpt.config``).
    """
    path: Path
    raw: Dict[str, Any]
    specs: Dict[str, TaskSpec]

    @classmethod
    def from_raw(cls, raw: Any, path: Union[str, Path]) -> 'RunCheckpoint':
        if not is_engine_checkpoint(raw):
            raise CheckpointError(f'{path} is not a unimodal run checkpoint (no "format: {CHECKPOINT_FORMAT}" entry)')
        raw = dict(raw)
        missing = [k for k in _RUN_KEYS if not isinstance(raw.get(k), dict)]
        if missing:
            raise CheckpointError(f'{path} is an incomplete unimodal run checkpoint (no {", ".join(missing)})')
        renames = {name: canonical_task_name(name) for name in raw['tasks'] if canonical_task_name(name) != name}
        try:
            specs = {renames.get(name, name): TaskSpec.from_dict(spec, name=renames.get(name, name))
                     for name, spec in raw['tasks'].items()}
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f'{path}: unreadable task specs ({type(e).__name__}: {e})') from None
        if renames:
            raw['model'] = _renamed_state(raw['model'], renames)
            raw['model_ema'] = _renamed_state(raw.get('model_ema'), renames)
        return cls(path=Path(path), raw=raw, specs=specs)

    @property
    def config(self) -> Dict[str, Any]:
        return self.raw.get('config') or {}

    @property
    def meta(self) -> Dict[str, Any]:
        return self.raw['model_meta']

    @property
    def deploy(self) -> bool:
        return bool(self.meta.get('deploy'))

    @property
    def task_names(self) -> List[str]:
        return list(self.specs)

    def task_name(self, requested: Optional[str]) -> str:
        """The task to use: ``requested`` (an old spelling too), or the only task of a single-task checkpoint."""
        if requested is None:
            if len(self.specs) != 1:
                raise ConfigError(f'{self.path} holds the tasks {", ".join(self.specs)}: choose one with --task')
            return self.task_names[0]
        name = canonical_task_name(requested)
        if name not in self.specs:
            raise ConfigError(f'{self.path} was trained for task(s) {", ".join(self.specs)}, not {requested!r}')
        return name

    def check_tasks(self, task_names: Sequence[str], flag: str = '--resume') -> None:
        """Raise :class:`~unimodal.config.ConfigError` naming this checkpoint and its tasks when ``task_names`` (if
        any; old spellings too) are not exactly its tasks."""
        names = [canonical_task_name(n) for n in task_names]
        if names and sorted(names) != sorted(self.specs):
            raise ConfigError(f'{flag} {self.path}: that checkpoint is a run of task(s) {", ".join(self.specs)}, '
                              f'this run trains {", ".join(names)}; resume it without --task (or with --task '
                              f'{",".join(self.specs)}), or start a new run')

    def check_resumable(self, task_names: Sequence[str], model: 'ModelConfig') -> None:
        """Raise :class:`~unimodal.config.ConfigError` naming this checkpoint when a run of ``task_names`` with the
        trunk ``model`` cannot continue it (other tasks, another variant or other trunk options)."""
        self.check_tasks(task_names)
        if not self.raw.get('optimizer') or 'epoch' not in self.raw:
            raise CheckpointError(f'--resume {self.path}: the checkpoint holds no training state (a reparam / '
                                  f'deploy output?); resume from the run\'s last.pt')
        was, now = self.meta.get('variant'), model.variant
        if was != now:
            raise ConfigError(f'--resume {self.path}: the checkpoint holds a {was} trunk, this run asks for {now} '
                              f'(--model / model.variant); resume without --model, or start a new run')
        trunk_was = dict(self.meta.get('trunk') or {})
        if trunk_was != dict(model.trunk):
            raise ConfigError(f'--resume {self.path}: the checkpoint was trained with model.trunk={trunk_was}, this '
                              f'run sets {dict(model.trunk)}; resume with the same trunk options')

    def eval_state(self) -> Tuple[Dict[str, torch.Tensor], str]:
        """The weights the run is evaluated with (EMA when it kept one) and which they are."""
        if self.raw.get('model_ema') is not None:
            return self.raw['model_ema'], 'model_ema'
        return self.raw['model'], 'model'

    def trunk_state(self) -> Dict[str, torch.Tensor]:
        """The shared trunk's evaluation weights (``--init-from``)."""
        state, _ = self.eval_state()
        return {k[len('trunk.'):]: v for k, v in state.items() if k.startswith('trunk.')}

    def model_config(self) -> 'ModelConfig':
        """The model facts as a :class:`~unimodal.config.ModelConfig` (trunk frozen or not does not matter here)."""
        from ..config.schema import ModelConfig
        m = self.meta
        return ModelConfig(variant=m['variant'], trunk=dict(m.get('trunk') or {}), trunk_chunk=m.get('trunk_chunk'),
                           trunk_chans=m.get('trunk_chans'), drop_rate=m.get('drop_rate', 0.0),
                           drop_path_rate=m.get('drop_path_rate', 0.0))

    def build_model(self, tasks: Optional[Sequence[str]] = None,
                    specs: Optional[Mapping[str, TaskSpec]] = None) -> Tuple['MultiTaskModel', str]:
        """The model of ``tasks`` (default: all) with the evaluation weights, in eval mode; and which weights.

        ``specs`` replaces stored specs (e.g. a plug-in adapter file that moved).
        """
        from .build import build_model
        names = list(tasks or self.specs)
        chosen = {n: (specs or {}).get(n, self.specs[n]) for n in names}
        model = build_model(chosen, self.model_config(), deploy=self.deploy)
        state, which = self.eval_state()
        keep = tuple(p for n in names for p in (f'adapters.{n}.', f'heads.{n}.'))
        if len(names) != len(self.specs):
            state = {k: v for k, v in state.items() if k.startswith(('trunk.', *keep))}
        load_weights(model, state, f'{self.path} ({which})')
        return model.eval(), which


def load_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``module.load_state_dict(state)`` (strict), or a one-line :class:`CheckpointError` naming ``source`` and the
    first keys that differ (torch's own message lists every key: thousands of lines for a trunk)."""
    problem = state_dict_mismatch(state, module.state_dict())
    if problem:
        raise CheckpointError(f'{source}: the weights do not fit the model ({problem})')
    module.load_state_dict(state, strict=True)


def load_run_checkpoint(path: Union[str, Path]) -> RunCheckpoint:
    """Read a run checkpoint (``weights_only``); a file of another kind is a :class:`CheckpointError`."""
    return RunCheckpoint.from_raw(load_checkpoint(path), path)


def init_trunk_from(model: 'MultiTaskModel', path: str) -> None:
    """Initialise the shared trunk from another run's checkpoint (or a released-layout file)."""
    from ..models.unireplknet import load_checkpoint as load_trunk
    raw = load_checkpoint(Path(path))
    if is_engine_checkpoint(raw):
        ckpt = RunCheckpoint.from_raw(raw, path)
        if ckpt.deploy:
            raise ConfigError(f'--init-from {path}: a deploy (re-parameterized) checkpoint cannot initialise a '
                              f'training-form trunk; use the training checkpoint')
        trunk_sd, src = ckpt.trunk_state(), f'{path} (trunk of task(s) {", ".join(ckpt.task_names)})'
    else:
        trunk_sd, src = raw, path
    try:
        report = load_trunk(model.trunk, trunk_sd)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ConfigError(f'--init-from {path}: the trunk does not fit this model ({str(e).splitlines()[0]})') from None
    _logger.info('initialised the trunk from %s%s', src,
                 f' (stem adapted {report["adapted_in_chans"][0]}->{report["adapted_in_chans"][1]} channels)'
                 if report.get('adapted_in_chans') else '')
