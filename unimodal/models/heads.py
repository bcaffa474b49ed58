"""Task heads shared by every modality: classification (with view pooling) and forecasting.

Both consume the trunk's pooled, normed features ``(B * V, F)`` (``trunk.forward_head(x, pre_logits=True)``)
where ``V`` is the adapter's ``num_views``.
"""
from __future__ import annotations

import torch
from torch import nn
from timm.layers import trunc_normal_

__all__ = ['ClassificationHead', 'ForecastHead', 'create_head']

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
            raise ValueError(f'view_pool must be one of {_VIEW_POOLS}, got {view_pool!r}')
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


def create_head(kind: str, in_features: int, *, num_classes: int | None = None, horizon: int | None = None,
                num_views: int = 1, view_pool: str = 'mean', series_per_view: int = 1,
                drop_rate: float = 0.) -> nn.Module:
    """Build the shared head of ``kind`` (``'classification'`` or ``'forecast'``; the kind object builds it)."""
    from ..tasks.kinds import get_kind
    return get_kind(kind).create_head(in_features, num_classes=num_classes, horizon=horizon, num_views=num_views,
                                      view_pool=view_pool, series_per_view=series_per_view, drop_rate=drop_rate)
