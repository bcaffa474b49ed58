"""Benchmark tasks: adapter + reader + head + loss + metrics + default config."""
from .base import Task, get_task, list_tasks, register_task

__all__ = ['Task', 'get_task', 'list_tasks', 'register_task']
