"""ImageFolder reader (for evaluating released ImageNet checkpoints) and the built-in synthetic image set.

The evaluation transform is timm's (``create_transform`` from ``resolve_data_config``), resolved from a model's
``pretrained_cfg`` (input size, crop_pct, crop_mode, interpolation) and the reader options; the training transform is
torchvision v2's ``RandomResizedCrop``. Normalisation happens in the image adapter, so the reader yields
``(3, S, S)`` floats in [0, 1].
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..config.errors import ConfigError, short_repr
from .builtin import build_once
from .errors import DataError, SkipReport, load_or_next
from .index import StringTable
from .options import CLASS_NAMES, RATIO_RANGE, SCALE_RANGE, Option, checked_options

_logger = logging.getLogger(__name__)

__all__ = ['ImageFolderDataset', 'OPTIONS', 'EVAL_OPTIONS', 'IMAGE_EXTENSIONS', 'make_builtin_images',
           'BUILTIN_IMAGE_CLASSES', 'READER_DEFAULTS_FILE', 'load_image', 'eval_transform', 'resolve_eval_config']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp', '.gif')

_INTERPOLATIONS = ('bicubic', 'bilinear', 'nearest', 'lanczos')
_CROP_MODES = ('center', 'squash', 'border')

def _is_cfg(value: Any) -> bool:
    """A pretrained cfg as a model holds it: a dict of named fields, or timm's ``PretrainedCfg``."""
    return (isinstance(value, Mapping) and all(isinstance(k, str) for k in value)) or hasattr(value, 'to_dict')


#: The evaluation options (:func:`resolve_eval_config`) and their allowed values.
EVAL_OPTIONS = {
    'image_size': Option(Optional[int], lo=1),
    'crop_pct': Option(Optional[float], lo=0, hi=1, lo_open=True),
    'interpolation': Option(Optional[str], choices=_INTERPOLATIONS),
    'crop_mode': Option(Optional[str], choices=_CROP_MODES),
    'pretrained_cfg': Option(Optional[str], accept=_is_cfg,
                             expects="a timm model name with tag (e.g. 'unireplknet_b.in22k_ft_in1k_384') or a "
                                     "model's pretrained_cfg"),
}
#: The options of :class:`ImageFolderDataset` and their allowed values.
OPTIONS = {
    **EVAL_OPTIONS,
    'train_scale': SCALE_RANGE,
    'train_ratio': RATIO_RANGE,
    'classes': CLASS_NAMES,
    'verify': Option(bool),
    'seed': Option(int),
}
# The published evaluation (UniRepLKNet's and ConvNeXt's ``build_transform``) warps to the square, without a crop,
# from 384 pixels up; below, it resizes the short side to size / crop_pct and centre-crops.
_WARP_FROM = 384


def load_image(path: Union[str, Path], mode: str = 'RGB'):
    """Open and fully decode an image with PIL; any failure becomes a :class:`DataError` naming the file."""
    from PIL import Image, UnidentifiedImageError
    path = os.fspath(path)  # a str, not a Path: see _load
    try:
        if os.stat(path).st_size == 0:
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


def _as_dict(pretrained_cfg: Union[None, str, Mapping[str, Any], Any]) -> Dict[str, Any]:
    if pretrained_cfg is None:
        return {}
    if isinstance(pretrained_cfg, str):
        from timm.models import get_pretrained_cfg
        try:
            found = get_pretrained_cfg(pretrained_cfg, allow_unregistered=False)
        except RuntimeError as e:
            raise ConfigError(f'data.options.pretrained_cfg {short_repr(pretrained_cfg)}: {e} (e.g. '
                              f'unireplknet_b.in22k_ft_in1k_384; timm.list_pretrained("unireplknet*") lists them)'
                              ) from None
        return found.to_dict()
    if hasattr(pretrained_cfg, 'to_dict'):  # timm's PretrainedCfg (model.pretrained_cfg is already a dict)
        return pretrained_cfg.to_dict()
    return dict(pretrained_cfg)


@checked_options(EVAL_OPTIONS)
def resolve_eval_config(image_size: Optional[int] = None, crop_pct: Optional[float] = None,
                        interpolation: Optional[str] = None, crop_mode: Optional[str] = None,
                        pretrained_cfg: Union[None, str, Mapping[str, Any], Any] = None) -> Dict[str, Any]:
    """The evaluation data config (timm's ``resolve_data_config``): explicit options, else the pretrained cfg's
    values, else timm's defaults (224, crop_pct 0.875, bicubic, centre crop).

    Without an explicit ``crop_mode`` (or a cfg that sets one other than timm's default ``'center'``), sizes of 384
    and more use ``'squash'`` with ``crop_pct`` 1.0 (unless given): the image is warped to ``S × S`` without a crop,
    as the published 384-px evaluation of the 22K→1K models does.

    Args:
        pretrained_cfg: a timm name with tag (``'unireplknet_b.in22k_ft_in1k_384'``), a model's
            ``pretrained_cfg`` dict, or a timm ``PretrainedCfg``.
    """
    from timm.data import resolve_data_config
    cfg = _as_dict(pretrained_cfg)
    args = {'in_chans': 3, 'img_size': image_size, 'crop_pct': crop_pct,
            'interpolation': interpolation, 'crop_mode': crop_mode}
    data = resolve_data_config(args=args, pretrained_cfg=cfg)
    if crop_mode is None and cfg.get('crop_mode', 'center') == 'center' and min(data['input_size'][1:]) >= _WARP_FROM:
        data['crop_mode'] = 'squash'
        if crop_pct is None:
            data['crop_pct'] = 1.0
    return data


def eval_transform(image_size: Optional[int] = None, crop_pct: Optional[float] = None,
                   interpolation: Optional[str] = None, crop_mode: Optional[str] = None,
                   pretrained_cfg: Union[None, str, Mapping[str, Any], Any] = None) -> Callable[[Any], torch.Tensor]:
    """PIL image → ``(3, S, S)`` float in [0, 1]: timm's evaluation transform for :func:`resolve_eval_config`."""
    return _eval_transform(resolve_eval_config(image_size, crop_pct, interpolation, crop_mode, pretrained_cfg))


def _eval_transform(data: Mapping[str, Any]) -> Callable[[Any], torch.Tensor]:
    from timm.data import create_transform
    tf = create_transform(data['input_size'], is_training=False, interpolation=data['interpolation'],
                          crop_pct=data['crop_pct'], crop_mode=data['crop_mode'], normalize=False)
    return v2.Compose([tf, v2.ToDtype(torch.float32, scale=True)])  # the adapter normalises


class ImageFolderDataset(Dataset):
    """``<root>/<class>/<image>`` folder of images, yielding ``((3, S, S) float in [0, 1], class index)``.

    Args:
        root: the split folder (e.g. ``imagenet/val``) holding one sub-folder per class.
        image_size: output side ``S`` (default: the pretrained cfg's, else 224).
        crop_pct: evaluation crop fraction (short side resized to ``floor(S / crop_pct)``, then centre-cropped);
            default: the pretrained cfg's, else 0.875 (1.0 from 384 pixels up, see :func:`resolve_eval_config`).
        interpolation: ``'bicubic'`` (timm default), ``'bilinear'``, ``'nearest'`` or ``'lanczos'``.
        crop_mode: timm's evaluation crop mode: ``'center'``, ``'squash'`` (warp to the square) or ``'border'``.
        pretrained_cfg: the evaluated model's pretrained cfg (a timm name with tag such as
            ``'unireplknet_b.in22k_ft_in1k_384'``, or ``model.pretrained_cfg``); explicit options win.
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

    Attributes:
        data_config: the resolved evaluation config (``input_size``, ``crop_pct``, ``crop_mode``, ``interpolation``,
            and the ``mean``/``std`` the model expects, which the image adapter applies).
    """

    @checked_options(OPTIONS)
    def __init__(self, root: Union[str, Path], image_size: Optional[int] = None, crop_pct: Optional[float] = None,
                 interpolation: Optional[str] = None, crop_mode: Optional[str] = None,
                 pretrained_cfg: Union[None, str, Mapping[str, Any], Any] = None, train: bool = False,
                 train_scale: Sequence[float] = (0.08, 1.0), train_ratio: Sequence[float] = (3 / 4, 4 / 3),
                 classes: Optional[Sequence[str]] = None, skip_bad: bool = False, verify: bool = False,
                 seed: int = 0) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f'{self.root}: image folder not found (expected <split>/<class>/<image> '
                                    f'folders, e.g. imagenet/val/n01440764/ILSVRC2012_val_00000293.JPEG)')
        self.data_config = resolve_eval_config(image_size, crop_pct, interpolation, crop_mode, pretrained_cfg)
        self.image_size = int(self.data_config['input_size'][-1])
        self.crop_pct = float(self.data_config['crop_pct'])
        self.crop_mode = self.data_config['crop_mode']
        self.interpolation = self.data_config['interpolation']
        self.train = train
        self.train_scale, self.train_ratio = tuple(train_scale), tuple(train_ratio)
        if train:
            self._transform = v2.Compose([
                v2.RandomResizedCrop(self.image_size, scale=self.train_scale, ratio=self.train_ratio,
                                     interpolation=v2.InterpolationMode(self.interpolation), antialias=True),
                v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])
        else:
            self._transform = _eval_transform(self.data_config)
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

        labels: List[np.ndarray] = []

        def class_folders():  # one folder's paths at a time, so no list of every path is ever built
            for folder in folders:
                if folder not in self.class_to_idx:
                    err = DataError(self.root / folder, f'class folder {folder!r} is not in the class list '
                                                        f'({len(self.classes)} classes from the training split)',
                                    reason='unknown class')
                    if not skip_bad:
                        raise err
                    self.skip_report.add(err)
                    continue
                found = _walk_images(self.root / folder, folder)
                labels.append(np.full(len(found), self.class_to_idx[folder], dtype=np.int64))
                yield found

        # compact index: a path buffer and a label array, no Python object per image (see unimodal.data.index)
        self._root_s = str(self.root)
        self._rel = StringTable.from_chunks(class_folders())
        self._labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        self.skip_report.total = len(self._labels)
        if verify:
            good = np.ones(len(self._labels), dtype=bool)
            for i in range(len(good)):
                try:
                    load_image(self.sample_source(i))
                except DataError as e:
                    if not skip_bad:
                        raise
                    self.skip_report.add(e)
                    good[i] = False
            if not good.all():
                keep = np.flatnonzero(good)
                self._rel, self._labels = self._rel.take(keep), self._labels[keep]
        if not len(self._labels):
            raise DataError(self.root, f'no images found (extensions {", ".join(IMAGE_EXTENSIONS)})')
        _logger.info('%s: %d images in %d classes', self.root, len(self._labels), len(self.classes))

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def targets(self) -> List[int]:
        return self._labels.tolist()

    @property
    def samples(self) -> List[Tuple[str, int]]:
        """``(path, label)`` of every image (built on access: a list of 1.28M tuples for ImageNet train)."""
        return [(str(self.root / rel), int(y)) for rel, y in zip(self._rel, self._labels)]

    def sample_source(self, index: int) -> str:
        """The image file of sample ``index``."""
        return os.path.join(self._root_s, self._rel[index])

    def _draw_seed(self, index: int) -> int:
        # A fresh seed per call: different draws every epoch (torch's per-worker seed changes with the
        # DataLoader's base seed), reproducible under a fixed seed.
        self._calls += 1
        return hash((self.seed, torch.initial_seed(), index, self._calls)) & 0x7FFF_FFFF_FFFF_FFFF

    def _load(self, index: int) -> torch.Tensor:
        # a str path: a pathlib.Path per sample interns its parts, which grows each worker by ~20 MB per 200k
        # distinct files over an epoch (measured in benchmarks/bench_scale.py)
        img = load_image(self.sample_source(index))
        if not self.train:
            return self._transform(img)
        with torch.random.fork_rng(devices=[]):  # torchvision draws from torch's global generator
            torch.manual_seed(self._draw_seed(index))
            return self._transform(img)

    def _item(self, index: int) -> Tuple[torch.Tensor, int]:
        return self._load(index), int(self._labels[index])

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        # found late (no verify): recorded, and the next readable image is served so the batch stays full
        return load_or_next(self._item, index, len(self), self.skip_bad, self.skip_report, str(self.root))


def _walk_images(folder: Path, prefix: str) -> List[str]:
    """Image paths under ``folder`` relative to its parent (``prefix/...``), sorted, symlinks followed."""
    out = []
    for dirpath, _, files in sorted(os.walk(folder, followlinks=True)):
        rel = os.path.relpath(dirpath, folder)
        base = prefix if rel == '.' else f'{prefix}/{rel}'
        out.extend(f'{base}/{f}' for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS))
    return out


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
