"""Effective receptive field (ERF): how much each input pixel moves the centre of the last feature map.

The measurement of RepLKNet (Ding et al., CVPR 2022, Sec. 5 and its ``erf/`` scripts), used again by UniRepLKNet to
show that large kernels see far: for each input, the gradient of the central point of the last stage's output
with respect to the input, aggregated over N inputs; the heat map is ``log10(1 + E)`` scaled to ``[0, 1]``, and the
"high-contribution area ratio" ``r(t)`` is the area of the smallest centred square holding a fraction ``t`` of the
total contribution, over the input area (reported for t = 20 %, 30 %, 50 %, 99 %).

For a task model the input is the 2D grid the trunk sees, i.e. the adapter's output (spectrograms for audio, the
projected images of point clouds, ...), so the numbers describe the trunk on that modality's grid.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import torch
from torch import nn

_logger = logging.getLogger(__name__)

__all__ = ['THRESHOLDS', 'erf_map', 'area_ratios', 'log_scale', 'adapter_grid', 'task_model_erf']

#: The contribution fractions the RepLKNet paper reports the area ratio at.
THRESHOLDS = (0.2, 0.3, 0.5, 0.99)

Progress = Callable[..., Iterable]


def _check_eval(model_fn: Callable) -> None:
    """Samples must not interact (summing their central points then gives each one its own gradient), so
    BatchNorm must use running statistics and dropout / drop path must be off: eval mode."""
    owner = model_fn if isinstance(model_fn, nn.Module) else getattr(model_fn, '__self__', None)
    if isinstance(owner, nn.Module) and any(m.training for m in owner.modules()):
        raise ValueError(f'{type(owner).__name__} is in training mode: call .eval() before measuring the ERF '
                         f'(BatchNorm must use its running statistics, dropout and drop path must be off)')


def erf_map(model_fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, *, batch_size: int = 1,
            gradient: str = 'positive', progress: Optional[Progress] = None, desc: str = 'erf') -> torch.Tensor:
    """The aggregated contribution map ``E`` of ``inputs`` to the central point of ``model_fn``'s output.

    With ``y_n = model_fn(x_n)`` of shape ``(K, H', W')`` and its central point
    ``s_n = sum_k max(0, y_n[k, H' // 2, W' // 2])``::

        E[u, v] = 1/N  sum_n  sum_c  g(d s_n / d x_n[c, u, v]),   g = max(0, .)  (gradient='positive')
                                                                   g = |.|       (gradient='abs')

    ``'positive'`` is the published definition (RepLKNet ``erf/visualize_erf.py``); ``'abs'`` also counts pixels
    that lower the centre.

    Args:
        model_fn: ``(B, C, H, W) -> (B, K, H', W')``, e.g. ``trunk.forward_features`` (the last stage's map before
            pooling). Its module must be in eval mode: inputs are batched and their central points summed, which
            gives each input its own gradient only when samples do not interact.
        inputs: ``(N, C, H, W)`` inputs (on the model's device).
        batch_size: inputs per backward pass (the result does not depend on it).
        gradient: ``'positive'`` or ``'abs'``.
        progress: optional ``progress(iterable, desc=..., total=...)`` wrapper (e.g. tqdm) over the batches.
        desc: label for the progress bar.

    Returns:
        ``(H, W)`` float32 map on the CPU.

    Raises:
        ValueError: wrong input or output rank, a model in training mode, or an input whose gradient is not
            finite (named by its index).
    """
    if gradient not in ('positive', 'abs'):
        raise ValueError(f"gradient must be 'positive' or 'abs', got {gradient!r}")
    if inputs.ndim != 4 or inputs.shape[0] == 0:
        raise ValueError(f'inputs must be a non-empty (N, C, H, W) batch, got shape {tuple(inputs.shape)}')
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    _check_eval(model_fn)
    n = inputs.shape[0]
    starts = range(0, n, batch_size)
    if progress is not None:
        starts = progress(starts, desc=desc, total=len(starts))
    total = torch.zeros(inputs.shape[-2:], dtype=torch.float64)
    for i in starts:
        x = inputs[i:i + batch_size].detach().float().requires_grad_(True)
        with torch.enable_grad():
            y = model_fn(x)
            if not torch.is_tensor(y) or y.ndim != 4:
                shape = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
                raise ValueError(f'the model must return a (B, C, H, W) feature map, got {shape} '
                                 f'(for timm models use forward_features of a convolutional network)')
            centre = torch.relu(y[:, :, y.shape[2] // 2, y.shape[3] // 2]).sum()
            grad, = torch.autograd.grad(centre, x)
        grad = torch.relu(grad) if gradient == 'positive' else grad.abs()
        per_input = grad.sum(1).double()
        bad = (~torch.isfinite(per_input.flatten(1)).all(1)).nonzero().flatten()
        if len(bad):
            raise ValueError(f'non-finite gradient for input(s) {[i + int(b) for b in bad]} (of {n})')
        total += per_input.sum(0).cpu()
    return (total / n).float()


def log_scale(erf: torch.Tensor) -> torch.Tensor:
    """``log10(1 + E) / max log10(1 + E)``: the published heat-map scale (scores span orders of magnitude)."""
    out = torch.log10(1 + erf.double())
    peak = out.max()
    return (out / peak if peak > 0 else out).float()


def area_ratios(erf: torch.Tensor, thresholds: Sequence[float] = THRESHOLDS, log: bool = True) -> Dict[float, float]:
    """High-contribution area ratio ``r(t)`` for each threshold ``t``.

    With ``M = log10(1 + E)`` (``log=True``, as published; else ``M = E``), centre ``(H // 2, W // 2)`` and
    ``Q_i`` the centred square of side ``2i + 1`` clipped to the map::

        r(t) = |Q_i*| / (H W),   i* = min { i >= 0 : sum_{Q_i} M >= t sum M }

    Differences from the published loop (``erf/analyze_erf.py``), which only matter at the extremes: squares
    start at 1x1 (it starts at 3x3) and grow until they cover the whole map (it stops one step short and then
    returns nothing), and a square that leaves a non-square map is clipped to it.

    Args:
        erf: ``(H, W)`` non-negative map (from :func:`erf_map`).
        thresholds: fractions in ``(0, 1]``.
        log: measure on ``log10(1 + E)`` (the published metric) rather than on ``E``.

    Returns:
        ``{t: r(t)}`` in the order given.
    """
    if erf.ndim != 2:
        raise ValueError(f'the ERF map must be 2-D (H, W), got shape {tuple(erf.shape)}')
    m = erf.double().cpu()
    if not torch.isfinite(m).all() or (m < 0).any():
        raise ValueError('the ERF map must be finite and non-negative')
    for t in thresholds:
        if not 0 < t <= 1:
            raise ValueError(f'thresholds are fractions in (0, 1], got {t}')
    if log:
        m = torch.log10(1 + m)
    h, w = m.shape
    whole = m.sum()
    if whole <= 0:
        raise ValueError('the ERF map is all zero: no input position reaches the central output point')
    cum = torch.nn.functional.pad(m.cumsum(0).cumsum(1), (1, 0, 1, 0))  # cum[r, c] = sum of m[:r, :c]
    cy, cx = h // 2, w // 2
    i = torch.arange(max(cy, h - 1 - cy, cx, w - 1 - cx) + 1)
    r0, r1 = (cy - i).clamp(min=0), (cy + i + 1).clamp(max=h)
    c0, c1 = (cx - i).clamp(min=0), (cx + i + 1).clamp(max=w)
    covered = cum[r1, c1] - cum[r0, c1] - cum[r1, c0] + cum[r0, c0]
    area = (r1 - r0) * (c1 - c0)
    fraction = covered / whole
    out = {}
    for t in thresholds:
        first = int((fraction >= t - 1e-9).nonzero()[0])  # the last square is the whole map: always reached
        out[t] = float(area[first]) / (h * w)
    return out


@torch.no_grad()
def adapter_grid(adapter: nn.Module, inputs: Any) -> torch.Tensor:
    """The trunk input ``(B * views, C, H, W)`` an adapter makes of a raw batch, in eval mode (no augmentation)."""
    was_training = adapter.training
    adapter.eval()
    try:
        check = getattr(adapter, 'check_input', None)
        if check is not None:
            check(inputs)
        out = adapter(inputs)
    finally:
        adapter.train(was_training)
    grid = out[0] if isinstance(out, tuple) else out
    return grid.detach()


def task_model_erf(model: nn.Module, inputs: Any, **kwargs: Any) -> torch.Tensor:
    """ERF of a :class:`unimodal.TaskModel` (adapter -> trunk -> head) on a batch of raw task inputs.

    The map is taken with respect to the adapter's output, the 2D grid the trunk sees (every view of a
    multi-view adapter counts as one input); the model is put in eval mode. ``kwargs`` go to :func:`erf_map`.
    """
    model.eval()
    grid = adapter_grid(model.adapter, inputs)
    return erf_map(model.trunk.forward_features, grid, **kwargs)
