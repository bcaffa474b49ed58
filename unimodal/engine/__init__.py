"""Training and evaluation engine: runs of a resolved config, DDP, checkpoints, metrics and plots.

Main entry points (the CLI ``unimodal train`` / ``unimodal eval`` call these with a
:class:`~unimodal.config.RunConfig` from :func:`unimodal.config.resolve_run_config`):

* :func:`train` (``unimodal.engine.trainer``)
* :func:`load_run_checkpoint` and :func:`evaluate_checkpoint` (``unimodal.engine.evaluate``)
* :class:`MultiTaskModel` (one shared trunk, an adapter and head per task) and :func:`build_model`
"""
from .build import build_model
from .checkpoint import RunCheckpoint, load_checkpoint, load_run_checkpoint, save_checkpoint
from .evaluate import evaluate, evaluate_checkpoint
from .multitask import MultiTaskModel
from .trainer import train

__all__ = ['build_model', 'load_checkpoint', 'save_checkpoint', 'RunCheckpoint', 'load_run_checkpoint', 'evaluate',
           'evaluate_checkpoint', 'MultiTaskModel', 'train']
