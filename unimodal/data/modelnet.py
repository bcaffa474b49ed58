"""ModelNet40 readers (raw OFF meshes, ``modelnet40_normal_resampled`` text, PointNet HDF5, Point-BERT ``.dat``)
and the built-in synthetic ModelNet-style OFF data set.

Formats (``format='auto'`` picks one from the directory content; ``root`` may also be the folder above it):

* ``off``: ``<root>/<class>/{train,test}/<class>_NNNN.off`` triangle meshes. Read with open3d when it imports
  (``mesh_reader='auto'``), else with a small numpy OFF parser; the parser also handles the header glued to the
  counts (``OFF490 518 0``) that open3d refuses. Points are sampled uniformly on the surface (area-weighted,
  with face normals), reduced by farthest point sampling to ``num_points`` and normalised to the unit sphere.
  The result is cached as ``.npz`` (never pickle) keyed by file path, size, mtime and the sampling settings, in a
  prepare pass run by ``__init__``, so bad meshes are found (and counted) up front and no epoch does mesh work.
  The raw meshes are z-up; they are rotated to y-up (``off_up_axis='z'``) to match the other formats.
* ``text``: ``modelnet40_normal_resampled/<class>/<class>_NNNN.txt`` (``x,y,z,nx,ny,nz`` lines) with
  ``modelnet40_shape_names.txt`` and ``modelnet40_{train,test}.txt`` id lists; FPS results cached as ``.npz``.
* ``hdf5``: PointNet ``ply_data_{train,test}{0..4}.h5`` (``data`` (M, 2048, 3), ``label``, optional ``normal``)
  read with h5py (optional extra ``unimodal[point]``); class names from ``shape_names.txt`` when present.
* ``dat``: Point-BERT ``modelnet40_{train,test}_8192pts_fps.dat`` (a pickle of (points list, labels list)), read
  ONLY through :class:`RestrictedUnpickler`, which refuses every global except numpy array/dtype/scalar
  reconstruction; class names from ``modelnet40_shape_names.txt`` when present.

Splits: ModelNet40 ships ``train`` and ``test`` only (and the field reports test accuracy). By default
(``val_from='train'``) ``val`` is a deterministic, per-class stratified ``val_fraction`` of the train files (seeded
by ``seed``) and ``train`` is the rest, so model selection never sees the test set. ``val_from='test'`` follows the
common practice instead: ``train`` is the whole train split and ``val`` is the test split.
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import os
import pickle
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DataError, SkipReport

_logger = logging.getLogger(__name__)

__all__ = [
    'ModelNet40', 'make_builtin_modelnet', 'detect_format', 'read_off', 'sample_surface',
    'farthest_point_sample', 'normalize_unit_sphere', 'RestrictedUnpickler', 'load_restricted_pickle',
    'BUILTIN_CLASSES', 'FORMATS', 'LAYOUT_HELP',
]

PathLike = Union[str, Path]

FORMATS = ('off', 'text', 'hdf5', 'dat')
_SPLITS = ('train', 'val', 'test')
_CACHE_VERSION = 1
_SUBDIRS = ('ModelNet40', 'modelnet40_normal_resampled', 'modelnet40_ply_hdf5_2048', 'modelnet40_builtin')

LAYOUT_HELP = (
    'expected one of: raw ModelNet40 <root>/<class>/{train,test}/<class>_NNNN.off; '
    'modelnet40_normal_resampled (<root>/modelnet40_shape_names.txt, modelnet40_{train,test}.txt, '
    '<class>/<class>_NNNN.txt with x,y,z,nx,ny,nz lines); PointNet HDF5 <root>/ply_data_{train,test}N.h5; '
    'Point-BERT <root>/modelnet40_{train,test}_8192pts_fps.dat')


# --------------------------------------------------------------------------------------------- geometry


def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """Centre xyz at the centroid and divide by the largest norm (normals, columns 3+, are kept)."""
    out = points.astype(np.float32, copy=True)
    xyz = out[:, :3]
    xyz -= xyz.mean(axis=0, keepdims=True)
    scale = float(np.sqrt((xyz ** 2).sum(axis=1)).max())
    if scale > 0:
        xyz /= scale
    return out


def farthest_point_sample(points: np.ndarray, num: int, start: int = 0) -> np.ndarray:
    """Indices of ``num`` points chosen by farthest point sampling over xyz (the first is ``start``).

    With fewer points than ``num`` every point is kept and the rest is filled by repeating the FPS order.
    """
    # separate contiguous x/y/z columns and preallocated buffers: ~10x faster than (N, 3) arithmetic
    x, y, z = (np.ascontiguousarray(points[:, i], dtype=np.float32) for i in range(3))
    n = x.shape[0]
    take = min(num, n)
    idx = np.empty(take, dtype=np.int64)
    dist = np.full(n, np.inf, dtype=np.float32)
    diff = np.empty(n, dtype=np.float32)
    d2 = np.empty(n, dtype=np.float32)
    far = start
    for i in range(take):
        idx[i] = far
        np.subtract(x, x[far], out=diff)
        np.multiply(diff, diff, out=d2)
        np.subtract(y, y[far], out=diff)
        d2 += diff * diff
        np.subtract(z, z[far], out=diff)
        d2 += diff * diff
        np.minimum(dist, d2, out=dist)
        far = int(dist.argmax())
    if take < num:
        idx = np.resize(idx, num)
    return idx


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` points uniformly on a triangle mesh's surface with their face normals: ``(count, 6)``."""
    tri = vertices[faces]  # (F, 3, 3)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area2 = np.linalg.norm(cross, axis=1)
    total = area2.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError('mesh has zero surface area')
    face = rng.choice(len(faces), size=count, p=area2 / total)
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1  # fold the unit square onto the triangle
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tri[face]
    pts = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    normals = cross[face] / np.maximum(area2[face], 1e-12)[:, None]
    return np.concatenate([pts, normals], axis=1)


def _rotate_up_to_y(points: np.ndarray, up_axis: Optional[str]) -> np.ndarray:
    """Rotate so ``up_axis`` becomes +y (xyz and normals alike)."""
    if up_axis in (None, 'y'):
        return points
    out = points.copy()
    for c in range(0, points.shape[1], 3):
        x, y, z = points[:, c], points[:, c + 1], points[:, c + 2]
        if up_axis == 'z':  # -90 deg about x: (x, y, z) -> (x, z, -y)
            out[:, c + 1], out[:, c + 2] = z, -y
        elif up_axis == 'x':  # +90 deg about z: (x, y, z) -> (-y, x, z)
            out[:, c], out[:, c + 1] = -y, x
        else:
            raise ValueError(f"up axis must be 'x', 'y', 'z' or None, got {up_axis!r}")
    return out


# --------------------------------------------------------------------------------------------- OFF meshes


def _parse_off(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Numpy OFF parser tolerant of the glued ``OFF<nv> <nf> <ne>`` header, comments and polygon faces."""
    try:
        text = path.read_text(encoding='ascii', errors='strict')
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f'unreadable OFF file ({e})') from e
    lines = [ln.split('#', 1)[0].strip() for ln in text.splitlines()]
    tokens = ' '.join(ln for ln in lines if ln).split()
    if not tokens or not tokens[0].startswith('OFF'):
        raise DataError(path, 'not an OFF mesh (first keyword is not "OFF")')
    head = tokens[0][3:]
    rest = tokens[1:]
    if head:  # glued header: 'OFF490 518 0'
        rest = [head] + rest
    try:
        nv, nf = int(rest[0]), int(rest[1])
        body = rest[3:]
        verts = np.asarray(body[:3 * nv], dtype=np.float64)
    except (IndexError, ValueError) as e:
        raise DataError(path, f'bad OFF header or vertex list ({e})') from e
    if verts.size != 3 * nv:
        raise DataError(path, f'OFF header promises {nv} vertices, file holds {verts.size // 3}')
    verts = verts.reshape(nv, 3)
    if nf <= 0:
        raise DataError(path, 'mesh has no faces (OFF header face count is 0)')
    ftok = body[3 * nv:]
    try:
        fint = np.asarray(ftok, dtype=np.int64)
    except ValueError as e:
        raise DataError(path, f'bad OFF face list ({e})') from e
    if fint.size >= 4 * nf and np.all(fint[0:4 * nf:4] == 3):  # all triangles: the fast path
        faces = fint[:4 * nf].reshape(nf, 4)[:, 1:]
    else:  # polygons: fan-triangulate
        faces_l: List[List[int]] = []
        pos = 0
        for _ in range(nf):
            if pos >= fint.size:
                raise DataError(path, f'OFF header promises {nf} faces, file ends early')
            k = int(fint[pos])
            poly = fint[pos + 1:pos + 1 + k]
            if k < 3 or poly.size != k:
                raise DataError(path, f'bad OFF face with {k} vertices')
            faces_l.extend([int(poly[0]), int(poly[j]), int(poly[j + 1])] for j in range(1, k - 1))
            pos += 1 + k
        faces = np.asarray(faces_l, dtype=np.int64).reshape(-1, 3)
    if faces.size == 0:
        raise DataError(path, 'mesh has no faces')
    if faces.min() < 0 or faces.max() >= nv:
        raise DataError(path, f'OFF face indices out of range (0..{nv - 1})')
    return verts, faces


def _read_off_open3d(path: Path) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Read with open3d; ``None`` when open3d is missing or returns an empty mesh (e.g. the glued header)."""
    try:
        import open3d as o3d
    except (ImportError, OSError) as e:  # OSError: a missing system library of the wheel
        _logger.debug('open3d unavailable (%s): using the numpy OFF parser', e)
        return None
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        mesh = o3d.io.read_triangle_mesh(str(path))
    verts, faces = np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.triangles, dtype=np.int64)
    if verts.size == 0 or faces.size == 0:
        return None
    return verts, faces


def read_off(path: PathLike, reader: str = 'auto') -> Tuple[np.ndarray, np.ndarray]:
    """Read an OFF triangle mesh: ``(vertices (V, 3) float64, faces (F, 3) int64)``.

    Args:
        path: the ``.off`` file.
        reader: ``'auto'`` (open3d, falling back to the numpy parser when open3d is unavailable or rejects the
            file, e.g. the glued ``OFF<counts>`` header), ``'open3d'`` or ``'numpy'``.

    Raises:
        DataError: unreadable file, bad header, or a mesh with no faces.
    """
    path = Path(path)
    if reader not in ('auto', 'open3d', 'numpy'):
        raise ValueError(f"mesh reader must be 'auto', 'open3d' or 'numpy', got {reader!r}")
    if not path.is_file():
        raise DataError(path, 'mesh file does not exist')
    if reader in ('auto', 'open3d'):
        mesh = _read_off_open3d(path)
        if mesh is not None:
            return mesh
        if reader == 'open3d':
            # open3d gives no reason; the numpy parser names the problem (or reads the glued header)
            _logger.debug('open3d could not read %s; trying the numpy OFF parser', path)
    return _parse_off(path)


# --------------------------------------------------------------------------------------------- safe pickle


def _latin1_bytes(text: str, encoding: str = 'latin1') -> bytes:
    """Stand-in for ``_codecs.encode`` that protocol-2 pickles use for ``bytes``: latin-1 only."""
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise pickle.UnpicklingError('refused _codecs.encode call (only latin1 str -> bytes is allowed)')
    return text.encode('latin1')


def _numpy_attr(module: str, name: str) -> Any:
    real = module.replace('numpy.core', 'numpy._core') if hasattr(np, '_core') else module
    try:
        return getattr(importlib.import_module(real), name)
    except (ImportError, AttributeError):
        return getattr(importlib.import_module(module), name)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays, dtypes and scalars (plus pickle's own lists, tuples,
    dicts, numbers and strings). Every other global (``os.system``, ``builtins.eval``, any class) is refused with
    ``pickle.UnpicklingError`` before anything runs."""

    _NUMPY = {
        ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
        ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
        ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),
        ('numpy', 'ndarray'), ('numpy', 'dtype'),
    }
    _BUILTINS = {('builtins', 'list'): list, ('builtins', 'tuple'): tuple, ('__builtin__', 'list'): list,
                 ('__builtin__', 'tuple'): tuple, ('_codecs', 'encode'): _latin1_bytes}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._BUILTINS:
            return self._BUILTINS[(module, name)]
        if (module, name) in self._NUMPY:
            return _numpy_attr(module, name)
        raise pickle.UnpicklingError(f'refused to load global {module}.{name} (only numpy arrays are allowed)')


def load_restricted_pickle(path: PathLike) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; any refusal or corruption is a :class:`DataError`."""
    path = Path(path)
    try:
        with open(path, 'rb') as f:
            return RestrictedUnpickler(f, encoding='latin1').load()
    except pickle.UnpicklingError as e:
        raise DataError(path, f'unsafe or corrupt pickle: {e}') from e
    except (OSError, EOFError, ValueError, TypeError, AttributeError, IndexError, MemoryError) as e:
        raise DataError(path, f'unreadable pickle ({type(e).__name__}: {e})') from e


# --------------------------------------------------------------------------------------------- layout


def _resolve_root(root: Path) -> Path:
    """Descend into a known data-set folder when ``root`` is the folder above it."""
    if root.is_dir():
        for sub in _SUBDIRS:
            if (root / sub).is_dir() and _detect(root) is None:
                return root / sub
    return root


def _detect(root: Path) -> Optional[str]:
    if not root.is_dir():
        return None
    names = [p.name for p in root.iterdir()]
    if any(re.match(r'ply_data_(train|test)\d*\.h5$', n) for n in names):
        return 'hdf5'
    if any(n.endswith('.dat') and ('train' in n or 'test' in n) for n in names):
        return 'dat'
    if any(n.endswith('_shape_names.txt') for n in names) and any(n.endswith('_train.txt') for n in names):
        return 'text'
    for p in root.iterdir():
        if p.is_dir() and ((p / 'train').is_dir() or (p / 'test').is_dir()):
            return 'off'
    return None


def detect_format(root: PathLike) -> Tuple[Path, str]:
    """``(data folder, format)`` of a ModelNet40 copy at ``root`` (or in a known sub-folder of it).

    Raises:
        FileNotFoundError: ``root`` is missing or in none of the known layouts (the message lists them).
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f'{root}: ModelNet40 data folder does not exist ({LAYOUT_HELP})')
    folder = _resolve_root(root)
    fmt = _detect(folder)
    if fmt is None:
        raise FileNotFoundError(f'{root}: not a ModelNet40 folder ({LAYOUT_HELP})')
    return folder, fmt


def _read_names(path: Path) -> List[str]:
    try:
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except OSError as e:
        raise DataError(path, f'unreadable list file ({e})') from e


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


def _write_npz(cache: Path, points: np.ndarray) -> None:
    """Write ``points`` to ``cache`` atomically (temporary file + rename): readers never see half a file."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{cache.stem}.', suffix='.tmp', dir=cache.parent)
    try:
        with os.fdopen(fd, 'wb') as fh:
            np.savez(fh, points=points)
        os.replace(tmp, cache)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
        surface_samples: OFF only: uniform surface samples before FPS (default ``max(8192, 8 * num_points)``).
        cache_dir: where the ``.npz`` caches of the ``off``/``text`` formats go (default ``<root>/.unimodal_cache``
            when writable, else ``~/.cache/unimodal/modelnet``).
        val_fraction: fraction of each class's train files held out as ``val`` (``val_from='train'``).
        val_from: ``'train'`` (held-out part of train, default) or ``'test'`` (val = test, train = all of train).
        off_up_axis: up axis of the raw OFF meshes, rotated to y-up (``None`` keeps the stored coordinates).
        mesh_reader: ``'auto'``, ``'open3d'`` or ``'numpy'`` (see :func:`read_off`).
        list_prefix: ``text``/``dat`` file prefix (``'modelnet40'``; ``'modelnet10'`` for the 10-class lists).
        seed: seed of the val split and of the surface sampling.
        skip_bad: skip unusable files and record them in :attr:`skip_report` instead of raising.
        prepare: run the caching pass in ``__init__`` (set ``False`` to defer to :meth:`prepare`).
        workers: threads of the caching pass.
    """

    def __init__(self, root: PathLike, split: str = 'train', *, format: str = 'auto', num_points: int = 1024,
                 use_normals: bool = False, sampling: Optional[str] = None, surface_samples: Optional[int] = None,
                 cache_dir: Optional[PathLike] = None, val_fraction: float = 0.1, val_from: str = 'train',
                 off_up_axis: Optional[str] = 'z', mesh_reader: str = 'auto', list_prefix: str = 'modelnet40',
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
        if mesh_reader not in ('auto', 'open3d', 'numpy'):
            raise ValueError(f"mesh_reader must be 'auto', 'open3d' or 'numpy', got {mesh_reader!r}")
        root = Path(root)
        if format == 'auto':
            self.root, self.format = detect_format(root)
        else:
            if not root.exists():
                raise FileNotFoundError(f'{root}: ModelNet40 data folder does not exist ({LAYOUT_HELP})')
            self.root, self.format = _resolve_root(root), format
        self.split = split
        self.num_points = num_points
        self.use_normals = use_normals
        self.sampling = sampling or ('fps' if self.format == 'text' else 'first')
        self.surface_samples = surface_samples or max(8192, 8 * num_points)
        self.val_fraction = val_fraction
        self.val_from = val_from
        self.off_up_axis = off_up_axis
        self.mesh_reader = mesh_reader
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
        self.classes = _read_names(names_file)
        index = {c: i for i, c in enumerate(self.classes)}
        entries = []
        for lineno, shape_id in enumerate(_read_names(list_file), 1):
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
            keep = pts if self.sampling == 'fps' else pts[:self.num_points]  # bound memory for 'first'
            self._arrays.append(np.ascontiguousarray(keep[:, :6], dtype=np.float32))
            entries.append((len(self._arrays) - 1, y))
        return entries

    def _class_names_or_numbers(self, count: int) -> List[str]:
        for cand in (f'{self.list_prefix}_shape_names.txt', 'shape_names.txt'):
            if (self.root / cand).is_file():
                return _read_names(self.root / cand)
        return [str(i) for i in range(count)]

    def _load_hdf5(self, src_split: str) -> List[Tuple[Any, int]]:
        try:
            import h5py
        except ImportError as e:
            raise ImportError('reading the PointNet HDF5 files needs h5py (pip install "unimodal[point]")') from e
        files = sorted(self.root.glob(f'ply_data_{src_split}*.h5'),
                       key=lambda p: int(re.sub(r'\D', '', p.stem.split(src_split)[-1]) or 0))
        if not files:
            raise FileNotFoundError(f'{self.root}: no ply_data_{src_split}*.h5 files ({LAYOUT_HELP})')
        loaded = []
        for f in files:
            try:
                with h5py.File(f, 'r') as h:
                    if 'data' not in h or 'label' not in h:
                        raise DataError(f, f'HDF5 file lacks "data" or "label" (has {sorted(h.keys())})')
                    data = np.asarray(h['data'], dtype=np.float32)
                    label = np.asarray(h['label'])
                    if self.use_normals:
                        if 'normal' not in h:
                            raise DataError(f, 'use_normals=True but the HDF5 file has no "normal" data set')
                        data = np.concatenate([data, np.asarray(h['normal'], dtype=np.float32)], axis=-1)
            except DataError as e:
                self._fail(e)
                continue
            except OSError as e:
                self._fail(DataError(f, f'unreadable HDF5 file ({e})'))
                continue
            if data.ndim != 3 or data.shape[-1] < 3 or label.reshape(len(label), -1).shape[1] != 1 \
                    or len(label) != len(data):
                self._fail(DataError(f, f'expected data (M, P, 3) and label (M,) or (M, 1), got data '
                                        f'{data.shape} and label {label.shape}'))
                continue
            loaded.append((f, data, label.reshape(-1)))
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
        obj = None
        try:
            obj = load_restricted_pickle(f)
            if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[0], (list, tuple))
                    and isinstance(obj[1], (list, tuple, np.ndarray)) and len(obj[0]) == len(obj[1])):
                raise DataError(f, 'expected a pickle of (list of point arrays, list of labels) of equal length')
        except DataError as e:
            self._fail(e)
            self.classes = self._class_names_or_numbers(40)
            return []
        self.classes = self._class_names_or_numbers(40)
        return self._in_memory(f, obj[0], list(obj[1]), 0)

    # ----------------------------------------------------------------------------------------- caching

    def _cache_path(self, path: Path) -> Path:
        st = path.stat()
        key = _stable_seed(path.resolve(), st.st_size, st.st_mtime_ns, self.num_points, self.surface_samples,
                           self.sampling, self.off_up_axis if self.format == 'off' else None, self.seed,
                           self.format, _CACHE_VERSION)
        return self.cache_dir / f'{path.stem}-{key:016x}.npz'

    def _compute(self, path: Path) -> np.ndarray:
        """Read one per-file sample and reduce it to ``(num_points, 6)`` (xyz + normals), normalised."""
        if self.format == 'off':
            verts, faces = read_off(path, self.mesh_reader)
            rng = np.random.default_rng(_stable_seed('modelnet-surface', self.seed, path.name))
            try:
                dense = sample_surface(verts, faces, self.surface_samples, rng)
            except ValueError as e:
                raise DataError(path, f'cannot sample the mesh surface: {e}') from e
            pts = dense[farthest_point_sample(dense, self.num_points)]
            pts = _rotate_up_to_y(pts, self.off_up_axis)
        else:
            try:
                arr = np.loadtxt(path, delimiter=',', dtype=np.float32, ndmin=2)
            except (OSError, ValueError) as e:
                raise DataError(path, f'unreadable point file ({e}); expected "x,y,z,nx,ny,nz" lines') from e
            if arr.shape[1] != 6:
                raise DataError(path, f'expected 6 columns (x,y,z,nx,ny,nz), found {arr.shape[1]}')
            if arr.shape[0] == 0:
                raise DataError(path, 'point file is empty')
            idx = farthest_point_sample(arr, self.num_points) if self.sampling == 'fps' \
                else np.resize(np.arange(min(self.num_points, len(arr))), self.num_points)
            pts = arr[idx]
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
        _write_npz(cache, pts)
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
            _write_npz(cache, pts)
            return pts

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        if not self._prepared:
            self.prepare()
        if self.format in ('off', 'text'):
            pts = self._load_cached(index)
            label = self._files[index][1]
        else:
            key, label = self._entries[index]
            arr = self._arrays[key]
            if self.sampling == 'fps':
                arr = arr[farthest_point_sample(arr, self.num_points)]
            else:
                arr = arr[np.resize(np.arange(min(self.num_points, len(arr))), self.num_points)]
            pts = normalize_unit_sphere(arr)
        cols = 6 if self.use_normals else 3
        if pts.shape[1] < cols:
            raise DataError(self._files[index][0] if self._files else self.root, 'no normals for use_normals=True')
        return torch.from_numpy(np.ascontiguousarray(pts[:, :cols], dtype=np.float32)), int(label)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, format={self.format!r}, '
                f'samples={len(self)}, classes={len(self.classes)}, num_points={self.num_points})')


# --------------------------------------------------------------------------------------------- built-in data

#: Classes of the built-in synthetic set (parametric low-poly meshes).
BUILTIN_CLASSES = ('box', 'cone', 'cylinder', 'lshape', 'pyramid', 'sphere', 'table', 'torus')
_BUILTIN_MARKER = '.complete'
_BUILTIN_VERSION = 1


def _box(lo: Sequence[float], hi: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    x0, y0, z0 = lo
    x1, y1, z1 = hi
    v = np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0],
                  [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]], dtype=np.float64)
    f = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                  [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]], dtype=np.int64)
    return v, f


def _merge(parts: Sequence[Tuple[np.ndarray, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
    verts, faces, offset = [], [], 0
    for v, f in parts:
        verts.append(v)
        faces.append(f + offset)
        offset += len(v)
    return np.concatenate(verts), np.concatenate(faces)


def _revolve(profile: Sequence[Tuple[float, float]], segments: int) -> Tuple[np.ndarray, np.ndarray]:
    """Surface of revolution about z of a ``(radius, z)`` profile; zero radius ends become poles."""
    ang = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    verts, rings = [], []
    for r, z in profile:
        if r <= 1e-9:
            rings.append([len(verts)])
            verts.append([0., 0., z])
        else:
            rings.append(list(range(len(verts), len(verts) + segments)))
            verts.extend([[r * np.cos(a), r * np.sin(a), z] for a in ang])
    faces = []
    for a, b in zip(rings[:-1], rings[1:]):
        for i in range(segments):
            j = (i + 1) % segments
            if len(a) == 1 and len(b) > 1:
                faces.append([a[0], b[i], b[j]])
            elif len(b) == 1 and len(a) > 1:
                faces.append([a[i], b[0], a[j]])
            elif len(a) > 1:
                faces.extend([[a[i], b[i], b[j]], [a[i], b[j], a[j]]])
    return np.asarray(verts, dtype=np.float64), np.asarray(faces, dtype=np.int64)


def _shape(name: str, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One random instance of a built-in class, z-up, roughly unit size."""
    u = rng.uniform
    seg = int(rng.integers(10, 17))
    if name == 'box':
        w, d, h = u(0.4, 1.6, size=3)
        return _box((-w / 2, -d / 2, 0), (w / 2, d / 2, h))
    if name == 'cylinder':
        r, h = u(0.25, 0.7), u(0.5, 2.0)
        return _revolve([(0, 0), (r, 0), (r, h), (0, h)], seg)
    if name == 'cone':
        r, h = u(0.3, 0.8), u(0.6, 1.8)
        return _revolve([(0, 0), (r, 0), (0, h)], seg)
    if name == 'sphere':
        r = u(0.4, 1.0)
        lat = np.linspace(0, np.pi, int(rng.integers(7, 11)))
        v, f = _revolve([(r * np.sin(t), -r * np.cos(t)) for t in lat], seg)
        return v * u(0.85, 1.15, size=3), f
    if name == 'torus':
        big = u(0.5, 0.9)
        small = big * u(0.2, 0.45)
        n_minor = int(rng.integers(6, 10))
        ta = np.linspace(0, 2 * np.pi, seg, endpoint=False)
        pa = np.linspace(0, 2 * np.pi, n_minor, endpoint=False)
        t, p = np.meshgrid(ta, pa, indexing='ij')
        v = np.stack([(big + small * np.cos(p)) * np.cos(t), (big + small * np.cos(p)) * np.sin(t),
                      small * np.sin(p)], -1).reshape(-1, 3)
        f = []
        for i in range(seg):
            for j in range(n_minor):
                a, b = i * n_minor + j, ((i + 1) % seg) * n_minor + j
                c, d = ((i + 1) % seg) * n_minor + (j + 1) % n_minor, i * n_minor + (j + 1) % n_minor
                f.extend([[a, b, c], [a, c, d]])
        return v, np.asarray(f, dtype=np.int64)
    if name == 'pyramid':
        w, d, h = u(0.6, 1.6), u(0.6, 1.6), u(0.6, 1.6)
        v = np.array([[-w / 2, -d / 2, 0], [w / 2, -d / 2, 0], [w / 2, d / 2, 0], [-w / 2, d / 2, 0], [0, 0, h]])
        f = np.array([[0, 2, 1], [0, 3, 2], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]], dtype=np.int64)
        return v, f
    if name == 'lshape':
        w, d, h, t = u(0.8, 1.6), u(0.3, 0.8), u(0.8, 1.6), u(0.15, 0.35)
        return _merge([_box((0, 0, 0), (w, d, t)), _box((0, 0, t), (t, d, h))])
    if name == 'table':
        w, d, h = u(0.8, 1.6), u(0.6, 1.2), u(0.5, 1.1)
        top, leg = u(0.05, 0.15), u(0.05, 0.12)
        parts = [_box((-w / 2, -d / 2, h - top), (w / 2, d / 2, h))]
        for sx in (-1, 1):
            for sy in (-1, 1):
                cx, cy = sx * (w / 2 - leg), sy * (d / 2 - leg)
                parts.append(_box((cx - leg / 2, cy - leg / 2, 0), (cx + leg / 2, cy + leg / 2, h - top)))
        return _merge(parts)
    raise ValueError(f'unknown built-in shape {name!r}')


def _pose(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random yaw about z, a small tilt, vertex noise, random scale and offset."""
    yaw, tx, ty = rng.uniform(0, 2 * np.pi), rng.uniform(-0.17, 0.17), rng.uniform(-0.17, 0.17)
    cz, sz = np.cos(yaw), np.sin(yaw)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(tx), -np.sin(tx)], [0, np.sin(tx), np.cos(tx)]])
    ry = np.array([[np.cos(ty), 0, np.sin(ty)], [0, 1, 0], [-np.sin(ty), 0, np.cos(ty)]])
    v = (v - v.mean(0)) @ (rz @ rx @ ry).T
    v = v + rng.normal(0, 0.012, size=v.shape)
    return v * rng.uniform(5, 50) + rng.uniform(-10, 10, size=3)


def _write_off(path: Path, verts: np.ndarray, faces: np.ndarray, glued: bool) -> None:
    head = f'OFF{len(verts)} {len(faces)} 0\n' if glued else f'OFF\n{len(verts)} {len(faces)} 0\n'
    body = '\n'.join(f'{x:.6f} {y:.6f} {z:.6f}' for x, y, z in verts)
    tris = '\n'.join(f'3 {a} {b} {c}' for a, b, c in faces)
    path.write_text(head + body + '\n' + tris + '\n')


def make_builtin_modelnet(root: PathLike, seed: int = 0, per_class: Tuple[int, int] = (32, 10)) -> Path:
    """Write (once) a deterministic synthetic ModelNet-style OFF tree and return ``root``.

    ``<root>/<class>/{train,test}/<class>_NNNN.off`` for the 8 :data:`BUILTIN_CLASSES` (parametric low-poly
    meshes with random proportions, random yaw, a small tilt, vertex noise, random scale and offset, z-up like the
    raw ModelNet40), ``per_class`` = (train, test) meshes per class. Two files use the glued ``OFF<counts>`` header
    of the real data. Written to a temporary folder and renamed into place; skipped when ``root/.complete`` exists
    (a different seed in an existing folder is an error).
    """
    root = Path(root)
    stamp = f'modelnet-builtin v{_BUILTIN_VERSION} seed={seed} per_class={tuple(per_class)}'
    marker = root / _BUILTIN_MARKER
    if marker.is_file():
        if marker.read_text().strip() != stamp:
            raise FileExistsError(f'{root} holds another built-in ModelNet set ({marker.read_text().strip()}); '
                                  'remove it or use another folder')
        return root
    if root.exists():
        raise FileExistsError(f'{root} exists but is not a complete built-in ModelNet set (no {_BUILTIN_MARKER})')
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{root.name}.tmp-', dir=root.parent))
    try:
        n_train, n_test = per_class
        for ci, name in enumerate(BUILTIN_CLASSES):
            rng = np.random.default_rng(np.random.SeedSequence([seed, ci]))
            for i in range(n_train + n_test):
                split = 'train' if i < n_train else 'test'
                out = tmp / name / split
                out.mkdir(parents=True, exist_ok=True)
                v, f = _shape(name, rng)
                v = _pose(v, rng)
                glued = (i == 0 and ci == 0) or (i == n_train and ci == 1)  # one train, one test file
                _write_off(out / f'{name}_{i + 1:04d}.off', v, f, glued)
        (tmp / _BUILTIN_MARKER).write_text(stamp + '\n')
        try:
            tmp.rename(root)
        except OSError:
            if not marker.is_file():  # not merely a concurrent writer that finished first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _logger.info('wrote the built-in synthetic ModelNet-style set to %s', root)
    return root
