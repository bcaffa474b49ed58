"""One shape file to one model cloud: the per-file step of the point reader, callable on any path.

:func:`file_cloud` is what :class:`~unimodal.data.modelnet.ModelNet40` does to each per-file sample (mesh ->
seeded surface sampling -> FPS -> up axis -> unit sphere; point set -> FPS or first points -> unit sphere), and what
``unimodal predict`` does to a file it is given. Meshes: OFF (:func:`~unimodal.data.point_formats.read_off`), PLY and
OBJ; point sets: ``x,y,z,nx,ny,nz`` text and PLY without faces. PLY and OBJ are parsed here: the project has no mesh
library dependency (trimesh/open3d were not worth a dependency for two header formats; see benchmarks/README.md).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from .errors import DataError
from .point_formats import read_off, read_point_text
from .point_geometry import farthest_point_sample, normalize_unit_sphere, rotate_up_to_y, sample_surface

__all__ = ['SHAPE_SUFFIXES', 'stable_seed', 'reduce_cloud', 'read_ply', 'read_obj', 'read_shape', 'file_cloud']

PathLike = Union[str, Path]

#: The per-file shape formats (an ``.h5`` file holds many clouds: the PointNet HDF5 reader).
SHAPE_SUFFIXES = ('.off', '.ply', '.obj', '.txt')

_PLY_TYPES = {'char': 'i1', 'int8': 'i1', 'uchar': 'u1', 'uint8': 'u1', 'short': 'i2', 'int16': 'i2',
              'ushort': 'u2', 'uint16': 'u2', 'int': 'i4', 'int32': 'i4', 'uint': 'u4', 'uint32': 'u4',
              'float': 'f4', 'float32': 'f4', 'double': 'f8', 'float64': 'f8'}


def stable_seed(*parts: Any) -> int:
    """A seed that depends on ``parts`` only (not on Python's hash salt)."""
    return int.from_bytes(hashlib.sha1('|'.join(map(str, parts)).encode()).digest()[:8], 'little')


def reduce_cloud(points: np.ndarray, num: int, fps: bool) -> np.ndarray:
    """``num`` points of ``points``: farthest point sampling, or the first ones (repeated if too few)."""
    return points[farthest_point_sample(points, num) if fps else np.resize(np.arange(min(num, len(points))), num)]


def _ply_header(raw: bytes, path: PathLike) -> Tuple[str, List[Tuple[str, int, List[Tuple[str, ...]]]], int]:
    end = raw.find(b'end_header')
    if not raw.startswith(b'ply') or end < 0:
        raise DataError(path, 'not a PLY file (no "ply" magic or no end_header)', reason='bad header')
    body = raw.index(b'\n', end) + 1
    fmt, elements = '', []
    for line in raw[:end].decode('ascii', 'replace').splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ('comment', 'obj_info'):
            continue
        if words[0] == 'format':
            fmt = words[1]
        elif words[0] == 'element':
            elements.append((words[1], int(words[2]), []))
        elif words[0] == 'property' and elements:
            elements[-1][2].append(tuple(words[1:]))
    if fmt not in ('ascii', 'binary_little_endian', 'binary_big_endian'):
        raise DataError(path, f'unsupported PLY format {fmt!r}', reason='bad header')
    return fmt, elements, body


def read_ply(path: PathLike) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """A PLY file (ASCII or binary): ``(vertices (V, 3 or 6) float64 with normals when present, faces (F, 3) int64
    or None)``; polygon faces are fan-triangulated."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DataError(path, f'unreadable PLY file ({e.strerror or e})', reason='unreadable') from None
    fmt, elements, pos = _ply_header(raw, path)
    order = '<' if fmt == 'binary_little_endian' else '>'
    tokens = raw[pos:].split() if fmt == 'ascii' else None
    t = 0
    verts = faces = None
    try:
        for name, count, props in elements:
            lists = [p for p in props if p[0] == 'list']
            if not lists:
                if fmt == 'ascii':
                    arr = np.asarray(tokens[t:t + count * len(props)], dtype=np.float64).reshape(count, len(props))
                    t += count * len(props)
                    cols = {p[1]: arr[:, i] for i, p in enumerate(props)}
                else:
                    dtype = np.dtype([(p[1], order + _PLY_TYPES[p[0]]) for p in props])
                    arr = np.frombuffer(raw, dtype, count, pos)
                    pos += dtype.itemsize * count
                    cols = {p[1]: arr[p[1]].astype(np.float64) for p in props}
                if name == 'vertex':
                    keys = ['x', 'y', 'z'] + (['nx', 'ny', 'nz'] if all(k in cols for k in ('nx', 'ny', 'nz')) else [])
                    verts = np.stack([cols[k] for k in keys], axis=1)
                continue
            if len(props) != 1:
                raise DataError(path, f'PLY element {name!r}: only a single list property is supported',
                                reason='bad header')
            _, count_type, index_type, _ = lists[0]
            rows = []
            for _ in range(count):
                if fmt == 'ascii':
                    k = int(tokens[t])
                    rows.append([int(v) for v in tokens[t + 1:t + 1 + k]])
                    t += 1 + k
                else:
                    ct, it = np.dtype(order + _PLY_TYPES[count_type]), np.dtype(order + _PLY_TYPES[index_type])
                    k = int(np.frombuffer(raw, ct, 1, pos)[0])
                    rows.append(np.frombuffer(raw, it, k, pos + ct.itemsize).tolist())
                    pos += ct.itemsize + k * it.itemsize
            if name == 'face':
                faces = np.asarray([[r[0], r[i], r[i + 1]] for r in rows for i in range(1, len(r) - 1)],
                                   dtype=np.int64).reshape(-1, 3)
    except (ValueError, IndexError, KeyError, TypeError) as e:
        raise DataError(path, f'bad PLY body ({type(e).__name__}: {e})', reason='bad body') from None
    if verts is None or not len(verts):
        raise DataError(path, 'PLY file has no vertices', reason='empty')
    if faces is not None and len(faces) and (faces.min() < 0 or faces.max() >= len(verts)):
        raise DataError(path, f'PLY face index out of range (the mesh has {len(verts)} vertices)', reason='bad body')
    return verts, (faces if faces is not None and len(faces) else None)


def read_obj(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """A Wavefront OBJ mesh: ``(vertices (V, 3) float64, faces (F, 3) int64)`` (1-based and negative indices,
    ``v/vt/vn`` references, polygons fan-triangulated)."""
    verts: List[List[float]] = []
    faces: List[List[int]] = []
    try:
        with open(path, encoding='ascii', errors='replace') as f:
            for lineno, line in enumerate(f, 1):
                words = line.split('#', 1)[0].split()
                if not words:
                    continue
                try:
                    if words[0] == 'v':
                        verts.append([float(w) for w in words[1:4]])
                    elif words[0] == 'f':
                        idx = [int(w.split('/')[0]) for w in words[1:]]
                        idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
                        faces.extend([idx[0], idx[i], idx[i + 1]] for i in range(1, len(idx) - 1))
                except ValueError:
                    raise DataError(path, f'line {lineno}: bad OBJ record {line.strip()!r}',
                                    reason='bad body') from None
    except OSError as e:
        raise DataError(path, f'unreadable OBJ file ({e.strerror or e})', reason='unreadable') from None
    v = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
    fa = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if not len(v) or not len(fa):
        raise DataError(path, f'OBJ mesh with {len(v)} vertices and {len(fa)} faces (expected both)', reason='empty')
    if fa.min() < 0 or fa.max() >= len(v):
        raise DataError(path, f'OBJ face index out of range (the mesh has {len(v)} vertices)', reason='bad body')
    return v, fa


def read_shape(path: PathLike) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``(vertices or points, faces or None)`` of a shape file, by its suffix (:data:`SHAPE_SUFFIXES`)."""
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix == '.off':
        return read_off(path)
    if suffix == '.obj':
        return read_obj(path)
    if suffix == '.ply':
        return read_ply(path)
    if suffix == '.txt':
        return read_point_text(Path(path)), None
    raise DataError(path, f'unknown shape format {suffix!r} (expected {", ".join(SHAPE_SUFFIXES)} or .h5)',
                    reason='unknown format')


def file_cloud(path: PathLike, num_points: int, *, surface_samples: int, fps: bool, up_axis: Optional[str],
               seed: int = 0, redraw_from: Optional[int] = None) -> np.ndarray:
    """One shape file as a normalised ``(num_points, 3 or 6)`` cloud.

    A mesh's surface is sampled (``surface_samples`` points, seeded by ``seed`` and the file's name), reduced by
    farthest point sampling and turned so ``up_axis`` becomes +y; a point set is reduced by FPS (``fps``) or its
    first points. ``redraw_from``: the cloud is the source of re-drawn training clouds (never padded with repeats;
    fewer points is an error). Raises :class:`DataError` naming the file.
    """
    verts, faces = read_shape(path)
    mesh = faces is not None
    if mesh:
        rng = np.random.default_rng(stable_seed('modelnet-surface', seed, os.path.basename(path)))
        try:
            source = sample_surface(verts[:, :3], faces, surface_samples, rng)
        except ValueError as e:
            raise DataError(path, f'cannot sample the mesh surface: {e}', reason='degenerate mesh') from e
    else:
        source = np.asarray(verts, dtype=np.float32)
    n = num_points
    if redraw_from:
        n = min(n, len(source))
        if n < redraw_from:
            raise DataError(path, f'{n} points, fewer than redraw_from={redraw_from}', reason='too few points')
    pts = reduce_cloud(source, n, fps or mesh)
    if mesh:
        pts = rotate_up_to_y(pts, up_axis)
    if not np.isfinite(pts).all():
        raise DataError(path, 'non-finite coordinates', reason='non-finite')
    return normalize_unit_sphere(pts)
