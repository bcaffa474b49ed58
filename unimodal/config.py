"""Run configuration: engine defaults, validation, merging and ``--set`` overrides.

A config is a nested dict of plain YAML types. It is resolved in this order (later wins)::

    engine defaults (DEFAULTS) <- task.default_config() <- --config FILE <- explicit CLI flags <- --set a.b=c

Every key is checked against :data:`DEFAULTS`; an unknown key is a :class:`ConfigError` listing the valid keys
at that level and the closest match. Only ``data.options``, ``model.adapter`` and ``model.trunk`` are free-form:
they are passed as keyword arguments to the reader, the adapter and the trunk, which reject unknown names.

Joint (multi-task) runs list several tasks (``task: [audio, point]`` or ``--task audio,point``). The model,
optimiser and schedule keys are shared: they come from the tasks' recipes where those agree (warm-up: the longest,
gradient clipping: the tightest; see :func:`joint_recipe`), else from the engine defaults, and the user's layers
override them. Each task's own data, adapter options, batch size, loss and mixing weights come from
``tasks.<name>`` (same layout as the top level, restricted to :data:`PER_TASK_KEYS`), resolved as
``DEFAULTS <- task.default_config() <- top-level file/CLI values of those keys <- tasks.<name>``.
"""
from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

__all__ = [
    'DEFAULTS', 'FREE_FORM', 'PER_TASK_KEYS', 'ConfigError', 'default_config', 'merge_config', 'load_config_file',
    'parse_set_overrides', 'validate_config', 'task_names', 'resolve_config', 'task_config', 'dump_config',
    'JOINT_RECIPE_KEYS', 'joint_recipe',
]

# The engine's defaults. Every valid key appears here; comments document them.
DEFAULTS: Dict[str, Any] = {
    # Task name (``audio``, ``point``, ``video``, ``weather``, ``image``), or a list of names for a joint run.
    # ``null`` with ``model.adapter_class`` set: a plug-in adapter that brings its own data (see engine docs).
    'task': None,
    'data': {
        'root': None,          # data set directory; null = the task's built-in synthetic data set
        'cache_dir': None,     # built-in data / reader caches; null = $UNIMODAL_CACHE or ~/.cache/unimodal
        'num_workers': 0,      # DataLoader worker processes
        'skip_bad': False,     # skip unreadable samples (reported in results) instead of failing
        'options': {},         # free-form: reader keyword arguments (Task.build_datasets(options=...))
        'limit_train': None,   # use only N evenly spaced training samples (quick runs / tests); null = all
        'limit_eval': None,    # use only N evenly spaced val/test samples; null = all (the published protocol)
    },
    'model': {
        'variant': 'unireplknet_test',  # trunk: unireplknet_a .. unireplknet_xl, unireplknet_test (tiny)
        'pretrained': False,   # false | true | in1k | in22k | in22k_ft_in1k_384 | path to a released .pth
        'drop_path_rate': 0.0,
        'drop_rate': 0.0,      # dropout before the head's Linear
        'trunk': {},           # free-form: trunk constructor options (kernel sizes, deploy, ...)
        'adapter': {},         # free-form: adapter keyword arguments (merged over task.model_kwargs)
        'trunk_chunk': None,   # run the trunk on at most N images at once (bounded memory for many views)
        'adapter_class': None,  # replace the task's adapter: registry name or path/file.py:ClassName
        'trunk_chans': None,   # trunk input channels; null = the adapter's (single) or the max over adapters (joint)
        'freeze_trunk': False,  # train adapters and heads only; trunk weights stay bit-identical (BN in eval mode)
        'init_from': None,     # checkpoint (engine or released layout) whose trunk initialises this run's trunk
    },
    'train': {
        'epochs': 5,
        'batch_size': 32,      # per process (global batch = batch_size x world size x grad_accum)
        'optimizer': 'adamw',  # adamw | adam | sgd
        'lr': 1e-3,
        'weight_decay': 0.05,  # not applied to biases and norm parameters
        'betas': [0.9, 0.999],
        'momentum': 0.9,       # sgd only
        'schedule': 'cosine',  # cosine | step | constant (all per step, after a linear warm-up)
        'warmup_epochs': 0.0,  # may be fractional
        'step_size': 1,        # step schedule: multiply lr by gamma every step_size epochs ...
        'gamma': 0.1,
        'step_start': 0,       # ... starting after this many epochs (audio recipe: x0.85 per epoch from epoch 5)
        'min_lr': 0.0,         # cosine floor
        'loss': 'auto',        # auto (ce for classification, mse for forecasting) | ce | bce | mse
        'label_smoothing': 0.0,
        'mixup': 0.0,          # mixup Beta(alpha, alpha); 0 = off
        'cutmix': 0.0,         # cutmix Beta(alpha, alpha) on the last two dims; 0 = off
        'mixup_prob': 1.0,     # probability a batch is mixed (audio recipe: 0.6)
        'mixup_switch_prob': 0.5,  # with both on: probability of cutmix instead of mixup
        'grad_accum': 1,       # optimiser step every N batches
        'clip_grad': None,     # max gradient norm; null = no clipping
        'layer_decay': None,   # layer-wise lr decay (0-1], published 14 groups: stem (+ adapters) lr x decay**13,
                               # final norm and heads x1; null = off (and off with a frozen trunk)
        'amp': 'none',         # none | bf16 | fp16 (GPU only; fp16 uses a GradScaler)
        'ema': False,          # keep an exponential moving average of the weights (evaluated instead)
        'ema_decay': 0.9998,
        'grad_checkpointing': False,
        'sync_bn': False,      # SyncBatchNorm under DDP on GPU
        'seed': 0,
        'deterministic': False,  # torch deterministic algorithms (slower on GPU)
        'device': 'auto',      # auto | cpu | cuda | cuda:N
        'eval_every': 1,       # validate every N epochs (and after the last)
        'max_steps_per_epoch': None,  # cap the batches per epoch (quick runs / tests)
        'loss_weight': 1.0,    # joint runs: this task's loss multiplier
        'sample_weight': None,  # joint runs, weighted sampling: relative draw weight; null = number of batches
        'log_every': 50,       # log the running loss every N steps
    },
    'eval': {
        'batch_size': None,    # null = train.batch_size
        'split': 'test',       # split evaluated at the end of training (best checkpoint) and by `unimodal eval`
    },
    'joint': {
        'sampling': 'round_robin',  # round_robin | weighted: how batches of the tasks are interleaved
        'steps_per_epoch': None,    # null = the sum of the tasks' batches per epoch
    },
    # Joint runs: per-task overrides, {name: {data: {...}, model: {adapter: {...}}, train: {...}, eval: {...}}},
    # restricted to PER_TASK_KEYS.
    'tasks': {},
}

# Sections whose keys are not checked here (the reader / adapter / trunk check their own keyword arguments).
FREE_FORM = {('data', 'options'), ('model', 'adapter'), ('model', 'trunk')}

# Keys a joint run resolves per task (everything else is shared by all tasks).
PER_TASK_KEYS: Dict[str, Sequence[str]] = {
    'data': ('root', 'cache_dir', 'num_workers', 'skip_bad', 'options', 'limit_train', 'limit_eval'),
    'model': ('adapter', 'adapter_class'),
    'train': ('batch_size', 'loss', 'label_smoothing', 'mixup', 'cutmix', 'mixup_prob', 'mixup_switch_prob',
              'loss_weight', 'sample_weight', 'max_steps_per_epoch'),
    'eval': ('batch_size',),
}

_CHOICES = {
    ('train', 'optimizer'): ('adamw', 'adam', 'sgd'),
    ('train', 'schedule'): ('cosine', 'step', 'constant'),
    ('train', 'loss'): ('auto', 'ce', 'bce', 'mse'),
    ('train', 'amp'): ('none', 'bf16', 'fp16'),
    ('joint', 'sampling'): ('round_robin', 'weighted'),
}
_POSITIVE_INTS = {('train', 'epochs'), ('train', 'batch_size'), ('train', 'grad_accum'), ('train', 'eval_every'),
                  ('train', 'step_size')}
_NON_NEGATIVE = {('train', 'lr'), ('train', 'weight_decay'), ('train', 'label_smoothing'), ('train', 'mixup'),
                 ('train', 'cutmix'), ('train', 'min_lr'), ('train', 'warmup_epochs'), ('model', 'drop_path_rate'),
                 ('model', 'drop_rate'), ('data', 'num_workers'), ('train', 'loss_weight'), ('train', 'step_start')}
_OPTIONAL_POSITIVE_INTS = {('train', 'max_steps_per_epoch'), ('data', 'limit_train'), ('data', 'limit_eval'),
                           ('eval', 'batch_size'), ('joint', 'steps_per_epoch'), ('model', 'trunk_chunk'),
                           ('model', 'trunk_chans')}


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` (no dot) as a float, as people write learning rates, and
    refuses a key given twice in one mapping (YAML would silently keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f'duplicate key {key!r} (line {key_node.start_mark.line + 1})', key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    'tag:yaml.org,2002:float',
    re.compile(r'''^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$''', re.X),
    list('-+0123456789.'))


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with ``1e-3``-style floats."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)


class ConfigError(ValueError):
    """A config file, ``--set`` override or CLI flag is invalid (unknown key, wrong type or value)."""


def default_config() -> Dict[str, Any]:
    """A deep copy of :data:`DEFAULTS`."""
    return copy.deepcopy(DEFAULTS)


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f'; did you mean {close[0]!r}?' if close else ''


def _unknown_key(path: Sequence[str], key: str, valid: Iterable[str], origin: str) -> ConfigError:
    where = '.'.join(path) if path else 'the top level'
    valid = sorted(valid)
    src = f' (in {origin})' if origin else ''
    return ConfigError(f'unknown config key {".".join([*path, key])!r}{src}; valid keys at {where}: '
                       f'{", ".join(valid)}{_suggest(key, valid)}')


def _check_keys(override: Mapping[str, Any], schema: Mapping[str, Any], path: List[str], origin: str,
                allowed: Optional[Mapping[str, Sequence[str]]] = None) -> None:
    """Raise :class:`ConfigError` for any key of ``override`` not in ``schema`` (recursively)."""
    if not isinstance(override, Mapping):
        raise ConfigError(f'config section {".".join(path) or "<top>"} must be a mapping, got '
                          f'{type(override).__name__} (in {origin})')
    for key, value in override.items():
        if not isinstance(key, str):
            raise ConfigError(f'config keys must be strings, got {key!r} at {".".join(path) or "the top level"}')
        valid_here = schema.keys() if allowed is None or not path else allowed.get(path[0], ())
        if allowed is not None and not path:
            valid_here = allowed.keys()
        if key not in valid_here:
            raise _unknown_key(path, key, valid_here, origin)
        sub_path = [*path, key]
        if tuple(sub_path) in FREE_FORM:
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f'{".".join(sub_path)} must be a mapping of keyword arguments, got {value!r}')
            continue
        if key == 'tasks' and not path:
            _check_tasks_section(value, origin)
            continue
        if isinstance(schema[key], dict):
            if value is None:
                continue
            _check_keys(value, schema[key], sub_path, origin, allowed)


def _check_tasks_section(value: Any, origin: str) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise ConfigError(f'tasks must map task names to per-task overrides, got {value!r} (in {origin})')
    for name, section in value.items():
        if section is None:
            continue
        try:
            _check_keys(section, DEFAULTS, [], origin, allowed=PER_TASK_KEYS)
        except ConfigError as e:
            raise ConfigError(f'tasks.{name}: {e}') from None


def merge_config(base: Dict[str, Any], override: Optional[Mapping[str, Any]], origin: str = '') -> Dict[str, Any]:
    """Return ``base`` updated recursively with ``override`` after checking every key of ``override``.

    Free-form sections (:data:`FREE_FORM`) and ``tasks`` are merged key by key without schema checks below them.
    """
    if not override:
        return copy.deepcopy(base)
    _check_keys(override, DEFAULTS, [], origin)
    return _deep_merge(copy.deepcopy(base), override)


def _deep_merge(base: Dict[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            base[key] = _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def load_config_file(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a YAML config file (``yaml.safe_load``); keys are checked when it is merged."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f'config file {path} does not exist')
    try:
        data = safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f'config file {path} is not valid YAML: {e}') from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'config file {path} must hold a mapping at the top level, got {type(data).__name__}')
    return data


def parse_set_overrides(items: Iterable[str]) -> Dict[str, Any]:
    """Turn ``['train.lr=1e-3', 'data.options.n=4']`` into a nested dict (values parsed as YAML scalars)."""
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition('=')
        key = key.strip()
        if not sep or not key or any(not p for p in key.split('.')):
            raise ConfigError(f'--set expects key.path=value, got {item!r}')
        try:
            value = safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f'--set {item!r}: value is not valid YAML: {e}') from None
        node = out
        parts = key.split('.')
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f'--set {item!r} conflicts with another --set of {part!r}')
        node[parts[-1]] = value
    return out


def task_names(task: Any) -> List[str]:
    """Normalise ``task`` (a name, ``'a,b'`` or a list) to a list of names."""
    if task is None:
        return []
    if isinstance(task, str):
        return [t.strip() for t in task.split(',') if t.strip()]
    if isinstance(task, (list, tuple)):
        names = []
        for t in task:
            names.extend(task_names(t))
        return names
    raise ConfigError(f'task must be a name or a list of names, got {task!r}')


def _get(cfg: Mapping[str, Any], section: str, key: str) -> Any:
    return cfg.get(section, {}).get(key)


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Check keys, choices and value types of a resolved config; raise :class:`ConfigError`."""
    _check_keys(cfg, DEFAULTS, [], 'config')
    for (section, key), choices in _CHOICES.items():
        value = _get(cfg, section, key)
        if value not in choices:
            raise ConfigError(f'{section}.{key} must be one of {", ".join(choices)}, got {value!r}')
    for section, key in _POSITIVE_INTS:
        value = _get(cfg, section, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f'{section}.{key} must be a positive integer, got {value!r}')
    for section, key in _OPTIONAL_POSITIVE_INTS:
        value = _get(cfg, section, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f'{section}.{key} must be a positive integer or null, got {value!r}')
    for section, key in _NON_NEGATIVE:
        value = _get(cfg, section, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f'{section}.{key} must be a non-negative number, got {value!r}')
    betas = _get(cfg, 'train', 'betas')
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(isinstance(b, (int, float)) for b in betas)):
        raise ConfigError(f'train.betas must be a list of two numbers, got {betas!r}')
    clip = _get(cfg, 'train', 'clip_grad')
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or clip <= 0):
        raise ConfigError(f'train.clip_grad must be a positive number or null, got {clip!r}')
    ld = _get(cfg, 'train', 'layer_decay')
    if ld is not None and (isinstance(ld, bool) or not isinstance(ld, (int, float)) or not 0 < ld <= 1):
        raise ConfigError(f'train.layer_decay must be a number in (0, 1] or null, got {ld!r}')
    mp = _get(cfg, 'train', 'mixup_prob')
    if not isinstance(mp, (int, float)) or not 0 <= mp <= 1:
        raise ConfigError(f'train.mixup_prob must be in [0, 1], got {mp!r}')
    pretrained = _get(cfg, 'model', 'pretrained')
    if not isinstance(pretrained, (bool, str)):
        raise ConfigError(f'model.pretrained must be false, true, a tag (in1k, in22k) or a path, got {pretrained!r}')
    for section, key in (('data', 'skip_bad'), ('train', 'ema'), ('train', 'grad_checkpointing'),
                         ('train', 'sync_bn'), ('train', 'deterministic'), ('model', 'freeze_trunk')):
        if not isinstance(_get(cfg, section, key), bool):
            raise ConfigError(f'{section}.{key} must be true or false, got {_get(cfg, section, key)!r}')
    if not isinstance(_get(cfg, 'model', 'variant'), str):
        raise ConfigError(f'model.variant must be a model name, got {_get(cfg, "model", "variant")!r}')
    names = task_names(cfg.get('task'))
    if len(names) <= 1 and any(cfg.get('tasks') or {}):
        raise ConfigError(f'the tasks section ({", ".join(cfg["tasks"])}) is for joint runs (several tasks); '
                          f'for a single task put these keys at the top level')
    extra = set(cfg.get('tasks') or {}) - set(names)
    if extra:
        raise ConfigError(f'tasks section names {", ".join(sorted(extra))}, which the run does not train '
                          f'(task: {", ".join(names) or "none"})')


# Shared training-recipe keys a joint run takes from its tasks' recipes (unless the user sets them): the value the
# recipes agree on, or for these two the safest one when they disagree (longest warm-up, tightest clipping; a
# task that needs either diverges without it).
JOINT_RECIPE_KEYS = ('epochs', 'optimizer', 'lr', 'weight_decay', 'betas', 'momentum', 'schedule', 'warmup_epochs',
                     'step_size', 'gamma', 'step_start', 'min_lr', 'clip_grad', 'layer_decay')


def _numbers(values: Iterable[Any], positive: bool) -> List[float]:
    """The real numbers among ``values`` (> 0 with ``positive``, else >= 0): a plug-in recipe's odd value (None,
    a string) is not a candidate, and validation reports it if it ends up used."""
    return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            and (v > 0 if positive else v >= 0)]


def joint_recipe(recipes: Mapping[str, Mapping[str, Any]]) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The shared ``train`` settings of a joint run from its tasks' recipes (``{task: default_config()}``).

    Returns ``({'train': {...}}, notes)``: the inherited values, and per key a sentence saying where its value
    came from when the recipes disagree (for the log).
    """
    train: Dict[str, Any] = {}
    notes: Dict[str, str] = {}
    for key in JOINT_RECIPE_KEYS:
        values = {name: (recipe.get('train') or {}).get(key, DEFAULTS['train'][key])
                  for name, recipe in recipes.items()}
        distinct = []
        for v in values.values():
            if v not in distinct:
                distinct.append(v)
        listing = ', '.join(f'{n} {v!r}' for n, v in values.items())
        if len(distinct) == 1:
            train[key] = copy.deepcopy(distinct[0])
        elif key == 'warmup_epochs' and _numbers(distinct, positive=False):
            train[key] = max(_numbers(distinct, positive=False))
            notes[key] = f'the recipes differ ({listing}); using the longest, {train[key]!r}'
        elif key == 'clip_grad' and _numbers(distinct, positive=True):
            train[key] = min(_numbers(distinct, positive=True))
            notes[key] = f'the recipes differ ({listing}); using the tightest, {train[key]!r}'
        else:
            notes[key] = f'the recipes differ ({listing}); using the engine default {DEFAULTS["train"][key]!r}'
    return {'train': train}, notes


def resolve_config(task_defaults: Optional[Mapping[str, Any]] = None,
                   file_cfg: Optional[Mapping[str, Any]] = None,
                   cli_overrides: Optional[Mapping[str, Any]] = None,
                   set_overrides: Optional[Mapping[str, Any]] = None,
                   *, file_origin: str = 'config file') -> Dict[str, Any]:
    """Merge the layers (defaults <- task <- file <- CLI flags <- --set) and validate the result.

    For a joint run pass the shared recipe of :func:`joint_recipe` (or ``None``: the engine defaults) as
    ``task_defaults``; each task's own defaults are applied per task by :func:`task_config`.
    """
    cfg = default_config()
    cfg = merge_config(cfg, task_defaults, 'task default_config()')
    cfg = merge_config(cfg, file_cfg, file_origin)
    cfg = merge_config(cfg, cli_overrides, 'command-line flags')
    cfg = merge_config(cfg, set_overrides, '--set')
    validate_config(cfg)
    return cfg


def task_config(cfg: Mapping[str, Any], name: str, task_defaults: Optional[Mapping[str, Any]] = None,
                user_layers: Sequence[Mapping[str, Any]] = ()) -> Dict[str, Any]:
    """The full config one task of a run sees.

    Single-task runs: ``cfg`` itself. Joint runs: the shared keys of ``cfg``, and for :data:`PER_TASK_KEYS`
    the chain ``DEFAULTS <- task_defaults <- user_layers (their per-task keys) <- cfg['tasks'][name]``.
    """
    names = task_names(cfg.get('task'))
    if len(names) <= 1:
        return copy.deepcopy(dict(cfg))
    out = copy.deepcopy(dict(cfg))
    per = default_config()
    per = merge_config(per, _restrict(task_defaults or {}), f'{name} default_config()')
    for layer in user_layers:
        per = merge_config(per, _restrict(layer), 'user config')
    per = merge_config(per, (cfg.get('tasks') or {}).get(name) or {}, f'tasks.{name}')
    for section, keys in PER_TASK_KEYS.items():
        for key in keys:
            out[section][key] = copy.deepcopy(per[section][key])
    out['task'] = name
    return out


def _restrict(layer: Mapping[str, Any]) -> Dict[str, Any]:
    """The per-task keys of a config layer."""
    out: Dict[str, Any] = {}
    for section, keys in PER_TASK_KEYS.items():
        part = layer.get(section)
        if isinstance(part, Mapping):
            sub = {k: v for k, v in part.items() if k in keys}
            if sub:
                out[section] = sub
    return out


def dump_config(cfg: Mapping[str, Any]) -> str:
    """YAML text of a config (keys in definition order)."""
    return yaml.safe_dump(_plain(cfg), sort_keys=False, default_flow_style=None)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
