"""Optimisers, per-step learning-rate schedules with warm-up, and weight EMA."""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

_logger = logging.getLogger(__name__)

__all__ = ['param_groups', 'create_optimizer', 'WarmupSchedule', 'create_schedule', 'create_ema']


def _trunk_layer_scales(model: nn.Module, layer_decay: float) -> Dict[str, float]:
    """Per-parameter lr multipliers for layer-wise lr decay: ``layer_decay ** (top - layer)``.

    Layers come from the trunk's ``layer_id`` (UniRepLKNet: the published 14 groups, stem ``decay**13``, final
    norm at full lr) or else its timm ``group_matcher`` (one layer per block). Adapters share the stem's layer
    (they feed it); heads sit on top (full lr). With a frozen trunk there is nothing to decay: all scales are 1.
    """
    trunk = getattr(model, 'trunk', None)
    if trunk is None or not (callable(getattr(trunk, 'layer_id', None))
                             or callable(getattr(trunk, 'group_matcher', None))):
        raise ValueError(f'train.layer_decay needs a task model whose trunk has layer_id() or a timm '
                         f'group_matcher(); {type(model).__name__} has neither')
    if not any(p.requires_grad for p in trunk.parameters()):
        _logger.info('train.layer_decay ignored: the trunk is frozen (adapters and heads train at the full lr)')
        return {}
    if callable(getattr(trunk, 'layer_id', None)):
        trunk_layers = {n: trunk.layer_id(n) for n, _ in trunk.named_parameters()}
        top = max(trunk_layers.values())
    else:
        from timm.models import group_parameters
        trunk_layers = group_parameters(trunk, trunk.group_matcher(coarse=False), reverse=True)
        top = max(trunk_layers.values()) + 1  # heads (and unmatched parameters) above the trunk's last layer
    scales: Dict[str, float] = {}
    for name, _ in model.named_parameters():
        if name.startswith('trunk.'):
            layer = trunk_layers.get(name[len('trunk.'):], top)
        elif name.startswith(('adapter.', 'adapters.')):
            layer = 0
        else:
            layer = top
        scales[name] = layer_decay ** (top - layer)
    _logger.info('layer-wise lr decay %g over %d layers: stem and adapters x%.3g, heads x1', layer_decay, top + 1,
                 layer_decay ** top)
    return scales


def param_groups(model: nn.Module, weight_decay: float, layer_decay: Optional[float] = None) -> List[Dict[str, Any]]:
    """Trainable parameters split into decayed (weights) and non-decayed (biases, norms, 1-D, ``no_weight_decay``),
    and with ``layer_decay`` (0 < d < 1) further by layer; every group carries its ``lr_scale``
    (see :func:`_trunk_layer_scales`)."""
    skip = set()
    for mod_name, module in model.named_modules():
        nwd = getattr(module, 'no_weight_decay', None)
        if callable(nwd):
            skip.update(f'{mod_name}.{n}' if mod_name else n for n in nwd())
    scales = _trunk_layer_scales(model, layer_decay) if layer_decay is not None and layer_decay != 1 else {}
    groups: Dict[Tuple[float, bool], Dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decayed = not (p.ndim <= 1 or name.endswith('.bias') or name in skip)
        scale = scales.get(name, 1.0)
        group = groups.setdefault((scale, decayed), {'params': [], 'weight_decay': weight_decay if decayed else 0.0,
                                                     'lr_scale': scale})
        group['params'].append(p)
    # top layers first, decayed before non-decayed (without layer decay: the decayed group, then the rest; kept
    # even with weight_decay 0, so a checkpoint's optimizer state always matches)
    return [groups[k] for k in sorted(groups, key=lambda k: (-k[0], not k[1]))]


def create_optimizer(model: nn.Module, train_cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD over the trainable parameters of ``model`` (with ``train_cfg['layer_decay']``: each
    group's lr is ``lr * lr_scale``, and the schedule scales that)."""
    layer_decay = train_cfg.get('layer_decay')
    groups = param_groups(model, float(train_cfg['weight_decay']), None if layer_decay is None else float(layer_decay))
    if not groups:
        raise ValueError('the model has no trainable parameters')
    name = train_cfg['optimizer']
    lr = float(train_cfg['lr'])
    for group in groups:
        group['lr'] = lr * group['lr_scale']
    betas = tuple(float(b) for b in train_cfg['betas'])
    if name == 'adamw':
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    if name == 'adam':
        # Adam's weight decay is L2 added to the gradient (the audio recipe's wd 5e-7 is this kind).
        return torch.optim.Adam(groups, lr=lr, betas=betas)
    if name == 'sgd':
        return torch.optim.SGD(groups, lr=lr, momentum=float(train_cfg['momentum']), nesterov=True)
    raise ValueError(f'unknown optimizer {name!r}')


class WarmupSchedule:
    """Per-step learning rate: linear warm-up, then cosine / step / constant.

    Stateless apart from the step counter, so its ``state_dict`` is two ints (``weights_only``-safe).

    Args:
        optimizer: its groups' ``initial_lr`` is set from their current ``lr``.
        kind: ``cosine``, ``step`` or ``constant``.
        steps_per_epoch: optimiser steps per epoch.
        epochs: total epochs.
        warmup_epochs: warm-up length (fractional allowed).
        min_lr: cosine floor.
        step_size, gamma, step_start: step schedule: ``lr * gamma ** ((epoch - step_start) // step_size + 1)``
            once ``epoch >= step_start`` (epochs counted from 0).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, steps_per_epoch: int, epochs: int,
                 warmup_epochs: float = 0., min_lr: float = 0., step_size: int = 1, gamma: float = 0.1,
                 step_start: int = 0) -> None:
        self.optimizer = optimizer
        self.kind = kind
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = self.steps_per_epoch * epochs
        self.warmup_steps = int(round(warmup_epochs * self.steps_per_epoch))
        self.min_lr = min_lr
        self.step_size = step_size
        self.gamma = gamma
        self.step_start = step_start
        self.step_count = 0
        for group in optimizer.param_groups:
            group.setdefault('initial_lr', group['lr'])
        self._apply()

    def factor(self, step: int, base_lr: float, lr_scale: float = 1.0) -> float:
        """The lr at ``step`` of a group whose lr is ``base_lr``; its cosine floor is ``min_lr * lr_scale`` (layer
        decay scales the whole curve)."""
        if self.warmup_steps and step < self.warmup_steps:
            return base_lr * (step + 1) / self.warmup_steps
        if self.kind == 'constant':
            return base_lr
        if self.kind == 'step':
            epoch = step // self.steps_per_epoch
            if epoch < self.step_start:
                return base_lr
            return base_lr * self.gamma ** ((epoch - self.step_start) // self.step_size + 1)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        floor = self.min_lr * lr_scale
        return floor + 0.5 * (base_lr - floor) * (1 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group['lr'] = self.factor(self.step_count, group['initial_lr'], group.get('lr_scale', 1.0))

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> List[float]:
        return [g['lr'] for g in self.optimizer.param_groups]

    def state_dict(self) -> Dict[str, int]:
        return {'step_count': self.step_count, 'total_steps': self.total_steps}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.step_count = int(state['step_count'])
        self._apply()


def create_schedule(optimizer: torch.optim.Optimizer, train_cfg: Mapping[str, Any], steps_per_epoch: int) -> WarmupSchedule:
    return WarmupSchedule(optimizer, train_cfg['schedule'], steps_per_epoch, int(train_cfg['epochs']),
                          warmup_epochs=float(train_cfg['warmup_epochs']), min_lr=float(train_cfg['min_lr']),
                          step_size=int(train_cfg['step_size']), gamma=float(train_cfg['gamma']),
                          step_start=int(train_cfg['step_start']))


def create_ema(model: nn.Module, decay: float, device: Optional[torch.device] = None) -> nn.Module:
    """timm's ``ModelEmaV3`` (a deep copy updated after each optimiser step; ``.module`` is the averaged model)."""
    from timm.utils import ModelEmaV3
    return ModelEmaV3(model, decay=decay, device=device)
