"""Clip-level RandAugment: timm's RandAugment with the same ops and magnitudes on every frame of a clip.

The published video recipe (VideoMAE's fine-tuning code, which UniRepLKNet forks) applies timm-style
``rand-m7-n4-mstd0.5-inc1`` to the decoded frames before the random resized crop, drawing the ops and their
magnitudes once per clip so the motion between frames stays intact. timm's transform works on one PIL image and
draws from Python's ``random`` and NumPy's global RNG, so each frame is augmented from the same saved RNG state:
timm's own ops and levels, no re-implementation.
"""
from __future__ import annotations

import random
import re
from typing import Any

import numpy as np
import torch

__all__ = ['ClipRandAugment', 'PUBLISHED_VIDEO_RAND_AUGMENT']

#: VideoMAE's default ``--aa``: magnitude 7 of 10, 4 ops, magnitude noise std 0.5, the "increasing" op set.
PUBLISHED_VIDEO_RAND_AUGMENT = 'rand-m7-n4-mstd0.5-inc1'
_SECTION = re.compile(r'(m|n|mmax|inc)\d+|(p|mstd)\d+(\.\d*)?|t\w+')


class ClipRandAugment:
    """``(T, H, W, 3)`` uint8 frames → the same shape, every frame through the same timm RandAugment draw.

    Args:
        config: a timm RandAugment string (``timm.data.auto_augment.rand_augment_transform``), e.g.
            :data:`PUBLISHED_VIDEO_RAND_AUGMENT`.
        image_size: the crop side; sets ``translate_const = 0.45 * image_size`` as VideoMAE does (only the
            absolute ``TranslateX/Y`` ops read it; the increasing set translates relative to the frame).
        interpolation: PIL resampling of the geometric ops (VideoMAE: ``--train_interpolation bicubic``).
    """

    def __init__(self, config: str, image_size: int, interpolation: str = 'bicubic') -> None:
        from PIL import Image
        from timm.data.auto_augment import rand_augment_transform
        if not isinstance(config, str) or not config.startswith('rand-'):
            raise ValueError(f'rand_augment must be a timm RandAugment string such as '
                             f'{PUBLISHED_VIDEO_RAND_AUGMENT!r} (the published one), got {config!r}')
        resample = {'bicubic': Image.BICUBIC, 'bilinear': Image.BILINEAR}.get(interpolation)
        if resample is None:
            raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', got {interpolation!r}")
        bad = [c for c in config.split('-')[1:] if not _SECTION.fullmatch(c)]
        if bad:  # timm skips a section without digits silently; a typo must not weaken the recipe unnoticed
            raise ValueError(f'rand_augment {config!r}: unknown section(s) {bad}; sections are m<int> (magnitude, '
                             f'0-10), n<int> (ops), p<float> (op probability), mstd<float>, mmax<int>, inc<0|1>, '
                             f't<name>; e.g. {PUBLISHED_VIDEO_RAND_AUGMENT!r}')
        try:
            self.transform = rand_augment_transform(
                config, {'translate_const': int(image_size * 0.45), 'interpolation': resample})
        except (AssertionError, ValueError, KeyError) as e:  # timm asserts on unknown sections
            raise ValueError(f'rand_augment {config!r} is not a valid timm RandAugment string ({e or "bad section"}); '
                             f'e.g. {PUBLISHED_VIDEO_RAND_AUGMENT!r}') from None
        self.config = config

    def __repr__(self) -> str:
        return f'ClipRandAugment({self.config!r})'

    def __call__(self, frames: Any) -> np.ndarray:
        from PIL import Image
        frames = frames.numpy() if torch.is_tensor(frames) else np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f'ClipRandAugment expects (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}')
        state = random.getstate(), np.random.get_state()
        out = np.empty_like(frames)
        for t, frame in enumerate(frames):
            random.setstate(state[0])
            np.random.set_state(state[1])
            out[t] = np.asarray(self.transform(Image.fromarray(frame)))
        return out
