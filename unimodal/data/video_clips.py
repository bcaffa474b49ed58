"""Clip sampling of the video reader: which frames make a clip, and the evaluation views of a decoded video.

:class:`ClipViews` is the part of :class:`~unimodal.data.kinetics.Kinetics` that turns one video file into the
model's input (frame indices, decoding with decord, short-side resize, centre or spread crops, normalisation); the
reader inherits it, and ``unimodal predict`` uses it on a file it is given, so both decode a video the same way.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F

from .errors import DataError

__all__ = ['ClipViews', 'IMAGENET_MEAN', 'IMAGENET_STD', 'SPLITS']

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ('train', 'val', 'test')


def _open_video(path: str):
    """A fresh decord reader (never shared: one per call, hence one per DataLoader worker)."""
    import decord  # lazy: heavy optional dependency
    try:
        vr = decord.VideoReader(str(path), num_threads=1)
        n = len(vr)
    except Exception as e:  # decord raises its own DECORDError/RuntimeError on broken containers
        raise DataError(path, f'cannot decode video ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})',
                        reason='undecodable') from None
    if n < 1:
        raise DataError(path, 'video has no frames', reason='undecodable')
    return vr, n


class ClipViews:
    """How a split reads a video: ``train`` one random clip, ``val`` the centre clip and crop, ``test``
    ``num_clips`` clips spread over the video x ``num_crops`` crops along the long side (the multi-view protocol).

    Args:
        split: ``'train'``, ``'val'`` or ``'test'``.
        num_frames, stride: frames per clip and the step between them.
        image_size: the square crop side.
        num_clips, num_crops: the test split's views.
    """

    def __init__(self, split: str = 'test', *, num_frames: int = 16, stride: int = 4, image_size: int = 224,
                 num_clips: int = 5, num_crops: int = 3) -> None:
        if split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
        self.split = split
        self.num_frames, self.stride, self.image_size = num_frames, stride, image_size
        self.num_clips, self.num_crops = num_clips, num_crops
        self._mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)

    def _indices(self, n: int, start: int) -> List[int]:
        # clips longer than the video repeat its last frame (as VideoMAE/mmaction2 do)
        return [min(start + i * self.stride, n - 1) for i in range(self.num_frames)]

    def _starts(self, n: int) -> List[int]:
        span = (self.num_frames - 1) * self.stride + 1
        room = max(0, n - span)
        if self.split == 'train':
            return [int(torch.randint(room + 1, ()).item())]
        if self.split == 'val':
            return [room // 2]
        if self.num_clips == 1:
            return [room // 2]
        return [round(room * i / (self.num_clips - 1)) for i in range(self.num_clips)]

    def _decode(self, path: str) -> torch.Tensor:
        """Frames of all clips of a video as ``(clips, T, H, W, 3)`` uint8 (one fresh reader per call)."""
        vr, n = _open_video(path)
        starts = self._starts(n)
        idx = [i for s in starts for i in self._indices(n, s)]
        try:
            frames = vr.get_batch(idx).asnumpy()
        except Exception as e:
            raise DataError(path, f'cannot decode frames {idx[0]}..{idx[-1]} of {n} '
                                  f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})') from None
        finally:
            del vr
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise DataError(path, f'decoded frames have shape {frames.shape}, expected (T, H, W, 3)')
        return torch.from_numpy(frames).view(len(starts), self.num_frames, *frames.shape[1:])

    def _resize(self, x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """``(T, 3, h, w)`` float → ``(T, 3, size)``."""
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=size, mode='bilinear', align_corners=False, antialias=True)

    def _short_side_crops(self, x: torch.Tensor, num_crops: int) -> List[torch.Tensor]:
        h, w = x.shape[-2:]
        s = self.image_size
        nh, nw = (s, max(s, round(w * s / h))) if h <= w else (max(s, round(h * s / w)), s)
        x = self._resize(x, (nh, nw))
        long_room, along_w = (nw - s, True) if nw >= nh else (nh - s, False)
        offsets = [long_room // 2] if num_crops == 1 else \
            [round(long_room * i / (num_crops - 1)) for i in range(num_crops)]
        other = ((nh - s) // 2) if along_w else ((nw - s) // 2)
        crops = []
        for o in offsets:
            top, left = (other, o) if along_w else (o, other)
            crops.append(x[..., top:top + s, left:left + s])
        return crops

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, 3, S, S)`` in [0, 1] → ``(3, T, S, S)`` normalised."""
        return (x.transpose(0, 1) - self._mean) / self._std

    def eval_views(self, frames: torch.Tensor) -> torch.Tensor:
        """The evaluation input of decoded ``(clips, T, H, W, 3)`` uint8 frames: ``(3, T, S, S)`` (``val``) or
        ``(clips x crops, 3, T, S, S)`` (``test``)."""
        clips = frames.permute(0, 1, 4, 2, 3).float().div_(255)  # (clips, T, 3, H, W)
        if self.split == 'val':
            return self._normalise(self._short_side_crops(clips[0], 1)[0])
        return torch.stack([self._normalise(c) for clip in clips for c in self._short_side_crops(clip, self.num_crops)])

    def load_file(self, path: str) -> torch.Tensor:
        """One video file's evaluation input (:meth:`eval_views` of its decoded clips); :class:`DataError` names
        the file when it cannot be decoded."""
        if self.split == 'train':
            raise ValueError('load_file gives evaluation views (split val or test)')
        return self.eval_views(self._decode(str(path)))
