"""Tasks bundle an adapter, a data reader, a kind (head, loss, metrics: :mod:`.kinds`) and a default config.

A task is what `unimodal train --task NAME` runs. Each built-in modality defines one :class:`Task`
subclass in ``unimodal/tasks/<name>.py`` and registers it with :func:`register_task`.
"""
from __future__ import annotations

import abc
import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import Dataset

from ..config.errors import ConfigError, suggest

if TYPE_CHECKING:  # pragma: no cover
    from ..config.schema import TaskSettings

__all__ = ['Task', 'Predictor', 'register_task', 'get_task', 'list_tasks', 'canonical_task_name',
           'FROM_SCRATCH_DEFAULTS', 'FROM_SCRATCH_REASONS', 'with_from_scratch_defaults']

#: What every built-in task's defaults add for training the trunk from scratch on small data (the published recipes,
#: ``defaults: engine``, keep the published values); why: :data:`FROM_SCRATCH_REASONS`.
FROM_SCRATCH_DEFAULTS: Dict[str, Any] = {'model': {'trunk': {'layer_scale_init_value': 1.0}},
                                         'train': {'precise_bn': 20}}

#: Why each of :data:`FROM_SCRATCH_DEFAULTS` (dotted key -> one line; ``unimodal tasks NAME --defaults`` shows it).
FROM_SCRATCH_REASONS: Dict[str, str] = {
    'model.trunk.layer_scale_init_value':
        'with the published 1e-6 each residual branch stays shut for ~0.1/lr Adam steps (hundreds), so a tiny set '
        'sat at chance for several epochs',
    'train.precise_bn':
        'the BatchNorm running averages lag the fast-moving weights of the first epochs, so validation with them '
        'sat at chance while training accuracy climbed',
}


def with_from_scratch_defaults(config: Dict[str, Any]) -> Dict[str, Any]:
    """``config`` (a task's defaults) with :data:`FROM_SCRATCH_DEFAULTS` merged under it (its own values win)."""
    def merge(base: Dict[str, Any], over: Mapping[str, Any]) -> Dict[str, Any]:
        out = copy.deepcopy(base)
        for k, v in over.items():
            out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else copy.deepcopy(v)
        return out
    return merge(FROM_SCRATCH_DEFAULTS, config)

#: How an evaluation protocol scores a batch: ``(task model, inputs, targets) -> (outputs, their targets)``; the
#: outputs may hold several predictions per sample (e.g. one per test pose), each row with its target.
Predictor = Callable[[nn.Module, Any, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]

_TASKS: Dict[str, 'Task'] = {}
_ALIASES: Dict[str, str] = {}


class Task(abc.ABC):
    """One benchmark task.

    Class attributes:
        name: task name on the command line (``audio``, ``point``, ``video``, ``timeseries``, ``image``).
        aliases: older names that still select the task (``weather`` for ``timeseries``).
        adapter: registry name of the adapter the model uses.
        kind: ``'classification'`` or ``'forecast'`` (see :func:`unimodal.tasks.kinds.get_kind`).
        description: one line for ``unimodal tasks``.
        real_data: where the real data set comes from and the on-disk layout expected (shown when the built-in
            data is used and when a data directory is wrong).
        train_only_options: reader options that shape training samples only (mixing, repeated augmentation):
            :meth:`split_options` passes them to the training split's reader alone.
        eval_protocols: the named evaluation protocols ``eval.protocol`` may choose besides the standard one
            (``null``): e.g. the point task's ``published_8pose``.
        default_reasons: why the task's defaults differ from the engine defaults the published recipes build on:
            dotted key (``train.lr``, ``model.adapter.num_mel_bins``) -> one line, with the measurement where there
            is one (:meth:`reasons` adds :data:`FROM_SCRATCH_REASONS`; ``unimodal tasks NAME --defaults`` shows them).
    """

    name: ClassVar[str] = ''
    aliases: ClassVar[Tuple[str, ...]] = ()
    adapter: ClassVar[str] = ''
    kind: ClassVar[str] = 'classification'
    description: ClassVar[str] = ''
    real_data: ClassVar[str] = ''
    train_only_options: ClassVar[Tuple[str, ...]] = ()
    eval_protocols: ClassVar[Tuple[str, ...]] = ()
    default_reasons: ClassVar[Dict[str, str]] = {}

    def reasons(self) -> Dict[str, str]:
        """:attr:`default_reasons` over :data:`FROM_SCRATCH_REASONS` (the task's own line wins)."""
        return {**FROM_SCRATCH_REASONS, **self.default_reasons}

    def default_config(self) -> Dict[str, Any]:
        """Overrides of the engine's default config for this task (nested dict, known keys only).

        Reader options live under ``data.options`` and adapter options under ``model.adapter``; both are
        passed as keyword arguments, so an unknown option fails there with the reader's/adapter's TypeError.
        """
        return {}

    #: the task's reader takes ``cache_dir`` (index caches, sampled clouds, converted arrays): the engine passes the
    #: run's cache folder (``data.cache_dir`` by the one cache rule) unless ``data.options`` names one
    reader_cache: ClassVar[bool] = False

    def split_options(self, options: Optional[Dict[str, Any]], split: str) -> Dict[str, Any]:
        """The reader options of ``split``: all of ``options`` for train, less :attr:`train_only_options` else."""
        options = dict(options or {})
        if split == 'train':
            return options
        return {k: v for k, v in options.items() if k not in self.train_only_options}

    @abc.abstractmethod
    def make_builtin(self, cache_dir: Path) -> Path:
        """Write (once) the built-in synthetic data set in the task's real on-disk format; return its root."""

    @abc.abstractmethod
    def build_datasets(self, root: Path, options: Dict[str, Any], skip_bad: bool = False,
                       splits: Optional[List[str]] = None) -> Dict[str, Dataset]:
        """Readers for ``splits`` (default ``train``, ``val``, ``test``) of the data set at ``root``.

        Each dataset yields ``(x, y)``: classification ``y`` is an int class index and the dataset has
        ``classes`` (list of names); forecasting ``y`` is the ``(horizon, N)`` float target. Datasets expose
        ``skip_report`` (:class:`unimodal.data.errors.SkipReport`) when ``skip_bad`` is on.
        Raises ``FileNotFoundError``/``DataError`` naming the path when ``root`` is not in the expected layout.
        """

    @abc.abstractmethod
    def model_kwargs(self, settings: 'TaskSettings', train_set: Dataset) -> Dict[str, Any]:
        """Keyword arguments for :func:`unimodal.create_model` derived from the data (``num_classes`` or
        ``horizon``/``num_series``/``input_len``), merged with ``settings.model.adapter`` by the engine."""

    def metric_info(self, dataset: Dataset) -> Dict[str, Any]:
        """Extra facts the metrics need, e.g. ``{'classes': [...]}`` or ``{'scale': 10.0, 'period': 24}``."""
        classes = getattr(dataset, 'classes', None)
        return {'classes': list(classes)} if classes is not None else {}

    def eval_views(self, dataset: Dataset) -> Optional[str]:
        """A note on the evaluation protocol (e.g. ``'voting off'``, ``'5 clips x 3 crops'``) for the results."""
        return None

    def check_eval_protocol(self, settings: 'TaskSettings', key: str = 'eval.protocol') -> None:
        """Raise :class:`ConfigError` (naming ``key``) when ``settings.eval.protocol`` does not apply to this task
        with these settings. Called when a run's config is resolved."""
        protocol = settings.eval.protocol
        if protocol is not None and protocol not in self.eval_protocols:
            known = (f'one of {", ".join(self.eval_protocols)} or null' if self.eval_protocols
                     else 'null: it has only its standard protocol')
            raise ConfigError(f'{key}={protocol} does not apply to task {self.name} (use {known})'
                              f'{suggest(protocol, self.eval_protocols)}')

    def eval_predictor(self, protocol: Optional[str]) -> Optional[Predictor]:
        """How ``protocol`` scores a batch (``None``: one prediction per sample, ``model(x)``)."""
        if protocol is not None:
            raise ValueError(f'task {self.name} has no evaluation protocol {protocol!r}')
        return None

    def describe_protocol(self, protocol: Optional[str], dataset: Dataset) -> Optional[str]:
        """The results' ``eval_protocol`` text: what ran on ``dataset`` (the standard protocol: :meth:`eval_views`)."""
        if protocol is not None:
            raise ValueError(f'task {self.name} has no evaluation protocol {protocol!r}')
        return self.eval_views(dataset)


def register_task(cls: type) -> type:
    """Class decorator registering a :class:`Task` subclass (one instance per name, reachable by its aliases)."""
    if not cls.name:
        raise ValueError(f'{cls.__name__} has no name')
    _TASKS[cls.name] = cls()
    for alias in cls.aliases:
        _ALIASES[alias] = cls.name
    return cls


def list_tasks() -> List[str]:
    from . import _load_builtin  # noqa: F401
    return sorted(_TASKS)


def canonical_task_name(name: str) -> str:
    """A task's current name for an old one (``weather`` -> ``timeseries``); other names as they are."""
    from . import _load_builtin  # noqa: F401
    return _ALIASES.get(name, name) if name not in _TASKS else name


def get_task(name: str) -> Task:
    """Look up a task by name or alias; the error lists the known tasks."""
    name = canonical_task_name(name)
    if name not in _TASKS:
        raise KeyError(f'unknown task {name!r}; known tasks: {", ".join(sorted(_TASKS))}')
    return _TASKS[name]
