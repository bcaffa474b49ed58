"""Corrformer's multi-correlation (Wu et al., Nature Machine Intelligence 2023, Eqs. 5-10): temporal
auto-correlation on each node and pivot-based cross-correlation among the nodes of each level of a tree, fused along
the nodes by a causal convolution.

Written from the paper and the structure of the released code (``layers/Multi_Correlation.py``,
``layers/Causal_Conv.py``), with these differences, none of which changes the function at the published sizes:
``irfft`` gets the length explicitly (the original returns L - 1 values for odd L), the node sort is stable (ties
are common: many nodes share a lag), no ``.cuda()`` inside the layers, and the causal convolution pads on the left
instead of padding both sides and cutting the right (the same numbers).

Shapes: B batch, H heads, E = D / H channels per head, L length (time), n nodes of one tree level.
"""
from __future__ import annotations

import math
from typing import Callable, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ['lag_correlation', 'roll_time', 'fit_length', 'time_delay_aggregation', 'pivot_cross_correlation',
           'CausalBlock', 'CausalConv', 'AutoCorrelationLayer', 'CrossCorrelationLayer', 'MultiCorrelation']


def lag_correlation(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Circular correlation over the last dimension: ``R[..., τ] = Σ_t q[..., (t + τ) mod L] · k[..., t]``.

    Computed as ``irfft(rfft(q) · conj(rfft(k)))`` (Wiener-Khinchin) in float32.
    """
    L = q.shape[-1]
    qf = torch.fft.rfft(q.float(), dim=-1)
    kf = torch.fft.rfft(k.float(), dim=-1)
    return torch.fft.irfft(qf * torch.conj(kf), n=L, dim=-1)


def roll_time(v: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``out[..., e, t] = v[..., e, (t - shift[...]) mod L]``: a circular shift of ``v (..., E, L)`` along time by
    a lag per leading index (``shift`` of shape ``v.shape[:-2]``, integer)."""
    L = v.shape[-1]
    idx = (torch.arange(L, device=v.device) - shift.unsqueeze(-1)) % L  # (..., L)
    return torch.gather(v, -1, idx.unsqueeze(-2).expand(v.shape))


def fit_length(x: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Zero-pad (at the end) or cut ``x`` along ``dim`` to ``length`` (keys/values of another length than the
    queries, e.g. a one-step encoder output)."""
    size = x.shape[dim]
    if size >= length:
        return x.narrow(dim, 0, length)
    pad = list(x.shape)
    pad[dim] = length - size
    return torch.cat([x, x.new_zeros(pad)], dim)


def time_delay_aggregation(values: torch.Tensor, corr: torch.Tensor, top_k: int) -> torch.Tensor:
    """Autoformer's time-delay aggregation (the released code's ``values_delay_channel``).

    With the lag score ``s[τ] = mean_e R[e, τ]`` of ``corr (B, H, E, L)``, its ``top_k`` lags ``τ_i`` and weights
    ``w = softmax(s[τ_1..τ_k])``: ``out[t] = Σ_i w_i · values[(t + τ_i) mod L]``.
    """
    weights, lags = torch.topk(corr.mean(2), top_k, dim=-1)  # (B, H, K)
    weights = torch.softmax(weights, dim=-1)
    out = torch.zeros_like(values, dtype=weights.dtype)
    for i in range(top_k):
        out = out + roll_time(values, -lags[..., i]) * weights[..., i, None, None]
    return out


def pivot_cross_correlation(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, factor: int,
                            fuse: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Corrformer's pivot-based cross-correlation among n sibling nodes (Eqs. 8-10).

    ``q, k, v``: ``(G, n, H, E, L)`` (G independent groups of n siblings). For each node ``j``: the correlation of
    the pivot (the siblings' mean query) with its key, ``R_j = lag_correlation(mean_j q, k_j)``; its ``factor``
    strongest lags ``τ_{j,i}`` (score ``mean_e R_j``) with weights ``w_{j,i}``. For each i: shift each node's values
    by its lag, ``a_j = σ(w_{j,i}) · roll(v_j, τ_{j,i})``; order the nodes by lag, largest first (stable); fuse
    along that order with ``fuse`` (a causal convolution over the nodes: a node sees only nodes that lead it);
    restore the order and shift back by ``-τ_{j,i}``. The result is the mean over i, ``(G, n, H, E, L)``.
    """
    G, n, H, E, L = v.shape
    corr = lag_correlation(q.mean(1, keepdim=True).expand_as(k), k)  # (G, n, H, E, L)
    weights, lags = torch.topk(corr.mean(3), factor, dim=-1)  # (G, n, H, K)
    out = 0.
    for i in range(factor):
        lag = lags[..., i]
        aligned = roll_time(v, lag) * torch.sigmoid(weights[..., i])[..., None, None].to(v.dtype)
        aligned = aligned.permute(0, 2, 1, 3, 4)  # (G, H, n, E, L)
        order = torch.argsort(L - lag.permute(0, 2, 1), dim=-1, stable=True)  # (G, H, n): largest lag first
        index = order[..., None, None].expand_as(aligned)
        ordered = torch.gather(aligned, 2, index).reshape(G * H, n, E * L)
        fused = fuse(ordered.transpose(1, 2)).transpose(1, 2).reshape(G, H, n, E, L)
        restored = torch.empty_like(fused).scatter_(2, index, fused).permute(0, 2, 1, 3, 4)  # (G, n, H, E, L)
        out = out + roll_time(restored, -lag)
    return out / factor


class CausalBlock(nn.Module):
    """Two weight-normed dilated causal convolutions with ReLU and dropout, and a residual (TCN block).

    ``out = relu(x' + drop(relu(conv2(pad(drop(relu(conv1(pad(x)))))))))`` with ``pad`` on the left by
    ``(k - 1)·dilation`` and ``x'`` = x (or a 1×1 conv when the widths differ). The original re-initialises the
    weights with N(0, 0.01) after ``weight_norm``, which has no effect (the weight is recomputed from g and v at
    every call), so PyTorch's default initialisation is the effective one and is kept.
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, dilation: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.pad = (kernel_size - 1) * dilation
        self.conv1 = weight_norm(nn.Conv1d(in_chans, out_chans, kernel_size, dilation=dilation))
        self.conv2 = weight_norm(nn.Conv1d(out_chans, out_chans, kernel_size, dilation=dilation))
        self.drop = nn.Dropout(dropout)
        self.downsample = nn.Conv1d(in_chans, out_chans, 1) if in_chans != out_chans else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(F.relu(self.conv1(F.pad(x, (self.pad, 0)))))
        out = self.drop(F.relu(self.conv2(F.pad(out, (self.pad, 0)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class CausalConv(nn.Sequential):
    """A stack of :class:`CausalBlock` with dilations 1, 3, 9, … over ``(batch, channels, length)``."""

    def __init__(self, in_chans: int, channels: Sequence[int], kernel_size: int = 3, dropout: float = 0.2) -> None:
        widths = [in_chans, *channels]
        super().__init__(*[CausalBlock(widths[i], widths[i + 1], kernel_size, 3 ** i, dropout)
                           for i in range(len(channels))])


class AutoCorrelationLayer(nn.Module):
    """Multi-head auto-correlation (Autoformer): projections, per-head :func:`lag_correlation` of queries and keys,
    :func:`time_delay_aggregation` of the values with ``top_k = factor · ln L`` lags, output projection."""

    def __init__(self, d_model: int, n_heads: int, factor: int = 1) -> None:
        super().__init__()
        self.n_heads, self.factor = n_heads, factor
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``(B, L, D)`` queries, ``(B, S, D)`` keys and values → ``(B, L, D)``."""
        B, L, D = queries.shape
        H = self.n_heads

        def heads(x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, H, E, L)
            return fit_length(x, L, 1).reshape(B, L, H, D // H).permute(0, 2, 3, 1)
        q, k, v = heads(self.query(queries)), heads(self.key(keys)), heads(self.value(values))
        # at least one lag (the released code would aggregate nothing below L = 3)
        top_k = max(1, min(L, int(self.factor * math.log(L))))
        out = time_delay_aggregation(v, lag_correlation(q, k), top_k)
        return self.out(out.permute(0, 3, 1, 2).reshape(B, L, D).to(queries.dtype))


class CrossCorrelationLayer(nn.Module):
    """Multi-head :func:`pivot_cross_correlation` among sibling nodes, fused by a :class:`CausalConv` whose channels
    are a head's ``E × L`` values (so ``length`` = L is fixed)."""

    def __init__(self, d_model: int, n_heads: int, length: int, factor: int = 1, tcn_layers: int = 1,
                 kernel_size: int = 3, dropout: float = 0.2) -> None:
        super().__init__()
        self.n_heads, self.factor, self.length = n_heads, factor, length
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        width = d_model // n_heads * length
        self.fusion = CausalConv(width, [width] * tcn_layers, kernel_size, dropout)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, n_nodes: int) -> torch.Tensor:
        """``(G·n, L, D)`` queries and ``(G·n, S, D)`` keys/values of G groups of n siblings → ``(G·n, L, D)``."""
        BN, L, D = queries.shape
        if L != self.length:
            raise ValueError(f'cross-correlation built for length {self.length}, got {L}')
        H = self.n_heads

        def heads(x: torch.Tensor) -> torch.Tensor:  # (G·n, T, D) -> (G, n, H, E, L)
            return fit_length(x, L, 1).reshape(BN // n_nodes, n_nodes, L, H, D // H).permute(0, 1, 3, 4, 2)
        q, k, v = heads(self.query(queries)), heads(self.key(keys)), heads(self.value(values))
        out = pivot_cross_correlation(q, k, v, min(self.factor, L), self.fusion)  # (G, n, H, E, L)
        return self.out(out.permute(0, 1, 4, 2, 3).reshape(BN, L, D).to(queries.dtype))


class MultiCorrelation(nn.Module):
    """Auto-correlation on every node plus cross-correlation on every level of the node tree (Eq. 5).

    Nodes are numbered row-major over ``node_list`` (e.g. 350 = 7 × 50: node ``p = 50·a + b``). Level i averages
    each subtree below it into one series per node of the level, correlates the ``node_list[i]`` siblings
    (:class:`CrossCorrelationLayer`) and broadcasts the result back to the subtree's nodes; the levels are
    averaged: ``out = drop(drop(auto(x, c, c))) + drop(mean_i level_i)`` (the auto-correlation term is dropped out
    twice in the original; kept).
    """

    def __init__(self, auto: AutoCorrelationLayer, cross: CrossCorrelationLayer, node_list: Sequence[int],
                 dropout: float = 0.05) -> None:
        super().__init__()
        self.auto, self.cross = auto, cross
        self.node_list: List[int] = [int(n) for n in node_list]
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
        """``x (B·P, L, D)``, ``cross (B·P, S, D)`` (P = prod(node_list)) → ``(B·P, L, D)``."""
        BP, L, D = x.shape
        S = cross.shape[1]
        leaf = self.drop(self.auto(x, cross, cross))
        levels = []
        for i, n in enumerate(self.node_list):
            below = math.prod(self.node_list[i + 1:])
            xt = x.reshape(-1, below, L, D).mean(1)
            ct = cross.reshape(-1, below, S, D).mean(1)
            out = self.cross(xt, ct, ct, n)
            levels.append(out.unsqueeze(1).expand(-1, below, L, D).reshape(BP, L, D))
        return self.drop(leaf) + self.drop(torch.stack(levels).mean(0))
