"""Tasks from plug-in adapters, and the lookup of a run's task by name or by adapter.

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

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from torch.utils.data import Dataset

from ..config.errors import ConfigError
from ..modalities.base import get_adapter_class
from .base import Task, get_task, list_tasks
from .kinds import get_kind

if TYPE_CHECKING:  # pragma: no cover
    from ..config.schema import TaskSettings

__all__ = ['PluginTask', 'resolve_task', 'adapter_class', 'absolute_adapter_spec']


class PluginTask(Task):
    """A task made from a plug-in Adapter class that brings its own data (see the module docstring)."""

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

    def model_kwargs(self, settings: 'TaskSettings', train_set: Dataset) -> Dict[str, Any]:
        return get_kind(self.kind).head_kwargs_from_data(train_set, self.adapter_cls, self.spec)


def adapter_class(spec: str) -> type:
    """The Adapter class of a registry name, entry point or ``file.py:Class``; problems are config errors."""
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


def resolve_task(name: Optional[str], adapter: Optional[str] = None) -> Task:
    """The task ``name`` (an old spelling too), or a :class:`PluginTask` for a plug-in ``adapter`` without one."""
    if name:
        try:
            return get_task(name)
        except KeyError:
            raise ConfigError(f'unknown task {name!r}; known tasks: {", ".join(list_tasks())}') from None
    if not adapter:
        raise ConfigError(f'no task given: use --task ({", ".join(list_tasks())}) or --adapter file.py:Class')
    cls = adapter_class(adapter)
    if not callable(getattr(cls, 'make_datasets', None)):
        raise ConfigError(f'--adapter {adapter} without --task: the adapter class must define a classmethod '
                          f'make_datasets(root) -> {{"train": Dataset, ...}} (or give --task to use a task\'s data)')
    return PluginTask(cls, adapter)
