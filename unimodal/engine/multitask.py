"""One shared trunk, one adapter and head per task.

:class:`MultiTaskModel` is the model of every run (a single-task run is the one-task case), so checkpoints
always have the same layout: ``trunk.*``, ``adapters.<task>.*``, ``heads.<task>.*``. Each task is reached
through a :class:`unimodal.TaskModel` view that shares the trunk, so evaluation, export and re-parameterization
use the ordinary task-model code.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Optional

import torch
from torch import nn

from ..models.task_model import TaskModel

_logger = logging.getLogger(__name__)

__all__ = ['MultiTaskModel']


class MultiTaskModel(nn.Module):
    """Shared trunk + per-task adapters and heads (``nn.ModuleDict``).

    Args:
        trunk: the shared UniRepLKNet trunk (``num_classes=0``).
        adapters: task name → adapter emitting the trunk's input channels (see ``Adapter.match_trunk_channels``).
        heads: task name → head.
        trunk_chunk: see :class:`unimodal.TaskModel`.
        freeze_trunk: keep the trunk in eval mode (BatchNorm statistics frozen) even when training.
    """

    def __init__(self, trunk: nn.Module, adapters: Mapping[str, nn.Module], heads: Mapping[str, nn.Module],
                 trunk_chunk: Optional[int] = None, freeze_trunk: bool = False) -> None:
        super().__init__()
        if set(adapters) != set(heads):
            raise ValueError(f'adapters {sorted(adapters)} and heads {sorted(heads)} name different tasks')
        self.trunk = trunk
        self.adapters = nn.ModuleDict(dict(adapters))
        self.heads = nn.ModuleDict(dict(heads))
        self.freeze_trunk = freeze_trunk
        # Plain dict (not registered): the views share the registered modules above.
        self._views: Dict[str, TaskModel] = {
            name: TaskModel(self.adapters[name], trunk, self.heads[name], trunk_chunk=trunk_chunk)
            for name in adapters}
        if freeze_trunk:
            for p in self.trunk.parameters():
                p.requires_grad_(False)

    @property
    def task_names(self) -> List[str]:
        return list(self.adapters.keys())

    def task_model(self, name: str) -> TaskModel:
        """The adapter → trunk → head view of one task."""
        if name not in self._views:
            raise KeyError(f'the model has no task {name!r}; it holds {", ".join(self.task_names)}')
        return self._views[name]

    def train(self, mode: bool = True) -> 'MultiTaskModel':
        super().train(mode)
        for view in self._views.values():
            view.training = mode
        if self.freeze_trunk:
            self.trunk.eval()
        return self

    def forward(self, x: torch.Tensor, task: Optional[str] = None) -> torch.Tensor:
        if task is None:
            if len(self._views) != 1:
                raise ValueError(f'a joint model needs the task name: one of {", ".join(self.task_names)}')
            task = self.task_names[0]
        return self.task_model(task)(x)

    @torch.no_grad()
    def reparameterize(self) -> 'MultiTaskModel':
        """Deploy form of the shared trunk and of every adapter (in place, same function)."""
        self.trunk.reparameterize()
        for adapter in self.adapters.values():
            adapter.reparameterize()
        return self
