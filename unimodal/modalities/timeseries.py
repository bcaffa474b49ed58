"""Time-series adapter: ``(B, L, N)`` forecasting windows → 2D grids for the shared trunk.

Pipeline: per-series RevIN-style normalisation (mean/std over time, optional learnable affine) → embedding →
2D grid → trunk → shared :class:`~unimodal.models.heads.ForecastHead` → :meth:`TimeSeriesAdapter.decode`
undoes the normalisation, so forecasts ``(B, H, N)`` come back in the input's scale.

Two layouts:

* ``paper`` (the published UniRepLKNet Global Temp/Wind set-up): every series is its own view. A circular Conv1d token
  embedding over time (plus a fixed sinusoidal position embedding and an optional learned per-series
  embedding standing in for the geo-position embedding) gives ``(L, D)`` per series, raw-reshaped to a square
  single-channel map ``(B·N, 1, S, S)`` (published: 48 steps × 768 → 192 × 192). Each series' own pooled
  features forecast its horizon. For thousands of stations set the task model's ``trunk_chunk`` (e.g. 350 as
  published): the trunk then runs station groups one at a time, gradient-checkpointed in training. The
  embedding is not chunked: it is one Conv1d over all ``B·N`` series whose only large tensor is its output,
  the trunk input itself (``B·N·S²`` floats, e.g. 0.57 GB per sample for 3850 stations at 192²).
* ``grid``: one image per sample, variables × time with embedding channels ``(B, C, N', L')`` (resized to a
  multiple of the trunk's stride 32); one head Linear predicts all ``H × N`` outputs. Much cheaper for
  tens of series; the default for the built-in data.

The adapter consumes a plain tensor, so calendar features and station coordinates of the published embedding
are not used; the learned per-series embedding (``series_embed=True``) lets the model tell stations apart.
"""
from __future__ import annotations

import logging
import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import trunc_normal_

from .base import Adapter, register_adapter

_logger = logging.getLogger(__name__)

__all__ = ['TimeSeriesAdapter', 'WeatherAdapter', 'RevIN', 'sinusoidal_position_embedding', 'paper_embed_dim']

_MODES = ('paper', 'grid')
_AFFINE = ('series', 'shared', 'none')
_TRUNK_STRIDE = 32


def sinusoidal_position_embedding(length: int, dim: int) -> torch.Tensor:
    """Fixed Transformer position embedding ``(length, dim)`` (as in the Informer/Corrformer DataEmbedding)."""
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe


def paper_embed_dim(input_len: int, min_side: int = _TRUNK_STRIDE) -> int:
    """Smallest embedding width D with ``input_len * D`` a perfect square of side >= ``min_side``.

    ``paper`` mode raw-reshapes the ``(L, D)`` token map to ``S × S``; this picks D so no padding is needed.
    (The published D = 768 for L = 48 also qualifies: 48 · 768 = 192².)
    """
    d = max(1, math.ceil(min_side * min_side / input_len))
    while math.isqrt(input_len * d) ** 2 != input_len * d:
        d += 1
    return d


class RevIN(nn.Module):
    """Reversible instance normalisation over time, per series.

    ``normalize`` maps ``(B, L, N)`` to zero mean / unit std per (sample, series) and applies an optional
    learnable affine; ``denormalize`` inverts both on ``(B, H, N)`` forecasts.

    Args:
        num_series: N (needed for ``affine='series'``).
        affine: ``'series'`` (one weight/bias per series, N fixed), ``'shared'`` (one pair for all series)
            or ``'none'``.
        eps: added to the variance (a constant series normalises to zeros, and decodes back exactly).
    """

    def __init__(self, num_series: int, affine: str = 'series', eps: float = 1e-5) -> None:
        super().__init__()
        if affine not in _AFFINE:
            raise ValueError(f'affine must be one of {_AFFINE}, got {affine!r}')
        self.affine = affine
        self.eps = eps
        if affine != 'none':
            n = num_series if affine == 'series' else 1
            self.weight = nn.Parameter(torch.ones(n))
            self.bias = nn.Parameter(torch.zeros(n))

    def normalize(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """``(B, L, N)`` → normalised ``(B, L, N)`` and the ``(mean, std)`` state, each ``(B, 1, N)``."""
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        x = (x - mean) / std
        if self.affine != 'none':
            x = x * self.weight + self.bias
        return x, (mean, std)

    def denormalize(self, y: torch.Tensor, state: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Undo :meth:`normalize` on forecasts ``(B, H, N)``."""
        mean, std = state
        if self.affine != 'none':
            # the eps**2 guard is RevIN's: keeps the division finite if a weight is driven to zero
            y = (y - self.bias) / (self.weight + self.eps * self.eps)
        return y * std + mean


@register_adapter('timeseries')
class TimeSeriesAdapter(Adapter):
    """Forecasting windows ``(B, L, N)`` → trunk grids; forecasts decoded back to the input's scale.

    Args:
        input_len: window length L the model consumes.
        num_series: number of series (variables or stations) N; fixed, since the head predicts ``H × N``.
        mode: ``'paper'`` (one square single-channel map per series) or ``'grid'`` (one ``C × N × L``
            image per sample). See the module docstring.
        embed_dim: embedding width. ``paper``: token width D (default: the smallest D making ``L·D`` a
            perfect square of side >= 32, e.g. 27 for L = 48; 768 is the published width). ``grid``: channels
            of the grid image (default 16).
        image_size: ``paper``: side S of the square map (default ``sqrt(L·D)``; when ``L·D`` is not a perfect
            square the flattened tokens are zero-padded to ``S²``). ``grid``: ``(rows, cols)`` or one int for
            both (default: N and L each rounded up to a multiple of 32); the ``N × L`` map is bilinearly
            resized to it.
        kernel_size: temporal kernel of the circular token convolution (3 as published).
        revin: per-series normalisation on/off (off: the trunk sees raw values; decode is the identity).
        affine: RevIN affine: ``'series'`` (per-series, published), ``'shared'`` or ``'none'``.
        series_embed: add a learned per-series embedding (the model can tell stations apart).
        pos_embed: add the fixed sinusoidal time-position embedding.
        eps: RevIN variance epsilon.
    """

    name = 'timeseries'
    head_kind = 'forecast'
    input_desc = '(B, L, N) float windows (L = input_len steps, N = num_series series)'

    def __init__(self, input_len: int = 48, num_series: int = 1, *, mode: str = 'grid',
                 embed_dim: Optional[int] = None, image_size: Optional[Union[int, Sequence[int]]] = None,
                 kernel_size: int = 3, revin: bool = True, affine: str = 'series', series_embed: bool = True,
                 pos_embed: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"time-series mode must be one of {_MODES}, got {mode!r}")
        if input_len < 1 or num_series < 1:
            raise ValueError(f'input_len and num_series must be >= 1, got {input_len} and {num_series}')
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd and >= 1, got {kernel_size}')
        self.input_len = int(input_len)
        self.num_series = int(num_series)
        self.mode = mode
        self.kernel_size = kernel_size
        self.revin = RevIN(num_series, affine=affine, eps=eps) if revin else None
        L, N = self.input_len, self.num_series

        if mode == 'paper':
            d = int(embed_dim) if embed_dim is not None else paper_embed_dim(L)
            if image_size is not None and not isinstance(image_size, int):
                sizes = tuple(int(v) for v in image_size)
                if len(sizes) != 2 or sizes[0] != sizes[1]:
                    raise ValueError(f'paper mode makes square maps: image_size must be one int, got {image_size!r}')
                image_size = sizes[0]
            side = int(image_size) if image_size is not None else math.isqrt(L * d - 1) + 1  # ceil(sqrt)
            if side * side < L * d:
                raise ValueError(f'paper mode: image_size {side} too small for {L} steps x {d} channels '
                                 f'({L * d} values > {side}²)')
            if side * side != L * d:
                _logger.info('paper mode: %d x %d tokens do not fill a square; zero-padding to %d x %d',
                             L, d, side, side)
            self.embed_dim, self.image_size = d, (side, side)
            # Informer/Corrformer TokenEmbedding: Conv1d(c_in=1 per series, D, k=3, circular, no bias)
            self.token_embed = nn.Conv1d(1, d, kernel_size, padding=kernel_size // 2, padding_mode='circular',
                                         bias=False)
            nn.init.kaiming_normal_(self.token_embed.weight, mode='fan_in', nonlinearity='leaky_relu')
            pe = sinusoidal_position_embedding(L, d).t().unsqueeze(0)  # (1, D, L)
            self.series_table = nn.Parameter(torch.zeros(N, d)) if series_embed else None
            self.out_chans, self.num_views, self.series_per_view = 1, N, 1
        else:
            c = int(embed_dim) if embed_dim is not None else 16
            if image_size is None:
                size = (self._round_up(N), self._round_up(L))
            elif isinstance(image_size, int):
                size = (image_size, image_size)
            else:
                size = tuple(int(s) for s in image_size)
                if len(size) != 2:
                    raise ValueError(f'grid mode image_size must be an int or (rows, cols), got {image_size!r}')
            self.embed_dim, self.image_size = c, size
            # a (1 x k) circular conv over time shared by all series, i.e. the token embedding on a 2D grid
            self.token_embed = nn.Conv2d(1, c, (1, kernel_size), bias=True)
            trunc_normal_(self.token_embed.weight, std=.5)
            nn.init.zeros_(self.token_embed.bias)
            pe = sinusoidal_position_embedding(L, c).t().reshape(1, c, 1, L)
            self.series_table = nn.Parameter(torch.zeros(1, c, N, 1)) if series_embed else None
            self.out_chans, self.num_views, self.series_per_view = c, 1, N
        if self.series_table is not None:
            trunc_normal_(self.series_table, std=.02)
        self.register_buffer('pos_table', pe if pos_embed else None, persistent=False)

    @staticmethod
    def _round_up(n: int) -> int:
        return max(_TRUNK_STRIDE, -(-n // _TRUNK_STRIDE) * _TRUNK_STRIDE)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if x.ndim != 3:
            raise self.shape_error(x, f'expected 3 dimensions (batch, time, series), got {x.ndim}')
        if not x.is_floating_point():
            raise self.shape_error(x, 'expected a floating-point tensor')
        if x.shape[1] != self.input_len:
            raise self.shape_error(x, f'window length {x.shape[1]} != input_len {self.input_len}')
        if x.shape[2] != self.num_series:
            raise self.shape_error(x, f'{x.shape[2]} series != num_series {self.num_series} '
                                      '(the model has per-series outputs)')

    def normalize(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """RevIN step alone: ``(B, L, N)`` → normalised windows and the ``(mean, std)`` state."""
        if self.revin is None:
            ones = x.new_ones(x.shape[0], 1, x.shape[2])
            return x, (ones * 0, ones)
        return self.revin.normalize(x)

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        x, state = self.normalize(x)
        B, L, N = x.shape
        if self.mode == 'paper':
            tokens = self.token_embed(x.transpose(1, 2).reshape(B * N, 1, L))  # (B·N, D, L)
            if self.pos_table is not None:
                tokens = tokens + self.pos_table
            if self.series_table is not None:
                tokens = tokens + self.series_table.repeat(B, 1).unsqueeze(-1)
            # published raw reshape: the (L, D) token matrix, row-major, fills the S x S map row by row
            flat = tokens.transpose(1, 2).reshape(B * N, L * self.embed_dim)
            side = self.image_size[0]
            if side * side != flat.shape[1]:
                flat = F.pad(flat, (0, side * side - flat.shape[1]))
            return flat.reshape(B * N, 1, side, side), state
        g = x.transpose(1, 2).unsqueeze(1)  # (B, 1, N, L)
        pad = self.kernel_size // 2
        if pad:
            g = F.pad(g, (pad, pad, 0, 0), mode='circular')
        g = self.token_embed(g)  # (B, C, N, L)
        if self.pos_table is not None:
            g = g + self.pos_table
        if self.series_table is not None:
            g = g + self.series_table
        if tuple(g.shape[-2:]) != self.image_size:
            g = F.interpolate(g, size=self.image_size, mode='bilinear', align_corners=False)
        return g, state

    def decode(self, y: torch.Tensor, state: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Forecasts ``(B, H, N)`` in the normalised space → the input's scale."""
        if self.revin is None:
            return y
        return self.revin.denormalize(y, state)


@register_adapter('weather')
class WeatherAdapter(TimeSeriesAdapter):
    """The time-series adapter under its first name ``'weather'`` (checkpoints saved under that name keep loading)."""

    name = 'weather'
