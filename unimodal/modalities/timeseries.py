"""Time-series adapter: ``(B, L, N)`` forecasting windows → 2D grids for the shared trunk.

Pipeline: per-series RevIN-style normalisation (mean/std over time, optional learnable affine) → embedding →
2D grid → trunk → forecast head → :meth:`TimeSeriesAdapter.decode` undoes the normalisation, so forecasts
``(B, H, N)`` come back in the input's scale.

Two layouts:

* ``paper`` (the published UniRepLKNet Global Temp/Wind set-up, after Corrformer): the N series form nodes of
  ``group_size`` consecutive series (published: 350 nodes of 11 stations), and every node is one trunk image. The
  Corrformer ``DataEmbedding`` (:class:`~unimodal.modalities.timeseries_paper.SeriesEmbedding`: a circular Conv1d
  over the node's series, plus calendar features and station coordinates when the samples carry them, dropout 0.05)
  gives ``(L, D)`` tokens per node, raw-reshaped to a square single-channel map ``(B·P, 1, S, S)`` (48 steps × 768 →
  192 × 192). RevIN's affine is one weight/bias per position in a node, shared by the nodes (published ``(1, 1,
  11)``). No position embedding (``pos_embed`` adds one; ``series_embed`` a learned per-node table). Each node's
  pooled features forecast its series: the shared linear head, or the published Corrformer decoder
  (``forecaster='corrformer'``, :mod:`unimodal.models.corrformer`).
* ``grid``: one image per sample, variables × time with embedding channels ``(B, C, N', L')`` (resized to a
  multiple of the trunk's stride 32); one head Linear predicts all ``H × N`` outputs. Much cheaper for
  tens of series; the default for the built-in data.

Inputs: a plain ``(B, L, N)`` tensor, or (``paper`` mode, when the reader gives them: ``data.options.marks`` /
``coords``) the tuple ``(window, marks (B, L + H, F), coords (B, N, C))`` with the parts present in that order;
``mark_dim`` / ``coord_dim`` (set from the data) say which.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import trunc_normal_

from .base import Adapter, InputShapeError, register_adapter
from .timeseries_paper import SeriesEmbedding, group_coords, group_series, square_side, square_tokens

_logger = logging.getLogger(__name__)

__all__ = ['TimeSeriesAdapter', 'WeatherAdapter', 'RevIN', 'ForecastState', 'sinusoidal_position_embedding',
           'paper_embed_dim', 'PAPER_GROUP_SIZE']

_MODES = ('paper', 'grid')
_AFFINE = ('series', 'group', 'shared', 'none')
_FORECASTERS = ('linear', 'corrformer')
_LINEAR_SKIP = ('off', 'zero', 'lsq')
_TRUNK_STRIDE = 32
#: Stations per node (trunk image) in the published set-up (``enc_in 11``, ``node_num 350``).
PAPER_GROUP_SIZE = 11


def sinusoidal_position_embedding(length: int, dim: int) -> torch.Tensor:
    """Fixed Transformer position embedding ``(length, dim)`` (as in the Informer/Autoformer DataEmbedding)."""
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


class ForecastState(NamedTuple):
    """What :meth:`TimeSeriesAdapter.encode` hands to the head and to :meth:`~TimeSeriesAdapter.decode`: the RevIN
    statistics ``(B, 1, N)``, and (``paper`` mode) the normalised window and the sample's marks and coordinates
    (the Corrformer decoder starts from them)."""
    mean: torch.Tensor
    std: torch.Tensor
    normed: Optional[torch.Tensor] = None
    marks: Optional[torch.Tensor] = None
    coords: Optional[torch.Tensor] = None


class RevIN(nn.Module):
    """Reversible instance normalisation over time, per series.

    ``normalize`` maps ``(B, L, N)`` to zero mean / unit std per (sample, series) and applies an optional
    learnable affine; ``denormalize`` inverts both on ``(B, H, N)`` forecasts.

    Args:
        num_series: N (needed for ``affine='series'`` and ``'group'``).
        affine: ``'series'`` (one weight/bias per series), ``'group'`` (one per position in a group of
            ``group_size`` consecutive series, shared by the groups: the published ``(1, 1, 11)``), ``'shared'``
            (one pair for all series) or ``'none'``.
        eps: added to the variance (a constant series normalises to zeros, and decodes back exactly).
        group_size: G for ``affine='group'`` (must divide N).
    """

    def __init__(self, num_series: int, affine: str = 'series', eps: float = 1e-5, group_size: int = 1) -> None:
        super().__init__()
        if affine not in _AFFINE:
            raise ValueError(f'affine must be one of {_AFFINE}, got {affine!r}')
        if affine == 'group' and (group_size < 1 or num_series % group_size):
            raise ValueError(f"affine='group' needs a group_size dividing {num_series}, got {group_size}")
        self.affine = affine
        self.eps = eps
        self.repeats = num_series // group_size if affine == 'group' else 1
        if affine != 'none':
            n = {'series': num_series, 'group': group_size, 'shared': 1}[affine]
            self.weight = nn.Parameter(torch.ones(n))
            self.bias = nn.Parameter(torch.zeros(n))

    def _affine(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias per series (the group's pair repeated over the groups, as ``repeat(1, 1, P)``)."""
        if self.repeats == 1:
            return self.weight, self.bias
        return self.weight.repeat(self.repeats), self.bias.repeat(self.repeats)

    def normalize(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """``(B, L, N)`` → normalised ``(B, L, N)`` and the ``(mean, std)`` state, each ``(B, 1, N)``."""
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        x = (x - mean) / std
        if self.affine != 'none':
            weight, bias = self._affine()
            x = x * weight + bias
        return x, (mean, std)

    def denormalize(self, y: torch.Tensor, state: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Undo :meth:`normalize` on forecasts ``(B, H, N)``."""
        mean, std = state[0], state[1]
        if self.affine != 'none':
            weight, bias = self._affine()
            # the eps**2 guard is RevIN's (the original's + 1e-10): keeps the division finite if a weight reaches 0
            y = (y - bias) / (weight + self.eps * self.eps)
        return y * std + mean


@register_adapter('timeseries')
class TimeSeriesAdapter(Adapter):
    """Forecasting windows ``(B, L, N)`` → trunk grids; forecasts decoded back to the input's scale.

    Args:
        input_len: window length L the model consumes.
        num_series: number of series (variables or stations) N; fixed, since the head predicts ``H × N``.
        mode: ``'paper'`` (one square single-channel map per node of ``group_size`` series) or ``'grid'`` (one
            ``C × N × L`` image per sample). See the module docstring.
        embed_dim: embedding width. ``paper``: token width D (default: the smallest D making ``L·D`` a
            perfect square of side >= 32, e.g. 27 for L = 48; 768 is the published width). ``grid``: channels
            of the grid image (default 16).
        image_size: ``paper``: side S of the square map (default ``sqrt(L·D)``; when ``L·D`` is not a perfect
            square the flattened tokens are zero-padded to ``S²``). ``grid``: ``(rows, cols)`` or one int for
            both (default: N and L each rounded up to a multiple of 32); the ``N × L`` map is bilinearly
            resized to it.
        kernel_size: temporal kernel of the circular token convolution (3 as published).
        revin: per-series normalisation on/off (off: the trunk sees raw values; decode is the identity).
        affine: RevIN affine: ``'series'``, ``'group'``, ``'shared'`` or ``'none'`` (default: ``'group'`` in
            ``paper`` mode, as published; ``'series'`` in ``grid`` mode).
        series_embed: add a learned per-series (``grid``) / per-node (``paper``) embedding (default: on in
            ``grid``, off in ``paper``: the published embedding tells nodes apart by their coordinates).
        pos_embed: add the fixed sinusoidal time-position embedding (default: on in ``grid``; off in ``paper``, as
            published).
        eps: RevIN variance epsilon.
        group_size: ``paper``: series per node G (default 11, as published; must divide N).
        mark_dim: calendar features per step F carried by the samples (0: none; set from the data).
        coord_dim: coordinates per station C carried by the samples (0: none; set from the data).
        embed_dropout: dropout on the embedding (default 0.05 in ``paper`` mode, as published; 0 in ``grid``).
        forecaster: ``'linear'`` (the shared per-view linear head) or ``'corrformer'`` (``paper`` mode: the
            published Corrformer decoder, :class:`~unimodal.models.corrformer.CorrformerHead`).
        forecaster_options: keyword arguments of the Corrformer head (``label_len``, ``n_heads``, ``d_ff``,
            ``node_list``, ``moving_avg``, ``dropout``, ...).
        linear_skip: add a linear map from the normalised window to the horizon to the head's forecast
            (:class:`~unimodal.models.heads.LinearSkipForecastHead`, as RLinear): ``'off'`` (as published),
            ``'zero'`` (starts at zero) or ``'lsq'`` (fitted by least squares on the training windows before
            training; the task defaults).
    """

    name = 'timeseries'
    head_kind = 'forecast'
    input_desc = ('(B, L, N) float windows (L = input_len steps, N = num_series series), or the tuple (window, '
                  'marks (B, L + H, F), coords (B, N, C)) with the parts mark_dim / coord_dim announce')

    def __init__(self, input_len: int = 48, num_series: int = 1, *, mode: str = 'grid',
                 embed_dim: Optional[int] = None, image_size: Optional[Union[int, Sequence[int]]] = None,
                 kernel_size: int = 3, revin: bool = True, affine: Optional[str] = None,
                 series_embed: Optional[bool] = None, pos_embed: Optional[bool] = None, eps: float = 1e-5,
                 group_size: Optional[int] = None, mark_dim: int = 0, coord_dim: int = 0,
                 embed_dropout: Optional[float] = None, forecaster: str = 'linear',
                 forecaster_options: Optional[Dict[str, Any]] = None, linear_skip: str = 'off') -> None:
        super().__init__()
        mode = self.option('mode', mode, str, choices=_MODES)
        input_len = self.option('input_len', input_len, int, lo=1)
        num_series = self.option('num_series', num_series, int, lo=1)
        embed_dim = self.option('embed_dim', embed_dim, Optional[int], lo=1)
        image_size = self.option('image_size', image_size, Union[None, int, List[int]], lo=1,
                                 expects='a positive integer or [rows, cols]')
        if isinstance(image_size, list) and not all(v >= 1 for v in image_size):
            raise ValueError(f'timeseries adapter option image_size must hold positive sizes, got {image_size!r}')
        kernel_size = self.option('kernel_size', kernel_size, int, lo=1)
        if kernel_size % 2 == 0:
            raise ValueError(f'timeseries adapter option kernel_size must be odd, got {kernel_size}')
        affine = self.option('affine', affine, Optional[str], choices=_AFFINE)
        revin = self.option('revin', revin, bool)
        series_embed = self.option('series_embed', series_embed, Optional[bool])
        pos_embed = self.option('pos_embed', pos_embed, Optional[bool])
        eps = self.option('eps', eps, float, lo=0, lo_open=True)
        group_size = self.option('group_size', group_size, Optional[int], lo=1)
        mark_dim = self.option('mark_dim', mark_dim, int, lo=0)
        coord_dim = self.option('coord_dim', coord_dim, int, lo=0)
        embed_dropout = self.option('embed_dropout', embed_dropout, Optional[float], lo=0, hi=1)
        forecaster = self.option('forecaster', forecaster, str, choices=_FORECASTERS)
        self.linear_skip = self.option('linear_skip', linear_skip, str, choices=_LINEAR_SKIP)
        if forecaster_options is not None and not isinstance(forecaster_options, dict):
            raise ValueError(f'timeseries adapter option forecaster_options must be a mapping of keyword arguments, '
                             f'got {type(forecaster_options).__name__}')
        paper = mode == 'paper'
        if not paper:
            for key, value in (('group_size', group_size), ('forecaster_options', forecaster_options)):
                if value is not None:
                    raise ValueError(f"{key} applies to mode='paper' only")
            if forecaster != 'linear':
                raise ValueError(f"forecaster={forecaster!r} needs mode='paper' (one view per node of series)")
            if mark_dim or coord_dim:
                raise ValueError("grid mode uses neither calendar marks nor station coordinates; drop the reader's "
                                 "marks / coords options or use mode='paper'")
        elif forecaster == 'linear' and forecaster_options is not None:
            raise ValueError("forecaster_options apply to forecaster='corrformer'")
        self.input_len = int(input_len)
        self.num_series = int(num_series)
        self.mode = mode
        self.kernel_size = kernel_size
        self.mark_dim, self.coord_dim = int(mark_dim), int(coord_dim)
        self.forecaster = forecaster
        self.forecaster_options = dict(forecaster_options or {})
        L, N = self.input_len, self.num_series
        G = int(group_size) if group_size is not None else PAPER_GROUP_SIZE if paper else 1
        if paper and (G < 1 or N % G):
            divisors = [d for d in range(1, N + 1) if N % d == 0]
            raise ValueError(f'paper mode groups {G} series per trunk image, but num_series {N} is not a multiple of '
                             f'{G}; set group_size to a divisor of {N} ({", ".join(map(str, divisors[:12]))}'
                             f'{", ..." if len(divisors) > 12 else ""})')
        self.group_size = G
        affine = affine or ('group' if paper else 'series')
        self.revin = RevIN(num_series, affine=affine, eps=eps, group_size=G) if revin else None
        series_embed = (not paper) if series_embed is None else bool(series_embed)
        pos_embed = (not paper) if pos_embed is None else bool(pos_embed)
        self.embed_drop = float(embed_dropout) if embed_dropout is not None else (0.05 if paper else 0.0)

        if paper:
            d = int(embed_dim) if embed_dim is not None else paper_embed_dim(L)
            if image_size is not None and not isinstance(image_size, int):
                sizes = tuple(int(v) for v in image_size)
                if len(sizes) != 2 or sizes[0] != sizes[1]:
                    raise ValueError(f'paper mode makes square maps: image_size must be one int, got {image_size!r}')
                image_size = sizes[0]
            side = int(image_size) if image_size is not None else square_side(L, d)
            if side * side < L * d:
                raise ValueError(f'paper mode: image_size {side} too small for {L} steps x {d} channels '
                                 f'({L * d} values > {side}²)')
            if side * side != L * d:
                _logger.info('paper mode: %d x %d tokens do not fill a square; zero-padding to %d x %d',
                             L, d, side, side)
            self.embed_dim, self.image_size = d, (side, side)
            self.embed = SeriesEmbedding(G, d, kernel_size, mark_dim=self.mark_dim, coord_dim=self.coord_dim,
                                         dropout=self.embed_drop)
            pe = sinusoidal_position_embedding(L, d).unsqueeze(0)  # (1, L, D): broadcast over (B, P, L, D)
            self.series_table = nn.Parameter(torch.zeros(N // G, 1, d)) if series_embed else None
            self.out_chans, self.num_views, self.series_per_view = 1, N // G, G
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
            self.grid_drop = nn.Dropout(self.embed_drop)
            self.out_chans, self.num_views, self.series_per_view = c, 1, N
        if self.series_table is not None:
            trunc_normal_(self.series_table, std=.02)
        self.register_buffer('pos_table', pe if pos_embed else None, persistent=False)

    @staticmethod
    def _round_up(n: int) -> int:
        return max(_TRUNK_STRIDE, -(-n // _TRUNK_STRIDE) * _TRUNK_STRIDE)

    @property
    def num_nodes(self) -> int:
        """P: trunk images per sample (``paper``: nodes of ``group_size`` series; ``grid``: 1)."""
        return self.num_views

    def split_input(self, x: Any) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """``(window, marks, coords)`` of an input (absent parts ``None``), in the order the reader gives them."""
        if not isinstance(x, (tuple, list)):
            return x, None, None
        parts = list(x[1:])
        marks = parts.pop(0) if self.mark_dim and parts else None
        coords = parts.pop(0) if self.coord_dim and parts else None
        return x[0], marks, coords

    def check_input(self, x: Any) -> None:
        expect = 1 + bool(self.mark_dim) + bool(self.coord_dim)
        got = len(x) if isinstance(x, (tuple, list)) else 1
        if got != expect:
            what = ['window'] + ['marks'] * bool(self.mark_dim) + ['coords'] * bool(self.coord_dim)
            raise InputShapeError(
                f'{self.name} adapter expects {"the tuple (" + ", ".join(what) + ")" if expect > 1 else "a tensor"} '
                f'(mark_dim={self.mark_dim}, coord_dim={self.coord_dim}), got {got} part(s); the reader\'s marks / '
                f'coords options and the model must agree')
        window, marks, coords = self.split_input(x)
        super().check_input(window)
        if window.ndim != 3:
            raise self.shape_error(window, f'expected 3 dimensions (batch, time, series), got {window.ndim}')
        if not window.is_floating_point():
            raise self.shape_error(window, 'expected a floating-point tensor')
        if window.shape[1] != self.input_len:
            raise self.shape_error(window, f'window length {window.shape[1]} != input_len {self.input_len}')
        if window.shape[2] != self.num_series:
            raise self.shape_error(window, f'{window.shape[2]} series != num_series {self.num_series} '
                                           '(the model has per-series outputs)')
        B = window.shape[0]
        if marks is not None and (marks.ndim != 3 or marks.shape[0] != B or marks.shape[1] < self.input_len
                                  or marks.shape[2] != self.mark_dim):
            raise self.shape_error(marks, f'marks must be (B={B}, >= input_len {self.input_len} steps, '
                                          f'mark_dim {self.mark_dim})')
        if coords is not None and tuple(coords.shape) != (B, self.num_series, self.coord_dim):
            raise self.shape_error(coords, f'coords must be (B={B}, num_series {self.num_series}, coord_dim '
                                           f'{self.coord_dim})')

    def normalize(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """RevIN step alone: ``(B, L, N)`` → normalised windows and the ``(mean, std)`` state."""
        if self.revin is None:
            ones = x.new_ones(x.shape[0], 1, x.shape[2])
            return x, (ones * 0, ones)
        return self.revin.normalize(x)

    def encode(self, x: Any) -> Tuple[torch.Tensor, ForecastState]:
        window, marks, coords = self.split_input(x)
        xn, (mean, std) = self.normalize(window)
        B, L, N = xn.shape
        if self.mode == 'paper':
            extra = None
            if self.pos_table is not None:
                extra = self.pos_table
            if self.series_table is not None:
                extra = self.series_table if extra is None else extra + self.series_table
            tokens = self.embed(group_series(xn, self.group_size), B,
                                marks=None if marks is None else marks[:, :L],
                                coords=None if coords is None else group_coords(coords, self.group_size),
                                extra=extra)  # (B·P, L, D)
            return square_tokens(tokens, self.image_size[0]), ForecastState(mean, std, xn, marks, coords)
        g = xn.transpose(1, 2).unsqueeze(1)  # (B, 1, N, L)
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
        return self.grid_drop(g), ForecastState(mean, std, xn)

    def decode(self, y: torch.Tensor, state: Tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Forecasts ``(B, H, N)`` in the normalised space → the input's scale (``state``: :class:`ForecastState`
        or ``(mean, std)``)."""
        if self.revin is None:
            return y
        return self.revin.denormalize(y, state)

    def normalize_target(self, y: torch.Tensor, state: Tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Targets ``(B, H, N)`` in the head's output space: the inverse of :meth:`decode`."""
        if self.revin is None:
            return y
        mean, std = state[0], state[1]
        yn = (y - mean) / std
        if self.revin.affine != 'none':
            weight, bias = self.revin._affine()
            yn = yn * (weight + self.revin.eps * self.revin.eps) + bias
        return yn

    def create_head(self, in_features: int, **head_kwargs: Any) -> Optional[nn.Module]:
        """The Corrformer decoder for ``forecaster='corrformer'``, else ``None`` (the shared linear head); either
        wrapped with the linear skip when ``linear_skip`` is on."""
        base = self._corrformer_head(in_features, **head_kwargs) if self.forecaster == 'corrformer' else None
        if self.linear_skip == 'off':
            return base
        from ..models.heads import LinearSkipForecastHead
        from ..tasks.kinds import get_kind
        if base is None:
            base = get_kind('forecast').create_head(in_features, num_views=self.num_views,
                                                    series_per_view=self.series_per_view, owner=self.name,
                                                    **head_kwargs)
        return LinearSkipForecastHead(base, self.input_len, head_kwargs['horizon'], init=self.linear_skip)

    def _corrformer_head(self, in_features: int, **head_kwargs: Any) -> nn.Module:
        from ..models.corrformer import CorrformerHead
        extra = sorted(k for k, v in head_kwargs.items() if v is not None and k not in ('horizon', 'drop_rate'))
        if extra:
            raise TypeError(f'the Corrformer head takes no {", ".join(extra)}')
        if head_kwargs.get('drop_rate'):
            raise ValueError("model.drop_rate does not apply to the Corrformer head (its dropouts are "
                             "forecaster_options.dropout and causal_dropout)")
        return CorrformerHead(in_features, horizon=head_kwargs['horizon'], input_len=self.input_len,
                              group_size=self.group_size, num_nodes=self.num_nodes, mark_dim=self.mark_dim,
                              coord_dim=self.coord_dim, kernel_size=self.kernel_size, **self.forecaster_options)


@register_adapter('weather')
class WeatherAdapter(TimeSeriesAdapter):
    """The time-series adapter under its first name ``'weather'`` (checkpoints saved under that name keep loading)."""

    name = 'weather'
