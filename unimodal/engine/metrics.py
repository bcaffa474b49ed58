"""Metrics that reduce exactly across ranks: sums and counts are accumulated per rank, then all-reduced.

* :class:`ClassificationMeter`: top-1, top-5 (with ≥ 5 classes), mean per-class accuracy, confusion matrix, loss.
* :class:`ForecastMeter`: MSE / MAE on the data's scale and in physical units, per horizon step and averaged,
  beside the persistence and seasonal-naive baselines on the same windows.

A task's kind (:mod:`unimodal.tasks.kinds`) creates its meter and scores its metrics.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch

from .distributed import all_reduce_sum

_logger = logging.getLogger(__name__)

__all__ = ['ClassificationMeter', 'ForecastMeter']


class ClassificationMeter:
    """Accumulates a confusion matrix, top-5 hits and the loss sum."""

    def __init__(self, num_classes: int, classes: Optional[Sequence[str]] = None) -> None:
        self.num_classes = num_classes
        self.classes = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # [true, predicted]
        self.top5 = torch.zeros((), dtype=torch.int64)
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.int64)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor, loss_sum: Optional[float] = None,
               x: Optional[torch.Tensor] = None) -> None:
        logits = logits.detach().float().cpu()
        target = target.detach().long().cpu().view(-1)
        pred = logits.argmax(-1)
        idx = target * self.num_classes + pred
        self.confusion += torch.bincount(idx, minlength=self.num_classes ** 2).view(self.num_classes, -1)
        k = min(5, self.num_classes)
        self.top5 += (logits.topk(k, dim=-1).indices == target[:, None]).any(-1).sum()
        self.count += target.numel()
        if loss_sum is not None:
            self.loss_sum += float(loss_sum)

    def reduce(self) -> None:
        """Sum the state over ranks (call once, on every rank)."""
        self.confusion = all_reduce_sum(self.confusion)
        self.top5 = all_reduce_sum(self.top5)
        self.loss_sum = all_reduce_sum(self.loss_sum)
        self.count = all_reduce_sum(self.count)

    def compute(self, with_confusion: bool = True) -> Dict[str, Any]:
        n = int(self.count)
        cm = self.confusion
        correct = int(cm.diag().sum())
        per_class_total = cm.sum(1)
        seen = per_class_total > 0
        per_class = cm.diag().double()[seen] / per_class_total[seen].double()
        out: Dict[str, Any] = {
            'top1': 100. * correct / max(n, 1),
            'mean_class_acc': 100. * float(per_class.mean()) if bool(seen.any()) else 0.,
            'loss': float(self.loss_sum) / max(n, 1),
            'num_samples': n,
        }
        if self.num_classes >= 5:
            out['top5'] = 100. * int(self.top5) / max(n, 1)
        if with_confusion:
            out['confusion_matrix'] = cm.tolist()
            out['classes'] = self.classes
        return out


def _load_baselines() -> Optional[Dict[str, Callable]]:
    try:
        from ..models.baselines import persistence_forecast, seasonal_naive_forecast
    except ImportError as e:
        _logger.warning('forecast baselines unavailable (%s); reporting the model only', e)
        return None
    return {'persistence': persistence_forecast, 'seasonal_naive': seasonal_naive_forecast}


class _ErrorSums:
    """Squared and absolute error sums per horizon step, on the data scale and in physical units."""

    def __init__(self, horizon: int) -> None:
        self.sq = torch.zeros(horizon, dtype=torch.float64)
        self.ab = torch.zeros(horizon, dtype=torch.float64)
        self.sq_phys = torch.zeros(horizon, dtype=torch.float64)
        self.ab_phys = torch.zeros(horizon, dtype=torch.float64)
        self.count = torch.zeros(horizon, dtype=torch.int64)

    def add(self, pred: torch.Tensor, target: torch.Tensor, scale: Union[float, torch.Tensor]) -> None:
        diff = (pred.double() - target.double())
        valid = torch.isfinite(diff)
        diff = torch.where(valid, diff, torch.zeros_like(diff))
        dims = [d for d in range(diff.dim()) if d != 1]  # (B, H, N): reduce all but the horizon
        self.sq += (diff ** 2).sum(dims)
        self.ab += diff.abs().sum(dims)
        phys = diff * scale  # physical = value * scale + offset: the offset cancels in a difference
        self.sq_phys += (phys ** 2).sum(dims)
        self.ab_phys += phys.abs().sum(dims)
        self.count += valid.sum(dims)

    def reduce(self) -> None:
        for name in ('sq', 'ab', 'sq_phys', 'ab_phys', 'count'):
            setattr(self, name, all_reduce_sum(getattr(self, name)))

    def compute(self, per_step: bool = True) -> Dict[str, Any]:
        n = self.count.clamp_min(1).double()
        total = float(self.count.sum().clamp_min(1))
        out: Dict[str, Any] = {
            'mse': float(self.sq.sum()) / total, 'mae': float(self.ab.sum()) / total,
            'mse_phys': float(self.sq_phys.sum()) / total, 'mae_phys': float(self.ab_phys.sum()) / total,
        }
        if per_step:
            out.update({
                'mse_per_step': (self.sq / n).tolist(), 'mae_per_step': (self.ab / n).tolist(),
                'mse_phys_per_step': (self.sq_phys / n).tolist(), 'mae_phys_per_step': (self.ab_phys / n).tolist(),
            })
        return out


class ForecastMeter:
    """MSE/MAE of ``(B, H, N)`` forecasts, per step and averaged, plus baselines on the same windows.

    Args:
        horizon: forecast steps H.
        phys_scale: physical = value * phys_scale + phys_offset (float or ``(N,)`` tensor), e.g. 0.1 for the
            ×10-stored Global Temp/Wind values.
        phys_offset: see ``phys_scale`` (cancels in errors; recorded for completeness).
        period: season length in steps for the seasonal-naive baseline (``None``: skipped).
    """

    def __init__(self, horizon: int, phys_scale: Union[float, torch.Tensor] = 1.0,
                 phys_offset: Union[float, torch.Tensor] = 0.0, period: Optional[int] = None) -> None:
        self.horizon = horizon
        self.scale = phys_scale.double().cpu() if torch.is_tensor(phys_scale) else float(phys_scale)
        self.offset = phys_offset
        self.period = period
        self.model = _ErrorSums(horizon)
        self.baselines: Dict[str, _ErrorSums] = {}
        self._baseline_fns = _load_baselines()
        self._baseline_failed = False
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.samples = torch.zeros((), dtype=torch.int64)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor, loss_sum: Optional[float] = None,
               x: Optional[torch.Tensor] = None) -> None:
        pred = pred.detach().float().cpu()
        target = target.detach().float().cpu()
        if pred.shape != target.shape:
            raise ValueError(f'forecast shape {tuple(pred.shape)} does not match target {tuple(target.shape)}')
        self.model.add(pred, target, self.scale)
        self.samples += target.shape[0]
        if loss_sum is not None:
            self.loss_sum += float(loss_sum)
        if x is not None and self._baseline_fns and not self._baseline_failed:
            self._update_baselines(x.detach().float().cpu(), target)

    def _update_baselines(self, x: torch.Tensor, target: torch.Tensor) -> None:
        try:
            preds = {'persistence': self._baseline_fns['persistence'](x, self.horizon)}
            if self.period and x.shape[1] >= self.period:
                preds['seasonal_naive'] = self._baseline_fns['seasonal_naive'](x, self.horizon, self.period)
            for name, p in preds.items():
                if p.shape != target.shape:
                    raise ValueError(f'{name} baseline gives {tuple(p.shape)} for target {tuple(target.shape)}')
                self.baselines.setdefault(name, _ErrorSums(self.horizon)).add(p, target, self.scale)
        except Exception as e:  # baselines are context; never fail an evaluation over them, but say so
            _logger.warning('forecast baselines skipped: %s', e)
            self._baseline_failed = True
            self.baselines.clear()

    def reduce(self) -> None:
        self.model.reduce()
        # every rank must take part in the same collectives: agree on which baselines exist
        from .distributed import all_gather_objects
        names_per_rank = all_gather_objects(sorted(self.baselines) if not self._baseline_failed else None)
        if any(n is None for n in names_per_rank) or len({tuple(n) for n in names_per_rank}) > 1:
            self.baselines.clear()
        else:
            for name in sorted(self.baselines):
                self.baselines[name].reduce()
        self.loss_sum = all_reduce_sum(self.loss_sum)
        self.samples = all_reduce_sum(self.samples)

    def compute(self, with_confusion: bool = True) -> Dict[str, Any]:
        out = self.model.compute()
        out['loss'] = float(self.loss_sum) / max(int(self.samples), 1)
        out['num_samples'] = int(self.samples)
        if self.baselines:
            out['baselines'] = {name: sums.compute(per_step=False) for name, sums in sorted(self.baselines.items())}
            if self.period:
                out['baselines']['period'] = self.period
        return out
