"""The built-in synthetic ModelNet-style data set: parametric low-poly meshes written as OFF files."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple, Union

import numpy as np

from .builtin import build_once

__all__ = ['make_builtin_modelnet', 'BUILTIN_CLASSES']

#: Classes of the built-in synthetic set (parametric low-poly meshes).
BUILTIN_CLASSES = ('box', 'cone', 'cylinder', 'lshape', 'pyramid', 'sphere', 'table', 'torus')
_VERSION = 1


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


def make_builtin_modelnet(root: Union[str, Path], seed: int = 0, per_class: Tuple[int, int] = (32, 10)) -> Path:
    """Write (once) a deterministic synthetic ModelNet-style OFF tree and return ``root``.

    ``<root>/<class>/{train,test}/<class>_NNNN.off`` for the 8 :data:`BUILTIN_CLASSES` (parametric low-poly
    meshes with random proportions, random yaw, a small tilt, vertex noise, random scale and offset, z-up like the
    raw ModelNet40), ``per_class`` = (train, test) meshes per class. Two files use the glued ``OFF<counts>`` header
    of the real data. Written and reused as :func:`unimodal.data.builtin.build_once` describes.
    """
    n_train, n_test = (int(n) for n in per_class)

    def write(out: Path) -> None:
        for ci, name in enumerate(BUILTIN_CLASSES):
            rng = np.random.default_rng(np.random.SeedSequence([seed, ci]))
            for i in range(n_train + n_test):
                folder = out / name / ('train' if i < n_train else 'test')
                folder.mkdir(parents=True, exist_ok=True)
                v, f = _shape(name, rng)
                v = _pose(v, rng)
                glued = (i == 0 and ci == 0) or (i == n_train and ci == 1)  # one train, one test file
                _write_off(folder / f'{name}_{i + 1:04d}.off', v, f, glued)

    return build_once(root, generator='modelnet', version=_VERSION, write=write,
                      settings={'seed': seed, 'per_class': [n_train, n_test]})
