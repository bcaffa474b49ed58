"""Run configuration: the typed schema, resolution of the layers into one :class:`RunConfig`, YAML in and out.

* :mod:`.schema`: one dataclass per section; defaults, types, allowed values, docs and per-task keys.
* :mod:`.resolve`: :func:`resolve_run_config`, the one place a run's config is merged and checked.
* :mod:`.files`: recipe files (by path or shipped name), ``--set`` parsing, the YAML dump.
"""
from .errors import ConfigError
from .files import dump_config, find_recipe, list_recipes, load_config_file, parse_set_overrides, safe_load
from .resolve import joint_recipe, resolve_run_config
from .schema import (DataConfig, EvalConfig, JointConfig, ModelConfig, RunConfig, TaskEvalConfig, TaskModelConfig,
                     TaskSettings, TaskTrainConfig, TrainConfig, check_option, task_names)

__all__ = [
    'ConfigError', 'RunConfig', 'TaskSettings', 'DataConfig', 'ModelConfig', 'TaskModelConfig', 'TrainConfig',
    'TaskTrainConfig', 'EvalConfig', 'TaskEvalConfig', 'JointConfig', 'resolve_run_config', 'joint_recipe',
    'load_config_file', 'parse_set_overrides', 'dump_config', 'safe_load', 'list_recipes', 'find_recipe',
    'task_names', 'check_option',
]
