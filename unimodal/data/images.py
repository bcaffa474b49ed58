"""ImageFolder reader (for evaluating released ImageNet checkpoints) and the built-in synthetic image set.

The evaluation transform is the timm/torchvision one, written with PIL + NumPy (no torchvision):
resize the short side to ``floor(image_size / crop_pct)`` (bicubic), centre-crop ``image_size``, scale to
[0, 1]. Normalisation happens in the image adapter, so the reader yields ``(3, S, S)`` floats in [0, 1].
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .builtin import build_once
from .errors import DataError, SkipReport

_logger = logging.getLogger(__name__)

__all__ = ['ImageFolderDataset', 'IMAGE_EXTENSIONS', 'make_builtin_images', 'BUILTIN_IMAGE_CLASSES',
           'READER_DEFAULTS_FILE', 'load_image', 'eval_transform']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp', '.gif')

_INTERPOLATIONS = ('bicubic', 'bilinear', 'nearest', 'lanczos')


def _pil_resample(name: str):
    from PIL import Image
    if name not in _INTERPOLATIONS:
        raise ValueError(f'interpolation must be one of {_INTERPOLATIONS}, got {name!r}')
    return {'bicubic': Image.Resampling.BICUBIC, 'bilinear': Image.Resampling.BILINEAR,
            'nearest': Image.Resampling.NEAREST, 'lanczos': Image.Resampling.LANCZOS}[name]


def load_image(path: Union[str, Path], mode: str = 'RGB'):
    """Open and fully decode an image with PIL; any failure becomes a :class:`DataError` naming the file."""
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise DataError(path, 'zero-byte image file')
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, not later in a worker
            return img.convert(mode)
    except DataError:
        raise
    except UnidentifiedImageError as e:
        raise DataError(path, f'not a readable image (PIL cannot identify the format): {e}') from e
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(path, f'corrupt or truncated image: {e}') from e


def _to_tensor(img) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).float().div_(255.)


def eval_transform(img, image_size: int, crop_pct: float = 0.875, interpolation: str = 'bicubic') -> torch.Tensor:
    """Short side → ``floor(image_size / crop_pct)``, centre crop ``image_size``, to a [0, 1] ``(C, S, S)`` tensor."""
    scale_size = math.floor(image_size / crop_pct)
    w, h = img.size
    if w <= h:
        new_w, new_h = scale_size, max(1, int(round(h * scale_size / w)))
    else:
        new_w, new_h = max(1, int(round(w * scale_size / h))), scale_size
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), resample=_pil_resample(interpolation))
    left = int(round((new_w - image_size) / 2.))
    top = int(round((new_h - image_size) / 2.))
    img = img.crop((left, top, left + image_size, top + image_size))
    return _to_tensor(img)


def _random_resized_crop(img, image_size: int, scale: Tuple[float, float], ratio: Tuple[float, float],
                         interpolation: str, gen: torch.Generator):
    """The Inception-style random resized crop (area fraction in ``scale``, aspect ratio in ``ratio``)."""
    w, h = img.size
    area = w * h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(1, generator=gen).item())
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(1, generator=gen).item())
        cw = int(round(math.sqrt(target_area * aspect)))
        ch = int(round(math.sqrt(target_area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
            top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
            break
    else:  # fall back to a centre crop
        cw = ch = min(w, h)
        left, top = (w - cw) // 2, (h - ch) // 2
    img = img.crop((left, top, left + cw, top + ch))
    return img.resize((image_size, image_size), resample=_pil_resample(interpolation))


class ImageFolderDataset(Dataset):
    """``<root>/<class>/<image>`` folder of images, yielding ``((3, S, S) float in [0, 1], class index)``.

    Args:
        root: the split folder (e.g. ``imagenet/val``) holding one sub-folder per class.
        image_size: output side ``S``.
        crop_pct: evaluation centre-crop fraction (short side resized to ``floor(S / crop_pct)``); 0.875 at 224
            and 1.0 at 384 for the released checkpoints.
        interpolation: ``'bicubic'`` (timm default), ``'bilinear'``, ``'nearest'`` or ``'lanczos'``.
        train: use the training transform (random resized crop with ``train_scale``/``train_ratio``) instead
            of the evaluation transform. Horizontal flips are the image adapter's ``hflip`` option.
        train_scale: area fraction range of the random resized crop.
        train_ratio: aspect ratio range of the random resized crop.
        classes: class folder names in label order (default: the sorted sub-folders); pass the training
            split's list to the validation split so labels agree. A folder not in the list is an error.
        skip_bad: skip unreadable images (recorded in :attr:`skip_report`) instead of failing.
        verify: decode every image once in ``__init__`` (so bad files are found and counted up front; meant for
            small sets, it reads the whole data set).
        seed: seed of the training-transform randomness (combined with torch's seed, the sample index and a
            call counter, so runs are reproducible under a fixed torch seed).
    """

    def __init__(self, root: Union[str, Path], image_size: int = 224, crop_pct: float = 0.875,
                 interpolation: str = 'bicubic', train: bool = False,
                 train_scale: Sequence[float] = (0.08, 1.0), train_ratio: Sequence[float] = (3 / 4, 4 / 3),
                 classes: Optional[Sequence[str]] = None, skip_bad: bool = False, verify: bool = False,
                 seed: int = 0) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f'{self.root}: image folder not found (expected <split>/<class>/<image> '
                                    f'folders, e.g. imagenet/val/n01440764/ILSVRC2012_val_00000293.JPEG)')
        if image_size < 1:
            raise ValueError(f'image_size must be >= 1, got {image_size}')
        if not 0. < crop_pct <= 1.:
            raise ValueError(f'crop_pct must be in (0, 1], got {crop_pct}')
        _pil_resample(interpolation)  # validates the name
        self.image_size = int(image_size)
        self.crop_pct = float(crop_pct)
        self.interpolation = interpolation
        self.train = train
        self.train_scale = (float(train_scale[0]), float(train_scale[1]))
        self.train_ratio = (float(train_ratio[0]), float(train_ratio[1]))
        self.skip_bad = skip_bad
        self.seed = seed
        self.skip_report = SkipReport(str(self.root))
        self._calls = 0

        folders = sorted(d.name for d in os.scandir(self.root) if d.is_dir() and not d.name.startswith('.'))
        if classes is None:
            classes = folders
        self.classes: List[str] = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        if not self.classes:
            raise DataError(self.root, 'no class sub-folders found (expected <class>/<image> folders)')

        samples: List[Tuple[str, int]] = []
        for folder in folders:
            if folder not in self.class_to_idx:
                err = DataError(self.root / folder, f'class folder {folder!r} is not in the class list '
                                                    f'({len(self.classes)} classes from the training split)')
                if not skip_bad:
                    raise err
                self.skip_report.add(err)
                continue
            label = self.class_to_idx[folder]
            for dirpath, _, files in sorted(os.walk(self.root / folder, followlinks=True)):
                for f in sorted(files):
                    if f.lower().endswith(IMAGE_EXTENSIONS):
                        samples.append((os.path.join(dirpath, f), label))
        self.skip_report.total = len(samples)
        if verify:
            good = []
            for path, label in samples:
                try:
                    load_image(path)
                except DataError as e:
                    if not skip_bad:
                        raise
                    self.skip_report.add(e)
                    continue
                good.append((path, label))
            samples = good
        if not samples:
            raise DataError(self.root, f'no images found (extensions {", ".join(IMAGE_EXTENSIONS)})')
        self.samples = samples
        self.targets = [label for _, label in samples]
        _logger.info('%s: %d images in %d classes', self.root, len(samples), len(self.classes))

    def __len__(self) -> int:
        return len(self.samples)

    def _generator(self, index: int) -> torch.Generator:
        # A fresh generator per call: different draws every epoch (torch's per-worker seed changes with
        # the DataLoader's base seed), reproducible under a fixed seed.
        self._calls += 1
        gen = torch.Generator()
        gen.manual_seed(hash((self.seed, torch.initial_seed(), index, self._calls)) & 0x7FFF_FFFF_FFFF_FFFF)
        return gen

    def _load(self, index: int) -> torch.Tensor:
        path, _ = self.samples[index]
        img = load_image(path)
        if self.train:
            img = _random_resized_crop(img, self.image_size, self.train_scale, self.train_ratio,
                                       self.interpolation, self._generator(index))
            return _to_tensor(img)
        return eval_transform(img, self.image_size, self.crop_pct, self.interpolation)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        try:
            return self._load(index), self.samples[index][1]
        except DataError as e:
            if not self.skip_bad:
                raise
            # Found late (no verify): record it and serve the next readable sample so the batch stays full.
            self.skip_report.add(e)
            for step in range(1, min(len(self.samples), 64)):
                j = (index + step) % len(self.samples)
                try:
                    return self._load(j), self.samples[j][1]
                except DataError as e2:
                    self.skip_report.add(e2)
            raise DataError(self.root, 'too many unreadable images in a row') from e


# ------------------------------------------------------------------------------------------------ built-in set

BUILTIN_IMAGE_CLASSES = ('stripes_horizontal', 'stripes_vertical', 'checkerboard', 'rings', 'disks', 'squares')


def _render(cls: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 image of class ``cls``.

    Foreground/background colours, scale, phase and position are random for every image, so the classes do
    not differ in mean colour or brightness, only in spatial structure (orientation, periodicity, shape).
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    period = rng.uniform(0.12, 0.3)
    phase = rng.uniform(0, 2 * np.pi)
    if cls == 0:  # horizontal stripes (vary along y)
        mask = np.sin(2 * np.pi * yy / period + phase) > 0
    elif cls == 1:  # vertical stripes
        mask = np.sin(2 * np.pi * xx / period + phase) > 0
    elif cls == 2:  # checkerboard
        mask = (np.sin(2 * np.pi * xx / period + phase) > 0) ^ (np.sin(2 * np.pi * yy / period + phase) > 0)
    elif cls == 3:  # concentric rings around a random centre
        cy, cx = rng.uniform(0.25, 0.75, size=2)
        r = np.hypot(yy - cy, xx - cx)
        mask = np.sin(2 * np.pi * r / period + phase) > 0
    elif cls in (4, 5):  # a few filled disks / axis-aligned squares covering about half the image
        mask = np.zeros((size, size), bool)
        for _ in range(rng.integers(2, 5)):
            cy, cx = rng.uniform(0.15, 0.85, size=2)
            rad = rng.uniform(0.12, 0.25)
            if cls == 4:
                mask |= np.hypot(yy - cy, xx - cx) < rad
            else:
                mask |= (np.abs(yy - cy) < rad * 0.89) & (np.abs(xx - cx) < rad * 0.89)  # same area as the disk
    else:
        raise ValueError(f'unknown class index {cls}')
    fg, bg = rng.uniform(0, 1, size=(2, 3)).astype(np.float32)
    if np.abs(fg - bg).sum() < 0.6:  # keep the pattern visible
        fg = 1 - bg
    img = np.where(mask[..., None], fg, bg)
    img = img + rng.normal(0, 0.08, size=img.shape).astype(np.float32)  # sensor-like noise
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


READER_DEFAULTS_FILE = 'reader_defaults.json'
_BUILTIN_VERSION = 3


def make_builtin_images(root: Union[str, Path], seed: int = 0, size: int = 32,
                        per_class: Tuple[int, int, int] = (80, 20, 20)) -> Path:
    """Write (once) a small deterministic ImageFolder of PNGs: ``root/{train,val,test}/<class>/*.png``.

    Six classes of patterns that differ in structure, not in colour: horizontal and vertical stripes,
    checkerboards, concentric rings, disks and squares, each with random colours, scale, phase and noise.

    Args:
        root: output folder (written and reused as :func:`unimodal.data.builtin.build_once` describes).
        seed: generator seed (the same seed writes byte-identical files).
        size: image side in pixels.
        per_class: images per class in train, val and test.

    Also writes ``reader_defaults.json``: the reader options that suit this set (read at full size, no centre
    crop, mild random crops), used by the image task unless the config sets them, so the built-in set and real
    ImageNet (224 / crop_pct 0.875 by default) each get sensible sizes from the same config.

    Returns:
        ``root``.
    """
    import json
    from PIL import Image
    per_class = tuple(int(n) for n in per_class)

    def write(out: Path) -> None:
        for s_idx, (split, n) in enumerate(zip(('train', 'val', 'test'), per_class)):
            for c_idx, cls in enumerate(BUILTIN_IMAGE_CLASSES):
                folder = out / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                rng = np.random.default_rng([seed, s_idx, c_idx])
                for i in range(n):
                    Image.fromarray(_render(c_idx, size, rng)).save(folder / f'{cls}_{i:04d}.png', optimize=False)
        (out / READER_DEFAULTS_FILE).write_text(json.dumps(
            {'image_size': size, 'crop_pct': 1.0, 'train_scale': [0.6, 1.0]}, indent=1) + '\n')

    return build_once(root, generator='image', version=_BUILTIN_VERSION, write=write,
                      settings={'seed': seed, 'size': size, 'per_class': per_class})
