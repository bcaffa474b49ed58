"""Video adapter: a clip ``(B, 3, T, H, W)`` of normalised frames → one 2D trunk input.

Three layouts:

* ``'mosaic'`` (default): a true grid of frames. Frame ``t`` goes to tile ``(t // cols, t % cols)`` of a
  ``rows × cols`` mosaic, so the trunk sees ``(B, 3, rows·H, cols·W)``. For 16 frames the grid is 4×4.
* ``'channels'``: frames folded into channels, ``(B, 3·T, H, W)``; channel ``3t + c`` is colour ``c`` of
  frame ``t`` (frame-major, so each frame's RGB stays together). The cheapest layout: one ``H × W`` image
  per clip, and the stem sees every frame at once.
* ``'paper'``: the published conversion, a raw memory reshape ``(B, 3, 16, H, H) → (B, 3, 4H, 4H)`` (for
  224-pixel frames ``(B, 3, 896, 896)``). It is NOT a tiling: frame ``t`` fills output rows
  ``(H/4)·t … (H/4)·(t+1) − 1`` and every output row holds 4 consecutive rows of that frame side by side.
  Kept only for parity with the published numbers; defined for 16 frames of square ``H × H`` with ``H``
  divisible by 4 (otherwise frames would straddle output rows).

A multi-view batch ``(B, V, 3, T, H, W)`` (V = temporal clips × spatial crops at test time) is accepted in
every mode: the V views run through the trunk as separate clips and the model returns, per video, the log of
the softmax scores averaged over views. Those are valid logits (their softmax is the averaged score), so
accuracy and cross-entropy need no special case. :func:`multiview_predict` does the same averaging outside
the model (in chunks, returning probabilities).
"""
from __future__ import annotations

import logging
import math
from typing import List, Optional, Sequence, Tuple

import torch

from .base import Adapter, InputShapeError, register_adapter

_logger = logging.getLogger(__name__)

__all__ = ['VideoAdapter', 'multiview_predict', 'paper_reshape', 'frame_mosaic', 'frames_to_channels',
           'mosaic_grid', 'VIDEO_MODES']

VIDEO_MODES = ('mosaic', 'channels', 'paper')
PAPER_NUM_FRAMES = 16

_paper_warned = False


def mosaic_grid(num_frames: int) -> Tuple[int, int]:
    """Default ``(rows, cols)`` mosaic for ``num_frames`` frames.

    The most square exact factorisation ``rows × cols = T`` with ``rows ≤ cols ≤ 2·rows`` (16 → 4×4,
    8 → 2×4, 12 → 3×4); if there is none (e.g. 5, 7, 11), the smallest near-square grid
    ``ceil(sqrt(T))`` columns wide, with the unused tiles left as zeros (the normalised mean colour).
    """
    if num_frames < 1:
        raise ValueError(f'num_frames must be >= 1, got {num_frames}')
    for rows in range(int(math.isqrt(num_frames)), 0, -1):
        if num_frames % rows == 0:
            cols = num_frames // rows
            if cols <= 2 * rows:
                return rows, cols
            break
    cols = math.ceil(math.sqrt(num_frames))
    return math.ceil(num_frames / cols), cols


def paper_reshape(x: torch.Tensor) -> torch.Tensor:
    """The published raw reshape ``(B, 3, 16, H, H) → (B, 3, 4H, 4H)`` of the contiguous clip.

    Not a tiling (see the module docstring); ``H`` must be divisible by 4 so each frame fills whole rows.
    """
    b, c, t, h, w = x.shape
    if t != PAPER_NUM_FRAMES or h != w or h % 4:
        raise InputShapeError(
            f"paper video reshape is defined for (B, C, 16, H, H) clips with H divisible by 4, got {tuple(x.shape)}; "
            f"use mode='mosaic' or mode='channels' for other sizes")
    side = 4 * h  # 16·H·H elements per channel = (4H)²
    return x.contiguous().reshape(b, c, side, side)


def frame_mosaic(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Tile the frames of ``(B, C, T, H, W)`` into ``(B, C, rows·H, cols·W)``; frame t → tile (t // cols, t % cols).

    Tiles past the last frame are zeros.
    """
    b, c, t, h, w = x.shape
    if rows * cols < t:
        raise ValueError(f'a {rows}x{cols} mosaic has {rows * cols} tiles, fewer than the {t} frames')
    if rows * cols > t:
        x = torch.cat([x, x.new_zeros(b, c, rows * cols - t, h, w)], dim=2)
    x = x.reshape(b, c, rows, cols, h, w).permute(0, 1, 2, 4, 3, 5)  # (B, C, rows, H, cols, W)
    return x.reshape(b, c, rows * h, cols * w)


def frames_to_channels(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` → ``(B, T·C, H, W)``, channel ``C·t + c`` = colour ``c`` of frame ``t``."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b, t * c, h, w)


@register_adapter('video')
class VideoAdapter(Adapter):
    """Turns a clip of normalised RGB frames into one 2D trunk input (see the module docstring).

    Args:
        mode: ``'mosaic'`` (default), ``'channels'`` or ``'paper'`` (published raw reshape, 16 frames only).
        num_frames: frames per clip T (sets ``out_chans = 3·T`` in ``'channels'`` mode).
        image_size: frame side the clips must have (``H = W = image_size``); ``None`` accepts any size
            (the trunk is fully convolutional) except where the mode needs a particular shape.
        grid: ``(rows, cols)`` of the mosaic; default :func:`mosaic_grid` of ``num_frames``.
    """

    name = 'video'
    head_kind = 'classification'
    input_desc = '(B, 3, T, H, W) float clip of normalised RGB frames (or (B, V, 3, T, H, W) multi-view)'

    def __init__(self, mode: str = 'mosaic', num_frames: int = 16, image_size: Optional[int] = 224,
                 grid: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        mode = self.option('mode', mode, str, choices=VIDEO_MODES)
        num_frames = self.option('num_frames', num_frames, int, lo=1)
        image_size = self.option('image_size', image_size, Optional[int], lo=1)
        grid = self.option('grid', grid, Optional[List[int]], length=2, expects='[rows, cols]')
        if grid is not None and mode != 'mosaic':
            raise ValueError(f"grid applies to mode='mosaic' only (mode={mode!r})")
        self.mode = mode
        self.num_frames = int(num_frames)
        self.image_size = None if image_size is None else int(image_size)
        self.grid: Optional[Tuple[int, int]] = None
        if mode == 'paper':
            if self.num_frames != PAPER_NUM_FRAMES:
                raise ValueError(f"mode='paper' (the published raw reshape) is defined for 16 frames only, got "
                                 f"num_frames={num_frames}; use mode='mosaic' or 'channels'")
            if self.image_size is not None and self.image_size % 4:
                raise ValueError(f"mode='paper' needs image_size divisible by 4 (each output row holds 4 frame rows), "
                                 f'got {image_size}')
            _warn_paper_once()
        elif mode == 'mosaic':
            rows, cols = (int(v) for v in grid) if grid is not None else mosaic_grid(self.num_frames)
            if rows < 1 or cols < 1 or rows * cols < self.num_frames:
                raise ValueError(f'mosaic grid {rows}x{cols} cannot hold {self.num_frames} frames')
            self.grid = (rows, cols)
        self.out_chans = 3 * self.num_frames if mode == 'channels' else 3

    def extra_repr(self) -> str:
        grid = f', grid={self.grid[0]}x{self.grid[1]}' if self.grid else ''
        return f'mode={self.mode!r}, num_frames={self.num_frames}, image_size={self.image_size}{grid}'

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if x.ndim not in (5, 6):
            raise self.shape_error(x, f'expected 5 dims (or 6 for a multi-view batch), got {x.ndim}')
        if not x.is_floating_point():
            raise self.shape_error(x, 'expected a float tensor of normalised frames')
        c, t, h, w = x.shape[-4:]
        if c != 3:
            raise self.shape_error(x, f'expected 3 colour channels in dim {x.ndim - 4}, got {c} '
                                      f'(channels come before time: (B, 3, T, H, W))')
        if t != self.num_frames:
            raise self.shape_error(x, f'expected T={self.num_frames} frames in dim {x.ndim - 3}, got {t}')
        if self.image_size is not None and (h != self.image_size or w != self.image_size):
            raise self.shape_error(x, f'expected {self.image_size}x{self.image_size} frames, got {h}x{w}')
        if self.mode == 'paper' and (h != w or h % 4):
            raise self.shape_error(x, f"mode='paper' needs square frames with a side divisible by 4, got {h}x{w}")
        if x.shape[0] == 0 or (x.ndim == 6 and x.shape[1] == 0):
            raise self.shape_error(x, 'empty batch')

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[int]]:
        views = None
        if x.ndim == 6:  # (B, V, 3, T, H, W): views become separate clips, averaged in decode
            views = x.shape[1]
            x = x.flatten(0, 1)
        if self.mode == 'paper':
            grid = paper_reshape(x)
        elif self.mode == 'mosaic':
            grid = frame_mosaic(x, *self.grid)
        else:
            grid = frames_to_channels(x)
        return grid, views

    def decode(self, y: torch.Tensor, state: Optional[int]) -> torch.Tensor:
        if state is None:
            return y
        # log of the view-averaged softmax: valid logits whose softmax is the averaged score
        probs = y.float().softmax(-1).reshape(-1, state, y.shape[-1]).mean(1)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log().to(y.dtype)


def _warn_paper_once() -> None:
    global _paper_warned
    if not _paper_warned:
        _paper_warned = True
        _logger.warning("video mode='paper' is the published raw memory reshape (B,3,16,H,H)->(B,3,4H,4H), kept for "
                        "paper parity: it is NOT a tiling of frames (each output row holds 4 rows of one frame). "
                        "Use mode='mosaic' or 'channels' for a real layout.")


@torch.no_grad()
def multiview_predict(model: torch.nn.Module, clips: torch.Tensor, chunk_size: Optional[int] = None) -> torch.Tensor:
    """Multi-view test: softmax scores averaged over the views of each video.

    Args:
        model: a video task model mapping ``(N, 3, T, H, W)`` to logits ``(N, K)``.
        clips: ``(B, V, 3, T, H, W)``, V = temporal clips × spatial crops per video (the test split of
            :class:`unimodal.data.kinetics.Kinetics` yields ``(V, 3, T, H, W)`` per video).
        chunk_size: at most this many clips through the model at once (default: all ``B·V``).

    Returns:
        ``(B, K)`` averaged class probabilities.
    """
    if not torch.is_tensor(clips) or clips.ndim != 6:
        shape = tuple(clips.shape) if torch.is_tensor(clips) else type(clips).__name__
        raise InputShapeError(f'multiview_predict expects clips (B, V, 3, T, H, W), got {shape}')
    b, v = clips.shape[:2]
    flat = clips.flatten(0, 1)
    step = chunk_size or flat.shape[0]
    probs = torch.cat([model(part).float().softmax(-1) for part in flat.split(step)])
    return probs.reshape(b, v, -1).mean(1)
