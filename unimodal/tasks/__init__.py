"""Benchmark tasks: adapter + reader + kind (head, loss, metrics, plots) + default config."""
from .base import Task, canonical_task_name, get_task, list_tasks, register_task
from .kinds import TaskKind, get_kind
from .plugin import PluginTask, resolve_task
from .spec import TaskSpec, make_task_spec

__all__ = ['Task', 'get_task', 'list_tasks', 'register_task', 'canonical_task_name', 'resolve_task', 'PluginTask',
           'TaskKind', 'get_kind', 'TaskSpec', 'make_task_spec']
