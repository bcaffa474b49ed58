"""ModelNet40 on disk: which layout a folder holds, and NumPy readers of its file formats.

* OFF meshes: :func:`parse_off` also reads the header glued to the counts (``OFF490 518 0``) of the raw ModelNet40
  files, and fan-triangulates polygon faces. (open3d was measured against it and dropped: see benchmarks/README.md.)
* ``modelnet40_normal_resampled`` text (``x,y,z,nx,ny,nz`` lines): :func:`read_point_text`.
* PointNet HDF5 ``ply_data_{train,test}N.h5``: :func:`read_ply_h5` (h5py, the ``point`` extra).
* Point-BERT ``modelnet40_{train,test}_8192pts_fps.dat`` pickles: :func:`read_point_bert_dat`, only through the
  restricted unpickler.
* :func:`write_npz`: the atomic writer of the sampled-point cache (``.npz``, never pickle).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .cache import atomic_write
from .errors import DataError
from .index import read_list_lines
from .restricted_pickle import load_restricted_pickle

__all__ = ['FORMATS', 'LAYOUT_HELP', 'detect_format', 'resolve_root', 'parse_off', 'read_off', 'read_point_text',
           'read_ply_h5', 'read_point_bert_dat', 'read_names', 'write_npz']

PathLike = Union[str, Path]

FORMATS = ('off', 'text', 'hdf5', 'dat')
_SUBDIRS = ('ModelNet40', 'modelnet40_normal_resampled', 'modelnet40_ply_hdf5_2048', 'modelnet40_builtin')

LAYOUT_HELP = (
    'expected one of: raw ModelNet40 <root>/<class>/{train,test}/<class>_NNNN.off; '
    'modelnet40_normal_resampled (<root>/modelnet40_shape_names.txt, modelnet40_{train,test}.txt, '
    '<class>/<class>_NNNN.txt with x,y,z,nx,ny,nz lines); PointNet HDF5 <root>/ply_data_{train,test}N.h5; '
    'Point-BERT <root>/modelnet40_{train,test}_8192pts_fps.dat')


# --------------------------------------------------------------------------------------------- layout


def resolve_root(root: Path) -> Path:
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
    folder = resolve_root(root)
    fmt = _detect(folder)
    if fmt is None:
        raise FileNotFoundError(f'{root}: not a ModelNet40 folder ({LAYOUT_HELP})')
    return folder, fmt


def read_names(path: Path) -> List[str]:
    return [text for _, text in read_list_lines(path)]


# --------------------------------------------------------------------------------------------- OFF meshes


def parse_off(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Numpy OFF parser tolerant of the glued ``OFF<nv> <nf> <ne>`` header, comments and polygon faces.

    The file is read as lines (header, ``nv`` vertex lines, ``nf`` face lines), so a header that promises more
    vertices or faces than the file holds is an error instead of face numbers read as vertices.
    """
    try:
        text = path.read_bytes().decode('ascii')
    except UnicodeDecodeError as e:
        raise DataError(path, f'not an OFF mesh (non-ASCII byte at offset {e.start})', reason='bad header') from None
    except OSError as e:
        raise DataError(path, f'unreadable OFF file ({e.strerror or e})', reason='unreadable') from None
    lines = [ln for ln in (raw.split('#', 1)[0].strip() for raw in text.splitlines()) if ln]
    if not lines or not lines[0].startswith('OFF'):
        raise DataError(path, 'not an OFF mesh (first keyword is not "OFF")', reason='bad header')
    counts, body = (lines[0][3:].split(), lines[1:]) if lines[0][3:].strip() else \
        ((lines[1].split() if len(lines) > 1 else []), lines[2:])
    try:
        nv, nf = int(counts[0]), int(counts[1])
    except (IndexError, ValueError):
        raise DataError(path, f'bad OFF header {" ".join(counts)!r} (expected "<vertices> <faces> <edges>")',
                        reason='bad header') from None
    if nv < 1 or nf < 0:
        raise DataError(path, f'bad OFF header: {nv} vertices, {nf} faces', reason='bad header')
    if nf == 0:
        raise DataError(path, 'mesh has no faces (OFF header face count is 0)', reason='no faces')
    if len(body) < nv + nf:
        raise DataError(path, f'OFF header promises {nv} vertices and {nf} faces ({nv + nf} lines), the file holds '
                              f'{len(body)} lines after the header', reason='truncated')
    try:
        verts = np.asarray(' '.join(body[:nv]).split(), dtype=np.float64)
        fint = np.asarray(' '.join(body[nv:nv + nf]).split(), dtype=np.int64)
    except (ValueError, OverflowError) as e:
        raise DataError(path, f'bad OFF vertex or face list ({e})', reason='bad body') from None
    if verts.size != 3 * nv:
        raise DataError(path, f'expected 3 coordinates on each of the {nv} vertex lines, found {verts.size} numbers',
                        reason='bad body')
    verts = verts.reshape(nv, 3)
    if not np.isfinite(verts).all():
        raise DataError(path, 'non-finite vertex coordinates (NaN or inf)', reason='non-finite')
    if fint.size == 4 * nf and np.all(fint[0::4] == 3):  # all triangles: the fast path
        faces = fint.reshape(nf, 4)[:, 1:]
    else:  # polygons (or per-face colours after the indices): fan-triangulate each line
        faces_l: List[List[int]] = []
        for j, line in enumerate(body[nv:nv + nf]):
            row = [int(t) for t in line.split()]
            k = row[0]
            if k < 3 or len(row) < 1 + k:
                raise DataError(path, f'bad OFF face {j} ({line!r}): expected a vertex count >= 3 and that many '
                                      f'indices', reason='bad body')
            faces_l.extend([row[1], row[i], row[i + 1]] for i in range(2, k))
        faces = np.asarray(faces_l, dtype=np.int64).reshape(-1, 3)
    if faces.min() < 0 or faces.max() >= nv:
        bad = int(faces.max()) if faces.max() >= nv else int(faces.min())
        raise DataError(path, f'OFF face index {bad} out of range (the mesh has {nv} vertices: 0..{nv - 1})',
                        reason='bad body')
    return verts, faces


def read_off(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read an OFF triangle mesh: ``(vertices (V, 3) float64, faces (F, 3) int64)``.

    Raises:
        DataError: missing or unreadable file, bad header, or a mesh with no faces.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, 'mesh file does not exist')
    return parse_off(path)


# --------------------------------------------------------------------------------------------- point sets


def read_point_text(path: Path) -> np.ndarray:
    """A ``modelnet40_normal_resampled`` file: ``(N, 6)`` float32 ``x,y,z,nx,ny,nz``."""
    try:
        arr = np.loadtxt(path, delimiter=',', dtype=np.float32, ndmin=2)
    except (OSError, ValueError) as e:
        raise DataError(path, f'unreadable point file ({e}); expected "x,y,z,nx,ny,nz" lines') from e
    if arr.shape[1] != 6:
        raise DataError(path, f'expected 6 columns (x,y,z,nx,ny,nz), found {arr.shape[1]}')
    if arr.shape[0] == 0:
        raise DataError(path, 'point file is empty')
    return arr


def read_ply_h5(path: Path, with_normals: bool) -> Tuple[np.ndarray, np.ndarray]:
    """A PointNet HDF5 file: ``(data (M, P, 3 or 6) float32, label (M,))``; normals from ``normal`` when asked."""
    try:
        import h5py
    except ImportError as e:
        raise ImportError('reading the PointNet HDF5 files needs h5py (pip install "unimodal[point]")') from e
    try:
        with h5py.File(path, 'r') as h:
            if 'data' not in h or 'label' not in h:
                raise DataError(path, f'HDF5 file lacks "data" or "label" (has {sorted(h.keys())})')
            data = np.asarray(h['data'], dtype=np.float32)
            label = np.asarray(h['label'])
            if with_normals:
                if 'normal' not in h:
                    raise DataError(path, 'use_normals=True but the HDF5 file has no "normal" data set')
                data = np.concatenate([data, np.asarray(h['normal'], dtype=np.float32)], axis=-1)
    except OSError as e:
        raise DataError(path, f'unreadable HDF5 file ({e})') from e
    if data.ndim != 3 or data.shape[-1] < 3 or label.reshape(len(label), -1).shape[1] != 1 \
            or len(label) != len(data):
        raise DataError(path, f'expected data (M, P, 3) and label (M,) or (M, 1), got data {data.shape} and '
                              f'label {label.shape}')
    return data, label.reshape(-1)


def read_point_bert_dat(path: Path) -> Tuple[Sequence[np.ndarray], List]:
    """A Point-BERT ``.dat`` pickle of ``(list of point arrays, list of labels)``, unpickled restrictedly."""
    obj = load_restricted_pickle(path)
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[0], (list, tuple))
            and isinstance(obj[1], (list, tuple, np.ndarray)) and len(obj[0]) == len(obj[1])):
        raise DataError(path, 'expected a pickle of (list of point arrays, list of labels) of equal length')
    return obj[0], list(obj[1])


def write_npz(cache: Path, points: np.ndarray) -> None:
    """Write ``points`` to ``cache`` atomically (temporary file + rename): readers never see half a file."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cache, lambda fh: np.savez(fh, points=points))
