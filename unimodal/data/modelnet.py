"""ModelNet40 readers (raw OFF meshes, ``modelnet40_normal_resampled`` text, PointNet HDF5, Point-BERT ``.dat``)
as one data set.

The file formats live in :mod:`.point_formats`, the geometry in :mod:`.point_geometry`, the restricted unpickler
in :mod:`.restricted_pickle` and the built-in synthetic set in :mod:`.modelnet_builtin`; their public names are
importable from here too.

Formats (``format='auto'`` picks one from the directory content; ``root`` may also be the folder above it):

* ``off``: ``<root>/<class>/{train,test}/<class>_NNNN.off`` triangle meshes, read with a NumPy OFF parser that
  also handles the header glued to the counts (``OFF490 518 0``). Points are sampled uniformly on the surface
  (area-weighted, with face normals), reduced by farthest point sampling to ``num_points`` and normalised to the
  unit sphere. The raw meshes are z-up; they are rotated to y-up (``off_up_axis='z'``) to match the other formats.
* ``text``: ``modelnet40_normal_resampled/<class>/<class>_NNNN.txt`` (``x,y,z,nx,ny,nz`` lines) with
  ``modelnet40_shape_names.txt`` and ``modelnet40_{train,test}.txt`` id lists; reduced by FPS.
* ``hdf5``: PointNet ``ply_data_{train,test}{0..4}.h5`` (``data`` (M, 2048, 3), ``label``, optional ``normal``)
  read with h5py (optional extra ``unimodal[point]``); class names from ``shape_names.txt`` when present.
* ``dat``: Point-BERT ``modelnet40_{train,test}_8192pts_fps.dat`` (a pickle of (points list, labels list)), read
  ONLY through :class:`RestrictedUnpickler`, which refuses every global except numpy array/dtype/scalar
  reconstruction; class names from ``modelnet40_shape_names.txt`` when present.

Caching (``off``/``text``): a sample is computed the first time it is read and cached as ``.npz`` (never pickle)
in ``<cache folder>/modelnet40`` (:func:`unimodal.data.cache.resolve_cache_dir`: ``cache_dir``, else
``$UNIMODAL_CACHE``, else ``~/.cache/unimodal``; never the data folder), keyed by file path, size, mtime and the
sampling settings. So the first epoch's sampling is spread over the DataLoader workers of every DDP rank (each reads
its own shard), and nothing is sampled before step 1. A file found bad is remembered in the cache too (a small
``.bad.json``), so later runs skip or fail on it without reading it again. :meth:`ModelNet40.prepare` fills the
cache ahead of time (parallel, sharded by rank, with a progress callback): ``unimodal data prepare`` runs it.
Writes are atomic, so concurrent writers of one entry are safe.

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

import json
import logging
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config.errors import ConfigError
from .cache import atomic_write, file_stamp, reader_cache_dir, stable_key
from .errors import DataError, SkipReport, load_or_next
from .index import StringTable
from .options import OPTIONAL_PATH, Option, checked_options
from .modelnet_builtin import BUILTIN_CLASSES, make_builtin_modelnet
from .point_formats import (FORMATS, LAYOUT_HELP, detect_format, read_names, read_off, read_ply_h5,
                            read_point_bert_dat, resolve_root, write_npz)
from .point_files import file_cloud, reduce_cloud
from .point_files import stable_seed as _stable_seed
from .point_geometry import farthest_point_sample, normalize_unit_sphere, sample_surface
from .restricted_pickle import RestrictedUnpickler, load_restricted_pickle

_logger = logging.getLogger(__name__)

__all__ = [
    'ModelNet40', 'OPTIONS', 'make_builtin_modelnet', 'detect_format', 'read_off', 'sample_surface',
    'farthest_point_sample', 'normalize_unit_sphere', 'RestrictedUnpickler', 'load_restricted_pickle',
    'BUILTIN_CLASSES', 'FORMATS', 'LAYOUT_HELP',
]

PathLike = Union[str, Path]
ProgressFn = Callable[[int, int], None]

_SPLITS = ('train', 'val', 'test')
_CACHE_VERSION = 1
#: Points kept per cloud of the ``text``/``off`` formats as the source of re-drawn training clouds: the 8192 of the
#: Point-BERT ``.dat`` files (FPS-first 8192 of each shape), which the published recipe draws from.
REDRAW_SOURCE_POINTS = 8192
#: The options of :class:`ModelNet40` and their allowed values.
OPTIONS = {
    'format': Option(str, choices=('auto', *FORMATS)),
    'num_points': Option(int, lo=1),
    'use_normals': Option(bool),
    'sampling': Option(Optional[str], choices=('fps', 'first')),
    'redraw_from': Option(Optional[int], lo=1),
    'surface_samples': Option(Optional[int], lo=1),
    'cache_dir': OPTIONAL_PATH,
    'val_fraction': Option(float, lo=0, hi=1, hi_open=True),
    'val_from': Option(str, choices=('train', 'test')),
    'off_up_axis': Option(Optional[str], choices=('x', 'y', 'z')),
    'list_prefix': Option(str, expects='a file-name prefix (modelnet40, modelnet10)'),
    'seed': Option(int, lo=0),
    'prepare': Option(bool),
    'workers': Option(int, lo=0),
}


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


def _identity(x: Any) -> Any:
    return x


class _CacheFill(Dataset):
    """The samples of a :class:`ModelNet40` still to cache; items are ``(index, DataError or None)``."""

    def __init__(self, ds: 'ModelNet40', indices: np.ndarray) -> None:
        self.ds, self.indices = ds, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Tuple[int, Optional[DataError]]:
        i = int(self.indices[k])
        try:
            self.ds._file_points(i)
        except DataError as e:
            return i, e
        return i, None


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
        cache_dir: the cache folder (``<cache_dir>/modelnet40`` holds the ``off``/``text`` samples); default
            ``$UNIMODAL_CACHE``, else ``~/.cache/unimodal`` (see :mod:`unimodal.data.cache`).
        val_fraction: fraction of each class's train files held out as ``val`` (``val_from='train'``).
        val_from: ``'train'`` (held-out part of train, default) or ``'test'`` (val = test, train = all of train).
        off_up_axis: up axis of the raw OFF meshes, rotated to y-up (``None`` keeps the stored coordinates).
        list_prefix: ``text``/``dat`` file prefix (``'modelnet40'``; ``'modelnet10'`` for the 10-class lists).
        seed: seed of the val split and of the surface sampling.
        skip_bad: skip unusable files and record them in :attr:`skip_report` instead of raising (a file found bad
            while training is replaced by the next sample and reported then).
        prepare: fill the cache in ``__init__`` (:meth:`prepare`); by default samples are cached on first use.
        workers: worker processes of :meth:`prepare` (0: in this process).
    """

    @checked_options(OPTIONS)
    def __init__(self, root: PathLike, split: str = 'train', *, format: str = 'auto', num_points: int = 1024,
                 use_normals: bool = False, sampling: Optional[str] = None, redraw_from: Optional[int] = None,
                 surface_samples: Optional[int] = None, cache_dir: Optional[PathLike] = None,
                 val_fraction: float = 0.1, val_from: str = 'train',
                 off_up_axis: Optional[str] = 'z', list_prefix: str = 'modelnet40',
                 seed: int = 0, skip_bad: bool = False, prepare: bool = False, workers: int = 0) -> None:
        if split not in _SPLITS:
            raise ValueError(f'split must be one of {_SPLITS}, got {split!r}')
        if redraw_from is not None and redraw_from < num_points:
            raise ConfigError(f'data.options.redraw_from must be >= data.options.num_points ({num_points}), got '
                              f'{redraw_from}')
        # the split's clouds are re-drawn on every read from stored clouds of _stored_points points
        self._redraw = redraw_from if split == 'train' else None
        self._stored_points = max(REDRAW_SOURCE_POINTS, redraw_from) if self._redraw else num_points
        if surface_samples is not None and surface_samples < self._stored_points:
            raise ConfigError(f'data.options.surface_samples must be >= the points kept per cloud '
                              f'({self._stored_points}), got {surface_samples}')
        if split == 'val' and val_from == 'train' and val_fraction == 0:
            raise ConfigError("data.options.val_fraction=0 holds out no validation files; use val_fraction > 0 or "
                              "val_from='test'")
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
        self._calls = 0
        self.surface_samples = surface_samples or max(8192, 8 * num_points, self._stored_points)
        self.val_fraction = val_fraction
        self.val_from = val_from
        self.off_up_axis = off_up_axis
        self.list_prefix = list_prefix
        self.seed = seed
        self.skip_bad = skip_bad
        self.workers = workers
        self.skip_report = SkipReport(f'modelnet40/{split}')
        self.classes: List[str] = []
        self.cache_dir: Optional[Path] = None
        # per-file formats: relative paths; in-memory formats: all points in one array, cut by offsets
        self._paths: Optional[StringTable] = None
        self._points = np.zeros((0, 6), np.float32)
        self._offsets = np.zeros(1, np.int64)
        # in-memory formats: the file (index into _sources) and the sample inside it of every cloud
        self._sources: List[str] = []
        self._source_file = np.zeros(0, np.int64)
        self._source_row = np.zeros(0, np.int64)
        src_split = 'test' if (split == 'test' or (split == 'val' and val_from == 'test')) else 'train'
        if self.format in ('off', 'text'):
            self.cache_dir = reader_cache_dir(cache_dir, 'modelnet40')
            self._cache_s, self._root_s = str(self.cache_dir), str(self.root)
            self._real_root = os.path.realpath(self.root)
            rels, labels = self._list_off(src_split) if self.format == 'off' else self._list_text(src_split)
        else:
            rels, labels = None, (self._load_hdf5(src_split) if self.format == 'hdf5' else self._load_dat(src_split))
        keep = np.ones(len(labels), dtype=bool)
        if src_split == 'train' and val_from == 'train' and val_fraction > 0:
            keep = _val_subset(labels, val_fraction, seed) == (split == 'val')
        self._labels = np.asarray(labels, dtype=np.int64)[keep]
        if rels is not None:
            self._paths = StringTable.from_strings(r for r, k in zip(rels, keep) if k)
        else:
            self._keep_samples(np.flatnonzero(keep))
        self.skip_report.total = len(self._labels) + self.skip_report.count
        if prepare:
            self.prepare()

    # ----------------------------------------------------------------------------------------- listing

    def _fail(self, error: DataError) -> None:
        if not self.skip_bad:
            raise error
        self.skip_report.add(error)

    def _list_off(self, src_split: str) -> Tuple[List[str], List[int]]:
        self.classes = sorted(p.name for p in self.root.iterdir()
                              if p.is_dir() and not p.name.startswith('.')
                              and ((p / 'train').is_dir() or (p / 'test').is_dir()))
        if not self.classes:
            raise FileNotFoundError(f'{self.root}: no <class>/{{train,test}} folders ({LAYOUT_HELP})')
        rels, labels = [], []
        for label, name in enumerate(self.classes):
            folder = self.root / name / src_split
            names = sorted(e.name for e in os.scandir(folder) if e.name.endswith('.off')) if folder.is_dir() else []
            rels.extend(f'{name}/{src_split}/{n}' for n in names)
            labels.extend([label] * len(names))
        if not rels:
            raise FileNotFoundError(f'{self.root}: no {src_split} .off meshes under <class>/{src_split}/')
        return rels, labels

    def _list_text(self, src_split: str) -> Tuple[List[str], List[int]]:
        names_file = self.root / f'{self.list_prefix}_shape_names.txt'
        list_file = self.root / f'{self.list_prefix}_{src_split}.txt'
        for f in (names_file, list_file):
            if not f.is_file():
                raise FileNotFoundError(f'{f}: missing list file ({LAYOUT_HELP})')
        self.classes = read_names(names_file)
        index = {c: i for i, c in enumerate(self.classes)}
        rels, labels = [], []
        for lineno, shape_id in enumerate(read_names(list_file), 1):
            cls = shape_id.rsplit('_', 1)[0]
            rel = f'{cls}/{shape_id}.txt'
            if cls not in index:
                self._fail(DataError(list_file, f'line {lineno}: {shape_id!r} has class {cls!r}, not in '
                                                f'{names_file.name}', reason='unknown class'))
            elif not (self.root / rel).is_file():
                self._fail(DataError(self.root / rel, f'listed in {list_file.name} (line {lineno}) but missing',
                                     reason='missing'))
            else:
                rels.append(rel)
                labels.append(index[cls])
        return rels, labels

    def _in_memory(self, source: Path, points: Sequence[np.ndarray], labels: Sequence[Any]) -> List[int]:
        """Validate the samples of an in-memory format (label, shape, finite points) and keep the good ones."""
        cols = 6 if self.use_normals else 3
        kept, out_labels, rows = [], [], []
        for i, (pts, lab) in enumerate(zip(points, labels)):
            where = f'sample {i}'
            lab_arr = np.asarray(lab).reshape(-1)
            if lab_arr.size != 1 or not np.issubdtype(lab_arr.dtype, np.integer):
                self._fail(DataError(source, f'{where}: label {lab!r} is not one integer', reason='bad label'))
                continue
            y = int(lab_arr[0])
            if not 0 <= y < len(self.classes):
                self._fail(DataError(source, f'{where}: label {y} not in the class list (0..{len(self.classes) - 1})',
                                     reason='bad label'))
                continue
            if not isinstance(pts, np.ndarray) or pts.ndim != 2 or pts.shape[1] < cols \
                    or not np.issubdtype(pts.dtype, np.number) or len(pts) == 0:
                self._fail(DataError(source, f'{where}: expected a (points, {cols}+) numeric array, got '
                                             f'{getattr(pts, "shape", type(pts).__name__)}', reason='bad shape'))
                continue
            bad = ~np.isfinite(pts[:, :cols]).all(axis=1)
            if bad.any():
                self._fail(DataError(source, f'{where}: {int(bad.sum())} of {len(pts)} points are NaN or inf '
                                             f'({"all" if bad.all() else "first at point " + str(int(bad.argmax()))})',
                                     reason='non-finite'))
                continue
            if self._redraw and len(pts) < self._redraw:
                self._fail(DataError(source, f'{where}: {len(pts)} points, fewer than redraw_from={self._redraw}',
                                     reason='too few points'))
                continue
            # normalised over all its stored points, then reduced on read without re-normalising (as the
            # published readers do); 'first' keeps only what a read uses (bounded memory)
            cloud = normalize_unit_sphere(np.asarray(pts[:, :6], dtype=np.float32))
            kept.append(cloud if (self.sampling == 'fps' or self._redraw) else cloud[:self.num_points])
            out_labels.append(y)
            rows.append(i)
        if kept:
            self._sources.append(str(source))
            self._source_file = np.concatenate([self._source_file, np.full(len(rows), len(self._sources) - 1)])
            self._source_row = np.concatenate([self._source_row, np.asarray(rows, np.int64)])
            width = min(a.shape[1] for a in kept)
            start = len(self._offsets) - 1
            self._points = np.concatenate([self._points[:, :width]] + [a[:, :width] for a in kept])
            lengths = np.fromiter((len(a) for a in kept), np.int64, len(kept))
            self._offsets = np.concatenate([self._offsets, self._offsets[start] + np.cumsum(lengths)])
        return out_labels

    def _keep_samples(self, rows: np.ndarray) -> None:
        """Keep only the in-memory samples ``rows`` (after the val split)."""
        starts, ends = self._offsets[rows], self._offsets[rows + 1]
        lengths = ends - starts
        take = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)]) if len(rows) else np.zeros(0, np.int64)
        self._points = np.ascontiguousarray(self._points[take])
        self._offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._source_file, self._source_row = self._source_file[rows], self._source_row[rows]

    def _class_names_or_numbers(self, count: int) -> List[str]:
        for cand in (f'{self.list_prefix}_shape_names.txt', 'shape_names.txt'):
            if (self.root / cand).is_file():
                return read_names(self.root / cand)
        return [str(i) for i in range(count)]

    def _load_hdf5(self, src_split: str) -> List[int]:
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
        labels: List[int] = []
        for f, data, label in loaded:
            labels.extend(self._in_memory(f, data, label.astype(np.int64)))
        return labels

    def _load_dat(self, src_split: str) -> List[int]:
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
        return self._in_memory(f, points, labels)

    # ----------------------------------------------------------------------------------------- caching

    def _cache_files(self, rel: str) -> Tuple[str, str, str]:
        """``(file, cached points, bad-file marker)`` of a per-file sample (one ``stat`` of the file).

        Plain strings: a pathlib.Path per sample interns its parts and grows every worker over an epoch."""
        path = os.path.join(self._root_s, rel)
        try:
            size, mtime = file_stamp(path)
        except OSError as e:
            raise DataError(path, f'unreadable file ({e.strerror or e})', reason='missing') from None
        key = stable_key(self._real_root, rel, size, mtime, self._stored_points, self.surface_samples, self.sampling,
                         self.off_up_axis if self.format == 'off' else None, self.seed, self.format, _CACHE_VERSION)
        stem = os.path.join(self._cache_s, f'{os.path.splitext(os.path.basename(rel))[0]}-{key}')
        return path, f'{stem}.npz', f'{stem}.bad.json'

    def _compute(self, path: str) -> np.ndarray:
        """Read one per-file sample and reduce it to its stored ``(points, 6)`` (xyz + normals), normalised."""
        return file_cloud(path, self._stored_points, surface_samples=self.surface_samples,
                          fps=self.sampling == 'fps', up_axis=self.off_up_axis, seed=self.seed,
                          redraw_from=self._redraw)

    def _file_points(self, index: int) -> np.ndarray:
        """The cached sample of a per-file entry, computed and cached on first use."""
        path, cache, marker = self._cache_files(self._paths[index])
        try:
            with np.load(cache, allow_pickle=False) as z:
                return z['points']
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # damaged entry: recompute
            _logger.warning('damaged cache %s (%s): recomputing', cache, e)
        known = self._known_bad(marker)
        if known is not None:
            raise DataError(path, known['problem'], reason=known.get('reason'))
        try:
            pts = self._compute(path)
        except DataError as e:
            body = json.dumps({'problem': e.problem, 'reason': e.reason}).encode()
            atomic_write(marker, lambda f: f.write(body))
            raise
        write_npz(Path(cache), pts)
        return pts

    @staticmethod
    def _known_bad(marker: str) -> Optional[dict]:
        try:
            with open(marker, 'rb') as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return None

    def prepare(self, workers: Optional[int] = None, rank: int = 0, world_size: int = 1,
                progress: Optional[ProgressFn] = None) -> 'ModelNet40':
        """Sample and cache this rank's share (``rank::world_size``) of the split's files in ``workers`` processes.

        Afterwards every file known to be bad (found by any rank, now or in an earlier run) is removed from this
        data set and reported (``skip_bad``), or raises :class:`DataError` naming it. Cheap once cached (a ``stat``
        per file). ``progress(done, total)`` is called after each sampled file (the CLI draws a bar with it).
        """
        if self._paths is None:
            return self
        workers = self.workers if workers is None else max(0, int(workers))
        todo = np.array([i for i in range(rank, len(self), world_size) if not self._is_cached(i)], dtype=np.int64)
        if len(todo):
            _logger.info('ModelNet40 %s: sampling %d %s files (rank %d of %d, %d workers) into %s', self.split,
                         len(todo), self.format, rank, world_size, workers, self.cache_dir)
            loader = DataLoader(_CacheFill(self, todo), batch_size=None, collate_fn=_identity,
                                num_workers=workers if len(todo) > 1 else 0)
            if progress is not None:
                progress(0, len(todo))
            for done, (_, err) in enumerate(loader, 1):
                if progress is not None:
                    progress(done, len(todo))
                if err is not None and not self.skip_bad:
                    break  # the first bad file in index order is raised below
        self._drop_known_bad()
        return self

    def _is_cached(self, index: int) -> bool:
        try:
            _, cache, marker = self._cache_files(self._paths[index])
        except DataError:
            return True  # unreadable now: reported when read
        return os.path.isfile(cache) or os.path.isfile(marker)

    def _drop_known_bad(self) -> None:
        good = np.ones(len(self), dtype=bool)
        for i in range(len(self)):
            try:
                path, _, marker = self._cache_files(self._paths[i])
                known = self._known_bad(marker)
                err = DataError(path, known['problem'], reason=known.get('reason')) if known else None
            except DataError as e:
                err = e
            if err is not None:
                self._fail(err)
                good[i] = False
        if not good.all():
            keep = np.flatnonzero(good)
            self._paths, self._labels = self._paths.take(keep), self._labels[keep]

    # ----------------------------------------------------------------------------------------- access

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def targets(self) -> List[int]:
        return self._labels.tolist()

    @property
    def files(self) -> List[Path]:
        """The sample files (per-file formats), in index order."""
        return [self.root / rel for rel in self._paths] if self._paths is not None else []

    def sample_source(self, index: int) -> str:
        """The sample's file (``hdf5``/``dat``: the file and the sample's index in it)."""
        if self._paths is not None:
            return os.path.join(self._root_s, self._paths[index])
        return f'{self._sources[int(self._source_file[index])]} sample {int(self._source_row[index])}'

    def _draw(self, cloud: np.ndarray, index: int) -> np.ndarray:
        """A re-drawn training cloud: FPS of ``redraw_from`` points of ``cloud`` from a random start, then a random
        ``num_points`` of them without replacement."""
        # a fresh generator per read: new draws every epoch and in every worker (torch seeds each worker from the
        # loader's per-epoch base seed), reproducible under a fixed seed
        self._calls += 1
        rng = np.random.default_rng([self.seed, torch.initial_seed(), index, self._calls])
        pool = farthest_point_sample(cloud, self._redraw, start=int(rng.integers(len(cloud))))
        return cloud[pool[rng.choice(self._redraw, self.num_points, replace=False)]]

    def _item(self, index: int) -> Tuple[torch.Tensor, int]:
        if self._paths is not None:
            pts = self._file_points(index)
            if self._redraw and len(pts) < self._redraw:  # a cache written for a smaller redraw_from
                raise DataError(self.root / self._paths[index], f'{len(pts)} points, fewer than '
                                                                 f'redraw_from={self._redraw}', reason='too few points')
        else:
            pts = self._points[self._offsets[index]:self._offsets[index + 1]]
            if not self._redraw:
                pts = reduce_cloud(pts, self.num_points, self.sampling == 'fps')
        if self._redraw:
            pts = self._draw(pts, index)
        cols = 6 if self.use_normals else 3
        if pts.shape[1] < cols:
            where = self.root / self._paths[index] if self._paths is not None else self.root
            raise DataError(where, 'no normals for use_normals=True', reason='no normals')
        return torch.from_numpy(np.ascontiguousarray(pts[:, :cols], dtype=np.float32)), int(self._labels[index])

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        return load_or_next(self._item, index, len(self), self.skip_bad, self.skip_report, str(self.root))

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, format={self.format!r}, '
                f'samples={len(self)}, classes={len(self.classes)}, num_points={self.num_points}'
                + (f', redraw_from={self._redraw}' if self._redraw else '') + ')')
