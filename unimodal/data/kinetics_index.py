"""Kinetics annotation files to a compact sample index: ``path label`` lists and the official CSVs.

* :func:`parse_annotation` reads a list or CSV once per process (memoised by the file's path, size and mtime and
  the options), so the validation list that also serves as the test list is read once; its result is a
  :class:`AnnotationIndex` of NumPy arrays (no Python object per video, see :mod:`unimodal.data.index`).
* CSV rows name videos ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` that may sit anywhere under the split's folder
  (flat or per-class): only the folders of the annotation's own split and of the requested split are walked
  (symlinked folders followed, each real folder once), never the other splits' folders.
* :func:`stat_sizes`: the size of every listed video by ``stat`` on a few threads: a missing video is found in
  seconds for the 240k-video train list, without opening any container.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import io
import logging
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .cache import file_stamp
from .errors import DataError
from .index import StringTable, read_list_lines

_logger = logging.getLogger(__name__)

__all__ = ['AnnotationIndex', 'parse_annotation', 'stat_sizes', 'read_class_list', 'find_annotation',
           'VIDEO_EXTENSIONS', 'SPLIT_ALIASES']

VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.webm', '.avi', '.mov')
# file and folder names used for each split by the common Kinetics releases and tools (first match wins)
SPLIT_ALIASES = {'train': ('train',), 'val': ('val', 'validate', 'validation'), 'test': ('test',)}
_LIST_PATTERNS = ('{s}.txt', '{s}_list.txt', 'kinetics400_{s}_list_videos.txt', '{s}.csv',
                  'annotations/{s}.csv', 'annotations/{s}.txt')
_CSV_COLUMNS = ('label', 'youtube_id', 'time_start', 'time_end')

PathLike = Union[str, Path]


def read_class_list(path: PathLike) -> List[str]:
    """Class names, one per line (blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, 'class list file does not exist', reason='missing')
    names = [text for _, text in read_list_lines(path, 'class list')]
    if not names:
        raise DataError(path, 'class list is empty (expected one class name per line)')
    if len(set(names)) != len(names):
        raise DataError(path, 'class list names a class twice')
    return names


def find_annotation(root: PathLike, split: str) -> Optional[Path]:
    """The annotation file of ``split`` under ``root`` (``train.txt``, ``val.csv``, ``validate.csv``, ...), or None."""
    root = Path(root)
    for alias in SPLIT_ALIASES.get(split, (split,)):
        for pattern in _LIST_PATTERNS:
            cand = root / pattern.format(s=alias)
            if cand.is_file():
                return cand
    return None


@dataclasses.dataclass(frozen=True)
class AnnotationIndex:
    """The videos an annotation file names, in file order.

    Attributes:
        paths: video paths (strings).
        labels: class index of each video (``int64``).
        errors: the bad lines (unknown label, malformed line), in file order.
        listed: the number of entries (lines or rows) in the file.
        classes: the class names the labels index.
    """

    paths: StringTable
    labels: np.ndarray
    errors: Tuple[DataError, ...]
    listed: int
    classes: Tuple[str, ...]


def parse_annotation(annotation: Path, split: str, root: Path, video_dir: Optional[Path],
                     classes: Optional[Sequence[str]]) -> AnnotationIndex:
    """Parse a ``path label`` list (``.txt``) or an official CSV (``.csv``) into an :class:`AnnotationIndex`.

    List paths are relative to ``video_dir`` (default: the list's folder); CSV videos are looked up under
    ``video_dir`` (default: the split folders under ``root``, see the module docstring).
    """
    annotation = Path(annotation)
    try:
        stamp = file_stamp(annotation)
    except OSError:
        raise DataError(annotation, 'annotation file does not exist', reason='missing') from None
    if annotation.suffix.lower() == '.csv':  # the folders to index (not the split) are part of the memo's key
        folders, skip = ([video_dir], ()) if video_dir is not None else _csv_video_dirs(annotation, split, root)
        where: Tuple[str, ...] = tuple(map(str, folders))
    else:
        where, skip = (str(video_dir if video_dir is not None else annotation.parent),), ()
    return _parse_cached(os.path.realpath(annotation), str(annotation), stamp, where, skip,
                         None if classes is None else tuple(classes))


@functools.lru_cache(maxsize=4)
def _parse_cached(real: str, shown: str, stamp: Tuple[int, int], where: Tuple[str, ...], skip: Tuple[str, ...],
                  classes: Optional[Tuple[str, ...]]) -> AnnotationIndex:
    path = Path(shown)
    if path.suffix.lower() == '.csv':
        return _parse_csv(path, [Path(w) for w in where], skip, classes)
    return _parse_list(path, Path(where[0]), classes)


class _Labels:
    """Label tokens (a class index or a class name) to indices; bad tokens become :class:`DataError`."""

    def __init__(self, classes: Optional[Sequence[str]]) -> None:
        self.classes = list(classes) if classes is not None else None
        self.index = {c: i for i, c in enumerate(self.classes or ())}

    def __call__(self, token: str, where: str) -> Union[int, DataError]:
        token = token.strip()
        if token in self.index:
            return self.index[token]
        try:
            idx = int(token)
        except ValueError:
            return DataError(where, f'label {token!r} is not in the class list'
                                    + (f' ({len(self.classes)} classes)' if self.classes else
                                       ' (no class list given: labels must be integer indices)'), reason='bad label')
        if idx < 0 or (self.classes is not None and idx >= len(self.classes)):
            n = len(self.classes) if self.classes is not None else 0
            return DataError(where, f'label {idx} is not in the class list (expected 0..{n - 1})', reason='bad label')
        return idx


def _parse_list(annotation: Path, video_dir: Path, classes: Optional[Tuple[str, ...]]) -> AnnotationIndex:
    to_label = _Labels(classes)
    paths: List[str] = []
    labels: List[int] = []
    errors: List[DataError] = []
    lines = read_list_lines(annotation, 'annotation list')
    base = str(video_dir)
    for lineno, line in lines:
        where = f'{annotation}:{lineno}'
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            errors.append(DataError(where, f'expected "path label", got {line!r}', reason='bad line'))
            continue
        y = to_label(parts[1], where)
        if isinstance(y, DataError):
            errors.append(y)
            continue
        paths.append(os.path.join(base, parts[0]))
        labels.append(y)
    names = classes if classes is not None else tuple(str(i) for i in range(max(labels, default=-1) + 1))
    return AnnotationIndex(StringTable.from_strings(paths), np.asarray(labels, dtype=np.int64), tuple(errors),
                           len(lines), tuple(names))


def _csv_video_dirs(annotation: Path, split: str, root: Path) -> Tuple[List[Path], Tuple[str, ...]]:
    """The folders to index for a CSV, and the split-folder names to leave out when that is ``root`` itself."""
    stem = annotation.stem.lower()
    names = [a for aliases in SPLIT_ALIASES.values() if stem in aliases for a in aliases]  # the file's own split
    names += [a for a in SPLIT_ALIASES[split] if a not in names]
    found = [root / n for n in names if (root / n).is_dir()]
    if found:
        return found, ()
    return [root], tuple(a for aliases in SPLIT_ALIASES.values() for a in aliases)


def _index_videos(folders: Sequence[Path], skip: Tuple[str, ...]) -> Dict[str, str]:
    """File stem -> path of every video under ``folders`` (symlinks followed, each real folder walked once; the
    top-level sub-folders named in ``skip`` left out)."""
    index: Dict[str, str] = {}
    seen = set()
    for top in folders:
        for dirpath, dirnames, files in os.walk(top, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:
                dirnames[:] = []
                continue
            seen.add(real)
            if dirpath == str(top) and skip:
                dirnames[:] = [d for d in dirnames if d.lower() not in skip]
            for name in files:
                stem, ext = os.path.splitext(name)
                if ext.lower() in VIDEO_EXTENSIONS and stem not in index:
                    index[stem] = os.path.join(dirpath, name)
    return index


def _parse_csv(annotation: Path, folders: List[Path], skip: Tuple[str, ...],
               classes: Optional[Tuple[str, ...]]) -> AnnotationIndex:
    text = '\n'.join(line for _, line in read_list_lines(annotation, 'annotation CSV'))
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or not set(_CSV_COLUMNS).issubset(rows[0].keys()):
        raise DataError(annotation, f'expected the Kinetics CSV header label,youtube_id,time_start,time_end,split; '
                                    f'got {list(rows[0].keys()) if rows else "no rows"}', reason='bad header')
    if classes is None:
        classes = tuple(sorted({r['label'] for r in rows}))
        _logger.info('%s: %d classes from the sorted label names (pass classes= to fix the order)', annotation,
                     len(classes))
    index = _index_videos(folders, skip)
    to_label = _Labels(classes)
    paths: List[str] = []
    labels: List[int] = []
    errors: List[DataError] = []
    for lineno, r in enumerate(rows, 2):
        where = f'{annotation}:{lineno}'
        y = to_label(r['label'] or '', where)
        if isinstance(y, DataError):
            errors.append(y)
            continue
        try:
            stem = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
        except (TypeError, ValueError):
            errors.append(DataError(where, f'bad time_start/time_end {r["time_start"]!r}, {r["time_end"]!r}',
                                    reason='bad line'))
            continue
        paths.append(index.get(stem) or os.path.join(folders[0], f'{stem}.mp4'))
        labels.append(y)
    return AnnotationIndex(StringTable.from_strings(paths), np.asarray(labels, dtype=np.int64), tuple(errors),
                           len(rows), tuple(classes))


def stat_sizes(paths: StringTable, threads: int = 8) -> np.ndarray:
    """Size in bytes of each path (``-1``: missing or not a file), by ``stat`` on ``threads`` threads."""
    sizes = np.full(len(paths), -1, dtype=np.int64)

    def chunk(bounds: Tuple[int, int]) -> None:
        for i in range(*bounds):
            try:
                st = os.stat(paths[i])
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                sizes[i] = st.st_size

    step = max(1, -(-len(paths) // max(1, threads)))
    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(chunk, [(a, min(a + step, len(paths))) for a in range(0, len(paths), step)]))
    return sizes
