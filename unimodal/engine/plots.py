"""PNG plots of a run: curves, confusion matrices, forecasts vs truth.

Figures are ``matplotlib.figure.Figure`` objects drawn by their own Agg canvas: no pyplot, so plotting never
switches the global backend (a notebook that calls ``train()`` keeps its own).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from .rundir import read_metrics_log

_logger = logging.getLogger(__name__)

__all__ = ['plot_curves', 'plot_confusion', 'plot_forecast', 'read_metrics_log']


def _figure(**kwargs: Any) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


def plot_curves(records: Sequence[Mapping[str, Any]], out: Path,
                main_metrics: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """Training loss per task, validation loss and the main validation metric per task, by epoch.

    ``main_metrics``: task -> its main validation metric (its kind's ``main_metric``); a task not named shows
    ``top1`` when its records have it, else ``mse``.
    """
    if not records:
        return None
    main_metrics = main_metrics or {}
    tasks = sorted({t for r in records for t in (r.get('val') or {})} | {t for r in records for t in r.get('train', {})
                                                                         if isinstance(r['train'][t], dict)})
    fig = _figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    epochs = [r['epoch'] for r in records]
    for t in tasks:
        train = [r['train'].get(t, {}).get('loss') for r in records]
        axes[0].plot(epochs, train, 'o-', label=f'{t} train')
        val = [(r.get('val') or {}).get(t, {}).get('loss') for r in records]
        if any(v is not None for v in val):
            axes[0].plot([e for e, v in zip(epochs, val) if v is not None], [v for v in val if v is not None],
                         's--', label=f'{t} val')
        main = main_metrics.get(t)
        for r in records:
            m = (r.get('val') or {}).get(t)
            if m and main is None:
                main = 'top1' if 'top1' in m else 'mse'
        if main:
            pts = [(r['epoch'], r['val'][t][main]) for r in records if (r.get('val') or {}).get(t)]
            axes[1].plot([p[0] for p in pts], [p[1] for p in pts], 'o-', label=f'{t} val {main}')
    from matplotlib.ticker import MaxNLocator
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_xlabel('epoch')
    axes[0].set_ylabel('loss')
    axes[0].set_title('loss')
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel('epoch')
    axes[1].set_title('validation metric (top1 %, or mse)')
    axes[1].legend(fontsize=8)
    return _save(fig, out)


def plot_confusion(matrix: Sequence[Sequence[int]], classes: Optional[Sequence[str]], out: Path,
                   title: str = '') -> Path:
    """Row-normalised confusion matrix (true class by row)."""
    cm = torch.tensor(matrix, dtype=torch.float64)
    norm = cm / cm.sum(1, keepdim=True).clamp_min(1)
    n = cm.shape[0]
    size = min(16, max(4, 0.3 * n + 2))
    fig = _figure(figsize=(size, size))
    ax = fig.subplots()
    im = ax.imshow(norm.numpy(), cmap='Blues', vmin=0, vmax=1)
    if classes is not None and n <= 50:
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(classes, rotation=90, fontsize=7)
        ax.set_yticklabels(classes, fontsize=7)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(cm[i, j]), ha='center', va='center', fontsize=7,
                        color='white' if norm[i, j] > 0.5 else 'black')
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_title(title or 'confusion matrix (row-normalised)')
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, out)


def plot_forecast(example: Mapping[str, torch.Tensor], out: Path, max_series: int = 4, title: str = '') -> Path:
    """Input window, truth and forecast of the first test window for a few series."""
    x, y, pred = example['x'][0], example['y'][0], example['pred'][0]
    if x.dim() != 2:  # not (L, N): plot the targets only
        x = None
    n = min(max_series, y.shape[-1])
    fig = _figure(figsize=(9, 2.2 * n))
    axes = fig.subplots(n, 1, squeeze=False)
    L = x.shape[0] if x is not None else 0
    H = y.shape[0]
    for i in range(n):
        ax = axes[i, 0]
        if x is not None:
            ax.plot(range(L), x[:, i].numpy(), color='gray', label='input')
        ax.plot(range(L, L + H), y[:, i].numpy(), color='black', label='truth')
        ax.plot(range(L, L + H), pred[:, i].numpy(), color='tab:red', label='forecast')
        ax.set_ylabel(f'series {i}')
        if i == 0:
            ax.legend(fontsize=8, loc='upper left')
            ax.set_title(title or 'forecast vs truth (first test window)')
    axes[-1, 0].set_xlabel('step')
    return _save(fig, out)
