"""The Corrformer decoder as a forecast head (the published UniRepLKNet Global Temp/Wind forecaster).

UniRepLKNet replaces Corrformer's encoder with the trunk and keeps its decoder (``models/Corrformer.py`` of the
release; Wu et al., Nature Machine Intelligence 2023). Per node of G series (P nodes, D = d_model):

1. Start: decompose the normalised window ``x (B, L, N)`` into trend (moving average, ``moving_avg`` 25, edges
   replicated) and seasonal part; the decoder's input covers ``label_len`` known steps and the H forecast steps:
   ``seasonal_init = [seasonal[-label_len:], 0_H]``, ``trend_init = [trend[-label_len:], mean_t(x) repeated H]``.
2. Embed ``seasonal_init`` with its own Corrformer ``DataEmbedding`` (value conv, calendar features of those
   ``label_len + H`` steps, station coordinates; :class:`~unimodal.modalities.timeseries_paper.SeriesEmbedding`).
3. Decoder layers (published: 1): self multi-correlation, cross multi-correlation with the trunk's output, a
   position-wise feed-forward, each followed by a series decomposition; the layer's three trends, projected to G
   channels by a circular Conv1d (k 3), add to the running trend.
4. ``out = trend + Linear(D → G)(LN'(seasonal))``, where ``LN'`` is LayerNorm minus its mean over time; the last
   H steps are the forecast (in the normalised space; the adapter's ``decode`` undoes RevIN).

The released code feeds the trunk's 1000-way logits into ``reshape(350, -1, 768)``, which fails (section 7 of the
reference); here the cross input is what that reshape was meant to give: each node's pooled trunk features as a
one-step sequence ``(B·P, 1, D)``. The released encoder reshape also ignores the batch (batch 1 only); every shape
here carries B. Published sizes (G 11, P 350, node_list 7 × 50, D 768, 16 heads, d_ff 2048, label_len 24,
H 24): 76.40 M parameters, of which 73.2 M in the two causal convolutions (2304 channels each).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..modalities.timeseries_paper import SeriesEmbedding, group_coords, group_series, ungroup_series
from .baselines import moving_average
from .correlation import AutoCorrelationLayer, CrossCorrelationLayer, MultiCorrelation

__all__ = ['series_decompose', 'decoder_start', 'SeasonalLayerNorm', 'CorrformerDecoderLayer', 'CorrformerHead']

_ACTIVATIONS = {'gelu': F.gelu, 'relu': F.relu}


def series_decompose(x: torch.Tensor, kernel_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(seasonal, trend)`` of ``(B, T, C)``: ``trend`` the centred moving average over time (edges replicated),
    ``seasonal = x - trend``."""
    trend = moving_average(x, kernel_size)
    return x - trend, trend


def decoder_start(x: torch.Tensor, label_len: int, horizon: int, kernel_size: int
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The decoder's initial ``(seasonal, trend)``, each ``(B, label_len + H, N)``, from the window ``x (B, L, N)``:
    ``[seasonal[-label_len:], 0]`` and ``[trend[-label_len:], mean_t x]`` (only the window: no future value)."""
    seasonal, trend = series_decompose(x, kernel_size)
    B, _, N = x.shape
    mean = x.mean(1, keepdim=True).expand(B, horizon, N)
    seasonal = torch.cat([seasonal[:, x.shape[1] - label_len:], x.new_zeros(B, horizon, N)], 1)
    trend = torch.cat([trend[:, x.shape[1] - label_len:], mean], 1)
    return seasonal, trend


class SeasonalLayerNorm(nn.Module):
    """LayerNorm over channels, then the mean over time subtracted (Autoformer's ``my_Layernorm``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return x - x.mean(1, keepdim=True)


def _multi_correlation(d_model: int, n_heads: int, length: int, node_list: Sequence[int], factor_temporal: int,
                       factor_spatial: int, tcn_layers: int, dropout: float, causal_dropout: float
                       ) -> MultiCorrelation:
    return MultiCorrelation(AutoCorrelationLayer(d_model, n_heads, factor_temporal),
                            CrossCorrelationLayer(d_model, n_heads, length, factor_spatial, tcn_layers,
                                                  dropout=causal_dropout),
                            node_list, dropout)


class CorrformerDecoderLayer(nn.Module):
    """Self and cross multi-correlation, feed-forward (1×1 convs without bias), three series decompositions.

    ``x ← decomp(x + MC_self(x, x))``, ``x ← decomp(x + MC_cross(x, c))``, ``x ← decomp(x + FF(x))``; the three
    removed trends, summed and projected ``D → c_out`` by a circular Conv1d (k 3, no bias), are the layer's trend.
    """

    def __init__(self, d_model: int, c_out: int, length: int, node_list: Sequence[int], n_heads: int = 16,
                 d_ff: int = 2048, moving_avg: int = 25, factor_temporal: int = 1, factor_spatial: int = 1,
                 tcn_layers: int = 1, dropout: float = 0.05, causal_dropout: float = 0.2,
                 activation: str = 'gelu') -> None:
        super().__init__()
        args = (d_model, n_heads, length, node_list, factor_temporal, factor_spatial, tcn_layers, dropout,
                causal_dropout)
        self.self_correlation = _multi_correlation(*args)
        self.cross_correlation = _multi_correlation(*args)
        self.conv1 = nn.Conv1d(d_model, d_ff, 1, bias=False)
        self.conv2 = nn.Conv1d(d_ff, d_model, 1, bias=False)
        self.trend_proj = nn.Conv1d(d_model, c_out, 3, padding=1, padding_mode='circular', bias=False)
        self.drop = nn.Dropout(dropout)
        self.act = _ACTIVATIONS[activation]
        self.moving_avg = moving_avg

    def forward(self, x: torch.Tensor, cross: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``x (B·P, T, D)``, ``cross (B·P, S, D)`` → seasonal ``(B·P, T, D)`` and trend ``(B·P, T, c_out)``."""
        x, trend1 = series_decompose(x + self.self_correlation(x, x), self.moving_avg)
        x, trend2 = series_decompose(x + self.cross_correlation(x, cross), self.moving_avg)
        y = self.drop(self.act(self.conv1(x.transpose(1, 2))))
        y = self.drop(self.conv2(y).transpose(1, 2))
        x, trend3 = series_decompose(x + y, self.moving_avg)
        trend = self.trend_proj((trend1 + trend2 + trend3).transpose(1, 2)).transpose(1, 2)
        return x, trend


class CorrformerHead(nn.Module):
    """Corrformer decoder over the trunk's per-node features → forecasts ``(B, H, N)`` in the normalised space.

    Called as ``head(features, state)`` (``takes_state``): ``features (B·P, D)`` pooled trunk features per node,
    ``state`` the adapter's :class:`~unimodal.modalities.timeseries.ForecastState` (normalised window, marks
    ``(B, L + H, F)``, coordinates ``(B, N, C)``).

    Args:
        in_features: D, the trunk's feature width (the decoder's width; published 768).
        horizon: H.
        input_len: L.
        group_size: G series per node (the decoder's input and output channels; published 11).
        num_nodes: P.
        mark_dim, coord_dim: calendar features per step and coordinates per station the samples carry (0: none).
        kernel_size: the embedding's value convolution kernel (3).
        label_len: known steps the decoder starts from (default L // 2; published 24).
        n_heads: heads of the correlations (published 16; must divide D).
        d_ff: feed-forward width (2048).
        layers: decoder layers (1).
        node_list: the node tree, e.g. ``[7, 50]`` for 350 nodes (default ``[P]``: one level, all nodes siblings).
        moving_avg: decomposition window (25).
        factor_temporal: auto-correlation lags ``factor · ln T`` (1).
        factor_spatial: cross-correlation lags per node (1).
        tcn_layers: causal-convolution blocks in each cross-correlation (1).
        dropout: the decoder's dropout (0.05, also the embedding's).
        causal_dropout: the causal convolutions' dropout (0.2, the original's default).
        activation: ``'gelu'`` (published) or ``'relu'``.
    """

    takes_state = True

    def __init__(self, in_features: int, *, horizon: int, input_len: int, group_size: int, num_nodes: int,
                 mark_dim: int = 0, coord_dim: int = 0, kernel_size: int = 3, label_len: Optional[int] = None,
                 n_heads: int = 16, d_ff: int = 2048, layers: int = 1, node_list: Optional[Sequence[int]] = None,
                 moving_avg: int = 25, factor_temporal: int = 1, factor_spatial: int = 1, tcn_layers: int = 1,
                 dropout: float = 0.05, causal_dropout: float = 0.2, activation: str = 'gelu') -> None:
        super().__init__()
        label_len = input_len // 2 if label_len is None else int(label_len)
        node_list = [num_nodes] if node_list is None else [int(n) for n in node_list]
        if not 0 <= label_len <= input_len:
            raise ValueError(f'label_len must be in [0, input_len={input_len}], got {label_len}')
        if math.prod(node_list) != num_nodes or min(node_list) < 1:
            raise ValueError(f'node_list {node_list} must multiply to the {num_nodes} nodes (series / group_size)')
        if n_heads < 1 or in_features % n_heads:
            raise ValueError(f'n_heads {n_heads} must divide the trunk width {in_features}')
        if activation not in _ACTIVATIONS:
            raise ValueError(f'activation must be one of {", ".join(sorted(_ACTIVATIONS))}, got {activation!r}')
        if moving_avg < 1 or layers < 1 or tcn_layers < 1 or min(factor_temporal, factor_spatial) < 1:
            raise ValueError('moving_avg, layers, tcn_layers and the factors must be >= 1')
        self.horizon, self.input_len, self.label_len = int(horizon), int(input_len), label_len
        self.group_size, self.num_nodes, self.node_list = group_size, num_nodes, node_list
        self.mark_dim, self.coord_dim, self.moving_avg = mark_dim, coord_dim, moving_avg
        length = label_len + self.horizon
        self.embed = SeriesEmbedding(group_size, in_features, kernel_size, mark_dim, coord_dim, dropout)
        self.layers = nn.ModuleList([
            CorrformerDecoderLayer(in_features, group_size, length, node_list, n_heads, d_ff, moving_avg,
                                   factor_temporal, factor_spatial, tcn_layers, dropout, causal_dropout, activation)
            for _ in range(layers)])
        self.norm = SeasonalLayerNorm(in_features)
        self.proj = nn.Linear(in_features, group_size)

    def forward(self, features: torch.Tensor, state) -> torch.Tensor:
        normed, marks, coords = state.normed, state.marks, state.coords
        if normed is None:
            raise ValueError('the Corrformer head needs the normalised window in the adapter state (paper mode)')
        B, L, N = normed.shape
        H, G = self.horizon, self.group_size
        if features.shape[0] != B * self.num_nodes:
            raise ValueError(f'expected {B} x {self.num_nodes} node features, got {features.shape[0]}')
        dec_marks = None
        if self.mark_dim:
            if marks is None or marks.shape[1] != L + H:
                got = None if marks is None else tuple(marks.shape)
                raise ValueError(f'the Corrformer decoder reads the calendar of the window and the horizon: marks of '
                                 f'{L + H} steps, got {got}')
            dec_marks = marks[:, L - self.label_len:]
        seasonal, trend = decoder_start(normed, self.label_len, H, self.moving_avg)
        x = self.embed(group_series(seasonal, G), B, dec_marks,
                       None if not self.coord_dim else group_coords(coords, G))
        trend = group_series(trend, G)
        cross = features.unsqueeze(1).to(x.dtype)  # (B·P, 1, D): each node's trunk features as one step
        for layer in self.layers:
            x, layer_trend = layer(x, cross)
            trend = trend + layer_trend
        out = trend + self.proj(self.norm(x))
        return ungroup_series(out[:, -H:], B)
