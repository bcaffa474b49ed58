"""The run configuration schema: one frozen dataclass per YAML section, each key declared once.

Stdlib dataclasses, not pydantic: defaults, types, allowed values and docs fit in field metadata, without a new
dependency.

A key's default is its dataclass default, its type its annotation, and :func:`setting` records its doc and allowed
values (choices, a numeric range; every float must be finite). The keys a joint run resolves per task are the
fields of the ``Task*`` base classes (:class:`DataConfig`, :class:`TaskModelConfig`, :class:`TaskTrainConfig`,
:class:`TaskEvalConfig`); the section classes add the shared keys. :class:`TaskSettings` is one task's view.
``data.options``, ``model.adapter`` and ``model.trunk`` are free-form: the reader, adapter and trunk check their
own keyword arguments.

Build a :class:`RunConfig` with :func:`unimodal.config.resolve_run_config` (it merges the layers and then calls
:func:`build_run_config`, which checks every key and value).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from typing import (Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union, get_args, get_origin,
                    get_type_hints)

from .errors import ConfigError, short_repr, suggest, unknown_key

__all__ = [
    'setting', 'DEFAULTS_CHOICES', 'DataConfig', 'TaskModelConfig', 'ModelConfig', 'TaskTrainConfig', 'TrainConfig',
    'TaskEvalConfig',
    'EvalConfig', 'JointConfig', 'TaskSettings', 'RunConfig', 'SECTIONS', 'TASK_SECTIONS', 'section_keys',
    'is_free_form', 'key_doc', 'joint_rule', 'task_names', 'check_value', 'check_option', 'build_run_config',
]


def setting(default: Any = dataclasses.MISSING, doc: str = '', *, factory: Optional[Callable[[], Any]] = None,
            choices: Union[Sequence[str], Callable[[], Sequence[str]], None] = None, lo: Optional[float] = None,
            hi: Optional[float] = None, lo_open: bool = False, length: Optional[int] = None,
            free_form: bool = False, joint: Optional[str] = None, expects: str = '') -> Any:
    """A dataclass field with its schema metadata.

    Args:
        default, factory: the default value (``factory`` for mutable ones).
        doc: one line for ``unimodal config`` listings and the docs.
        choices: allowed strings, or a function returning them (looked up when a value is checked).
        lo, hi, lo_open: numeric range ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``).
        length: exact length of a list value.
        free_form: a mapping of keyword arguments checked downstream (reader, adapter, trunk).
        joint: for shared ``train`` keys a joint run takes from its tasks' recipes: ``'agree'`` (the value the
            recipes agree on, else the engine default), ``'max'`` / ``'min'`` (the largest / smallest number).
        expects: wording of the allowed values in errors, where the type alone does not say it.
    """
    metadata = {'doc': doc, 'choices': choices, 'lo': lo, 'hi': hi, 'lo_open': lo_open, 'length': length,
                'free_form': free_form, 'joint': joint, 'expects': expects}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _timm_optimizers() -> List[str]:
    from timm.optim import list_optimizers  # imported on use: timm (and torch) load only when a run is configured
    names = list(list_optimizers())
    return names + [f'lookahead_{n}' for n in names]  # timm wraps any of them in Lookahead by this prefix


def _schedules() -> Sequence[str]:
    from ..engine.optim import SCHEDULES  # the schedules the engine implements
    return SCHEDULES


# ------------------------------------------------------------------------------------------------ the sections

@dataclass(frozen=True)
class DataConfig:
    """``data``: where a task's samples come from. Every key is per task in joint runs."""
    root: Optional[str] = setting(None, "data set directory; null = the task's built-in synthetic data set")
    cache_dir: Optional[str] = setting(None, 'built-in data / reader caches; null = $UNIMODAL_CACHE or '
                                             '~/.cache/unimodal')
    num_workers: int = setting(0, 'DataLoader worker processes', lo=0)
    skip_bad: bool = setting(False, 'skip unreadable samples (reported in results) instead of failing')
    options: Dict[str, Any] = setting(doc='reader keyword arguments (Task.build_datasets(options=...))',
                                      factory=dict, free_form=True)
    limit_train: Optional[int] = setting(None, 'use only N evenly spaced training samples (quick runs); null = all',
                                         lo=1)
    limit_eval: Optional[int] = setting(None, 'use only N evenly spaced val/test samples; null = all (the published '
                                              'protocol)', lo=1)


@dataclass(frozen=True)
class TaskModelConfig:
    """The per-task keys of ``model``: the task's adapter."""
    adapter: Dict[str, Any] = setting(doc="adapter keyword arguments (merged over the task's model_kwargs); each "
                                          "adapter's docstring lists them, e.g. audio num_mel_bins (published 128)",
                                      factory=dict, free_form=True)
    adapter_class: Optional[str] = setting(None, "replace the task's adapter: registry name or path/file.py:Class")


@dataclass(frozen=True)
class ModelConfig(TaskModelConfig):
    """``model``: the shared trunk (and, per task, the adapter)."""
    variant: str = setting('unireplknet_test', 'trunk: unireplknet_a .. unireplknet_xl, unireplknet_test (tiny)')
    pretrained: Union[bool, str] = setting(False, 'false | true | in1k | in22k | in22k_ft_in1k_384 | path to a '
                                                  'released .pth',
                                           expects='false, true, a tag (in1k, in22k) or a path')
    drop_path_rate: float = setting(0.0, 'stochastic depth of the trunk', lo=0, hi=1)
    drop_rate: float = setting(0.0, "dropout before the head's Linear", lo=0, hi=1)
    trunk: Dict[str, Any] = setting(doc='trunk constructor options: stem_stride 4 (published) | 2, weight_init '
                                        'trunc_normal (published) | fan_in, global_pool avg (published) | max | '
                                        'avgmax, layer_scale_init_value, kernel_sizes, depths, dims, deploy, ... '
                                        '(UniRepLKNet in unimodal/models/unireplknet.py)',
                                    factory=dict, free_form=True)
    trunk_chunk: Optional[int] = setting(None, 'run the trunk on at most N images at once (bounded memory)', lo=1)
    trunk_chans: Optional[int] = setting(None, "trunk input channels; null = the adapter's (single) or the max "
                                               'over adapters (joint)', lo=1)
    freeze_trunk: bool = setting(False, 'train adapters and heads only; trunk weights stay bit-identical')
    init_from: Optional[str] = setting(None, "checkpoint whose trunk initialises this run's trunk")


@dataclass(frozen=True)
class TaskTrainConfig:
    """The per-task keys of ``train``: batch size, loss and mixing."""
    batch_size: int = setting(32, 'per process (global batch = batch_size x world size x grad_accum; see '
                                  'train.global_batch_size)', lo=1)
    loss: str = setting('auto', 'auto (the task kind\'s: ce or mse) | ce | bce | mse',
                        choices=('auto', 'ce', 'bce', 'mse'))
    label_smoothing: float = setting(0.0, 'classification label smoothing', lo=0, hi=1)
    mixup: float = setting(0.0, 'mixup Beta(alpha, alpha); 0 = off', lo=0)
    cutmix: float = setting(0.0, 'cutmix Beta(alpha, alpha) on the last two dims; 0 = off', lo=0)
    mixup_prob: float = setting(1.0, 'probability a batch is mixed', lo=0, hi=1)
    mixup_switch_prob: float = setting(0.5, 'with both on: probability of cutmix instead of mixup', lo=0, hi=1)
    loss_weight: float = setting(1.0, "joint runs: this task's loss multiplier", lo=0)
    sample_weight: Optional[float] = setting(None, 'joint runs, weighted sampling: relative draw weight; null = '
                                                   'number of batches', lo=0)
    max_steps_per_epoch: Optional[int] = setting(None, 'cap the batches per epoch (quick runs / tests)', lo=1)


@dataclass(frozen=True)
class TrainConfig(TaskTrainConfig):
    """``train``: the shared optimiser, schedule and loop settings (and, per task, batch size and loss)."""
    epochs: int = setting(5, 'training epochs', lo=1, joint='agree')
    optimizer: str = setting('adamw', 'any timm optimizer name (timm.optim.list_optimizers())',
                             choices=_timm_optimizers, joint='agree',
                             expects='a timm optimizer name (see timm.optim.list_optimizers())')
    lr: float = setting(1e-3, 'peak learning rate', lo=0, joint='agree')
    weight_decay: float = setting(0.05, 'not applied to biases and norm parameters', lo=0, joint='agree')
    betas: List[float] = setting(doc='Adam-family betas', factory=lambda: [0.9, 0.999], length=2, joint='agree')
    momentum: float = setting(0.9, 'SGD-family momentum', joint='agree')
    schedule: str = setting('cosine', 'cosine | step | constant (per step, after a linear warm-up)',
                            choices=_schedules, joint='agree')
    warmup_epochs: float = setting(0.0, 'linear warm-up (may be fractional)', lo=0, joint='max')
    step_size: int = setting(1, 'step schedule: multiply the lr by gamma every step_size epochs ...', lo=1,
                             joint='agree')
    gamma: float = setting(0.1, '... by this factor ...', joint='agree')
    step_start: int = setting(0, '... starting after this many epochs (audio recipe: x0.85 per epoch from 5)',
                              lo=0, joint='agree')
    min_lr: float = setting(0.0, 'cosine floor', lo=0, joint='agree')
    grad_accum: Optional[int] = setting(None, 'optimiser step every N batches; null = 1, or what '
                                              'train.global_batch_size implies', lo=1)
    global_batch_size: Optional[int] = setting(None, 'samples per optimiser step over all processes (videos before '
                                                     "a reader's repeats); the engine sets grad_accum = global / "
                                                     '(batch_size x world size), so a recipe holds on any process '
                                                     'count; null = batch_size x world size x grad_accum', lo=1)
    clip_grad: Optional[float] = setting(None, 'max gradient norm; null = no clipping', lo=0, lo_open=True,
                                         joint='min')
    layer_decay: Optional[float] = setting(None, 'layer-wise lr decay (0-1], the published 14 groups; null = off '
                                                 '(and off with a frozen trunk)', lo=0, hi=1, lo_open=True,
                                           joint='agree')
    amp: str = setting('none', 'none | bf16 | fp16 (GPU only; fp16 uses a GradScaler)',
                       choices=('none', 'bf16', 'fp16'))
    ema: bool = setting(False, 'keep an exponential moving average of the weights (evaluated instead)')
    ema_decay: float = setting(0.9998, 'EMA decay per optimiser step', lo=0, hi=1)
    grad_checkpointing: bool = setting(False, 'trunk activation checkpointing')
    sync_bn: bool = setting(False, 'SyncBatchNorm under DDP on GPU')
    seed: int = setting(0, 'random seed')
    deterministic: bool = setting(False, 'torch deterministic algorithms (slower on GPU)')
    device: str = setting('auto', 'auto | cpu | cuda | cuda:N')
    eval_every: int = setting(1, 'validate every N epochs (and after the last)', lo=1)
    precise_bn: int = setting(0, 'before each validation recompute the BatchNorm statistics on up to N training '
                                 "batches per task (at most an epoch's), for the current weights; 0 = off (the "
                                 'running averages)', lo=0, joint='max')
    log_every: int = setting(50, 'log the running loss every N steps; 0 = never', lo=0)


@dataclass(frozen=True)
class TaskEvalConfig:
    """The per-task keys of ``eval``: batch size and protocol (a task checks its protocol names,
    :meth:`unimodal.tasks.Task.check_eval_protocol`)."""
    batch_size: Optional[int] = setting(None, 'null = train.batch_size', lo=1)
    protocol: Optional[str] = setting(None, "how every validation and test pass scores a sample: null = the task's "
                                            'standard protocol; point with model.adapter.mode=p2p: published_8pose '
                                            '(8 fixed poses, accuracy over all 8 x N predictions, no voting)')


@dataclass(frozen=True)
class EvalConfig(TaskEvalConfig):
    """``eval``: the evaluation batch size and protocol (per task), split and tested checkpoint."""
    split: str = setting('test', 'split evaluated at the end of training and by `unimodal eval`')
    checkpoint: str = setting('best', 'which checkpoint the end-of-training test evaluates: best (best validation '
                                      'score; sound when validation and test differ) or last (the last epoch, as the '
                                      'published Kinetics protocol); results.json records it',
                              choices=('best', 'last'))


@dataclass(frozen=True)
class JointConfig:
    """``joint``: how a joint run interleaves its tasks' batches."""
    sampling: str = setting('round_robin', 'round_robin | weighted', choices=('round_robin', 'weighted'))
    steps_per_epoch: Optional[int] = setting(None, "null = the sum of the tasks' batches per epoch", lo=1)


#: Top-level section name -> its dataclass.
#: ``defaults``: what the layers of a resolution sit on (see :class:`RunConfig`).
DEFAULTS_CHOICES = ('task', 'engine')

SECTIONS: Dict[str, type] = {'data': DataConfig, 'model': ModelConfig, 'train': TrainConfig, 'eval': EvalConfig,
                             'joint': JointConfig}
#: Section name -> the dataclass of its per-task keys (``tasks.<name>`` holds these).
TASK_SECTIONS: Dict[str, type] = {'data': DataConfig, 'model': TaskModelConfig, 'train': TaskTrainConfig,
                                  'eval': TaskEvalConfig}


@dataclass(frozen=True)
class TaskSettings:
    """One task's per-task keys (its data, adapter, batch size, loss, ...); the shared keys stay on RunConfig."""
    data: DataConfig = field(default_factory=DataConfig)
    model: TaskModelConfig = field(default_factory=TaskModelConfig)
    train: TaskTrainConfig = field(default_factory=TaskTrainConfig)
    eval: TaskEvalConfig = field(default_factory=TaskEvalConfig)

    @property
    def eval_batch_size(self) -> int:
        return self.eval.batch_size or self.train.batch_size

    def to_dict(self) -> Dict[str, Any]:
        return {name: _section_dict(getattr(self, name), cls) for name, cls in TASK_SECTIONS.items()}


@dataclass(frozen=True)
class RunConfig:
    """A resolved run configuration (single- or joint-task); see :func:`unimodal.config.resolve_run_config`.

    ``task`` is a name, a list of names (a joint run) or ``None`` (a plug-in adapter that brings its own data).
    A joint run's per-task keys live in ``tasks`` (every task materialised); :meth:`task_settings` gives any
    task's view in either kind of run.
    """
    task: Union[None, str, List[str]] = setting(None, 'task name, or a list of names for a joint run',
                                                 expects='a task name or a list of names')
    defaults: str = setting('task', "what a config file's values are layered on: 'task' (the task's own defaults, "
                                    "for small edits) or 'engine' (the engine defaults only: complete recipes such as "
                                    "the published ones, which must not pick up a task's CPU-demo settings)",
                            choices=DEFAULTS_CHOICES)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    tasks: Dict[str, TaskSettings] = field(default_factory=dict)

    @property
    def task_names(self) -> List[str]:
        return task_names(self.task)

    @property
    def is_joint(self) -> bool:
        return len(self.task_names) > 1

    def task_settings(self, name: str) -> TaskSettings:
        """The per-task settings of ``name``: ``tasks.<name>`` in a joint run, the top-level keys otherwise."""
        if not self.is_joint:
            return TaskSettings(data=self.data, model=self.model, train=self.train, eval=self.eval)
        if name not in self.tasks:
            raise KeyError(f'the run has no task {name!r}; it trains {", ".join(self.task_names)}')
        return self.tasks[name]

    def grad_accum_steps(self, world_size: int) -> int:
        """Batches per optimiser step on ``world_size`` processes: ``train.grad_accum``, or
        ``global_batch_size / (batch_size x world_size)`` when ``train.global_batch_size`` is set."""
        t = self.train
        if t.global_batch_size is None:
            return t.grad_accum or 1
        sizes = {self.task_settings(n).train.batch_size for n in self.task_names} or {t.batch_size}
        if len(sizes) > 1:
            raise ConfigError(f'train.global_batch_size needs one batch size, but the tasks use {sorted(sizes)}; '
                              f'set train.grad_accum instead')
        per_step = sizes.pop() * world_size
        accum, rest = divmod(t.global_batch_size, per_step)
        if rest or not accum:
            raise ConfigError(f'train.global_batch_size={t.global_batch_size} is not a multiple of train.batch_size x '
                              f'processes = {per_step // world_size} x {world_size}; choose a batch size that '
                              f'divides it')
        if t.grad_accum is not None and t.grad_accum != accum:
            raise ConfigError(f'train.grad_accum={t.grad_accum} contradicts train.global_batch_size='
                              f'{t.global_batch_size} ({per_step // world_size} x {world_size} processes needs '
                              f'grad_accum {accum}); set only one of them')
        return accum

    def to_dict(self) -> Dict[str, Any]:
        """Plain YAML types, in the config file layout (what ``config.yaml`` and checkpoints store)."""
        out: Dict[str, Any] = {'task': copy.deepcopy(self.task), 'defaults': self.defaults}
        for name, cls in SECTIONS.items():
            out[name] = _section_dict(getattr(self, name), cls)
        out['tasks'] = {name: settings.to_dict() for name, settings in self.tasks.items()}
        return out


def _section_dict(obj: Any, cls: type) -> Dict[str, Any]:
    # deepcopy keeps shared references shared (dataclasses.asdict would expand them one by one)
    return {f.name: copy.deepcopy(getattr(obj, f.name)) for f in fields(cls)}


# ------------------------------------------------------------------------------------------------ lookups

def section_keys(section: str, per_task: bool = False) -> List[str]:
    """The keys of a section (or of its per-task part)."""
    return [f.name for f in fields((TASK_SECTIONS if per_task else SECTIONS)[section])]


def key_doc(section: str, key: str) -> str:
    """The one-line doc of ``<section>.<key>`` (``''`` for a key the schema does not have)."""
    cls = SECTIONS.get(section)
    return next((f.metadata.get('doc', '') for f in fields(cls) if f.name == key), '') if cls else ''


def is_free_form(section: str, key: str) -> bool:
    cls = SECTIONS.get(section)
    return cls is not None and any(f.name == key and f.metadata.get('free_form') for f in fields(cls))


def joint_rule(key: str) -> Optional[str]:
    """How a joint run merges ``train.<key>`` from its tasks' recipes (see :func:`setting`), or ``None``."""
    return next((f.metadata.get('joint') for f in fields(TrainConfig) if f.name == key), None)


def task_names(task: Any) -> List[str]:
    """Normalise ``task`` (a name, ``'a,b'`` or a list of names) to a list of names."""
    if task is None:
        return []
    items = task if isinstance(task, (list, tuple)) else [task]
    names: List[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f'task must be a name or a list of names, got {short_repr(task)}')
        names.extend(t.strip() for t in item.split(',') if t.strip())
    return names


# ------------------------------------------------------------------------------------------------ checking values

def _requirement(tp: Any, md: Mapping[str, Any]) -> str:
    """The allowed values of a key in words, e.g. ``'a positive integer or null'``."""
    args = get_args(tp) if get_origin(tp) is Union else (tp,)
    optional = type(None) in args
    inner = [a for a in args if a is not type(None)]
    if md.get('expects'):
        text = md['expects']
    elif md.get('choices') is not None:
        choices = md['choices']
        text = f'one of {", ".join(map(str, choices() if callable(choices) else choices))}'
    elif inner == [bool]:
        text = 'true or false'
    elif inner == [int]:
        lo = md.get('lo')
        text = 'a positive integer' if lo == 1 else 'a non-negative integer' if lo == 0 else 'an integer'
    elif inner == [float]:
        lo, hi, lo_open = md.get('lo'), md.get('hi'), md.get('lo_open')
        if lo is not None and hi is not None:
            text = f'a number in {"(" if lo_open else "["}{lo:g}, {hi:g}{")" if md.get("hi_open") else "]"}'
        elif lo == 0:
            text = 'a positive number' if lo_open else 'a non-negative number'
        else:
            text = 'a finite number'
    elif get_origin(inner[0]) in (list, List):
        text = f'a list of {md["length"]} numbers' if md.get('length') else 'a list'
    else:
        text = 'a string'
    return f'{text} or null' if optional else text


def _in_range(value: float, md: Mapping[str, Any]) -> bool:
    lo, hi = md.get('lo'), md.get('hi')
    if lo is not None and (value < lo or (md.get('lo_open') and value == lo)):
        return False
    return hi is None or value < hi or (value == hi and not md.get('hi_open'))


def _convert(value: Any, tp: Any, md: Mapping[str, Any]) -> Tuple[bool, Any]:
    """``(True, value)`` with ``value`` in its canonical type when it is allowed for ``tp``, else ``(False, None)``."""
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        choices = md.get('choices')
        ok = isinstance(value, int) and not isinstance(value, bool) and _in_range(value, md) \
            and (choices is None or value in (choices() if callable(choices) else choices))
        return ok, value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False, None
        return _in_range(float(value), md), float(value)
    if tp is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            return False, None
        choices = md.get('choices')
        if choices is None:
            return True, value
        return value in (choices() if callable(choices) else choices), value
    if get_origin(tp) in (list, List):
        (item,) = get_args(tp)
        if not isinstance(value, (list, tuple)) or (md.get('length') and len(value) != md['length']):
            return False, None
        out = []
        for v in value:
            ok, v = _convert(v, item, {})
            if not ok:
                return False, None
            out.append(v)
        return True, out
    raise TypeError(f'the config schema has an unsupported type {tp!r}')


def check_value(key: str, value: Any, tp: Any, md: Mapping[str, Any]) -> Any:
    """``value`` checked against its key's type and metadata; raises :class:`ConfigError` naming ``key``."""
    if md.get('free_form'):
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f'{key} must be a mapping of keyword arguments, got {short_repr(value)}')
        return copy.deepcopy(dict(value))
    args = get_args(tp) if get_origin(tp) is Union else (tp,)
    if value is None and type(None) in args:
        return None
    for option in args:
        if option is type(None):
            continue
        ok, converted = _convert(value, option, md)
        if ok:
            return converted
    hint = ''
    if isinstance(value, str) and md.get('choices') is not None:
        choices = md['choices']
        hint = suggest(value, [c for c in (choices() if callable(choices) else choices) if isinstance(c, str)])
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f'{key} must be a finite number, got {value!r}')
    raise ConfigError(f'{key} must be {_requirement(tp, md)}, got {short_repr(value)}{hint}')


def check_option(key: str, value: Any, tp: Any, *, lo: Optional[float] = None, hi: Optional[float] = None,
                 lo_open: bool = False, hi_open: bool = False, choices: Optional[Sequence[Any]] = None,
                 length: Optional[int] = None, expects: str = '') -> Any:
    """A free-form option (an adapter's, a reader's) checked like a schema key: :func:`check_value` with the limits
    of :func:`setting`, plus ``hi_open`` (the range ``[lo, hi)``) and integer ``choices``. ``key`` names it in the
    error, e.g. ``'data.options.input_len'``."""
    md = {'lo': lo, 'hi': hi, 'lo_open': lo_open, 'hi_open': hi_open, 'choices': choices, 'length': length,
          'expects': expects}
    return check_value(key, value, tp, md)


def _build_section(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f'config section {path} must be a mapping, got {short_repr(data)}')
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            raise unknown_key(path.split('.'), str(key), names, '')
    kwargs = {f.name: check_value(f'{path}.{f.name}', data[f.name], hints[f.name], f.metadata)
              for f in fields(cls) if f.name in data}
    return cls(**kwargs)


def build_run_config(data: Mapping[str, Any]) -> RunConfig:
    """A :class:`RunConfig` from a merged config mapping; every key and value is checked (missing keys take
    their defaults). :func:`unimodal.config.resolve_run_config` is the way to resolve a run's config."""
    valid = ['task', 'defaults', *SECTIONS, 'tasks']
    for key in data:
        if key not in valid:
            raise unknown_key([], str(key), valid, '')
    task = data.get('task')
    names = task_names(task)
    if isinstance(task, (list, tuple)):
        task = list(names)
    sections = {name: _build_section(cls, data.get(name), name) for name, cls in SECTIONS.items()}
    raw_tasks = data.get('tasks') or {}
    if not isinstance(raw_tasks, Mapping):
        raise ConfigError(f'tasks must map task names to per-task settings, got {short_repr(raw_tasks)}')
    if len(names) <= 1 and raw_tasks:
        raise ConfigError(f'the tasks section ({", ".join(map(str, raw_tasks))}) is for joint runs (several tasks); '
                          f'for a single task put these keys at the top level')
    extra = set(raw_tasks) - set(names)
    if extra:
        raise ConfigError(f'tasks section names {", ".join(sorted(map(str, extra)))}, which the run does not train '
                          f'(task: {", ".join(names) or "none"})')
    tasks: Dict[str, TaskSettings] = {}
    if len(names) > 1:
        for name in names:
            section = raw_tasks.get(name) or {}
            if not isinstance(section, Mapping):
                raise ConfigError(f'tasks.{name} must be a mapping of per-task settings, got {short_repr(section)}')
            try:
                tasks[name] = TaskSettings(**{s: _build_section(cls, section.get(s), s)
                                              for s, cls in TASK_SECTIONS.items()})
            except ConfigError as e:
                raise ConfigError(f'tasks.{name}: {e}') from None
    defaults = data.get('defaults', 'task')
    if defaults not in DEFAULTS_CHOICES:
        raise ConfigError(f'defaults must be one of {", ".join(DEFAULTS_CHOICES)}, got {short_repr(defaults)}')
    return RunConfig(task=task, defaults=defaults, tasks=tasks, **sections)
