"""ERF heat maps as PNG files: one model, or several side by side with their area ratios.

Matplotlib's object-oriented API only (``Figure`` + ``FigureCanvasAgg``): no pyplot state, and the process's
backend is left as it was.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from .erf import log_scale

_logger = logging.getLogger(__name__)

__all__ = ['save_heatmap', 'save_comparison', 'format_ratios']


def _cmap():
    """The published look: seaborn's ``heatmap(cmap='RdYlGn', center=0)`` of [0, 1] data uses the upper half of the
    map (yellow -> green)."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap
    return ListedColormap(colormaps['RdYlGn'](np.linspace(0.5, 1.0, 256)), name='RdYlGn_upper')


def format_ratios(ratios: Mapping[float, float]) -> str:
    """``'r20 0.052  r30 0.090 ...'`` (threshold in percent)."""
    return '  '.join(f'r{t * 100:g} {r:.3f}' for t, r in ratios.items())


def _panel(ax, erf: torch.Tensor, title: Optional[str], ratios: Optional[Mapping[float, float]]):
    image = ax.imshow(log_scale(erf).numpy(), cmap=_cmap(), vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    if ratios:
        ax.set_xlabel(format_ratios(ratios), fontsize=8)
    return image


def _write_png(fig, path: Union[str, os.PathLike]) -> Path:
    """Render with Agg and write a 256-colour PNG (a heat map of noisy gradients compresses ~4x better as a
    palette image), through a temporary file moved into place: no half-written PNG on failure."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image
    path = Path(path)
    if path.suffix.lower() != '.png':
        raise ValueError(f'{path}: the heat map is written as PNG; give a file name ending in .png')
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert('RGB')
    image = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.png', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            image.save(f, format='PNG', optimize=True)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _logger.info('wrote %s', path)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_heatmap(erf: torch.Tensor, path: Union[str, os.PathLike], title: Optional[str] = None,
                 ratios: Optional[Mapping[float, float]] = None, dpi: int = 100) -> Path:
    """One ERF as a log-scaled heat map PNG (:func:`unimodal.analysis.erf.log_scale`), optionally captioned with
    its area ratios."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4.4, 3.9), dpi=dpi, layout='constrained')
    ax = fig.add_subplot()
    image = _panel(ax, erf, title, ratios)
    fig.colorbar(image, ax=ax, shrink=0.8, label='log10(1 + contribution), scaled')
    return _write_png(fig, path)


def save_comparison(maps: Mapping[str, torch.Tensor], path: Union[str, os.PathLike],
                    ratios: Optional[Mapping[str, Mapping[float, float]]] = None, title: Optional[str] = None,
                    dpi: int = 100) -> Path:
    """Several models' ERFs side by side (each scaled to its own maximum, as published), one shared colour bar.

    Args:
        maps: label -> ``(H, W)`` ERF map.
        path: the ``.png`` to write.
        ratios: label -> ``{threshold: ratio}`` shown under each panel.
        title: figure title (e.g. the inputs used).
    """
    from matplotlib.figure import Figure
    if not maps:
        raise ValueError('no ERF maps to plot')
    n = len(maps)
    fig = Figure(figsize=(3.2 * n + 0.8, 3.9), dpi=dpi, layout='constrained')
    axes = fig.subplots(1, n, squeeze=False)[0]
    image = None
    for ax, (label, erf) in zip(axes, maps.items()):
        image = _panel(ax, erf, label, (ratios or {}).get(label))
    fig.colorbar(image, ax=list(axes), shrink=0.8, label='log10(1 + contribution), scaled')
    if title:
        fig.suptitle(title, fontsize=10)
    return _write_png(fig, path)
