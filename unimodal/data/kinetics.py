"""Kinetics-400 reader (``path label`` lists or the official CSV) and the built-in synthetic motion clips.

Annotation formats:

* ``path label`` per line, space separated, no header (VideoMAE / mmaction2 lists). ``label`` is a class index
  (or a class name from the class list); paths may contain spaces (the label is the last token) and are
  relative to ``video_dir`` (default: the list file's folder).
* The official CSV ``label,youtube_id,time_start,time_end,split[,is_cc]``; the video of a row is the file
  ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` anywhere under ``video_dir`` (default: the folders under ``root``
  named after the CSV's split and the requested split, e.g. ``val/`` (a symlink is fine); if there is none,
  ``root`` without the other splits' folders): the folders are indexed once, flat or per-class alike.

Parsing and the index are in :mod:`.kinetics_index`: a list is read once per process (the validation list that
also serves as the test list too), and kept as NumPy arrays (no Python object per video in DataLoader workers).

Sampling (published protocol): ``num_frames`` frames every ``stride`` frames. ``train``: random temporal start,
optional RandAugment (the same ops on every frame), random resized crop to ``image_size``, horizontal flip and
optional random erasing, ``repeats`` times per decoded clip (repeated augmentation: the batch of B videos becomes
B·repeats clips through :attr:`Kinetics.collate_fn`); ``val``: centre clip, short side resized to
``image_size`` and centre crop; ``test``: ``num_clips`` evenly spaced clips × ``num_crops`` crops along the long
side, returned as ``(num_clips·num_crops, 3, T, S, S)``. Frames are normalised with the ImageNet mean/std.

Bad input: a missing or empty video (found by ``stat`` in ``__init__``: seconds for the 240k-video train list) and
a label outside the class list raise :class:`~unimodal.data.errors.DataError` naming the file, or with
``skip_bad=True`` are skipped and reported before step 1. Whether a video decodes is found when it is read: without
``skip_bad`` that raises, with it the next video is served and the bad one reported then (the batch stays full and
every DDP rank keeps the same number of steps; a few present-but-broken files in a large split are replaced by a
neighbour, which the skip report lists). ``check_decode=True`` opens every video up front instead (one container
open per video, 5–30 ms each: tens of minutes for the train list).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence as _SequenceABC
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..config.errors import ConfigError
from .builtin import build_once
from .clip_augment import ClipRandAugment
from .errors import DataError, SkipReport, load_or_next
from .inputs import flatten_repeats_collate
from .video_clips import IMAGENET_MEAN, IMAGENET_STD, SPLITS, ClipViews, _open_video
from .options import OPTIONAL_PATH, RATIO_RANGE, SCALE_RANGE, Option, checked_options
from .kinetics_index import (VIDEO_EXTENSIONS, AnnotationIndex, find_annotation, parse_annotation, read_class_list,
                             stat_sizes)

_logger = logging.getLogger(__name__)

__all__ = ['Kinetics', 'OPTIONS', 'make_builtin_kinetics', 'read_class_list', 'find_annotation', 'BUILTIN_CLASSES',
           'IMAGENET_MEAN', 'IMAGENET_STD', 'VIDEO_EXTENSIONS']

_LIST_PATTERNS = ('{s}.txt', '{s}_list.txt', 'kinetics400_{s}_list_videos.txt', '{s}.csv',
                  'annotations/{s}.csv', 'annotations/{s}.txt')

PathLike = Union[str, Path]

#: The options of :class:`Kinetics` and their allowed values (the video task passes ``train_list`` / ``val_list`` /
#: ``test_list`` as ``annotation``).
OPTIONS = {
    'annotation': OPTIONAL_PATH,
    'video_dir': OPTIONAL_PATH,
    'classes': Option(Union[None, str, List[str]], expects='a class-list file or a list of class names'),
    'num_frames': Option(int, lo=1),
    'stride': Option(int, lo=1),
    'image_size': Option(int, lo=1),
    'crop_scale': SCALE_RANGE,
    'crop_ratio': RATIO_RANGE,
    'flip': Option(bool),
    'rand_augment': Option(Optional[str], expects="a timm RandAugment string (e.g. 'rand-m7-n4-mstd0.5-inc1')"),
    'erase_prob': Option(float, lo=0, hi=1),
    'repeats': Option(int, lo=1),
    'num_clips': Option(int, lo=1),
    'num_crops': Option(int, lo=1),
    'check_decode': Option(bool),
    'check_threads': Option(int, lo=1),
}


class _Samples(_SequenceABC):
    """A read-only view of a :class:`Kinetics` index as ``(path, label)`` pairs (built on access)."""

    def __init__(self, ds: 'Kinetics') -> None:
        self._ds = ds

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, i: int) -> Tuple[Path, int]:  # type: ignore[override]
        if not -len(self._ds) <= i < len(self._ds):
            raise IndexError(i)
        return Path(self._ds._path(i)), int(self._ds._labels[i])


class Kinetics(Dataset, ClipViews):
    """Kinetics-style clip classification data set; yields ``(clip, label)``.

    ``clip`` is ``(3, T, S, S)`` (train/val) or ``(V, 3, T, S, S)`` with ``V = num_clips·num_crops`` (test).

    Args:
        root: data set root (holds the annotation files and, by default, the videos).
        split: ``'train'``, ``'val'`` or ``'test'`` (selects the sampling and the default annotation file).
        annotation: the list/CSV file; default :func:`find_annotation` of ``root`` and ``split``.
        video_dir: where relative list paths / CSV videos live (defaults in the module docstring).
        classes: class names (list) or a class-list file; default ``root/classes.txt`` if present, else for a
            CSV the sorted label names and for a list ``'0' … 'max label'``.
        num_frames: frames per clip T.
        stride: frame step between sampled frames.
        image_size: output frame side S.
        crop_scale: area range of the train random resized crop.
        crop_ratio: aspect-ratio range of the train random resized crop.
        flip: horizontal flip at train time (turn off when the class depends on left/right, e.g. the built-in
            motion classes).
        rand_augment: train-time RandAugment as a timm config string, applied to the decoded frames before the
            crop with the same ops and magnitudes on every frame (:class:`~unimodal.data.clip_augment.ClipRandAugment`);
            the published recipe (VideoMAE's default) is ``'rand-m7-n4-mstd0.5-inc1'``. ``None``: off.
        erase_prob: train-time random erasing probability (one rectangle of normal noise, after normalisation,
            at the same place in every frame); the published recipe uses 0.25.
        repeats: train split only: independently augmented clips per decoded video (the published
            ``num_sample=2``); with ``repeats > 1`` a sample is ``(repeats, 3, T, S, S)`` and :attr:`collate_fn`
            flattens a batch to ``(B·repeats, 3, T, S, S)`` with the labels repeated.
        num_clips: test temporal clips.
        num_crops: test spatial crops (1: centre; 3: both ends and centre of the long side).
        skip_bad: skip (and count in ``skip_report``) bad videos and lines instead of raising.
        check_decode: open every video in ``__init__`` (default: no; undecodable videos are found when read).
        check_threads: threads of the ``stat`` pass and of that check.
    """

    @checked_options(OPTIONS)
    def __init__(self, root: PathLike, split: str = 'train', *, annotation: Optional[PathLike] = None,
                 video_dir: Optional[PathLike] = None, classes: Union[None, PathLike, Sequence[str]] = None,
                 num_frames: int = 16, stride: int = 4, image_size: int = 224,
                 crop_scale: Tuple[float, float] = (0.08, 1.0), crop_ratio: Tuple[float, float] = (3 / 4, 4 / 3),
                 flip: bool = True, rand_augment: Optional[str] = None, erase_prob: float = 0.0,
                 repeats: int = 1, num_clips: int = 5, num_crops: int = 3, skip_bad: bool = False,
                 check_decode: bool = False, check_threads: int = 4) -> None:
        if split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
        if repeats > 1 and split != 'train':
            raise ValueError(f'repeats applies to the train split only (got split {split!r})')
        self.repeats = repeats
        self.root = Path(root)
        ClipViews.__init__(self, split, num_frames=num_frames, stride=stride, image_size=image_size,
                           num_clips=num_clips, num_crops=num_crops)
        self.crop_scale, self.crop_ratio = tuple(crop_scale), tuple(crop_ratio)
        self.flip = flip
        # torchvision's v2 transforms draw their parameters once per call: every frame of a (T, C, H, W) clip gets
        # the same crop, flip and erased rectangle, so the motion stays intact (RandAugment: ClipRandAugment)
        self._train_crop = v2.Compose(
            [v2.RandomResizedCrop(self.image_size, scale=self.crop_scale, ratio=self.crop_ratio,
                                  interpolation=v2.InterpolationMode.BILINEAR, antialias=True)]
            + ([v2.RandomHorizontalFlip()] if flip else []))
        self._rand_augment = self._erase = None
        if rand_augment is not None:
            try:
                self._rand_augment = ClipRandAugment(rand_augment, self.image_size)
            except ValueError as e:  # the string does not parse (ClipRandAugment's messages start 'rand_augment')
                raise ConfigError(f'data.options.{e}') from None
        if erase_prob > 0:
            self._erase = v2.RandomErasing(p=erase_prob, value='random')
        self.skip_bad = skip_bad
        self.skip_report = SkipReport(f'kinetics/{split}')

        if annotation is None:
            annotation = find_annotation(self.root, split)
            if annotation is None:
                raise FileNotFoundError(
                    f'no annotation file for split {split!r} under {self.root} (looked for '
                    f'{", ".join(p.format(s=split) for p in _LIST_PATTERNS)}); expected a "path label" list or the '
                    f'official Kinetics CSV')
        self.annotation = Path(annotation)
        if not self.annotation.is_file():
            raise DataError(self.annotation, 'annotation file does not exist', reason='missing')

        if classes is None and (self.root / 'classes.txt').is_file():
            classes = self.root / 'classes.txt'
        if isinstance(classes, (str, Path)):
            classes = read_class_list(classes)
        index = parse_annotation(self.annotation, split, self.root,
                                 Path(video_dir) if video_dir is not None else None, classes)
        self.classes: List[str] = list(index.classes)
        self._listed = index.listed
        self.skip_report.total = index.listed
        self._index: AnnotationIndex = index
        rows, errors = self._usable(index, check_threads)
        if check_decode:
            rows, errors = self._probe_all(index, rows, errors, check_threads)
        if errors and not skip_bad:
            raise errors[0]
        for e in errors:
            self.skip_report.add(e)
        self._rows = rows  # entries of the (shared) annotation index this data set uses
        self._labels = index.labels[rows]
        if not len(rows):
            raise DataError(self.annotation, f'no usable videos ({self._listed} listed, '
                                             f'{self.skip_report.count} skipped)')
        _logger.info('Kinetics %s (%s): %d videos listed, %d found and used, %d skipped', split, self.annotation,
                     self._listed, len(rows), self.skip_report.count)

    # ------------------------------------------------------------------ index
    def _usable(self, index: AnnotationIndex, threads: int) -> Tuple[np.ndarray, List[DataError]]:
        """Entries whose video exists and is not empty (one ``stat`` each); the bad lines and files in order."""
        sizes = stat_sizes(index.paths, threads=max(1, threads))
        errors = list(index.errors)
        for i in np.flatnonzero(sizes <= 0):
            path = index.paths[i]
            errors.append(DataError(path, f'video listed in {self.annotation} does not exist', reason='missing')
                          if sizes[i] < 0 else DataError(path, 'video file is empty (0 bytes)', reason='empty'))
        return np.flatnonzero(sizes > 0), errors

    @staticmethod
    def _probe_all(index: AnnotationIndex, rows: np.ndarray, errors: List[DataError],
                   threads: int) -> Tuple[np.ndarray, List[DataError]]:
        """Open every video (``check_decode``): the ones that do not decode join ``errors``."""
        def probe(i: int) -> Optional[DataError]:
            try:
                _open_video(index.paths[i])
            except DataError as e:
                return e
            return None

        with ThreadPoolExecutor(max(1, threads)) as pool:
            found = list(pool.map(probe, rows))
        bad = [e for e in found if e is not None]
        return rows[np.array([e is None for e in found], dtype=bool)], errors + bad

    def _path(self, i: int) -> str:
        # a str: a pathlib.Path per sample interns its parts and grows every worker over an epoch
        return self._index.paths[int(self._rows[i])]

    def sample_source(self, index: int) -> str:
        """The video file of sample ``index``."""
        return self._path(index)

    # ------------------------------------------------------------------ sampling
    def __len__(self) -> int:
        return len(self._labels)

    @property
    def num_views(self) -> int:
        """Views per video this split yields (``num_clips·num_crops`` for test, else 1)."""
        return self.num_clips * self.num_crops if self.split == 'test' else 1

    @property
    def collate_fn(self) -> Optional[Callable[[list], tuple]]:
        """The training loader's collate with ``repeats > 1`` (``None`` otherwise: the default collate)."""
        return flatten_repeats_collate if self.split == 'train' and self.repeats > 1 else None

    @property
    def labels(self) -> List[int]:
        return self._labels.tolist()

    @property
    def samples(self) -> _Samples:
        """The index as a sequence of ``(path, label)``."""
        return _Samples(self)

    def _train_view(self, frames: torch.Tensor) -> torch.Tensor:
        """One augmented ``(3, T, S, S)`` clip of decoded ``(T, H, W, 3)`` uint8 frames (published order:
        RandAugment, random resized crop + flip, normalisation, random erasing)."""
        if self._rand_augment is not None:
            frames = torch.from_numpy(self._rand_augment(frames))
        x = self._train_crop(frames.permute(0, 3, 1, 2).float().div_(255))
        x = self._normalise(x)
        if self._erase is not None:  # on (T, 3, S, S): one rectangle, same place in every frame
            x = self._erase(x.transpose(0, 1)).transpose(0, 1)
        return x

    def load(self, index: int) -> Tuple[torch.Tensor, int]:
        """The sample at ``index``; raises :class:`DataError` if its video cannot be decoded."""
        path, label = self._path(index), int(self._labels[index])
        frames = self._decode(path)  # (clips, T, H, W, 3) uint8
        if self.split == 'train':
            if self.repeats == 1:
                return self._train_view(frames[0]), label
            return torch.stack([self._train_view(frames[0]) for _ in range(self.repeats)]), label
        return self.eval_views(frames), label

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        # a video that fails to decode: raised, or under skip_bad reported and replaced by the next video
        return load_or_next(self.load, index, len(self), self.skip_bad, self.skip_report, str(self.annotation))


# ---------------------------------------------------------------------- built-in synthetic motion clips
BUILTIN_CLASSES = ('moving_left', 'moving_right', 'moving_up', 'moving_down', 'circling_clockwise',
                   'circling_anticlockwise', 'expanding', 'shrinking')
_BUILTIN_VERSION = 2


def _synth_clip(rng: np.random.Generator, label: int, frames: int, size: int) -> np.ndarray:
    """One ``(frames, size, size, 3)`` uint8 clip whose class is only visible in the motion of a disc.

    Random background (colour + faint gradient), disc colour, size, speed, start position and pixel noise,
    so a single frame does not tell the class (the disc can be anywhere, of any size in the range). The disc is
    always lighter than the background: with a random contrast sign the tiny trunk learned nothing in 12 epochs
    (a plain full-resolution CNN did), with a fixed sign it learns the motion within a few epochs.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # random hues; the disc is always lighter than the background so it stays clearly visible
    bg = rng.uniform(0.0, 0.5, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xx * np.cos(angle) + yy * np.sin(angle)) / size
    background = np.clip(bg + rng.uniform(0, 0.15) * ramp[..., None], 0, 1)
    colour = rng.uniform(0.45, 1.0, 3)
    while colour.mean() - bg.mean() < 0.35:
        colour = rng.uniform(0.45, 1.0, 3)
    t = np.arange(frames, dtype=np.float32)
    c = size / 2
    radius = np.full(frames, rng.uniform(0.1, 0.15) * size, dtype=np.float32)
    name = BUILTIN_CLASSES[label]
    if name.startswith('moving'):
        speed = rng.uniform(0.5, 0.75) * size / frames  # crosses 50-75% of the frame over the clip
        travel = speed * (frames - 1)
        along = rng.uniform(0.12 * size, 0.88 * size - travel) + speed * t
        across = np.full(frames, rng.uniform(0.25, 0.75) * size, dtype=np.float32)
        if name in ('moving_left', 'moving_up'):
            along = size - along
        px, py = (along, across) if name in ('moving_left', 'moving_right') else (across, along)
    elif name.startswith('circling'):
        orbit = rng.uniform(0.2, 0.28) * size
        cx, cy = c + rng.uniform(-0.06, 0.06) * size, c + rng.uniform(-0.06, 0.06) * size
        omega = 2 * np.pi / rng.uniform(0.9, 1.2) / frames  # about one turn per clip
        sign = 1.0 if name == 'circling_clockwise' else -1.0  # image y points down: +angle is clockwise
        phase = rng.uniform(0, 2 * np.pi) + sign * omega * t
        px, py = cx + orbit * np.cos(phase), cy + orbit * np.sin(phase)
    else:
        r0, r1 = rng.uniform(0.04, 0.07) * size, rng.uniform(0.22, 0.3) * size
        grow = np.linspace(0, 1, frames, dtype=np.float32)
        radius = r0 + (r1 - r0) * (grow if name == 'expanding' else 1 - grow)
        px = np.full(frames, c + rng.uniform(-0.15, 0.15) * size, dtype=np.float32)
        py = np.full(frames, c + rng.uniform(-0.15, 0.15) * size, dtype=np.float32)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    noise_sd = rng.uniform(0.01, 0.04)
    for i in range(frames):
        d = np.sqrt((xx - px[i]) ** 2 + (yy - py[i]) ** 2)
        alpha = np.clip(radius[i] - d + 0.5, 0, 1)[..., None]  # anti-aliased disc
        img = background * (1 - alpha) + colour * alpha + rng.normal(0, noise_sd, (size, size, 3))
        out[i] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def _write_mp4(path: Path, frames: np.ndarray, fps: int = 25) -> None:
    """Encode ``(T, H, W, 3)`` uint8 RGB as MPEG-4 Part 2 (in every FFmpeg build; decord reads it)."""
    import av  # lazy: heavy optional dependency
    with av.open(str(path), 'w') as container:
        stream = container.add_stream('mpeg4', rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = 'yuv420p'
        stream.bit_rate = 2_000_000
        stream.codec_context.thread_count = 1  # single-threaded encoding keeps the bytes deterministic
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format='rgb24')):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_builtin_kinetics(root: PathLike, seed: int = 0, *, per_class: Tuple[int, int, int] = (40, 10, 10),
                          frames: int = 40, size: int = 64) -> Path:
    """Write (once) the built-in synthetic motion-pattern set in the Kinetics list layout; return ``root``.

    Layout: ``root/{train,val,test}/clip_NNNN.mp4``, ``root/{train,val,test}.txt`` (``path label``, paths relative
    to ``root``) and ``root/classes.txt``. 8 classes (:data:`BUILTIN_CLASSES`), ``per_class`` clips per class for
    train/val/test, ``frames`` frames of ``size × size``. Deterministic for a given ``seed``; written and reused as
    :func:`unimodal.data.builtin.build_once` describes.
    """
    per_class = tuple(int(n) for n in per_class)

    def write(out: Path) -> None:
        rng = np.random.default_rng(seed)
        (out / 'classes.txt').write_text('\n'.join(BUILTIN_CLASSES) + '\n')
        for split, n in zip(SPLITS, per_class):
            (out / split).mkdir()
            labels = np.repeat(np.arange(len(BUILTIN_CLASSES)), n)
            rng.shuffle(labels)  # file names do not reveal the class
            lines = []
            for i, y in enumerate(labels):
                rel = f'{split}/clip_{i:04d}.mp4'
                _write_mp4(out / rel, _synth_clip(rng, int(y), frames, size))
                lines.append(f'{rel} {int(y)}')
            (out / f'{split}.txt').write_text('\n'.join(lines) + '\n')

    return build_once(root, generator='video', version=_BUILTIN_VERSION, write=write,
                      settings={'seed': seed, 'per_class': per_class, 'frames': frames, 'size': size})
