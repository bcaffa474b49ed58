"""Task heads shared by every modality: classification (with view pooling) and forecasting.

Both consume the trunk's pooled, normed features ``(B * V, F)`` (``trunk.forward_head(x, pre_logits=True)``)
where ``V`` is the adapter's ``num_views``.
"""
from __future__ import annotations

from typing import Any, Iterable, Tuple

import torch
from torch import nn
from timm.layers import trunc_normal_

__all__ = ['ClassificationHead', 'ForecastHead', 'LinearSkipForecastHead', 'create_head']

_VIEW_POOLS = ('concat', 'mean', 'max')


def _init_linear(fc: nn.Linear) -> None:
    trunc_normal_(fc.weight, std=.02)
    nn.init.zeros_(fc.bias)


class ClassificationHead(nn.Module):
    """View pooling → LayerNorm → dropout → Linear.

    Args:
        in_features: per-view feature width F.
        num_classes: output classes.
        num_views: views per sample V (1 for single-view modalities).
        view_pool: ``'concat'`` (V·F features, the published P2P head), ``'mean'`` or ``'max'``.
        drop_rate: dropout before the classifier.
    """

    def __init__(self, in_features: int, num_classes: int, num_views: int = 1, view_pool: str = 'mean',
                 drop_rate: float = 0.) -> None:
        super().__init__()
        if view_pool not in _VIEW_POOLS:
            raise ValueError(f'view_pool must be one of {", ".join(map(str, _VIEW_POOLS))}, got {view_pool!r}')
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        self.num_views = num_views
        self.view_pool = view_pool
        self.num_classes = num_classes
        width = in_features * num_views if view_pool == 'concat' else in_features
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(width, num_classes)
        _init_linear(self.fc)

    def pool_views(self, x: torch.Tensor) -> torch.Tensor:
        """``(B * V, F)`` → ``(B, F')`` by the configured view pooling."""
        if self.num_views == 1:
            return x
        x = x.reshape(-1, self.num_views, x.shape[-1])
        if self.view_pool == 'concat':
            return x.flatten(1)
        if self.view_pool == 'mean':
            return x.mean(1)
        return x.amax(1)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.norm(self.pool_views(x)))
        return x if pre_logits else self.fc(x)


class ForecastHead(nn.Module):
    """Per-view linear forecaster: ``(B * V, F)`` → ``(B, horizon, V * series_per_view)``.

    With one view per series (the published layout) each series' own features forecast its horizon;
    with one view holding every series (``series_per_view = N``) one Linear predicts ``horizon × N``.
    """

    def __init__(self, in_features: int, horizon: int, num_views: int = 1, series_per_view: int = 1,
                 drop_rate: float = 0.) -> None:
        super().__init__()
        if horizon < 1:
            raise ValueError(f'horizon must be >= 1, got {horizon}')
        self.horizon = horizon
        self.num_views = num_views
        self.series_per_view = series_per_view
        self.norm = nn.LayerNorm(in_features, eps=1e-6)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, horizon * series_per_view)
        _init_linear(self.fc)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.norm(x))
        if pre_logits:
            return x
        y = self.fc(x)  # (B*V, H*S)
        y = y.reshape(-1, self.num_views, self.horizon, self.series_per_view)
        return y.permute(0, 2, 1, 3).reshape(y.shape[0], self.horizon, self.num_views * self.series_per_view)


class LinearSkipForecastHead(nn.Module):
    """A forecast head (the shared linear one or the Corrformer decoder) plus a linear skip from the normalised input
    window to the horizon (as RLinear / DLinear:
    ``head(features) + Linear_L→H(window)``, one ``L → H`` map over time shared by every series).

    Why: on small real sets the trunk alone lost to the least-squares linear forecaster (benchmarks/README.md);
    with the skip the model holds the linear forecaster and the trunk learns what is left.

    Called as ``head(features, state)`` (``takes_state``); ``state.normed`` is the RevIN-normalised window
    ``(B, L, N)``. ``init='zero'`` starts the skip at zero; ``init='lsq'`` asks the engine to fit it by least squares
    on the training windows before training (:meth:`fit_least_squares`, which also zeroes the wrapped head's output
    layer, so training starts from the least-squares linear model exactly).
    """

    takes_state = True

    def __init__(self, head: nn.Module, input_len: int, horizon: int, init: str = 'zero') -> None:
        super().__init__()
        if init not in ('zero', 'lsq'):
            raise ValueError(f"linear skip init must be 'zero' or 'lsq', got {init!r}")
        self.head = head
        self.skip = nn.Linear(input_len, horizon)
        nn.init.zeros_(self.skip.weight)
        nn.init.zeros_(self.skip.bias)
        self.input_len, self.horizon = input_len, horizon
        self.needs_data_init = init == 'lsq'  # read by unimodal.engine.data_init

    def forward(self, x: torch.Tensor, state: Any) -> torch.Tensor:
        normed = state.normed
        if normed is None or normed.ndim != 3 or normed.shape[1] != self.input_len:
            raise ValueError(f'the linear skip needs the normalised window (B, {self.input_len}, N) in the state')
        out = self.head(x, state) if getattr(self.head, 'takes_state', False) else self.head(x)
        return out + self.skip(normed.transpose(1, 2)).transpose(1, 2)

    @torch.no_grad()
    def fit_least_squares(self, pairs: Iterable[Tuple[torch.Tensor, torch.Tensor]]) -> int:
        """Fit the skip to ``(normalised window (B, L, N), target in the head's output space (B, H, N))`` pairs by
        least squares (:func:`unimodal.models.baselines.fit_linear_forecaster`) and zero the wrapped head's last
        Linear. Returns the number of windows."""
        from .baselines import fit_linear_forecaster
        count = [0]

        def counted():
            for xn, yn in pairs:
                count[0] += xn.shape[0]
                yield xn, yn

        fitted = fit_linear_forecaster(counted(), self.input_len, self.horizon)
        self.skip.weight.copy_(fitted.linear.weight)
        self.skip.bias.copy_(fitted.linear.bias)
        fc = getattr(self.head, 'fc', None)
        if isinstance(fc, nn.Linear):
            nn.init.zeros_(fc.weight)
            nn.init.zeros_(fc.bias)
        self.needs_data_init = False
        return count[0]


def create_head(kind: str, in_features: int, *, num_classes: int | None = None, horizon: int | None = None,
                num_views: int = 1, view_pool: str = 'mean', series_per_view: int = 1,
                drop_rate: float = 0.) -> nn.Module:
    """Build the shared head of ``kind`` (``'classification'`` or ``'forecast'``; the kind object builds it)."""
    from ..tasks.kinds import get_kind
    return get_kind(kind).create_head(in_features, num_classes=num_classes, horizon=horizon, num_views=num_views,
                                      view_pool=view_pool, series_per_view=series_per_view, drop_rate=drop_rate)
