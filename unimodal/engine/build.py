"""Setting a run up: tasks (built-in or plug-in), data sets and loaders, task specs and the model.

Plug-in adapters that bring their own data
-------------------------------------------
``unimodal train --adapter path/file.py:MyAdapter`` without ``--task`` trains a user adapter on the user's own
data. The Adapter subclass provides (besides the Adapter contract):

* ``make_datasets(cls, root: Optional[Path]) -> Dict[str, Dataset]`` (classmethod, required): the ``'train'``
  split (required) and optionally ``'val'`` and ``'test'`` (a missing ``val`` uses ``test``, a missing ``test``
  uses ``val``; with neither, ``train`` is evaluated). ``root`` is ``--data`` (``None`` when not given: the
  adapter's own small built-in data). Each dataset yields ``(x, y)`` like the task readers.
* classification (``head_kind = 'classification'``): ``num_classes`` (class attribute), or a ``classes`` list on
  the training set; forecasting: ``horizon`` (class attribute) or ``horizon`` on the training set.
* optionally ``default_config(cls) -> dict`` (classmethod): config overrides like ``Task.default_config``.

The adapter is built with ``model.adapter`` as keyword arguments; the run is named after the adapter's ``name``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..config import ConfigError
from ..modalities.base import Adapter, get_adapter_class
from ..tasks.base import Task, get_task, list_tasks
from .distributed import DistInfo, ShardSampler, barrier
from .multitask import MultiTaskModel

_logger = logging.getLogger(__name__)

__all__ = ['PluginTask', 'resolve_task', 'cache_dir', 'data_root', 'build_task_datasets', 'EvenSubset',
           'train_loader', 'eval_loader', 'make_task_spec', 'build_model', 'HEAD_KEYS', 'loss_kind']

HEAD_KEYS = ('num_classes', 'horizon')


class PluginTask(Task):
    """A task made from a plug-in Adapter class that brings its own data (see the module docstring)."""

    kind = 'classification'

    def __init__(self, adapter_cls: type, spec: str) -> None:
        self.adapter_cls = adapter_cls
        self.spec = spec
        self.name = adapter_cls.name
        self.adapter = spec
        self.kind = adapter_cls.head_kind
        self.description = (adapter_cls.__doc__ or '').strip().splitlines()[0] if adapter_cls.__doc__ else ''
        self.real_data = f'the data of the plug-in adapter {spec} (its make_datasets(root))'

    def default_config(self) -> Dict[str, Any]:
        fn = getattr(self.adapter_cls, 'default_config', None)
        return dict(fn()) if callable(fn) else {}

    def make_builtin(self, cache_dir: Path) -> Optional[Path]:  # the plug-in makes its own data
        return None

    def build_datasets(self, root: Optional[Path], options: Dict[str, Any], skip_bad: bool = False,
                       splits: Optional[List[str]] = None) -> Dict[str, Dataset]:
        if options:
            raise ConfigError(f'data.options {sorted(options)} given, but plug-in adapter {self.spec} takes no '
                              f'reader options (its make_datasets(root) builds the data)')
        sets = dict(self.adapter_cls.make_datasets(Path(root) if root is not None else None))
        if 'train' not in sets:
            raise ConfigError(f'{self.spec}: make_datasets() must return at least a "train" split, got {sorted(sets)}')
        sets.setdefault('val', sets.get('test', sets['train']))
        sets.setdefault('test', sets['val'])
        return {k: v for k, v in sets.items() if splits is None or k in splits}

    def model_kwargs(self, cfg: Dict[str, Any], train_set: Dataset) -> Dict[str, Any]:
        if self.kind == 'classification':
            classes = getattr(train_set, 'classes', None)
            n = len(classes) if classes is not None else getattr(self.adapter_cls, 'num_classes', None)
            if not n:
                raise ConfigError(f'{self.spec}: a classification plug-in needs a num_classes class attribute '
                                  f'or a classes list on its training set')
            return {'num_classes': int(n)}
        horizon = getattr(train_set, 'horizon', None) or getattr(self.adapter_cls, 'horizon', None)
        if not horizon:
            raise ConfigError(f'{self.spec}: a forecasting plug-in needs a horizon class attribute or dataset field')
        return {'horizon': int(horizon)}


def resolve_task(name: Optional[str], adapter_class: Optional[str] = None) -> Task:
    """The task object for ``name``, or a :class:`PluginTask` for a plug-in adapter without a task."""
    if name:
        try:
            return get_task(name)
        except KeyError:
            raise ConfigError(f'unknown task {name!r}; known tasks: {", ".join(list_tasks())}') from None
    if not adapter_class:
        raise ConfigError(f'no task given: use --task ({", ".join(list_tasks())}) or --adapter file.py:Class')
    cls = _adapter_class(adapter_class)
    if not callable(getattr(cls, 'make_datasets', None)):
        raise ConfigError(f'--adapter {adapter_class} without --task: the adapter class must define a classmethod '
                          f'make_datasets(root) -> {{"train": Dataset, ...}} (or give --task to use a task\'s data)')
    return PluginTask(cls, adapter_class)


def _adapter_class(spec: str) -> type:
    try:
        return get_adapter_class(spec)
    except (KeyError, FileNotFoundError, AttributeError, TypeError, ValueError, ImportError) as e:
        raise ConfigError(f'adapter {spec!r}: {e}') from None


def absolute_adapter_spec(spec: Optional[str]) -> Optional[str]:
    """``file.py:Class`` with an absolute path (so a checkpoint can be evaluated from another directory)."""
    if spec and ':' in spec and spec.rpartition(':')[0].endswith('.py'):
        path, _, cls = spec.rpartition(':')
        return f'{Path(path).resolve()}:{cls}'
    return spec


def cache_dir(cfg: Mapping[str, Any]) -> Path:
    """``data.cache_dir``, else ``$UNIMODAL_CACHE``, else ``~/.cache/unimodal``."""
    value = cfg['data'].get('cache_dir') or os.environ.get('UNIMODAL_CACHE') or Path.home() / '.cache' / 'unimodal'
    return Path(value).expanduser()


def data_root(task: Task, cfg: Mapping[str, Any], dist_info: Optional[DistInfo] = None) -> Tuple[Optional[Path], bool]:
    """The data root of a task and whether it is the built-in synthetic set (generated once, rank 0 first)."""
    root = cfg['data'].get('root')
    if root is not None:
        path = Path(root).expanduser()
        if not path.exists():
            raise ConfigError(f'data directory {path} does not exist (task {task.name}). {task.real_data}')
        return path, False
    if isinstance(task, PluginTask):
        return None, True
    cache = cache_dir(cfg)
    is_main = dist_info is None or dist_info.is_main
    if is_main:
        built = task.make_builtin(cache)
    barrier()
    if not is_main:
        built = task.make_builtin(cache)  # already written by rank 0: returns the path
    return Path(built), True


class EvenSubset(Dataset):
    """``n`` evenly spaced samples of ``base`` (keeps class balance of sorted sets); attributes pass through."""

    def __init__(self, base: Dataset, n: int) -> None:
        self.base = base
        total = len(base)
        n = min(n, total)
        self.indices = [int(i * total / n) for i in range(n)] if n else []

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.base[self.indices[i]]

    def __getattr__(self, name: str) -> Any:
        if name in ('base', 'indices'):
            raise AttributeError(name)
        return getattr(self.base, name)


def build_task_datasets(task: Task, cfg: Mapping[str, Any], root: Optional[Path],
                        splits: Optional[Sequence[str]] = None) -> Dict[str, Dataset]:
    """Readers for ``splits`` with ``data.limit_*`` applied; reader option errors become :class:`ConfigError`."""
    try:
        sets = task.build_datasets(root, dict(cfg['data'].get('options') or {}), skip_bad=bool(cfg['data']['skip_bad']),
                                   splits=list(splits) if splits else None)
    except TypeError as e:
        if 'argument' in str(e) or 'option' in str(e):
            raise ConfigError(f'data.options for task {task.name}: {e}') from None
        raise
    missing = [s for s in (splits or ()) if s not in sets]
    if missing:
        raise ConfigError(f'task {task.name} has no {", ".join(missing)} split (it has {", ".join(sorted(sets))})')
    out = {}
    for split, ds in sets.items():
        limit = cfg['data']['limit_train'] if split == 'train' else cfg['data']['limit_eval']
        if len(ds) == 0:
            raise ConfigError(f'the {split} split of task {task.name} is empty (data root {root})')
        out[split] = EvenSubset(ds, limit) if limit and limit < len(ds) else ds
    return out


def _seed_worker(worker_id: int) -> None:
    import random

    import numpy as np
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def train_loader(ds: Dataset, batch_size: int, dist_info: DistInfo, seed: int, num_workers: int) -> DataLoader:
    """Shuffled loader (``DistributedSampler`` in every case: the same permutation per epoch for any world size)."""
    sampler = DistributedSampler(ds, num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=True,
                                 seed=seed, drop_last=False)
    # drop a last partial batch only when at least one full batch remains (tiny data sets keep their samples)
    drop_last = len(sampler) > batch_size
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=drop_last,
                      pin_memory=dist_info.device.type == 'cuda', worker_init_fn=_seed_worker,
                      persistent_workers=num_workers > 0)


def eval_loader(ds: Dataset, batch_size: int, dist_info: DistInfo, num_workers: int) -> DataLoader:
    """Exact evaluation: this rank's ``rank::world`` shard, nothing padded or dropped."""
    sampler = ShardSampler(len(ds), dist_info.rank, dist_info.world_size)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=False,
                      pin_memory=dist_info.device.type == 'cuda', worker_init_fn=_seed_worker)


def loss_kind(cfg: Mapping[str, Any], kind: str) -> str:
    loss = cfg['train']['loss']
    if loss == 'auto':
        return 'ce' if kind == 'classification' else 'mse'
    if kind == 'forecast' and loss != 'mse':
        raise ConfigError(f'train.loss={loss} does not apply to a forecasting task (use mse)')
    if kind == 'classification' and loss == 'mse':
        raise ConfigError('train.loss=mse does not apply to a classification task (use ce or bce)')
    return loss


def make_task_spec(task: Task, cfg: Mapping[str, Any], sets: Mapping[str, Dataset]) -> Dict[str, Any]:
    """Everything needed to rebuild a task's adapter and head and score it (stored in checkpoints)."""
    train_set = sets['train']
    try:
        kwargs = dict(task.model_kwargs(dict(cfg), train_set))
    except (TypeError, ValueError) as e:
        raise ConfigError(f'task {task.name}: {e}') from None
    head_kwargs = {k: kwargs.pop(k) for k in HEAD_KEYS if k in kwargs}
    adapter_kwargs = {**kwargs, **(cfg['model'].get('adapter') or {})}
    adapter = absolute_adapter_spec(cfg['model'].get('adapter_class')) or task.adapter
    eval_split = next((s for s in ('val', 'test') if s in sets), 'train')
    info = task.metric_info(sets[eval_split])
    classes = info.get('classes', getattr(train_set, 'classes', None))
    x, _ = train_set[0]
    x = torch.as_tensor(x)
    return {
        'name': task.name, 'kind': task.kind, 'adapter': adapter, 'adapter_kwargs': adapter_kwargs,
        'head_kwargs': head_kwargs, 'classes': list(classes) if classes is not None else None,
        'metric_info': info, 'input_shape': list(x.shape), 'input_dtype': str(x.dtype).replace('torch.', ''),
        'loss': loss_kind(cfg, task.kind), 'plugin': isinstance(task, PluginTask),
    }


def build_model(specs: Mapping[str, Mapping[str, Any]], model_cfg: Mapping[str, Any], *,
                pretrained: Any = False, deploy: bool = False) -> MultiTaskModel:
    """One trunk + an adapter and head per task spec, through :func:`unimodal.create_model`.

    Adapters whose natural channel counts differ are reconciled with ``Adapter.match_trunk_channels``
    (``model.trunk_chans``, default: the largest adapter channel count).
    """
    import timm

    from ..models.task_model import create_model
    if not timm.is_model(model_cfg['variant']):
        known = ', '.join(timm.list_models('unireplknet*'))
        raise ConfigError(f'unknown model {model_cfg["variant"]!r}; known UniRepLKNet variants: {known}')
    adapters: Dict[str, Adapter] = {}
    for name, spec in specs.items():
        cls = _adapter_class(spec['adapter'])
        if cls.head_kind != spec['kind']:
            raise ConfigError(f'adapter {spec["adapter"]} has head_kind {cls.head_kind!r}, task {name} is a '
                              f'{spec["kind"]} task')
        try:
            adapters[name] = cls(**spec['adapter_kwargs'])
        except TypeError as e:
            raise ConfigError(f'model.adapter for task {name} (adapter {spec["adapter"]}): {e}') from None
    chans = model_cfg.get('trunk_chans') or max(a.out_chans for a in adapters.values())
    for name, adapter in adapters.items():
        if adapter.out_chans != chans:
            _logger.info('task %s: adapter emits %d channels; a learned 1x1 projection maps them to the shared '
                         'trunk\'s %d', name, adapter.out_chans, chans)
            adapter.match_trunk_channels(chans)
    trunk, heads = None, {}
    for i, (name, spec) in enumerate(specs.items()):
        try:
            tm = create_model(adapters[name], variant=model_cfg['variant'],
                              pretrained=pretrained if i == 0 else False,
                              drop_path_rate=float(model_cfg['drop_path_rate']),
                              drop_rate=float(model_cfg['drop_rate']),
                              trunk_kwargs=dict(model_cfg.get('trunk') or {}),
                              trunk_chunk=model_cfg.get('trunk_chunk'), **spec['head_kwargs'])
        except RuntimeError as e:
            if 'Unknown model' in str(e):
                raise ConfigError(f'unknown model {model_cfg["variant"]!r}: {e}') from None
            raise
        except TypeError as e:
            raise ConfigError(f'model options for task {name}: {e}') from None
        trunk = tm.trunk if trunk is None else trunk
        heads[name] = tm.head
    model = MultiTaskModel(trunk, adapters, heads, trunk_chunk=model_cfg.get('trunk_chunk'),
                           freeze_trunk=bool(model_cfg.get('freeze_trunk')))
    if deploy:
        model.eval()
        model.reparameterize()
    return model
