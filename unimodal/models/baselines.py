"""Forecasting baselines every forecaster should beat or at least report, on the same windows as the model.

* :func:`persistence_forecast`: repeat the last observed value.
* :func:`seasonal_naive_forecast`: the value one period earlier (e.g. 24 steps for hourly data).
* :class:`LinearForecaster`: DLinear-style, one Linear over the input window shared by all series (optional
  moving-average trend / seasonal decomposition), fitted in closed form by :func:`fit_linear_forecaster`.

All take windows ``(B, L, N)`` (or one window ``(L, N)``) and return ``(B, H, N)`` (or ``(H, N)``).
"""
from __future__ import annotations

import logging
from typing import Iterable, Tuple

import torch
import torch.nn.functional as F
from torch import nn

_logger = logging.getLogger(__name__)

__all__ = ['persistence_forecast', 'seasonal_naive_forecast', 'LinearForecaster', 'fit_linear_forecaster',
           'moving_average']


def _as_batch(x: torch.Tensor, fn: str) -> Tuple[torch.Tensor, bool]:
    if not torch.is_tensor(x) or x.ndim not in (2, 3):
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f'{fn} expects windows (B, L, N) or (L, N), got {shape}')
    return (x.unsqueeze(0), True) if x.ndim == 2 else (x, False)


def persistence_forecast(x: torch.Tensor, horizon: int) -> torch.Tensor:
    """Forecast every future step as the window's last value: ``(B, L, N)`` → ``(B, horizon, N)``."""
    if horizon < 1:
        raise ValueError(f'horizon must be >= 1, got {horizon}')
    xb, single = _as_batch(x, 'persistence_forecast')
    y = xb[:, -1:, :].expand(-1, horizon, -1).clone()
    return y[0] if single else y


def seasonal_naive_forecast(x: torch.Tensor, horizon: int, period: int) -> torch.Tensor:
    """Forecast step ``t`` (0-based after the window) as the value ``period`` steps earlier.

    Beyond one period the last observed period repeats: ``y[t] = x[L - period + (t mod period)]``.

    Raises:
        ValueError: if the window is shorter than one period (``L < period``).
    """
    if horizon < 1 or period < 1:
        raise ValueError(f'horizon and period must be >= 1, got {horizon} and {period}')
    xb, single = _as_batch(x, 'seasonal_naive_forecast')
    L = xb.shape[1]
    if L < period:
        raise ValueError(f'seasonal naive forecast needs an input window of at least one period: '
                         f'input length {L} < period {period} (use input_len >= {period})')
    idx = (L - period) + torch.arange(horizon, device=xb.device) % period
    y = xb.index_select(1, idx)
    return y[0] if single else y


def moving_average(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """DLinear's trend: centred moving average over time of ``(B, L, N)`` with edge replication."""
    front = (kernel_size - 1) // 2
    end = kernel_size - 1 - front
    xt = x.transpose(1, 2)  # (B, N, L)
    xt = F.pad(xt, (front, end), mode='replicate')
    return F.avg_pool1d(xt, kernel_size, stride=1).transpose(1, 2)


class LinearForecaster(nn.Module):
    """DLinear-style forecaster: one Linear ``L → H`` over time, shared across series.

    Args:
        input_len: L.
        horizon: H.
        decomposition: split the window into a moving-average trend and the seasonal remainder, each with its
            own Linear (DLinear); otherwise one Linear on the raw window (NLinear without the last-value shift).
        kernel_size: moving-average width of the decomposition (25 as in DLinear).
    """

    def __init__(self, input_len: int, horizon: int, decomposition: bool = False, kernel_size: int = 25) -> None:
        super().__init__()
        if input_len < 1 or horizon < 1:
            raise ValueError(f'input_len and horizon must be >= 1, got {input_len} and {horizon}')
        self.input_len = input_len
        self.horizon = horizon
        self.decomposition = decomposition
        self.kernel_size = kernel_size
        self.linear = nn.Linear(input_len, horizon)
        self.linear_trend = nn.Linear(input_len, horizon) if decomposition else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb, single = _as_batch(x, 'LinearForecaster')
        if xb.shape[1] != self.input_len:
            raise ValueError(f'LinearForecaster expects windows of {self.input_len} steps, got {xb.shape[1]}')
        if self.linear_trend is not None:
            trend = moving_average(xb, self.kernel_size)
            y = self.linear((xb - trend).transpose(1, 2)) + self.linear_trend(trend.transpose(1, 2))
        else:
            y = self.linear(xb.transpose(1, 2))
        y = y.transpose(1, 2)  # (B, H, N)
        return y[0] if single else y


@torch.no_grad()
def fit_linear_forecaster(loader: Iterable, input_len: int, horizon: int, decomposition: bool = False,
                          kernel_size: int = 25, ridge: float = 1e-6) -> LinearForecaster:
    """Least-squares fit of a :class:`LinearForecaster` on every series of every window the loader yields.

    Accumulates the normal equations in float64 (one pass, deterministic) and solves them with a tiny ridge
    (relative to the mean feature energy) for numerical safety. With ``decomposition=True`` both Linears get
    the same solution: ``W·seasonal + W·trend = W·x``, so the decomposed model is the same least-squares
    optimum (its extra parameters only matter when trained by gradient descent).

    Args:
        loader: yields ``(x, y)`` with ``x (B, input_len, N)`` and ``y (B, horizon, N)`` (e.g. a DataLoader).
        input_len: L.
        horizon: H.
        decomposition: see :class:`LinearForecaster`.
        kernel_size: moving-average width when ``decomposition`` is on.
        ridge: ridge strength relative to ``trace(XᵀX) / L``.
    """
    xtx = torch.zeros(input_len + 1, input_len + 1, dtype=torch.float64)
    xty = torch.zeros(input_len + 1, horizon, dtype=torch.float64)
    rows = 0
    for batch in loader:
        x, y = batch[0], batch[1]
        if x.ndim != 3 or x.shape[1] != input_len or y.ndim != 3 or y.shape[1] != horizon:
            raise ValueError(f'fit_linear_forecaster expects x (B, {input_len}, N) and y (B, {horizon}, N), '
                             f'got {tuple(x.shape)} and {tuple(y.shape)}')
        feats = x.transpose(1, 2).reshape(-1, input_len).to(torch.float64)  # one row per (window, series)
        feats = torch.cat([feats, feats.new_ones(feats.shape[0], 1)], dim=1)
        targets = y.transpose(1, 2).reshape(-1, horizon).to(torch.float64)
        xtx += feats.T @ feats
        xty += feats.T @ targets
        rows += feats.shape[0]
    if rows == 0:
        raise ValueError('fit_linear_forecaster: the loader yielded no windows')
    lam = ridge * float(torch.diagonal(xtx)[:-1].mean().clamp_min(1e-12))
    reg = torch.eye(input_len + 1, dtype=torch.float64) * lam
    reg[-1, -1] = 0.  # do not shrink the intercept
    sol = torch.linalg.solve(xtx + reg, xty)  # (L + 1, H)
    model = LinearForecaster(input_len, horizon, decomposition=decomposition, kernel_size=kernel_size)
    weight, bias = sol[:-1].T.to(torch.float32), sol[-1].to(torch.float32)
    model.linear.weight.copy_(weight)
    model.linear.bias.copy_(bias)
    if model.linear_trend is not None:
        model.linear_trend.weight.copy_(weight)
        model.linear_trend.bias.zero_()
    _logger.info('fitted linear forecaster (%d -> %d) on %d series windows', input_len, horizon, rows)
    return model.eval()
