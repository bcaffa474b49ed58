"""Resolving a run's config, once, at the top (the CLI or a Python caller): layers in, one :class:`RunConfig` out.

A config layer is a nested dict in the file layout (``task``, ``data``, ``model``, ``train``, ``eval``, ``joint``,
``tasks.<name>``). Layers are merged in this order (later wins)::

    schema defaults <- the task's default_config() <- --config FILE <- explicit CLI flags <- --set a.b=c

or, to resume or evaluate a run, ``stored config (base) <- file <- flags <- --set``. Every key of every layer is
checked against the schema (an unknown key names its origin, lists the valid keys and suggests the closest), then
every value (:func:`unimodal.config.schema.build_run_config`).

Joint runs list several tasks (``task: [audio, point]`` or ``--task audio,point``). The model, optimiser and
schedule keys are shared. The optimiser and schedule keys come from the tasks' recipes where those agree (warm-up:
the longest, gradient clipping: the tightest; see :func:`joint_recipe`), the model keys (variant, trunk options)
from the schema defaults, and the user's layers override them. (The tasks' from-scratch trunk options, e.g. layer
scale 1.0, were measured in a joint run and not inherited: no better there; ``benchmarks/README.md``.) Each task's
per-task keys (``TASK_SECTIONS``) resolve as
``defaults <- task.default_config() <- the layers' top-level values of those keys <- tasks.<name>`` and are
materialised under ``tasks.<name>``, so a saved config is self-contained.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .errors import ConfigError, short_repr, unknown_key
from .schema import (SECTIONS, TASK_SECTIONS, RunConfig, TrainConfig, build_run_config, is_free_form, joint_rule,
                     section_keys, task_names)
from .variants import check_pretrained, check_trunk_options, check_variant

_logger = logging.getLogger(__name__)

__all__ = ['resolve_run_config', 'joint_recipe', 'check_layer']

_TOP_KEYS = ('task', 'defaults', *SECTIONS, 'tasks')


# ------------------------------------------------------------------------------------------------ layers

def check_layer(layer: Mapping[str, Any], origin: str, *, per_task: bool = False) -> None:
    """Raise :class:`ConfigError` for any key of ``layer`` the schema does not have (recursively; free-form
    sections are not looked into). ``per_task``: a ``tasks.<name>`` section (per-task keys only)."""
    if not isinstance(layer, Mapping):
        raise ConfigError(f'a config must be a mapping, got {short_repr(layer)} (in {origin})')
    top = list(TASK_SECTIONS) if per_task else list(_TOP_KEYS)
    for key, value in layer.items():
        if not isinstance(key, str):
            raise ConfigError(f'config keys must be strings, got {short_repr(key)} at the top level (in {origin})')
        if key not in top:
            raise unknown_key([], key, top, origin)
        if key in ('task', 'defaults'):
            continue
        if key == 'tasks':
            _check_tasks_layer(value, origin)
            continue
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f'config section {key} must be a mapping, got {short_repr(value)} (in {origin})')
        valid = section_keys(key, per_task=per_task)
        for sub, sub_value in value.items():
            if not isinstance(sub, str):
                raise ConfigError(f'config keys must be strings, got {short_repr(sub)} at {key} (in {origin})')
            if sub not in valid:
                raise unknown_key([key], sub, valid, origin)
            if is_free_form(key, sub) and sub_value is not None and not isinstance(sub_value, Mapping):
                raise ConfigError(f'{key}.{sub} must be a mapping of keyword arguments, got '
                                  f'{short_repr(sub_value)} (in {origin})')


def _check_tasks_layer(value: Any, origin: str) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise ConfigError(f'tasks must map task names to per-task settings, got {short_repr(value)} (in {origin})')
    for name, section in value.items():
        if section is None:
            continue
        try:
            check_layer(section, origin, per_task=True)
        except ConfigError as e:
            raise ConfigError(f'tasks.{name}: {e}') from None


def _merge(base: Dict[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    """``base`` updated recursively with ``override`` (in place; values are copied)."""
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _per_task_part(layer: Mapping[str, Any]) -> Dict[str, Any]:
    """The per-task keys of a layer's top level."""
    out: Dict[str, Any] = {}
    for section in TASK_SECTIONS:
        part = layer.get(section)
        if isinstance(part, Mapping):
            keys = section_keys(section, per_task=True)
            sub = {k: v for k, v in part.items() if k in keys}
            if sub:
                out[section] = sub
    return out


def _last(layers: Iterable[Mapping[str, Any]], section: Optional[str], key: str) -> Any:
    value = None
    for layer in layers:
        node = layer.get(section) or {} if section else layer
        if isinstance(node, Mapping) and node.get(key) is not None:
            value = node[key]
    return value


def _without_adapter_options(defaults: Mapping[str, Any]) -> Dict[str, Any]:
    """A task's defaults minus its adapter options: they belong to the task's own adapter, not to a replacement
    given with ``--adapter`` (whose options come from the user's ``model.adapter``)."""
    out = copy.deepcopy(dict(defaults))
    if isinstance(out.get('model'), dict):
        out['model'].pop('adapter', None)
    return out


def _defaults_for_weights(defaults: Mapping[str, Any], layers: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """A task's defaults without its from-scratch trunk layout (``model.trunk.stem_stride``) when the user's layers
    load trunk weights (``model.pretrained`` / ``model.init_from``): the released weights were trained with the
    published stride-4 stem, and the same weights under a stride-2 stem compute another function."""
    if not (_last(layers, 'model', 'pretrained') or _last(layers, 'model', 'init_from')):
        return dict(defaults)
    out = copy.deepcopy(dict(defaults))
    trunk = (out.get('model') or {}).get('trunk')
    if isinstance(trunk, dict) and trunk.pop('stem_stride', None) is not None:
        _logger.info('model.pretrained / model.init_from is set: the trunk keeps the published stride-4 stem the '
                     'weights expect, not the task default for training from scratch (set model.trunk.stem_stride '
                     'to choose)')
    return out


def _absolute_adapter(layers: List[Dict[str, Any]]) -> None:
    """``model.adapter_class`` as ``/abs/file.py:Class`` (a saved config then works from any directory)."""
    from ..tasks.plugin import absolute_adapter_spec
    for layer in layers:
        for node in [layer.get('model'), *((t or {}).get('model') for t in (layer.get('tasks') or {}).values())]:
            if isinstance(node, dict) and isinstance(node.get('adapter_class'), str):
                node['adapter_class'] = absolute_adapter_spec(node['adapter_class'])


def _canonical_names(names: Sequence[str]) -> List[str]:
    from ..tasks import canonical_task_name
    out = [canonical_task_name(n) for n in names]
    if len(out) != len(set(out)):
        raise ConfigError(f'task list {list(names)} names a task twice')
    return out


def _rename_tasks(layer: Dict[str, Any]) -> Dict[str, Any]:
    """A layer with its task names (``task`` and ``tasks.<name>``) in their canonical spelling."""
    from ..tasks import canonical_task_name
    out = dict(layer)
    if out.get('task') is not None:
        names = [canonical_task_name(n) for n in task_names(out['task'])]
        out['task'] = names if isinstance(out['task'], (list, tuple)) or len(names) > 1 else names[0]
    if isinstance(out.get('tasks'), Mapping):
        out['tasks'] = {canonical_task_name(str(n)): v for n, v in out['tasks'].items()}
    return out


# ------------------------------------------------------------------------------------------------ joint recipes

def _numbers(values: Iterable[Any], positive: bool) -> List[float]:
    """The real numbers among ``values`` (> 0 with ``positive``, else >= 0): a plug-in recipe's odd value (None,
    a string) is not a candidate, and validation reports it if it ends up used."""
    return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            and (v > 0 if positive else v >= 0)]


def joint_recipe(recipes: Mapping[str, Mapping[str, Any]]) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The shared ``train`` settings of a joint run from its tasks' recipes (``{task: default_config()}``).

    Which keys, and how disagreement is settled, is the ``joint`` metadata of :class:`TrainConfig`: the value the
    recipes agree on, or for warm-up the longest and for gradient clipping the tightest (a task that needs
    either diverges without it). Returns ``({'train': {...}}, notes)``: the inherited values, and per key a
    sentence saying where its value came from when the recipes disagree (for the log).
    """
    defaults = TrainConfig()
    train: Dict[str, Any] = {}
    notes: Dict[str, str] = {}
    for key in section_keys('train'):
        rule = joint_rule(key)
        if rule is None:
            continue
        values = {name: (recipe.get('train') or {}).get(key, getattr(defaults, key))
                  for name, recipe in recipes.items()}
        distinct: List[Any] = []
        for v in values.values():
            if v not in distinct:
                distinct.append(v)
        listing = ', '.join(f'{n} {short_repr(v)}' for n, v in values.items())
        if len(distinct) == 1:
            train[key] = copy.deepcopy(distinct[0])
        elif rule == 'max' and _numbers(distinct, positive=False):
            train[key] = max(_numbers(distinct, positive=False))
            notes[key] = f'the recipes differ ({listing}); using the longest, {train[key]!r}'
        elif rule == 'min' and _numbers(distinct, positive=True):
            train[key] = min(_numbers(distinct, positive=True))
            notes[key] = f'the recipes differ ({listing}); using the tightest, {train[key]!r}'
        else:
            notes[key] = f'the recipes differ ({listing}); using the engine default {getattr(defaults, key)!r}'
    return {'train': train}, notes


# ------------------------------------------------------------------------------------------------ resolution

def resolve_run_config(file_cfg: Optional[Mapping[str, Any]] = None,
                       cli_overrides: Optional[Mapping[str, Any]] = None,
                       set_overrides: Optional[Mapping[str, Any]] = None, *,
                       base: Optional[Mapping[str, Any]] = None,
                       file_origin: str = 'config file') -> RunConfig:
    """Resolve a run's config from its layers into one checked :class:`RunConfig`.

    Args:
        file_cfg: a recipe (:func:`load_config_file`), or any config mapping of a Python caller.
        cli_overrides: the values of explicit command-line flags, in the same layout.
        set_overrides: ``--set`` values (:func:`parse_set_overrides`).
        base: a stored config (``config.yaml`` or a checkpoint's ``config``) that replaces the defaults and the
            task layer: how a resumed or evaluated run rebuilds its config. Old spellings (task ``weather``)
            are read as today's.
        file_origin: the file's name for error messages.
    """
    origins = (file_origin, 'command-line flags', '--set')
    layers: List[Dict[str, Any]] = []
    for origin, layer in zip(origins, (file_cfg, cli_overrides, set_overrides)):
        layer = copy.deepcopy(dict(layer or {}))  # deepcopy keeps shared YAML aliases shared
        check_layer(layer, origin)
        layers.append(_rename_tasks(layer))
    _absolute_adapter(layers)
    if base is not None:
        base = dict(base)
        check_layer(base, 'the stored config')
        return _resolve_on_base(_rename_tasks(base), layers)
    names = _canonical_names(task_names(_last(layers, None, 'task')))
    adapter_class = _last(layers, 'model', 'adapter_class')
    # a complete recipe (defaults: engine) sits on the engine defaults alone: a task's demo settings (clipping,
    # warm-up, CPU-sized adapters) must not leak into a published set-up that does not name them
    engine_only = _last(layers, None, 'defaults') == 'engine'
    if len(names) <= 1:
        task = _task(names[0] if names else None, adapter_class)
        defaults = {} if engine_only else task.default_config()
        check_layer(defaults, f'task {task.name} default_config()')
        defaults = _defaults_for_weights(defaults, layers)
        if adapter_class and names:
            defaults = _without_adapter_options(defaults)
        merged = _merge_layers([_rename_tasks(defaults), *layers])
        merged['task'] = names[0] if names else None
        return _checked(merged, {task.name: task})
    tasks = {name: _task(name) for name in names}
    recipes = {}
    for name, task in tasks.items():
        recipes[name] = {} if engine_only else task.default_config()
        check_layer(recipes[name], f'task {name} default_config()')
        recipes[name] = _defaults_for_weights(recipes[name], layers)
    shared, notes = joint_recipe(recipes)
    user_train = set().union(*((layer.get('train') or {}).keys() for layer in layers))
    for key, note in notes.items():
        if key not in user_train:
            _logger.info('joint run, train.%s: %s (set train.%s to choose)', key, note, key)
    merged = _merge_layers([shared, *layers])
    merged['task'] = names
    user_tasks = merged.get('tasks') or {}
    per_task = {}
    for name in names:
        own = recipes[name]
        replaced = any((layer.get('model') or {}).get('adapter_class')
                       for layer in [*layers, user_tasks.get(name) or {}])
        per = _merge_layers([_per_task_part(_without_adapter_options(own) if replaced else own),
                             *(_per_task_part(layer) for layer in layers), user_tasks.get(name) or {}])
        per_task[name] = per
    merged['tasks'] = _with_unknown(per_task, user_tasks)
    return _checked(merged, tasks)


def _merge_layers(layers: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    merged: Dict[str, Any] = {}
    for layer in layers:
        _merge(merged, layer)
    return merged


def _resolve_on_base(base: Dict[str, Any], layers: List[Dict[str, Any]]) -> RunConfig:
    """A stored config with the user's layers on top; in a joint run their top-level per-task keys reach every
    task (as in a fresh resolution), then their ``tasks.<name>`` sections."""
    merged = _merge_layers([base, *layers])
    names = _canonical_names(task_names(merged.get('task')))
    if len(names) > 1:
        stored = base.get('tasks') or {}
        per_task = {}
        for name in names:
            per = copy.deepcopy(dict(stored.get(name) or {}))
            for layer in layers:
                _merge(per, _per_task_part(layer))
            for layer in layers:
                _merge(per, (layer.get('tasks') or {}).get(name) or {})
            per_task[name] = per
        merged['tasks'] = _with_unknown(per_task, merged.get('tasks') or {})
    tasks = {name: _task(name) for name in names}
    return _checked(merged, tasks)


def _with_unknown(per_task: Dict[str, Any], given: Mapping[str, Any]) -> Dict[str, Any]:
    """The resolved per-task sections plus any ``tasks.<name>`` of a task the run does not train (so the
    check reports it)."""
    return {**{n: s for n, s in given.items() if n not in per_task}, **per_task}


def _task(name: Optional[str], adapter_class: Optional[str] = None) -> Any:
    from ..tasks import resolve_task
    return resolve_task(name, adapter_class)


def _checked(merged: Mapping[str, Any], tasks: Mapping[str, Any]) -> RunConfig:
    """Build the RunConfig and check what needs the task objects: each task's loss fits its kind, its evaluation
    protocol applies."""
    from ..tasks.kinds import get_kind
    from ..tasks.plugin import adapter_class
    cfg = build_run_config(merged)
    check_variant(cfg.model.variant)  # a typo in --model or a trunk option fails here, before the data is read
    check_pretrained(cfg.model.variant, cfg.model.pretrained)
    check_trunk_options(cfg.model.variant, cfg.model.trunk)
    if cfg.train.global_batch_size is not None and cfg.train.grad_accum is None:
        cfg.grad_accum_steps(1)  # a total that no process count reaches fails now, not at the start of training
    for name, task in tasks.items():
        prefix = f'tasks.{name}.' if cfg.is_joint else ''
        settings = cfg.task_settings(name)
        get_kind(task.kind).check_loss(settings.train.loss, f'{prefix}train.loss')
        task.check_eval_protocol(settings, f'{prefix}eval.protocol')
        spec = settings.model.adapter_class or task.adapter
        adapter = adapter_class(spec)
        adapter.check_option_names(settings.model.adapter, f'{prefix}model.adapter')
        if adapter.__module__.startswith('unimodal.'):  # a plug-in's constructor may do work: built with the data
            adapter.check_option_values(settings.model.adapter,
                                        f'{prefix}model.adapter for task {name} (adapter {spec})')
    return cfg
