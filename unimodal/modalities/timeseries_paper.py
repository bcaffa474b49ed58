"""The published time-series embedding (Corrformer ``DataEmbedding`` as UniRepLKNet Global Temp/Wind uses it): series
grouped into nodes, a circular Conv1d over each node's series, calendar and station-coordinate embeddings, and the raw
reshape of a node's ``(L, D)`` tokens into one square trunk image.

Notation: a batch ``(B, L, N)`` of N series; nodes of G consecutive series (published: G = 11 stations, P = N / G =
350 nodes); D the token width (768); F calendar features per step (4); C coordinates per station (3).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['group_series', 'ungroup_series', 'group_coords', 'square_side', 'square_tokens', 'SeriesEmbedding']


def group_series(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(B, T, N)`` → ``(B·P, T, G)``: node ``p`` holds series ``p·G … p·G + G - 1``; rows are sample-major
    (all nodes of sample 0, then sample 1, …), as the original's ``view(B, L, P, G).permute(0, 2, 1, 3)``."""
    B, T, N = x.shape
    if N % group_size:
        raise ValueError(f'{N} series do not split into groups of {group_size}')
    P = N // group_size
    return x.reshape(B, T, P, group_size).permute(0, 2, 1, 3).reshape(B * P, T, group_size)


def ungroup_series(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Inverse of :func:`group_series`: ``(B·P, T, G)`` → ``(B, T, P·G)``."""
    BP, T, G = x.shape
    return x.reshape(batch, BP // batch, T, G).permute(0, 2, 1, 3).reshape(batch, T, BP // batch * G)


def group_coords(coords: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(B, N, C)`` station coordinates → ``(B, P, G·C)``: a node's G stations' coordinates, station-major (the
    original's ``reshape(P, G, 3).view(P, -1)``, e.g. 11 × 3 = 33 values per node)."""
    B, N, C = coords.shape
    return coords.reshape(B, N // group_size, group_size * C)


def square_tokens(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """``(M, L, D)`` tokens → ``(M, 1, side, side)`` by the published raw reshape: the ``(L, D)`` matrix, row-major,
    fills the map row by row (48 × 768 → 192 × 192); zero-padded when ``L·D < side²``."""
    M = tokens.shape[0]
    flat = tokens.reshape(M, -1)
    if flat.shape[1] != side * side:
        flat = F.pad(flat, (0, side * side - flat.shape[1]))
    return flat.reshape(M, 1, side, side)


class SeriesEmbedding(nn.Module):
    """Corrformer's ``DataEmbedding``: value + calendar + station-coordinate embeddings of each node, then dropout.

    ``E[b·P + p, t] = W_v ⊛ x[b, p, t-1:t+2] + W_t · marks[b, t] + (W_g · coords[b, p] + b_g)``, where ``W_v ⊛``
    is a circular Conv1d over time (G → D channels, kernel 3, no bias; Kaiming-normal init as published), ``W_t`` a
    ``Linear(F → D)`` without bias (TSLib ``TimeFeatureEmbedding``) and ``W_g`` a ``Linear(G·C → D)`` (Corrformer
    ``GeoPositionalEmbedding``). No position embedding: the published embedding has none.

    Args:
        group_size: G, the series per node (the value convolution's input channels).
        d_model: D.
        kernel_size: the value convolution's temporal kernel (3).
        mark_dim: F (0: no calendar embedding).
        coord_dim: C per station (0: no coordinate embedding).
        dropout: applied to the sum (0.05 published).
    """

    def __init__(self, group_size: int, d_model: int, kernel_size: int = 3, mark_dim: int = 0, coord_dim: int = 0,
                 dropout: float = 0.) -> None:
        super().__init__()
        self.group_size = group_size
        self.value = nn.Conv1d(group_size, d_model, kernel_size, padding=kernel_size // 2, padding_mode='circular',
                               bias=False)
        nn.init.kaiming_normal_(self.value.weight, mode='fan_in', nonlinearity='leaky_relu')
        self.time = nn.Linear(mark_dim, d_model, bias=False) if mark_dim else None
        self.geo = nn.Linear(group_size * coord_dim, d_model) if coord_dim else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, batch: int, marks: Optional[torch.Tensor] = None,
                coords: Optional[torch.Tensor] = None, extra: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Embed grouped series.

        Args:
            x: ``(B·P, T, G)`` grouped series (:func:`group_series`).
            batch: B.
            marks: ``(B, T, F)`` calendar features of the T steps (shared by a sample's nodes).
            coords: ``(B, P, G·C)`` grouped coordinates (:func:`group_coords`).
            extra: an additive term broadcastable to ``(B, P, T, D)`` (an optional learned or fixed table).

        Returns:
            ``(B·P, T, D)``.
        """
        if (marks is None) != (self.time is None) or (coords is None) != (self.geo is None):
            raise ValueError('SeriesEmbedding: marks/coords given must match the embeddings built (mark_dim, '
                             'coord_dim)')
        out = self.value(x.transpose(1, 2)).transpose(1, 2)  # (B·P, T, D)
        if marks is None and coords is None and extra is None:
            return self.drop(out)
        out = out.reshape(batch, -1, *out.shape[1:])  # (B, P, T, D)
        if marks is not None:
            out = out + self.time(marks).unsqueeze(1)
        if coords is not None:
            out = out + self.geo(coords).unsqueeze(2)
        if extra is not None:
            out = out + extra
        return self.drop(out.reshape(-1, *out.shape[2:]))


def square_side(length: int, width: int) -> int:
    """The smallest side S with ``S² >= length · width``."""
    return math.isqrt(length * width - 1) + 1
