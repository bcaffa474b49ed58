"""Optimisers and per-update learning-rate schedules from timm's factories, and weight EMA.

Parameter groups (weight decay off for biases, norms, 1-D and ``no_weight_decay()`` parameters; layer-wise lr
decay as each group's ``lr_scale``) follow timm's rules, over a task model whose adapters feed the trunk's stem and
whose heads sit on top of it. The layers come from the trunk's ``group_matcher``, so a bare trunk gets the same
scales from ``timm.optim.create_optimizer_v2(trunk, opt, layer_decay=d)``.
"""
from __future__ import annotations

import difflib
import fnmatch
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

_logger = logging.getLogger(__name__)

__all__ = ['SCHEDULES', 'list_optimizers', 'param_groups', 'create_optimizer', 'StepwiseSchedule', 'create_schedule',
           'create_ema']

SCHEDULES = ('cosine', 'step', 'constant')


def list_optimizers() -> List[str]:
    """Names valid as ``train.optimizer``: timm's optimizer registry (``adamw``, ``adam``, ``sgd``, ``lamb``,
    ``lion``, ...; a ``lookahead_`` prefix wraps any of them)."""
    from timm.optim import list_optimizers as timm_list_optimizers
    return list(timm_list_optimizers())


def _layer_scales(model: nn.Module, layer_decay: float) -> Dict[str, float]:
    """Per-parameter lr multipliers ``layer_decay ** (top - layer)``, layers as timm numbers them from the trunk's
    ``group_matcher`` (UniRepLKNet: the published 14 groups; final norm at the top). Adapters share the stem's layer
    (they feed it); heads sit on top (full lr). With a frozen trunk there is nothing to decay: all scales are 1."""
    from timm.models import group_parameters
    trunk, prefix = (model.trunk, 'trunk.') if hasattr(model, 'trunk') else (model, '')
    if not callable(getattr(trunk, 'group_matcher', None)):
        raise ValueError(f'layer decay needs a trunk with a timm group_matcher(); {type(trunk).__name__} has none')
    if not any(p.requires_grad for p in trunk.parameters()):
        _logger.info('layer decay ignored: the trunk is frozen (adapters and heads train at the full lr)')
        return {}
    trunk_layers = group_parameters(trunk, trunk.group_matcher(coarse=False), reverse=True)
    top = max(trunk_layers.values())
    scales: Dict[str, float] = {}
    for name, _ in model.named_parameters():
        if name.startswith(prefix) and name[len(prefix):] in trunk_layers:
            layer = trunk_layers[name[len(prefix):]]
        elif name.startswith(('adapter.', 'adapters.')):
            layer = 0
        else:
            layer = top
        scales[name] = layer_decay ** (top - layer)
    _logger.info('layer-wise lr decay %g over %d layers: stem and adapters x%.3g, heads x1', layer_decay, top + 1,
                 layer_decay ** top)
    return scales


def _no_weight_decay_patterns(model: nn.Module) -> List[str]:
    """Every submodule's ``no_weight_decay()`` names (timm allows wildcards), prefixed with the submodule's path."""
    patterns = []
    for mod_name, module in model.named_modules():
        nwd = getattr(module, 'no_weight_decay', None)
        if callable(nwd):
            patterns.extend(f'{mod_name}.{n}' if mod_name else n for n in nwd())
    return patterns


def param_groups(model: nn.Module, weight_decay: float, layer_decay: Optional[float] = None) -> List[Dict[str, Any]]:
    """Trainable parameters split into decayed (weights) and non-decayed (biases, norms, 1-D, ``no_weight_decay``),
    and with ``layer_decay`` (0 < d < 1) further by layer; every group carries its ``lr_scale``
    (see :func:`_layer_scales`), which the schedule applies."""
    patterns = _no_weight_decay_patterns(model)
    exact = {p for p in patterns if not any(c in p for c in '*?[')}
    globs = [p for p in patterns if p not in exact]
    scales = _layer_scales(model, layer_decay) if layer_decay is not None and layer_decay != 1 else {}
    groups: Dict[Tuple[float, bool], Dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decayed = not (p.ndim <= 1 or name.endswith('.bias') or name in exact
                       or any(fnmatch.fnmatch(name, g) for g in globs))
        scale = scales.get(name, 1.0)
        group = groups.setdefault((scale, decayed), {'params': [], 'weight_decay': weight_decay if decayed else 0.0,
                                                     'lr_scale': scale})
        group['params'].append(p)
    # top layers first, decayed before non-decayed (without layer decay: the decayed group, then the rest; kept
    # even with weight_decay 0, so a checkpoint's optimizer state always matches)
    return [groups[k] for k in sorted(groups, key=lambda k: (-k[0], not k[1]))]


def create_optimizer(
        model: nn.Module,
        *,
        optimizer: str,
        lr: float,
        weight_decay: float,
        betas: Sequence[float] = (0.9, 0.999),
        momentum: float = 0.9,
        layer_decay: Optional[float] = None,
) -> torch.optim.Optimizer:
    """Any timm optimizer (:func:`list_optimizers`) over :func:`param_groups` of ``model``, via
    ``timm.optim.create_optimizer_v2``.

    ``adam`` is ``torch.optim.Adam`` (weight decay as L2 on the gradient, as in the audio recipe), ``adamw``
    decoupled, ``sgd`` Nesterov momentum. Each group's lr is ``lr`` until the schedule applies its ``lr_scale``
    (timm's convention).

    Args:
        model: the model (a task model with ``trunk`` / ``adapter(s)`` / heads, or a bare timm trunk).
        optimizer: optimizer name.
        lr: base learning rate.
        weight_decay: weight decay of the decayed groups.
        betas: Adam-family betas (dropped for optimizers without them).
        momentum: momentum (used by optimizers that have it).
        layer_decay: layer-wise lr decay factor in (0, 1]; ``None`` or 1 disables it.

    Raises:
        ValueError: unknown optimizer name (closest names suggested), or no trainable parameters.
    """
    from timm.optim import create_optimizer_v2
    name = optimizer.lower()
    known = list_optimizers()
    if name not in known and not (name.startswith('lookahead_') and name[len('lookahead_'):] in known):
        close = difflib.get_close_matches(name, known, n=3)
        raise ValueError(f'unknown optimizer {optimizer!r}' + (f' (did you mean {", ".join(close)}?)' if close else
                                                               '; see unimodal.engine.optim.list_optimizers()'))
    groups = param_groups(model, float(weight_decay), None if layer_decay is None else float(layer_decay))
    if not groups:
        raise ValueError('the model has no trainable parameters')
    return create_optimizer_v2(groups, opt=name, lr=float(lr), weight_decay=float(weight_decay),
                               momentum=float(momentum), betas=tuple(float(b) for b in betas))


class StepwiseSchedule:
    """A timm scheduler (``t_in_epochs=False``) stepped once per optimiser update, counting the updates itself.

    Warm-up is linear from ``lr / W`` at the first update to ``lr`` at update ``W - 1``; timm's starts at
    ``warmup_lr_init`` and reaches ``lr`` one update later, so it is done here to keep the recorded lr curves.
    Every group's lr is scaled by its ``lr_scale`` (layer decay; timm's convention, also for the cosine floor).
    The state is the update count (``weights_only``-safe); the timm scheduler is rebuilt from the config.

    Args:
        scheduler: a timm scheduler over ``t`` = the update index, with ``warmup_t = warmup_steps``.
        warmup_steps: warm-up length W in updates.
        total_steps: updates in the run (recorded in the state).
    """

    def __init__(self, scheduler: Any, warmup_steps: int, total_steps: int) -> None:
        self.scheduler = scheduler
        self.optimizer = scheduler.optimizer
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.step_count = 0
        self._apply()

    def _apply(self) -> None:
        s = self.step_count
        if s < self.warmup_steps:
            for group, base in zip(self.optimizer.param_groups, self.scheduler.base_values):
                group['lr'] = base * (s + 1) / self.warmup_steps * group.get('lr_scale', 1.0)
        else:
            self.scheduler.step_update(s)

    def step(self) -> None:
        """Advance to the next optimiser update."""
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> List[float]:
        return [g['lr'] for g in self.optimizer.param_groups]

    def state_dict(self) -> Dict[str, int]:
        return {'step_count': self.step_count, 'total_steps': self.total_steps}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.step_count = int(state['step_count'])
        self._apply()


def create_schedule(
        optimizer: torch.optim.Optimizer,
        *,
        schedule: str,
        epochs: int,
        steps_per_epoch: int,
        warmup_epochs: float = 0.,
        min_lr: float = 0.,
        step_size: int = 1,
        gamma: float = 0.1,
        step_start: int = 0,
) -> StepwiseSchedule:
    """Per-update learning rate after a linear warm-up: ``cosine`` to ``min_lr`` (timm ``CosineLRScheduler``,
    over the updates after the warm-up), ``step`` (timm ``MultiStepLRScheduler``: ``lr * gamma ** n`` with ``n``
    the number of epochs ``step_start``, ``step_start + step_size``, ... reached; the audio recipe's
    ``MultiStepLR(range(5, 1000), 0.85)`` per epoch is ``step_start=5, gamma=0.85``) or ``constant``.

    Args:
        optimizer: from :func:`create_optimizer` (or any optimizer; groups may carry ``lr_scale``).
        schedule: one of :data:`SCHEDULES`.
        epochs: total epochs.
        steps_per_epoch: optimiser updates per epoch.
        warmup_epochs: warm-up length (fractional allowed; rounded to whole updates).
        min_lr: cosine floor (times each group's ``lr_scale``).
        step_size, gamma, step_start: the step schedule (epochs counted from 0).
    """
    from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler, StepLRScheduler
    if schedule not in SCHEDULES:
        raise ValueError(f'unknown schedule {schedule!r}; expected one of {", ".join(SCHEDULES)}')
    steps_per_epoch = max(1, int(steps_per_epoch))
    total = steps_per_epoch * int(epochs)
    warmup = int(round(float(warmup_epochs) * steps_per_epoch))
    common = dict(warmup_t=warmup, t_in_epochs=False)
    if schedule == 'cosine':
        if total - warmup <= 1:
            # timm's own warning ("t_initial = t_mul = eta_mul = 1") does not say what the setting is
            _logger.warning('the warm-up (%d updates) fills the whole run (%d updates): the cosine phase never '
                            'starts; lower train.warmup_epochs or train more epochs', warmup, total)
        timm_log = logging.getLogger('timm.scheduler.cosine_lr')
        level = timm_log.level
        timm_log.setLevel(logging.ERROR)
        try:
            sched = CosineLRScheduler(optimizer, t_initial=max(1, total - warmup), lr_min=float(min_lr),
                                      warmup_prefix=True, **common)
        finally:
            timm_log.setLevel(level)
    elif schedule == 'step':
        # timm applies milestone m at update m - 1; epoch e's first update is e * steps_per_epoch (epochs + 1: the
        # lr after the last update, which the run logs)
        milestones = [e * steps_per_epoch + 1 for e in range(int(step_start), int(epochs) + 1, int(step_size))]
        sched = MultiStepLRScheduler(optimizer, decay_t=milestones, decay_rate=float(gamma), warmup_prefix=False,
                                     **common)
    else:  # timm's 'constant': a step schedule that never decays
        sched = StepLRScheduler(optimizer, decay_t=1, decay_rate=1., **common)
    return StepwiseSchedule(sched, warmup_steps=warmup, total_steps=total)


def create_ema(model: nn.Module, decay: float, device: Optional[torch.device] = None) -> nn.Module:
    """timm's ``ModelEmaV3`` (a deep copy updated after each optimiser step; ``.module`` is the averaged model)."""
    from timm.utils import ModelEmaV3
    return ModelEmaV3(model, decay=decay, device=device)
