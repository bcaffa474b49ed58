"""The task spec: everything needed to rebuild a task's adapter and head and to score it, stored in checkpoints."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Union

import torch

from ..config.errors import ConfigError
from ..data.inputs import describe, is_structured
from .kinds import TaskKind, get_kind

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.data import Dataset

    from ..config.schema import TaskSettings
    from .base import Task

__all__ = ['TaskSpec', 'make_task_spec']


@dataclass(frozen=True)
class TaskSpec:
    """A task as a trained model knows it.

    Attributes:
        name: task name (the model's ``adapters.<name>`` / ``heads.<name>``).
        kind: ``'classification'`` or ``'forecast'`` (:attr:`task_kind` is the behaviour).
        adapter: adapter registry name or ``/abs/file.py:Class``.
        adapter_kwargs: the adapter's constructor arguments.
        head_kwargs: ``{'num_classes': C}`` or ``{'horizon': H}``.
        classes: class names (classification), else ``None``.
        metric_info: what the meter needs (classes; physical scale, period, units).
        input_shape, input_dtype: one sample (for example inputs: reparam checks, ONNX export).
        loss: the resolved loss (``ce``, ``bce`` or ``mse``).
        plugin: a plug-in adapter that brings its own data (no registered task).
    """
    name: str
    kind: str
    adapter: str
    adapter_kwargs: Dict[str, Any] = field(default_factory=dict)
    head_kwargs: Dict[str, Any] = field(default_factory=dict)
    classes: Optional[List[str]] = None
    metric_info: Dict[str, Any] = field(default_factory=dict)
    input_shape: List[Any] = field(default_factory=list)
    input_dtype: Union[str, List[str]] = 'float32'
    loss: str = ''
    plugin: bool = False

    @property
    def task_kind(self) -> TaskKind:
        return get_kind(self.kind)

    def replace(self, **changes: Any) -> 'TaskSpec':
        return dataclasses.replace(self, **changes)

    def with_metric_info(self, info: Mapping[str, Any]) -> 'TaskSpec':
        """This spec with ``info`` (a split's facts, e.g. its classes or scale) over its metric info."""
        return self.replace(metric_info={**self.metric_info, **info})

    @property
    def structured(self) -> bool:
        """The input is a tuple of tensors (see :mod:`unimodal.data.inputs`)."""
        return bool(self.input_shape) and isinstance(self.input_shape[0], (list, tuple))

    def example_input(self, batch: int = 2) -> Any:
        """A deterministic batch of the input shape(s) and dtype(s) (reparam checks, ONNX export); a structured
        input is a tuple (integer parts are 1: valid as lengths or indices)."""
        g = torch.Generator().manual_seed(0)

        def one(shape: Sequence[int], dtype_name: str) -> torch.Tensor:
            dtype = getattr(torch, dtype_name or 'float32')
            if dtype.is_floating_point:
                return torch.randn([batch, *shape], generator=g).to(dtype)
            if self.structured:
                return torch.ones([batch, *shape], dtype=dtype)
            return torch.randint(0, 2, [batch, *shape], generator=g).to(dtype)
        if self.structured:
            dtypes = (self.input_dtype if isinstance(self.input_dtype, list)
                      else [self.input_dtype] * len(self.input_shape))
            return tuple(one(s, d) for s, d in zip(self.input_shape, dtypes))
        return one(self.input_shape, self.input_dtype)

    def to_dict(self) -> Dict[str, Any]:
        """Plain containers (a checkpoint entry loadable with ``weights_only=True``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: Optional[str] = None) -> 'TaskSpec':
        """A spec from a checkpoint entry (this version's or an older one's dict; unknown entries are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if name is not None:
            values['name'] = name
        values['classes'] = list(values['classes']) if values.get('classes') is not None else None
        values['input_shape'] = list(values.get('input_shape') or [])
        return cls(**values)


def make_task_spec(task: 'Task', settings: 'TaskSettings', sets: Mapping[str, 'Dataset']) -> TaskSpec:
    """A task's spec from its settings and data (the head's size, the adapter's options, the metric facts)."""
    from .plugin import PluginTask, absolute_adapter_spec
    kind = get_kind(task.kind)
    train_set = sets['train']
    try:
        kwargs = dict(task.model_kwargs(settings, train_set))
    except (TypeError, ValueError) as e:
        raise ConfigError(f'task {task.name}: {e}') from None
    head_kwargs = {k: kwargs.pop(k) for k in kind.head_keys if k in kwargs}
    adapter_kwargs = {**kwargs, **settings.model.adapter}
    adapter = absolute_adapter_spec(settings.model.adapter_class) or task.adapter
    eval_split = next((s for s in ('val', 'test') if s in sets), 'train')
    info = task.metric_info(sets[eval_split])
    classes = info.get('classes', getattr(train_set, 'classes', None))
    sample = train_set[0]
    collate = getattr(train_set, 'collate_fn', None)
    x = sample[0]
    if collate is not None:  # what the model sees: one sample of a collated batch (e.g. one of its repeats)
        xb = collate([sample])[0]
        x = tuple(t[0] for t in xb) if is_structured(xb) else xb[0]
    input_shape, input_dtype = describe(x)
    return TaskSpec(name=task.name, kind=kind.name, adapter=adapter, adapter_kwargs=adapter_kwargs,
                    head_kwargs=head_kwargs, classes=list(classes) if classes is not None else None,
                    metric_info=info, input_shape=input_shape, input_dtype=input_dtype,
                    loss=kind.resolve_loss(settings.train.loss), plugin=isinstance(task, PluginTask))
