"""ModelNet40 readers (raw OFF meshes, ``modelnet40_normal_resampled`` text, PointNet HDF5, Point-BERT ``.dat``)
as one data set.

The file formats live in :mod:`.point_formats`, the geometry in :mod:`.point_geometry`, the restricted unpickler
in :mod:`.restricted_pickle` and the built-in synthetic set in :mod:`.modelnet_builtin`; their public names are
importable from here too.

Formats (``format='auto'`` picks one from the directory content; ``root`` may also be the folder above it):

* ``off``: ``<root>/<class>/{train,test}/<class>_NNNN.off`` triangle meshes, read with a NumPy OFF parser that
  also handles the header glued to the counts (``OFF490 518 0``). Points are sampled uniformly on the surface
  (area-weighted, with face normals), reduced by farthest point sampling to ``num_points`` and normalised to the
  unit sphere. The result is cached as ``.npz`` (never pickle) keyed by file path, size, mtime and the sampling
  settings, in a prepare pass run by ``__init__``, so bad meshes are found (and counted) up front and no epoch does
  mesh work. The raw meshes are z-up; they are rotated to y-up (``off_up_axis='z'``) to match the other formats.
* ``text``: ``modelnet40_normal_resampled/<class>/<class>_NNNN.txt`` (``x,y,z,nx,ny,nz`` lines) with
  ``modelnet40_shape_names.txt`` and ``modelnet40_{train,test}.txt`` id lists; FPS results cached as ``.npz``.
* ``hdf5``: PointNet ``ply_data_{train,test}{0..4}.h5`` (``data`` (M, 2048, 3), ``label``, optional ``normal``)
  read with h5py (optional extra ``unimodal[point]``); class names from ``shape_names.txt`` when present.
* ``dat``: Point-BERT ``modelnet40_{train,test}_8192pts_fps.dat`` (a pickle of (points list, labels list)), read
  ONLY through :class:`RestrictedUnpickler`, which refuses every global except numpy array/dtype/scalar
  reconstruction; class names from ``modelnet40_shape_names.txt`` when present.

Normalisation to the unit sphere happens once per stored cloud, never after a read's reduction or re-draw:
``off``/``text`` clouds after their cached FPS reduction (as Point-BERT's text reader), ``hdf5``/``dat`` clouds over
all their points (Point-BERT normalises the ``.dat``'s 8192 points, then samples).

Splits: ModelNet40 ships ``train`` and ``test`` only (and the field reports test accuracy). By default
(``val_from='train'``) ``val`` is a deterministic, per-class stratified ``val_fraction`` of the train files (seeded
by ``seed``) and ``train`` is the rest, so model selection never sees the test set. ``val_from='test'`` follows the
common practice instead: ``train`` is the whole train split and ``val`` is the test split.

Re-drawn training clouds (``redraw_from``, the published P2P recipe): every read of a ``train`` sample draws a new
cloud from the stored one, farthest point sampling of ``redraw_from`` points from a random start and then a random
``num_points`` of those; ``val`` and ``test`` keep their fixed clouds (the first ``num_points`` of the FPS order).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DataError, SkipReport
from .modelnet_builtin import BUILTIN_CLASSES, make_builtin_modelnet
from .point_formats import (FORMATS, LAYOUT_HELP, detect_format, read_names, read_off, read_ply_h5,
                            read_point_bert_dat, read_point_text, resolve_root, write_npz)
from .point_geometry import farthest_point_sample, normalize_unit_sphere, rotate_up_to_y, sample_surface
from .restricted_pickle import RestrictedUnpickler, load_restricted_pickle

_logger = logging.getLogger(__name__)

__all__ = [
    'ModelNet40', 'make_builtin_modelnet', 'detect_format', 'read_off', 'sample_surface',
    'farthest_point_sample', 'normalize_unit_sphere', 'RestrictedUnpickler', 'load_restricted_pickle',
    'BUILTIN_CLASSES', 'FORMATS', 'LAYOUT_HELP',
]

PathLike = Union[str, Path]

_SPLITS = ('train', 'val', 'test')
_CACHE_VERSION = 1
#: Points kept per cloud of the ``text``/``off`` formats as the source of re-drawn training clouds: the 8192 of the
#: Point-BERT ``.dat`` files (FPS-first 8192 of each shape), which the published recipe draws from.
REDRAW_SOURCE_POINTS = 8192


def _stable_seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha1('|'.join(map(str, parts)).encode()).digest()[:8], 'little')


def _val_subset(labels: Sequence[int], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a per-class stratified, seeded ``fraction`` of ``labels`` (at least 1 per class of >= 2)."""
    labels = np.asarray(labels)
    mask = np.zeros(len(labels), dtype=bool)
    if fraction <= 0:
        return mask
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_val = int(round(fraction * len(members)))
        if n_val == 0 and len(members) >= 2:
            n_val = 1
        n_val = min(n_val, len(members) - 1) if len(members) > 1 else 0
        rng = np.random.default_rng(_stable_seed('modelnet-val', seed, int(c)))
        mask[members[rng.permutation(len(members))[:n_val]]] = True
    return mask


# --------------------------------------------------------------------------------------------- dataset


class ModelNet40(Dataset):
    """ModelNet40 point clouds ``(points float32 (num_points, 3 or 6), label int)``.

    Args:
        root: the data folder (or the folder above one named ``ModelNet40``, ``modelnet40_normal_resampled``,
            ``modelnet40_ply_hdf5_2048``).
        split: ``'train'``, ``'val'`` or ``'test'`` (see the module docstring for how ``val`` is formed).
        format: ``'auto'`` or one of ``'off'``, ``'text'``, ``'hdf5'``, ``'dat'``.
        num_points: points per cloud.
        use_normals: return ``(num_points, 6)`` (xyz + normals) instead of xyz.
        sampling: how clouds that already are point sets are reduced to ``num_points``: ``'fps'`` or ``'first'``
            (default: ``'fps'`` for ``text``, ``'first'`` for ``hdf5``/``dat``, whose points are stored FPS-ordered
            resp. as published). OFF meshes are always surface-sampled, then FPS-reduced.
        redraw_from: ``train`` split only: every read draws a new cloud, farthest point sampling of ``redraw_from``
            points from a random start over the stored cloud, then a random ``num_points`` of them without
            replacement (the published P2P recipe: 4800 then 4096, from the ``.dat``'s 8192 points). Stored clouds:
            ``dat``/``hdf5`` keep every point of the file; ``text``/``off`` cache the FPS-first
            ``max(REDRAW_SOURCE_POINTS, redraw_from)``. A cloud with fewer than ``redraw_from`` points is bad input.
            ``None`` (default): fixed clouds.
        surface_samples: OFF only: uniform surface samples before FPS (default ``max(8192, 8 * num_points)``, and
            at least the points a re-drawn cloud is drawn from).
        cache_dir: where the ``.npz`` caches of the ``off``/``text`` formats go (default ``<root>/.unimodal_cache``
            when writable, else ``~/.cache/unimodal/modelnet``).
        val_fraction: fraction of each class's train files held out as ``val`` (``val_from='train'``).
        val_from: ``'train'`` (held-out part of train, default) or ``'test'`` (val = test, train = all of train).
        off_up_axis: up axis of the raw OFF meshes, rotated to y-up (``None`` keeps the stored coordinates).
        list_prefix: ``text``/``dat`` file prefix (``'modelnet40'``; ``'modelnet10'`` for the 10-class lists).
        seed: seed of the val split and of the surface sampling.
        skip_bad: skip unusable files and record them in :attr:`skip_report` instead of raising.
        prepare: run the caching pass in ``__init__`` (set ``False`` to defer to :meth:`prepare`).
        workers: threads of the caching pass.
    """

    def __init__(self, root: PathLike, split: str = 'train', *, format: str = 'auto', num_points: int = 1024,
                 use_normals: bool = False, sampling: Optional[str] = None, redraw_from: Optional[int] = None,
                 surface_samples: Optional[int] = None,
                 cache_dir: Optional[PathLike] = None, val_fraction: float = 0.1, val_from: str = 'train',
                 off_up_axis: Optional[str] = 'z', list_prefix: str = 'modelnet40',
                 seed: int = 0, skip_bad: bool = False, prepare: bool = True, workers: int = 1) -> None:
        if split not in _SPLITS:
            raise ValueError(f'split must be one of {_SPLITS}, got {split!r}')
        if format != 'auto' and format not in FORMATS:
            raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")
        if sampling not in (None, 'fps', 'first'):
            raise ValueError(f"sampling must be 'fps' or 'first', got {sampling!r}")
        if val_from not in ('train', 'test'):
            raise ValueError(f"val_from must be 'train' or 'test', got {val_from!r}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f'val_fraction must be in [0, 1), got {val_fraction}')
        if num_points < 1:
            raise ValueError(f'num_points must be >= 1, got {num_points}')
        if redraw_from is not None and (isinstance(redraw_from, bool) or not isinstance(redraw_from, int)
                                        or redraw_from < num_points):
            raise ValueError(f'redraw_from must be an integer >= num_points ({num_points}), got {redraw_from!r}')
        root = Path(root)
        if format == 'auto':
            self.root, self.format = detect_format(root)
        else:
            if not root.exists():
                raise FileNotFoundError(f'{root}: ModelNet40 data folder does not exist ({LAYOUT_HELP})')
            self.root, self.format = resolve_root(root), format
        self.split = split
        self.num_points = num_points
        self.use_normals = use_normals
        self.sampling = sampling or ('fps' if self.format == 'text' else 'first')
        self.redraw_from = redraw_from
        # the split's clouds are re-drawn on every read from stored clouds of _stored_points points
        self._redraw = redraw_from if split == 'train' else None
        self._stored_points = max(REDRAW_SOURCE_POINTS, redraw_from) if self._redraw else num_points
        self._calls = 0
        self.surface_samples = surface_samples or max(8192, 8 * num_points, self._stored_points)
        self.val_fraction = val_fraction
        self.val_from = val_from
        self.off_up_axis = off_up_axis
        self.list_prefix = list_prefix
        self.seed = seed
        self.skip_bad = skip_bad
        self.workers = max(1, workers)
        self.skip_report = SkipReport(f'modelnet40/{split}')
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self._default_cache_dir()
        self.classes: List[str] = []
        # per-file formats: (path, label, cache path); in-memory formats: arrays
        self._files: List[Tuple[Path, int]] = []
        self._cache: List[Path] = []
        self._arrays: List[np.ndarray] = []
        self.targets: List[int] = []
        src_split = 'test' if (split == 'test' or (split == 'val' and val_from == 'test')) else 'train'
        if self.format == 'off':
            entries = self._list_off(src_split)
        elif self.format == 'text':
            entries = self._list_text(src_split)
        elif self.format == 'hdf5':
            entries = self._load_hdf5(src_split)
        else:
            entries = self._load_dat(src_split)
        if split == 'val' and val_from == 'train' and val_fraction == 0:
            raise ValueError("val_fraction=0 holds out no validation files; use val_fraction > 0 or val_from='test'")
        if src_split == 'train' and val_from == 'train' and val_fraction > 0:
            is_val = _val_subset([e[1] for e in entries], val_fraction, seed)
            entries = [e for e, v in zip(entries, is_val) if v == (split == 'val')]
        self._entries = entries
        self.skip_report.total = len(entries) + self.skip_report.count
        self._prepared = False
        if prepare:
            self.prepare()

    # ----------------------------------------------------------------------------------------- listing

    def _default_cache_dir(self) -> Path:
        root = Path(self.root)
        if os.access(root, os.W_OK):
            return root / '.unimodal_cache'
        return Path(os.path.expanduser('~/.cache/unimodal/modelnet')) / hashlib.sha1(
            str(root.resolve()).encode()).hexdigest()[:12]

    def _fail(self, error: DataError) -> None:
        if not self.skip_bad:
            raise error
        self.skip_report.add(error)

    def _list_off(self, src_split: str) -> List[Tuple[Any, int]]:
        self.classes = sorted(p.name for p in self.root.iterdir()
                              if p.is_dir() and not p.name.startswith('.')
                              and ((p / 'train').is_dir() or (p / 'test').is_dir()))
        if not self.classes:
            raise FileNotFoundError(f'{self.root}: no <class>/{{train,test}} folders ({LAYOUT_HELP})')
        entries = []
        for label, name in enumerate(self.classes):
            for path in sorted((self.root / name / src_split).glob('*.off')):
                entries.append((path, label))
        if not entries:
            raise FileNotFoundError(f'{self.root}: no {src_split} .off meshes under <class>/{src_split}/')
        return entries

    def _list_text(self, src_split: str) -> List[Tuple[Any, int]]:
        names_file = self.root / f'{self.list_prefix}_shape_names.txt'
        list_file = self.root / f'{self.list_prefix}_{src_split}.txt'
        for f in (names_file, list_file):
            if not f.is_file():
                raise FileNotFoundError(f'{f}: missing list file ({LAYOUT_HELP})')
        self.classes = read_names(names_file)
        index = {c: i for i, c in enumerate(self.classes)}
        entries = []
        for lineno, shape_id in enumerate(read_names(list_file), 1):
            cls = shape_id.rsplit('_', 1)[0]
            path = self.root / cls / f'{shape_id}.txt'
            if cls not in index:
                self._fail(DataError(list_file, f'line {lineno}: {shape_id!r} has class {cls!r}, not in '
                                                f'{names_file.name}'))
            elif not path.is_file():
                self._fail(DataError(path, f'listed in {list_file.name} (line {lineno}) but missing'))
            else:
                entries.append((path, index[cls]))
        return entries

    def _in_memory(self, source: Path, points: Sequence[np.ndarray], labels: Sequence[Any],
                   first: int) -> List[Tuple[Any, int]]:
        """Validate arrays of an in-memory format; keep ``(array index, label)`` entries."""
        entries = []
        for i, (pts, lab) in enumerate(zip(points, labels)):
            where = f'sample {first + i}'
            lab_arr = np.asarray(lab).reshape(-1)
            if lab_arr.size != 1 or not np.issubdtype(lab_arr.dtype, np.integer):
                self._fail(DataError(source, f'{where}: label {lab!r} is not one integer'))
                continue
            y = int(lab_arr[0])
            if not 0 <= y < len(self.classes):
                self._fail(DataError(source, f'{where}: label {y} not in the class list (0..{len(self.classes) - 1})'))
                continue
            if not isinstance(pts, np.ndarray) or pts.ndim != 2 or pts.shape[1] < (6 if self.use_normals else 3) \
                    or not np.issubdtype(pts.dtype, np.number):
                self._fail(DataError(source, f'{where}: expected a (points, {6 if self.use_normals else 3}+) numeric '
                                             f'array, got {getattr(pts, "shape", type(pts).__name__)}'))
                continue
            if self._redraw and len(pts) < self._redraw:
                self._fail(DataError(source, f'{where}: {len(pts)} points, fewer than redraw_from={self._redraw}'))
                continue
            # normalised over all its stored points, then reduced on read without re-normalising (as the
            # published readers do); 'first' keeps only what a read uses (bounded memory)
            cloud = normalize_unit_sphere(np.asarray(pts[:, :6], dtype=np.float32))
            keep = cloud if (self.sampling == 'fps' or self._redraw) else cloud[:self.num_points]
            self._arrays.append(np.ascontiguousarray(keep))
            entries.append((len(self._arrays) - 1, y))
        return entries

    def _class_names_or_numbers(self, count: int) -> List[str]:
        for cand in (f'{self.list_prefix}_shape_names.txt', 'shape_names.txt'):
            if (self.root / cand).is_file():
                return read_names(self.root / cand)
        return [str(i) for i in range(count)]

    def _load_hdf5(self, src_split: str) -> List[Tuple[Any, int]]:
        files = sorted(self.root.glob(f'ply_data_{src_split}*.h5'),
                       key=lambda p: int(re.sub(r'\D', '', p.stem.split(src_split)[-1]) or 0))
        if not files:
            raise FileNotFoundError(f'{self.root}: no ply_data_{src_split}*.h5 files ({LAYOUT_HELP})')
        loaded = []
        for f in files:
            try:
                loaded.append((f, *read_ply_h5(f, self.use_normals)))
            except DataError as e:
                self._fail(e)
        max_label = max((int(lab.max()) for _, _, lab in loaded if lab.size), default=-1)
        self.classes = self._class_names_or_numbers(max_label + 1 if max_label >= 39 else 40)
        entries = []
        for f, data, label in loaded:
            entries.extend(self._in_memory(f, list(data), list(label.astype(np.int64)), 0))
        return entries

    def _load_dat(self, src_split: str) -> List[Tuple[Any, int]]:
        cands = sorted(self.root.glob(f'{self.list_prefix}_{src_split}_*.dat')) or \
            sorted(self.root.glob(f'*{src_split}*.dat'))
        if not cands:
            raise FileNotFoundError(f'{self.root}: no {self.list_prefix}_{src_split}_*.dat file ({LAYOUT_HELP})')
        f = cands[0]
        self.classes = self._class_names_or_numbers(40)
        try:
            points, labels = read_point_bert_dat(f)
        except DataError as e:
            self._fail(e)
            return []
        return self._in_memory(f, points, labels, 0)

    # ----------------------------------------------------------------------------------------- caching

    def _cache_path(self, path: Path) -> Path:
        st = path.stat()
        key = _stable_seed(path.resolve(), st.st_size, st.st_mtime_ns, self._stored_points, self.surface_samples,
                           self.sampling, self.off_up_axis if self.format == 'off' else None, self.seed,
                           self.format, _CACHE_VERSION)
        return self.cache_dir / f'{path.stem}-{key:016x}.npz'

    def _compute(self, path: Path) -> np.ndarray:
        """Read one per-file sample and reduce it to its stored ``(points, 6)`` (xyz + normals), normalised."""
        if self.format == 'off':
            verts, faces = read_off(path)
            rng = np.random.default_rng(_stable_seed('modelnet-surface', self.seed, path.name))
            try:
                source = sample_surface(verts, faces, self.surface_samples, rng)
            except ValueError as e:
                raise DataError(path, f'cannot sample the mesh surface: {e}') from e
            fps = True
        else:
            source, fps = read_point_text(path), self.sampling == 'fps'
        n = self._stored_points
        if self._redraw:  # the source of re-draws is never padded with repeats
            n = min(n, len(source))
            if n < self._redraw:
                raise DataError(path, f'{n} points, fewer than redraw_from={self._redraw}')
        pts = source[farthest_point_sample(source, n) if fps else np.resize(np.arange(min(n, len(source))), n)]
        if self.format == 'off':
            pts = rotate_up_to_y(pts, self.off_up_axis)
        if not np.isfinite(pts).all():
            raise DataError(path, 'non-finite coordinates')
        return normalize_unit_sphere(pts)

    def _prepare_one(self, path: Path) -> Tuple[Optional[Path], Optional[DataError]]:
        try:
            cache = self._cache_path(path)
        except OSError as e:
            return None, DataError(path, f'unreadable file ({e})')
        if cache.is_file():
            return cache, None
        try:
            pts = self._compute(path)
        except DataError as e:
            return None, e
        write_npz(cache, pts)
        return cache, None

    def prepare(self) -> 'ModelNet40':
        """Sample, FPS and cache every file of this split (``off``/``text``); bad files raise or are skipped.

        Idempotent and cheap once cached (a stat per file). Called by ``__init__`` unless ``prepare=False``.
        """
        if self._prepared:
            return self
        if self.format in ('off', 'text'):
            paths = [p for p, _ in self._entries]
            todo = sum(not self._cache_path(p).is_file() for p in paths if p.is_file())
            if todo:
                _logger.info('ModelNet40 %s: sampling %d of %d %s files into %s', self.split, todo, len(paths),
                             self.format, self.cache_dir)
            if self.workers > 1 and todo > 1:
                with ThreadPoolExecutor(self.workers) as pool:
                    results = list(pool.map(self._prepare_one, paths))
            else:
                results = [self._prepare_one(p) for p in paths]
            files, cache, targets = [], [], []
            for (path, label), (cpath, err) in zip(self._entries, results):
                if err is not None:
                    self._fail(err)
                    continue
                files.append((path, label))
                cache.append(cpath)
                targets.append(label)
            self._files, self._cache, self.targets = files, cache, targets
        else:
            self.targets = [label for _, label in self._entries]
        self._prepared = True
        return self

    # ----------------------------------------------------------------------------------------- access

    def __len__(self) -> int:
        return len(self.targets)

    def _load_cached(self, index: int) -> np.ndarray:
        cache = self._cache[index]
        try:
            with np.load(cache, allow_pickle=False) as z:
                return z['points']
        except (OSError, ValueError, KeyError) as e:  # a damaged cache file: recompute it
            _logger.warning('damaged cache %s (%s): recomputing', cache, e)
            path = self._files[index][0]
            pts = self._compute(path)
            write_npz(cache, pts)
            return pts

    def _draw(self, cloud: np.ndarray, index: int) -> np.ndarray:
        """A re-drawn training cloud: FPS of ``redraw_from`` points of ``cloud`` from a random start, then a random
        ``num_points`` of them without replacement."""
        # a fresh generator per read: new draws every epoch and in every worker (torch seeds each worker from the
        # loader's per-epoch base seed), reproducible under a fixed seed
        self._calls += 1
        rng = np.random.default_rng([self.seed, torch.initial_seed(), index, self._calls])
        pool = farthest_point_sample(cloud, self._redraw, start=int(rng.integers(len(cloud))))
        return cloud[pool[rng.choice(self._redraw, self.num_points, replace=False)]]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        if not self._prepared:
            self.prepare()
        if self.format in ('off', 'text'):
            pts = self._load_cached(index)
            label = self._files[index][1]
            if self._redraw and len(pts) < self._redraw:  # a cache written for a smaller redraw_from
                raise DataError(self._files[index][0], f'{len(pts)} points, fewer than redraw_from={self._redraw}')
        else:
            key, label = self._entries[index]
            pts = self._arrays[key]
            if not self._redraw:
                pts = pts[farthest_point_sample(pts, self.num_points) if self.sampling == 'fps'
                          else np.resize(np.arange(min(self.num_points, len(pts))), self.num_points)]
        if self._redraw:
            pts = self._draw(pts, index)
        cols = 6 if self.use_normals else 3
        if pts.shape[1] < cols:
            raise DataError(self._files[index][0] if self._files else self.root, 'no normals for use_normals=True')
        return torch.from_numpy(np.ascontiguousarray(pts[:, :cols], dtype=np.float32)), int(label)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, format={self.format!r}, '
                f'samples={len(self)}, classes={len(self.classes)}, num_points={self.num_points}'
                + (f', redraw_from={self._redraw}' if self._redraw else '') + ')')
