"""Setting a run up below the config: data roots, data sets and loaders, and the model of a run's task specs.

Everything here takes typed settings (:class:`~unimodal.config.DataConfig`, :class:`~unimodal.config.ModelConfig`)
and :class:`~unimodal.tasks.TaskSpec` objects; nothing reads or merges config layers.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..config.errors import ConfigError
from ..config.schema import DataConfig, ModelConfig
from ..config.variants import check_variant
from ..data.cache import resolve_cache_dir
from ..modalities.base import Adapter
from ..models.unireplknet_checkpoint import CheckpointError
from ..tasks.base import Task
from ..tasks.plugin import PluginTask, adapter_class
from ..tasks.spec import TaskSpec
from .distributed import DistInfo, ShardSampler, barrier
from .multitask import MultiTaskModel

_logger = logging.getLogger(__name__)

__all__ = ['cache_dir', 'data_root', 'build_task_datasets', 'EvenSubset', 'train_loader', 'eval_loader',
           'check_variant', 'build_model']


def cache_dir(data: DataConfig) -> Path:
    """``data.cache_dir``, else ``$UNIMODAL_CACHE``, else ``~/.cache/unimodal`` (the one cache rule, checked to be
    writable: :func:`unimodal.data.cache.resolve_cache_dir`)."""
    return resolve_cache_dir(data.cache_dir)


def data_root(task: Task, data: DataConfig, dist_info: Optional[DistInfo] = None) -> Tuple[Optional[Path], bool]:
    """The data root of a task and whether it is the built-in synthetic set (generated once, rank 0 first)."""
    root = data.root
    if root is not None:
        path = Path(root).expanduser()
        if not path.exists():
            raise ConfigError(f'data directory {path} does not exist (task {task.name}). {task.real_data}')
        return path, False
    if isinstance(task, PluginTask):
        return None, True
    cache = cache_dir(data)
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

    def sample_source(self, i: int) -> str:
        from .finite import sample_source
        return sample_source(self.base, self.indices[i])

    def __getattr__(self, name: str) -> Any:
        if name in ('base', 'indices'):
            raise AttributeError(name)
        return getattr(self.base, name)


def build_task_datasets(task: Task, data: DataConfig, root: Optional[Path],
                        splits: Optional[Sequence[str]] = None) -> Dict[str, Dataset]:
    """Readers for ``splits`` with ``data.limit_*`` applied; reader option errors become :class:`ConfigError`."""
    options = dict(data.options)
    if task.reader_cache and root is not None and options.get('cache_dir') is None:
        options['cache_dir'] = str(cache_dir(data))
    try:
        sets = task.build_datasets(root, options, skip_bad=data.skip_bad,
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
        limit = data.limit_train if split == 'train' else data.limit_eval
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
    # a reader's own collate (e.g. repeated augmentation: B samples -> B x repeats clips)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=drop_last,
                      pin_memory=dist_info.device.type == 'cuda', worker_init_fn=_seed_worker,
                      persistent_workers=num_workers > 0, collate_fn=getattr(ds, 'collate_fn', None))


def eval_loader(ds: Dataset, batch_size: int, dist_info: DistInfo, num_workers: int) -> DataLoader:
    """Exact evaluation: this rank's ``rank::world`` shard, nothing padded or dropped."""
    sampler = ShardSampler(len(ds), dist_info.rank, dist_info.world_size)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=False,
                      pin_memory=dist_info.device.type == 'cuda', worker_init_fn=_seed_worker)


def build_model(specs: Mapping[str, TaskSpec], model: ModelConfig, *, pretrained: Any = False,
                deploy: bool = False) -> MultiTaskModel:
    """One trunk + an adapter and head per task spec, through :func:`unimodal.create_model`.

    Adapters whose natural channel counts differ are reconciled with ``Adapter.match_trunk_channels``
    (``model.trunk_chans``, default: the largest adapter channel count).
    """
    from ..models.task_model import create_model
    check_variant(model.variant)
    adapters: Dict[str, Adapter] = {}
    for name, spec in specs.items():
        cls = adapter_class(spec.adapter)
        if cls.head_kind != spec.kind:
            raise ConfigError(f'adapter {spec.adapter} has head_kind {cls.head_kind!r}, task {name} is a '
                              f'{spec.kind} task')
        try:
            adapters[name] = cls(**spec.adapter_kwargs)
        except (TypeError, ValueError) as e:  # an adapter's constructor refuses its options with these
            raise ConfigError(f'model.adapter for task {name} (adapter {spec.adapter}): {e}') from None
    chans = model.trunk_chans or max(a.out_chans for a in adapters.values())
    for name, adapter in adapters.items():
        if adapter.out_chans != chans:
            _logger.info('task %s: adapter emits %d channels; a learned 1x1 projection maps them to the shared '
                         'trunk\'s %d', name, adapter.out_chans, chans)
            adapter.match_trunk_channels(chans)
    trunk, heads = None, {}
    for i, (name, spec) in enumerate(specs.items()):
        try:
            tm = create_model(adapters[name], variant=model.variant, pretrained=pretrained if i == 0 else False,
                              drop_path_rate=model.drop_path_rate, drop_rate=model.drop_rate,
                              trunk_kwargs=dict(model.trunk), trunk_chunk=model.trunk_chunk, **spec.head_kwargs)
        except CheckpointError as e:
            raise CheckpointError(f'model.pretrained: {e}') from None
        except (TypeError, ValueError) as e:  # the trunk and head constructors refuse their options with these
            raise ConfigError(f'model options for task {name} (trunk {model.variant}, model.trunk '
                              f'{dict(model.trunk)}): {e}') from None
        trunk = tm.trunk if trunk is None else trunk
        heads[name] = tm.head
    multi = MultiTaskModel(trunk, adapters, heads, trunk_chunk=model.trunk_chunk, freeze_trunk=model.freeze_trunk)
    if deploy:
        multi.eval()
        multi.reparameterize()
    return multi
