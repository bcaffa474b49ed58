"""Training and evaluation engine: config-driven runs, DDP, checkpoints, metrics and plots.

Main entry points (the CLI ``unimodal train`` / ``unimodal eval`` call these):

* :func:`resolve_run_config` and :func:`train` (``unimodal.engine.trainer``)
* :func:`evaluate_checkpoint` (``unimodal.engine.evaluate``)
* :class:`MultiTaskModel` (one shared trunk, an adapter and head per task) and :func:`build_model`
"""
from .build import PluginTask, build_model
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import evaluate, evaluate_checkpoint
from .multitask import MultiTaskModel
from .trainer import resolve_run_config, train

__all__ = ['PluginTask', 'build_model', 'load_checkpoint', 'save_checkpoint', 'evaluate', 'evaluate_checkpoint',
           'MultiTaskModel', 'resolve_run_config', 'train']
