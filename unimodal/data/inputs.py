"""A sample's input is a tensor or a tuple of tensors (the adapter's input): helpers that treat both alike.

Structured inputs carry what one tensor cannot: a waveform and its real length (features padded after the signal,
as published), a series window and its calendar marks. By convention the first tensor is the primary one (the
series a forecasting baseline reads, the batch dimension's owner).
"""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple, Union

import torch
from torch.utils.data import default_collate

__all__ = ['Inputs', 'to_device', 'primary', 'batch_size', 'take', 'describe', 'is_structured',
           'flatten_repeats_collate']

Inputs = Union[torch.Tensor, Tuple[torch.Tensor, ...]]


def is_structured(x: Any) -> bool:
    return isinstance(x, (tuple, list))


def to_device(x: Inputs, device: torch.device, non_blocking: bool = False) -> Inputs:
    if is_structured(x):
        return tuple(t.to(device, non_blocking=non_blocking) for t in x)
    return x.to(device, non_blocking=non_blocking)


def primary(x: Inputs) -> torch.Tensor:
    """The first tensor of a structured input (the input itself otherwise)."""
    return x[0] if is_structured(x) else x


def batch_size(x: Inputs) -> int:
    return int(primary(x).shape[0])


def take(x: Inputs, n: int) -> Inputs:
    """The first ``n`` samples of a batch."""
    return tuple(t[:n] for t in x) if is_structured(x) else x[:n]


def describe(x: Any) -> Tuple[Union[List[int], List[List[int]]], Union[str, List[str]]]:
    """Shape(s) and dtype name(s) of one sample (a nested list and a list for structured samples)."""
    def one(t: Any) -> Tuple[List[int], str]:
        t = torch.as_tensor(t)
        return list(t.shape), str(t.dtype).replace('torch.', '')
    if is_structured(x):
        parts = [one(t) for t in x]
        return [s for s, _ in parts], [d for _, d in parts]
    return one(x)


def flatten_repeats_collate(batch: Sequence[Tuple[Any, Any]]) -> Tuple[Inputs, torch.Tensor]:
    """Collate samples whose input holds R augmented repeats ``(R, ...)``: inputs ``(B·R, ...)`` sample-major
    (video 0's repeats, then video 1's: VideoMAE's ``multiple_samples_collate``), each target repeated R times."""
    x, y = default_collate(list(batch))
    r = primary(x).shape[1]
    x = tuple(t.flatten(0, 1) for t in x) if is_structured(x) else x.flatten(0, 1)
    return x, y.repeat_interleave(r, dim=0)
