"""open3d against the NumPy path for the OFF pipeline: mesh reading, area-weighted surface sampling, FPS.

    OMP_NUM_THREADS=1 python benchmarks/bench_point_io.py [--rounds 7]

Meshes of a few thousand faces in the shapes ModelNet holds: a CAD-like chair (large flat boxes and finely
divided legs: face areas spread over four orders of magnitude), an organic blob (a finely divided sphere with a
smooth random displacement) and a twisted Moebius band; plus a 40k-face blob for scaling. Times are process CPU
time (one thread), medians over rounds. Quality: the sampler's chi-square / dof of per-face hit counts against
the face areas (about 1 for an unbiased area-weighted sampler), and FPS's covering radius (largest distance from
a dense point to its nearest chosen point; lower is better). Results go to ``results/point_io.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_util import RESULTS_DIR, finish_machine, machine_info  # noqa: E402


def _meshes():
    import open3d as o3d
    g = o3d.geometry.TriangleMesh

    def arrays(m):
        return np.asarray(m.vertices, dtype=np.float64), np.asarray(m.triangles, dtype=np.int64)

    chair = g()
    for size, at in (((1.0, 1.0, 0.08), (0, 0, 0.5)), ((1.0, 0.08, 0.9), (0, 0.92, 0.58))):
        chair += g.create_box(*size).translate(at)
    for x in (0.06, 0.94):  # legs: their top caps sit just under the seat, so no coincident faces
        for y in (0.06, 0.94):
            chair += g.create_cylinder(0.04, 0.5, resolution=48, split=12).translate((x, y, 0.24))
    for x in np.linspace(0.1, 0.9, 5):
        chair += g.create_cylinder(0.02, 0.6, resolution=24, split=6).translate((x, 0.96, 1.1))
    rng = np.random.default_rng(0)

    def blob(resolution):
        m = g.create_sphere(1.0, resolution=resolution)
        v = np.asarray(m.vertices)
        k = rng.normal(size=(6, 3))
        bump = sum(0.15 * np.sin(v @ kk + ph) for kk, ph in zip(k, rng.uniform(0, 6, 6)))
        m.vertices = o3d.utility.Vector3dVector(v * (1 + bump)[:, None] * (1.0, 0.7, 1.3))
        return m

    return {'chair (CAD-like)': arrays(chair), 'blob (organic)': arrays(blob(40)),
            'moebius band': arrays(g.create_mobius(length_split=240, width_split=12, twists=3)),
            'blob 40k faces': arrays(blob(100))}


def _write_off(path: Path, v: np.ndarray, f: np.ndarray) -> None:
    path.write_text(f'OFF\n{len(v)} {len(f)} 0\n' + ''.join(f'{a:.6f} {b:.6f} {c:.6f}\n' for a, b, c in v)
                    + ''.join(f'3 {a} {b} {c}\n' for a, b, c in f))


def _cpu(fn, rounds):
    times, out = [], None
    for _ in range(rounds):
        t = time.process_time()
        out = fn()
        times.append(time.process_time() - t)
    return float(np.median(times)) * 1e3, out


def _face_of(points, v, f):
    """Index of the face each point lies on (-1: on none, within 1e-6)."""
    from scipy.spatial import cKDTree
    # Tag points spread over every face in proportion to its area, so a large face is near one of its tags.
    area = np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    reps = np.clip(np.ceil(4 * area / np.median(area)), 1, 20000).astype(int)
    tag_face = np.repeat(np.arange(len(f)), reps)
    r = np.random.default_rng(1).random((len(tag_face), 2))
    r[r.sum(1) > 1] = 1 - r[r.sum(1) > 1]
    t = v[f[tag_face]]
    tags = t[:, 0] + r[:, :1] * (t[:, 1] - t[:, 0]) + r[:, 1:] * (t[:, 2] - t[:, 0])
    _, near = cKDTree(tags).query(points, k=48)
    cand = tag_face[near]
    best = np.full(len(points), -1)
    best_d = np.full(len(points), 1e-5)
    for j in range(cand.shape[1]):
        t = v[f[cand[:, j]]]
        e1, e2, q = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0], points - t[:, 0]
        d11, d12, d22 = (e1 * e1).sum(1), (e1 * e2).sum(1), (e2 * e2).sum(1)
        q1, q2 = (q * e1).sum(1), (q * e2).sum(1)
        den = np.maximum(d11 * d22 - d12 * d12, 1e-300)
        a, b = (d22 * q1 - d12 * q2) / den, (d11 * q2 - d12 * q1) / den
        inside = (a >= -1e-6) & (b >= -1e-6) & (a + b <= 1 + 1e-6)
        dist = np.linalg.norm(q - a[:, None] * e1 - b[:, None] * e2, axis=1)
        better = inside & (dist < best_d)
        best[better], best_d[better] = cand[better, j], dist[better]
    return best


def _chi2_per_dof(points, v, f):
    face = _face_of(points, v, f)
    area = np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    expected = area / area.sum() * len(points)
    counts = np.bincount(face[face >= 0], minlength=len(f))
    keep = expected > 5  # the usual validity rule of the chi-square test
    chi2 = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    return float(chi2 / max(1, keep.sum() - 1)), int((face < 0).sum())


def _covering_radius(dense, chosen):
    from scipy.spatial import cKDTree
    return float(cKDTree(chosen).query(dense)[0].max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rounds', type=int, default=7)
    ap.add_argument('--dense', type=int, default=8192, help='surface samples (the reader default for 1024 points)')
    ap.add_argument('--out', default=str(RESULTS_DIR / 'point_io.json'))
    args = ap.parse_args()
    if os.environ.get('OMP_NUM_THREADS') != '1':
        sys.exit('run with OMP_NUM_THREADS=1 (one thread for both paths)')
    import open3d as o3d
    from unimodal.data.point_formats import parse_off
    from unimodal.data.point_geometry import farthest_point_sample, sample_surface

    t0 = time.perf_counter()
    info = machine_info()
    info['open3d'] = o3d.__version__
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (v, f) in _meshes().items():
            path = Path(tmp) / 'm.off'
            _write_off(path, v, f)
            row = {'mesh': name, 'faces': len(f), 'vertices': len(v)}
            row['read_numpy_ms'], (vn, fn) = _cpu(lambda: parse_off(path), args.rounds)
            row['read_open3d_ms'], mesh = _cpu(lambda: o3d.io.read_triangle_mesh(str(path)), args.rounds)
            row['read_same_mesh'] = bool(np.allclose(np.asarray(mesh.vertices), vn, atol=1e-6)
                                         and np.array_equal(np.asarray(mesh.triangles), fn))
            rng = np.random.default_rng(0)
            row['sample_numpy_ms'], dense = _cpu(lambda: sample_surface(vn, fn, args.dense, rng), args.rounds)
            row['sample_open3d_ms'], _ = _cpu(
                lambda: mesh.sample_points_uniformly(args.dense, use_triangle_normal=True), args.rounds)
            big = 200_000  # enough hits per face for the chi-square test
            row['sample_numpy_chi2_dof'], row['sample_numpy_off_surface'] = _chi2_per_dof(
                sample_surface(vn, fn, big, rng)[:, :3], vn, fn)
            o3d.utility.random.seed(0)
            row['sample_open3d_chi2_dof'], row['sample_open3d_off_surface'] = _chi2_per_dof(
                np.asarray(mesh.sample_points_uniformly(big).points), vn, fn)
            pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(dense[:, :3]))
            for k in (1024, 4800):
                row[f'fps{k}_numpy_ms'], idx = _cpu(lambda: farthest_point_sample(dense, k), max(3, args.rounds // 2))
                row[f'fps{k}_open3d_ms'], sub = _cpu(lambda: pcd.farthest_point_down_sample(k),
                                                     max(3, args.rounds // 2))
                row[f'fps{k}_numpy_cover'] = _covering_radius(dense[:, :3], dense[idx, :3])
                row[f'fps{k}_open3d_cover'] = _covering_radius(dense[:, :3], np.asarray(sub.points))
            rows.append(row)
            print(json.dumps(row))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'machine': finish_machine(info, t0), 'rows': rows}, indent=1) + '\n')
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
