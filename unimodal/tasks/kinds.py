"""Task kinds: what classification and forecasting each do differently, in one object per kind.

A kind owns its head construction, its losses (training and evaluation), its metrics meter, the score that picks
the best checkpoint, the epoch-log summary, its plot and the entries it writes into results. Tasks and adapters
name their kind (``Task.kind``, ``Adapter.head_kind``: ``'classification'`` or ``'forecast'``); :func:`get_kind`
is the one place that name becomes behaviour.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ..config.schema import TaskTrainConfig
    from .spec import TaskSpec

__all__ = ['TaskKind', 'Classification', 'Forecasting', 'get_kind', 'list_kinds']


class TaskKind(abc.ABC):
    """The behaviour of one kind of task.

    Class attributes:
        name: the kind's name (``Task.kind``, ``Adapter.head_kind``, ``TaskSpec.kind``).
        losses: the ``train.loss`` values that apply; the first is what ``auto`` means.
        head_keys: the keyword arguments the head takes from the data (``num_classes`` or ``horizon``).
        main_metric: the validation metric of the curves plot and the epoch log.
    """

    name: ClassVar[str] = ''
    losses: ClassVar[Tuple[str, ...]] = ()
    head_keys: ClassVar[Tuple[str, ...]] = ()
    main_metric: ClassVar[str] = ''

    # -------------------------------------------------------------------------------------------- config
    def check_loss(self, loss: str, key: str = 'train.loss') -> None:
        """Raise :class:`ConfigError` when ``loss`` does not apply to this kind."""
        if loss != 'auto' and loss not in self.losses:
            raise ConfigError(f'{key}={loss} does not apply to a {self.name} task (use '
                              f'{" or ".join(self.losses)})')

    def resolve_loss(self, loss: str) -> str:
        """``auto`` → this kind's loss; any other (checked) value as it is."""
        self.check_loss(loss)
        return self.losses[0] if loss == 'auto' else loss

    # -------------------------------------------------------------------------------------------- model
    @abc.abstractmethod
    def create_head(self, in_features: int, *, num_views: int = 1, view_pool: str = 'mean', series_per_view: int = 1,
                    drop_rate: float = 0., owner: str = '', **head_kwargs: Any) -> nn.Module:
        """The shared head of this kind over ``(B * num_views, in_features)`` trunk features."""

    @abc.abstractmethod
    def head_kwargs_from_data(self, train_set: Any, owner: Any, label: str) -> Dict[str, Any]:
        """The head's keyword arguments read off a training set or, failing that, ``owner``'s class attributes
        (a plug-in adapter that brings its own data)."""

    def _reject_other(self, head_kwargs: Mapping[str, Any], owner: str) -> None:
        extra = sorted(k for k, v in head_kwargs.items() if v is not None and k not in self.head_keys)
        if extra:
            who = f'{owner} is a {self.name} adapter' if owner else f'a {self.name} head'
            raise TypeError(f'{who}: {", ".join(extra)} does not apply')

    # -------------------------------------------------------------------------------------------- training
    def create_mixer(self, spec: 'TaskSpec', train: 'TaskTrainConfig') -> Any:
        """Batch mixing for this task (``None``: none)."""
        return None

    @abc.abstractmethod
    def train_loss(self, spec: 'TaskSpec', out: torch.Tensor, y: torch.Tensor, soft: Optional[torch.Tensor],
                   label_smoothing: float) -> torch.Tensor:
        """The training loss of a batch (``soft``: mixed targets from the mixer)."""

    @abc.abstractmethod
    def eval_loss_sum(self, loss: str, out: torch.Tensor, y: torch.Tensor) -> float:
        """Per-sample loss summed over the batch (no smoothing or mixing: comparable across runs)."""

    # -------------------------------------------------------------------------------------------- evaluation
    @abc.abstractmethod
    def create_meter(self, spec: 'TaskSpec') -> Any:
        """A meter (``update(out, y, loss_sum, x)``, ``reduce()``, ``compute()``) for this task."""

    def meter_input(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """What of the input batch the meter sees (forecast baselines need the window)."""
        return None

    @abc.abstractmethod
    def selection_score(self, metrics: Mapping[str, Any]) -> float:
        """Higher-is-better score that chooses the best checkpoint (comparable across tasks of a joint run)."""

    @abc.abstractmethod
    def summary(self, metrics: Mapping[str, Any]) -> str:
        """One phrase for the epoch log."""

    def split_results(self, metrics: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """``(metrics, extra)``: the scalar metrics, and the entries the kind writes beside them in results."""
        return metrics, {}

    def plot(self, name: str, split: str, metrics: Mapping[str, Any], extra: Mapping[str, Any],
             example: Optional[Mapping[str, torch.Tensor]], out_dir: Path) -> Optional[Path]:
        """Write this kind's plot of a test evaluation into ``out_dir``; return its path (``None``: no plot)."""
        return None


class Classification(TaskKind):
    """Class labels: cross-entropy or BCE (label smoothing, mixup/cutmix soft targets), top-1/top-5/mean-class
    accuracy, a confusion matrix."""

    name = 'classification'
    losses = ('ce', 'bce')
    head_keys = ('num_classes',)
    main_metric = 'top1'

    def create_head(self, in_features: int, *, num_views: int = 1, view_pool: str = 'mean', series_per_view: int = 1,
                    drop_rate: float = 0., owner: str = '', **head_kwargs: Any) -> nn.Module:
        from ..models.heads import ClassificationHead
        self._reject_other(head_kwargs, owner)
        if head_kwargs.get('num_classes') is None:
            raise TypeError('a classification head needs num_classes')
        return ClassificationHead(in_features, head_kwargs['num_classes'], num_views=num_views, view_pool=view_pool,
                                  drop_rate=drop_rate)

    def head_kwargs_from_data(self, train_set: Any, owner: Any, label: str) -> Dict[str, Any]:
        classes = getattr(train_set, 'classes', None)
        n = len(classes) if classes is not None else getattr(owner, 'num_classes', None)
        if not n:
            raise ConfigError(f'{label}: a classification plug-in needs a num_classes class attribute or a classes '
                              f'list on its training set')
        return {'num_classes': int(n)}

    def create_mixer(self, spec: 'TaskSpec', train: 'TaskTrainConfig') -> Any:
        if train.mixup <= 0 and train.cutmix <= 0:
            return None
        if spec.structured:
            raise ConfigError(f'task {spec.name}: train.mixup / train.cutmix mix whole input tensors, but this task\'s '
                              f'samples are structured ({len(spec.input_shape)} tensors); use the reader\'s own '
                              f'mixing option, or set train.mixup=0 and train.cutmix=0')
        from ..engine.mixup import MixupCutmix
        return MixupCutmix(spec.head_kwargs['num_classes'], mixup_alpha=train.mixup, cutmix_alpha=train.cutmix,
                           prob=train.mixup_prob, switch_prob=train.mixup_switch_prob,
                           label_smoothing=train.label_smoothing)

    def train_loss(self, spec: 'TaskSpec', out: torch.Tensor, y: torch.Tensor, soft: Optional[torch.Tensor],
                   label_smoothing: float) -> torch.Tensor:
        """``y``: class indices ``(B,)``, or float ``(B, C)`` soft targets from the data (a reader that mixes, e.g.
        the audio reader's per-sample mixup), smoothed like mixed one-hot targets: ``y (1 - s) + s / C``."""
        from ..engine.mixup import smooth_one_hot, soft_target_cross_entropy
        out = out.float()
        if soft is None and y.is_floating_point():
            if y.shape != out.shape:
                raise ValueError(f'task {spec.name}: soft targets from the data have shape {tuple(y.shape)}, the '
                                 f'model gives {tuple(out.shape)}')
            soft = y.float() * (1. - label_smoothing) + label_smoothing / out.shape[-1]
        if spec.loss == 'ce':
            if soft is not None:
                return soft_target_cross_entropy(out, soft)
            return F.cross_entropy(out, y.long(), label_smoothing=label_smoothing)
        target = soft if soft is not None else smooth_one_hot(y, out.shape[-1], label_smoothing)
        return F.binary_cross_entropy_with_logits(out, target)

    def eval_loss_sum(self, loss: str, out: torch.Tensor, y: torch.Tensor) -> float:
        out = out.float()
        if loss == 'ce':
            return float(F.cross_entropy(out, y.long(), reduction='sum'))
        from ..engine.mixup import smooth_one_hot
        target = smooth_one_hot(y, out.shape[-1])
        return float(F.binary_cross_entropy_with_logits(out, target, reduction='none').mean(-1).sum())

    def create_meter(self, spec: 'TaskSpec') -> Any:
        from ..engine.metrics import ClassificationMeter
        classes = spec.metric_info.get('classes')
        n = spec.head_kwargs.get('num_classes') or (len(classes) if classes else None)
        if not n:
            raise ValueError('classification metrics need num_classes or metric_info["classes"]')
        return ClassificationMeter(n, classes)

    def selection_score(self, metrics: Mapping[str, Any]) -> float:
        """Top-1 as a fraction."""
        return metrics['top1'] / 100.

    def summary(self, metrics: Mapping[str, Any]) -> str:
        return f'top1 {metrics["top1"]:.2f}% loss {metrics["loss"]:.4f}'

    def split_results(self, metrics: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        metrics = dict(metrics)
        extra = {}
        if 'confusion_matrix' in metrics:
            extra['confusion_matrix'] = metrics.pop('confusion_matrix')
            extra['classes'] = metrics.pop('classes', None)
        return metrics, extra

    def plot(self, name: str, split: str, metrics: Mapping[str, Any], extra: Mapping[str, Any],
             example: Optional[Mapping[str, torch.Tensor]], out_dir: Path) -> Optional[Path]:
        if extra.get('confusion_matrix') is None:
            return None
        from ..engine.plots import plot_confusion
        return plot_confusion(extra['confusion_matrix'], extra.get('classes'), Path(out_dir) / f'confusion_{name}.png',
                              title=f'{name} {split}: top-1 {metrics["top1"]:.1f}%')


class Forecasting(TaskKind):
    """Future values ``(B, H, N)``: MSE with non-finite targets masked, MSE/MAE per step and in physical units
    beside the persistence and seasonal-naive baselines."""

    name = 'forecast'
    losses = ('mse',)
    head_keys = ('horizon',)
    main_metric = 'mse'

    def create_head(self, in_features: int, *, num_views: int = 1, view_pool: str = 'mean', series_per_view: int = 1,
                    drop_rate: float = 0., owner: str = '', **head_kwargs: Any) -> nn.Module:
        from ..models.heads import ForecastHead
        self._reject_other(head_kwargs, owner)
        if head_kwargs.get('horizon') is None:
            raise TypeError('a forecast head needs horizon')
        return ForecastHead(in_features, head_kwargs['horizon'], num_views=num_views, series_per_view=series_per_view,
                            drop_rate=drop_rate)

    def head_kwargs_from_data(self, train_set: Any, owner: Any, label: str) -> Dict[str, Any]:
        horizon = getattr(train_set, 'horizon', None) or getattr(owner, 'horizon', None)
        if not horizon:
            raise ConfigError(f'{label}: a forecasting plug-in needs a horizon class attribute or dataset field')
        return {'horizon': int(horizon)}

    def train_loss(self, spec: 'TaskSpec', out: torch.Tensor, y: torch.Tensor, soft: Optional[torch.Tensor],
                   label_smoothing: float) -> torch.Tensor:
        out, y = out.float(), y.float()
        mask = torch.isfinite(y)
        if not bool(mask.all()):
            return F.mse_loss(out[mask], y[mask])
        return F.mse_loss(out, y)

    def eval_loss_sum(self, loss: str, out: torch.Tensor, y: torch.Tensor) -> float:
        err = (out.float() - y.float()) ** 2
        err = torch.where(torch.isfinite(err), err, torch.zeros_like(err))
        return float(err.flatten(1).mean(1).sum())

    def create_meter(self, spec: 'TaskSpec') -> Any:
        from ..engine.metrics import ForecastMeter
        horizon = spec.head_kwargs.get('horizon')
        if horizon is None:
            raise ValueError('forecast metrics need the horizon')
        info = spec.metric_info
        return ForecastMeter(horizon, phys_scale=info.get('phys_scale', info.get('scale', 1.0)),
                             phys_offset=info.get('phys_offset', 0.0), period=info.get('period'))

    def meter_input(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        return x

    def selection_score(self, metrics: Mapping[str, Any]) -> float:
        """Skill over persistence ``1 - mse / mse_persistence`` when the baseline exists (comparable across tasks
        in joint runs), else ``-mse``."""
        base = metrics.get('baselines', {}).get('persistence')
        if base and base.get('mse', 0) > 0:
            return 1. - metrics['mse'] / base['mse']
        return -metrics['mse']

    def summary(self, metrics: Mapping[str, Any]) -> str:
        return f'mse {metrics["mse"]:.4g} mae {metrics["mae"]:.4g}'

    def plot(self, name: str, split: str, metrics: Mapping[str, Any], extra: Mapping[str, Any],
             example: Optional[Mapping[str, torch.Tensor]], out_dir: Path) -> Optional[Path]:
        if example is None:
            return None
        from ..engine.plots import plot_forecast
        return plot_forecast(example, Path(out_dir) / f'forecast_{name}.png',
                             title=f'{name} {split}: forecast vs truth (first window; mse {metrics["mse"]:.4g})')


_KINDS: Dict[str, TaskKind] = {kind.name: kind for kind in (Classification(), Forecasting())}


def get_kind(name: str) -> TaskKind:
    """The kind object for ``name`` (``'classification'`` or ``'forecast'``)."""
    try:
        return _KINDS[name]
    except (KeyError, TypeError):
        raise ValueError(f'unknown task kind {name!r}; expected one of {", ".join(_KINDS)}') from None


def list_kinds() -> List[str]:
    return list(_KINDS)
