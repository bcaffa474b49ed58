#!/usr/bin/env python
"""Readers at benchmark scale (issue 15): start-up time, peak memory and memory per DataLoader worker.

Builds full-size stand-ins in the real layouts (generated into ``--root``, outside the repository, never committed):

* ``speech``: Speech Commands V2: 35 word folders, 105,829 tiny 16-bit WAVs (0.05 s: the index and the file count
  are what start-up costs), ``validation_list.txt`` (9,981) and ``testing_list.txt`` (11,005), 6 noise files;
* ``point``: raw ModelNet40: 40 classes, 9,843 train + 2,468 test OFF meshes (162 vertices / 320 faces each;
  real meshes are larger, so real first-run sampling is slower);
* ``video``: Kinetics-400 ``path label`` lists: ``train.txt`` 240,000 lines over 400 classes, 7 % of the
  listed videos missing, the rest hard links to four tiny real MP4s (so they decode); ``val.txt`` 20,000 lines;
* ``weather``: Global Temp ``temp_global_hourly_{train,val,test}.npy`` of shape (T, 3850, 1) float32,
  T = 12,280 / 1,754 / 3,510 (17,544 hours, 70/10/20);
* ``image``: ImageNet-1k ``train/<wnid>/*.JPEG``: 1,281,167 files in 1,000 folders, hard links to one tiny JPEG
  per folder (the index and the walk are what start-up costs, not the image bytes).

Each measurement runs in a fresh process (``nice``, one torch thread) with either this tree's readers or another
tree's (``--tree``, e.g. the main checkout, for the numbers before the change), and records:

* ``construct_s``: building the training split's reader; ``first_batch_s``: the first batch from a DataLoader with
  ``--workers`` worker processes and a ``DistributedSampler`` (as the engine builds it); ``start_s`` = both;
* ``peak_rss_mb`` (VmHWM) and ``rss_mb`` of the main process, and ``import_rss_mb`` (after importing torch and the
  reader, the baseline every task pays);
* ``worker_growth_mb``: how much private memory (USS: Private_Clean + Private_Dirty of ``/proc/<pid>/smaps_rollup``)
  each worker gains while it reads the index entries of a whole epoch (a second DataLoader whose items touch the
  reader's index entry exactly as ``__getitem__`` does, without decoding, so a full epoch of index pages is visited in
  seconds): the copy-on-read cost of the index;
* runs ``first`` (empty cache folder) and ``second`` (the caches the first run wrote).

Usage::

    python benchmarks/bench_scale.py --root /tmp/unimodal_scale                 # generate + measure everything
    python benchmarks/bench_scale.py --root /tmp/unimodal_scale --readers speech --scale 0.1   # a quick check
    python benchmarks/bench_scale.py --root /tmp/unimodal_scale --tree /work/main --label before --scale 0.05
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_util import RESULTS_DIR, finish_machine, machine_info, markdown_table, save_json  # noqa: E402

READERS = ('speech', 'point', 'video', 'weather', 'image')
REPO = Path(__file__).resolve().parent.parent
FULL = {'speech': 105_829, 'point': (9_843, 2_468), 'video': (240_000, 20_000), 'weather': (12_280, 1_754, 3_510),
        'image': 1_281_167}
BATCH = {'speech': 32, 'point': 32, 'video': 8, 'weather': 32, 'image': 32}


# ============================================================================================ stand-ins
def _count(n: int, scale: float) -> int:
    return max(1, int(round(n * scale)))


def _wav_bytes(n: int = 800, rate: int = 16000, seed: int = 0) -> bytes:
    import struct
    data = struct.pack(f'<{n}h', *[((i * 37 + seed * 101) % 2000) - 1000 for i in range(n)])
    return (b'RIFF' + struct.pack('<I', 36 + len(data)) + b'WAVEfmt ' +
            struct.pack('<IHHIIHH', 16, 1, 1, rate, rate * 2, 2, 16) + b'data' + struct.pack('<I', len(data)) + data)


def gen_speech(out: Path, scale: float) -> None:
    from unimodal.data.speech_commands import V2_WORDS
    total = _count(FULL['speech'], scale)
    blobs = [_wav_bytes(seed=s) for s in range(8)]
    val, test = [], []
    for w, word in enumerate(V2_WORDS):
        (out / word).mkdir(parents=True)
        n = total // len(V2_WORDS) + (w < total % len(V2_WORDS))
        for k in range(n):
            rel = f'{word}/{(k * 7919 + w) & 0xFFFFFFFF:08x}_nohash_{k % 5}.wav'
            (out / rel).write_bytes(blobs[k % len(blobs)])
            r = (k * 37) % 106  # about 9.4 % validation and 10.4 % test, as in V2
            (val if r < 10 else test if r < 21 else []).append(rel)
    (out / 'validation_list.txt').write_text('\n'.join(val) + '\n')
    (out / 'testing_list.txt').write_text('\n'.join(test) + '\n')
    (out / '_background_noise_').mkdir()
    for i in range(6):
        (out / '_background_noise_' / f'noise_{i}.wav').write_bytes(_wav_bytes(n=16000 * 10, seed=i))


def _icosphere():
    import numpy as np
    t = (1 + 5 ** 0.5) / 2
    v = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
         [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6],
         [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10],
         [8, 6, 7], [9, 8, 1]]
    verts = [list(map(float, p)) for p in v]
    for _ in range(2):  # 12 -> 42 -> 162 vertices, 20 -> 80 -> 320 faces
        mid, new_f = {}, []

        def m(a, b):
            key = (min(a, b), max(a, b))
            if key not in mid:
                mid[key] = len(verts)
                verts.append([(x + y) / 2 for x, y in zip(verts[a], verts[b])])
            return mid[key]
        for a, b, c in f:
            ab, bc, ca = m(a, b), m(b, c), m(c, a)
            new_f += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        f = new_f
    v = np.asarray(verts)
    return v / np.linalg.norm(v, axis=1, keepdims=True), np.asarray(f)


def gen_point(out: Path, scale: float) -> None:
    import numpy as np
    v0, faces = _icosphere()
    face_text = ''.join(f'3 {a} {b} {c}\n' for a, b, c in faces)
    rng = np.random.default_rng(0)
    for split, n in zip(('train', 'test'), FULL['point']):
        n = _count(n, scale)
        for i in range(n):
            c = i % 40
            folder = out / f'class{c:02d}' / split
            folder.mkdir(parents=True, exist_ok=True)
            v = v0 * (1 + 0.3 * rng.random(3)) + 0.05 * rng.standard_normal(v0.shape)
            body = ''.join(f'{x:.5f} {y:.5f} {z:.5f}\n' for x, y, z in v)
            (folder / f'class{c:02d}_{i:05d}.off').write_text(f'OFF\n{len(v)} {len(faces)} 0\n{body}{face_text}')


def gen_video(out: Path, scale: float) -> None:
    import numpy as np
    from unimodal.data.kinetics import _write_mp4
    templates = []
    for k in range(4):
        frames = np.full((40, 32, 32, 3), 40 * k, dtype=np.uint8)
        frames[:, 8:24, 8:24] = (np.arange(40) * 6).astype(np.uint8)[:, None, None, None]
        templates.append(out / f'.template{k}.mp4')
        out.mkdir(parents=True, exist_ok=True)
        _write_mp4(templates[-1], frames)
    (out / 'classes.txt').write_text(''.join(f'action_{c:03d}\n' for c in range(400)))
    for split, n in zip(('train', 'val'), FULL['video']):
        n = _count(n, scale)
        lines = []
        for i in range(n):
            c = i % 400
            rel = f'{split}/{c:03d}/{i:07d}abcd_000010_000020.mp4'
            lines.append(f'{rel} {c}')
            if i % 100 < 7:
                continue  # 7 % missing, as in real Kinetics-400 copies
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(templates[i % 4], out / rel)
        (out / f'{split}.txt').write_text('\n'.join(lines) + '\n')


def gen_weather(out: Path, scale: float) -> None:
    import numpy as np
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, t in zip(('train', 'val', 'test'), FULL['weather']):
        t = _count(t, scale)
        arr = np.lib.format.open_memmap(out / f'temp_global_hourly_{split}.npy', mode='w+', dtype=np.float32,
                                        shape=(t, 3850, 1))
        for a in range(0, t, 500):
            arr[a:a + 500] = (150 + 100 * rng.standard_normal((min(500, t - a), 3850, 1))).astype(np.float32)
        arr.flush()
        del arr


def gen_image(out: Path, scale: float) -> None:
    from PIL import Image
    total = _count(FULL['image'], scale)
    out.mkdir(parents=True)
    template = out / '.template.JPEG'
    Image.new('RGB', (48, 40), (120, 60, 30)).save(template, quality=80)
    for c in range(1000):
        wnid = f'n{1440764 + c * 1013:08d}'
        folder = out / 'train' / wnid
        folder.mkdir(parents=True)
        first = folder / f'{wnid}_0.JPEG'
        shutil.copyfile(template, first)  # one file per class, linked: ext4 allows 65,000 links per file
        for k in range(1, total // 1000 + (c < total % 1000)):
            os.link(first, folder / f'{wnid}_{k}.JPEG')


GENERATORS = {'speech': gen_speech, 'point': gen_point, 'video': gen_video, 'weather': gen_weather,
              'image': gen_image}


def generate(root: Path, reader: str, scale: float) -> Dict[str, Any]:
    """The stand-in of ``reader`` at ``scale`` under ``root`` (made once; a marker records it is complete)."""
    out = root / f'{reader}-s{scale:g}'
    marker = out / '.complete'
    if marker.is_file():
        return json.loads(marker.read_text())
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    GENERATORS[reader](out, scale)
    info = {'path': str(out), 'generate_s': round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(info))
    print(f'generated {reader} x{scale:g} in {info["generate_s"]} s at {out}', flush=True)
    return info


# ============================================================================================ measurement (child)
def _status_mb(pid: Any, key: str) -> float:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith(key + ':'):
            return round(int(line.split()[1]) / 1024, 1)
    return float('nan')


def _uss_mb(pid: int) -> float:
    total = 0
    for line in Path(f'/proc/{pid}/smaps_rollup').read_text().splitlines():
        if line.startswith(('Private_Clean:', 'Private_Dirty:')):
            total += int(line.split()[1])
    return round(total / 1024, 1)


def _build(reader: str, data: Path, cache: Path):
    """The training split's reader, with the options the task passes (this tree's or an older tree's API)."""
    import inspect
    if reader == 'speech':
        from unimodal.data.speech_commands import SpeechCommands as cls
        kw = {}
    elif reader == 'point':
        from unimodal.data.modelnet import ModelNet40 as cls
        kw = {'num_points': 1024}
    elif reader == 'video':
        from unimodal.data.kinetics import Kinetics as cls
        kw = {'annotation': data / 'train.txt', 'num_frames': 8, 'stride': 4, 'image_size': 64, 'flip': False,
              'skip_bad': True}
    elif reader == 'image':
        from unimodal.data.images import ImageFolderDataset as cls
        kw = {'train': True}
        data = data / 'train'
    else:
        from unimodal.data import timeseries
        fn = getattr(timeseries, 'build_timeseries_datasets', None) or timeseries.build_weather_datasets
        kw = {'input_len': 48, 'horizon': 24, 'splits': ['train']}
        if 'cache_dir' in inspect.signature(fn).parameters:
            kw['cache_dir'] = cache
        return fn(data, **kw)['train']
    if 'cache_dir' in inspect.signature(cls.__init__).parameters:
        kw['cache_dir'] = cache  # never into the data folder (the old ModelNet default), and a fresh one per run
    return cls(data, 'train', **kw) if reader in ('point', 'video') else \
        cls(data, **kw) if reader == 'image' else cls(data, split='train', **kw)


def _touch(reader: str, ds, i: int) -> None:
    """What ``__getitem__`` reads of the index for sample ``i`` (this tree's readers or the older ones), without
    decoding the sample."""
    if reader == 'weather':
        int(ds.starts[i])
    elif not hasattr(ds, '_labels'):  # the older readers: a list of per-sample Python objects
        if reader == 'point':
            ds._files[i], ds._cache[i]
        else:
            str(ds.samples[i][0])
    elif reader == 'point':
        ds._cache_files(ds._paths[i]), int(ds._labels[i])
    elif reader == 'speech':
        os.path.join(ds._root_s, ds._rel[i]), int(ds._frames[i]), int(ds._rates[i]), int(ds._labels[i])
    elif reader == 'video':
        ds._path(i), int(ds._labels[i])
    else:
        os.path.join(ds._root_s, ds._rel[i]), int(ds._labels[i])


class _Touch:
    def __init__(self, reader: str, ds) -> None:
        self.reader, self.ds = reader, ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> int:
        _touch(self.reader, self.ds, i)
        return 0


def child(spec: Dict[str, Any]) -> Dict[str, Any]:
    t_start = time.perf_counter()
    os.nice(10)
    import torch
    from torch.utils.data import DataLoader, DistributedSampler
    torch.set_num_threads(1)
    import unimodal.data  # noqa: F401
    reader, workers = spec['reader'], spec['workers']
    out: Dict[str, Any] = {'import_s': round(time.perf_counter() - t_start, 2),
                           'import_rss_mb': _status_mb('self', 'VmRSS')}
    t0 = time.perf_counter()
    ds = _build(reader, Path(spec['data']), Path(spec['cache']))
    out['construct_s'] = round(time.perf_counter() - t0, 2)
    out['samples'] = len(ds)
    out['rss_after_construct_mb'] = _status_mb('self', 'VmRSS')
    t1 = time.perf_counter()
    sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=BATCH[reader], sampler=sampler, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0)
    it = iter(loader)
    next(it)
    out['first_batch_s'] = round(time.perf_counter() - t1, 2)
    out['start_s'] = round(out['construct_s'] + out['first_batch_s'], 2)
    pids = [w.pid for w in getattr(it, '_workers', [])]
    out['worker_uss_after_first_batch_mb'] = [_uss_mb(p) for p in pids]
    out['rss_mb'] = _status_mb('self', 'VmRSS')
    report = getattr(ds, 'skip_report', None)
    if report is not None:
        out['skipped'] = report.count
    del it, loader
    if workers and spec.get('touch', True):  # a whole epoch of index reads in fresh workers
        t2 = time.perf_counter()
        touch = DataLoader(_Touch(reader, ds), batch_size=512, shuffle=True, num_workers=workers,
                           persistent_workers=True, generator=torch.Generator().manual_seed(0))
        it = iter(touch)
        next(it)
        pids = [w.pid for w in it._workers]
        before = [_uss_mb(p) for p in pids]
        for _ in it:
            pass
        after = [_uss_mb(p) for p in pids]  # persistent workers: still alive after the epoch
        out['touch_epoch_s'] = round(time.perf_counter() - t2, 1)
        out['worker_uss_start_mb'] = before
        out['worker_uss_after_epoch_mb'] = after
        out['worker_growth_mb'] = [round(a - b, 1) for a, b in zip(after, before)]
        del it, touch
    out['peak_rss_mb'] = _status_mb('self', 'VmHWM')
    return out


def run_child(spec: Dict[str, Any], tree: Path, timeout: float) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS='1', PYTHONDONTWRITEBYTECODE='1')
    env.pop('UNIMODAL_CACHE', None)
    try:
        proc = subprocess.run([sys.executable, __file__, '--child', json.dumps(spec)], env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {'error': f'timed out after {timeout:.0f} s'}
    if proc.returncode != 0:
        return {'error': proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f'exit {proc.returncode}'}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prepare_rate(data: Path, cache: Path, tree: Path, n: int, workers: int, timeout: float) -> Dict[str, Any]:
    """ModelNet40: seconds to sample ``n`` meshes into an empty cache with ``workers`` processes (this tree only)."""
    code = (
        'import json, os, sys, time, torch\n'
        'os.nice(10); torch.set_num_threads(1)\n'
        'from unimodal.data.modelnet import ModelNet40\n'
        f'ds = ModelNet40({str(data)!r}, "train", num_points=1024, cache_dir={str(cache)!r}, val_fraction=0)\n'
        f'ds._paths, ds._labels = ds._paths.take(range({n})), ds._labels[:{n}]\n'
        'import resource\n'
        'cpu = lambda: sum(resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime\n'
        '                  for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))\n'
        't, c = time.perf_counter(), cpu()\n'
        f'ds.prepare(workers={workers})\n'
        'print(json.dumps({"meshes": len(ds), "seconds": round(time.perf_counter() - t, 1),\n'
        '                  "cpu_seconds": round(cpu() - c, 1), "loadavg": os.getloadavg()[0]}))\n')
    shutil.rmtree(cache, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {'error': proc.stderr.strip().splitlines()[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ============================================================================================ driver
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', type=Path, default=Path('/tmp/unimodal_scale'), help='where the stand-ins are generated')
    p.add_argument('--readers', default=','.join(READERS), help=f'comma list of {READERS}')
    p.add_argument('--scale', type=float, default=1.0, help='fraction of the full sizes')
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--tree', type=Path, default=REPO, help='source tree whose readers are measured')
    p.add_argument('--label', default='after', help='name of this measurement in the results file')
    p.add_argument('--runs', default='first,second', help='first (empty cache), second (warm cache)')
    p.add_argument('--no-touch', action='store_true', help='skip the worker-memory epoch')
    p.add_argument('--prepare-meshes', type=int, default=0,
                   help='point: also time sampling this many meshes with 1 and --workers processes')
    p.add_argument('--timeout', type=float, default=1800, help='seconds per measured process')
    p.add_argument('--generate-only', action='store_true')
    p.add_argument('--out', type=Path, default=RESULTS_DIR / 'scale_cpu.json')
    p.add_argument('--child', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    t0 = time.perf_counter()
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    record.setdefault('machine_runs', []).append(machine_info())
    results = record.setdefault('results', {})
    for reader in args.readers.split(','):
        if reader not in READERS:
            raise SystemExit(f'unknown reader {reader!r}; choose from {READERS}')
        sys.path.insert(0, str(REPO))
        gen = generate(args.root, reader, args.scale)
        if args.generate_only:
            continue
        key = f'{reader}@{args.scale:g}'
        entry = results.setdefault(key, {}).setdefault(args.label, {})
        entry['tree'] = str(args.tree)
        entry['workers'] = args.workers
        entry['generate_s'] = gen['generate_s']
        cache = args.root / f'cache-{args.label}-{reader}-s{args.scale:g}'
        shutil.rmtree(cache, ignore_errors=True)
        for run in args.runs.split(','):
            spec = {'reader': reader, 'data': gen['path'], 'cache': str(cache), 'workers': args.workers,
                    'touch': not args.no_touch and run == args.runs.split(',')[0]}
            res = run_child(spec, args.tree, args.timeout)
            entry[run] = res
            print(f'{key} {args.label} {run}: {json.dumps(res)}', flush=True)
        if reader == 'point' and args.prepare_meshes:
            entry['prepare'] = {str(w): prepare_rate(Path(gen['path']), args.root / 'cache-prepare', args.tree,
                                                      args.prepare_meshes, w, args.timeout)
                                for w in sorted({1, args.workers})}
            print(f'{key} prepare: {entry["prepare"]}', flush=True)
        record['machine_runs'][-1] = finish_machine(record['machine_runs'][-1], t0)
        save_json(record, args.out)  # after every reader: a long run keeps what it measured
    if not args.generate_only:
        _print_table(results)


def _print_table(results: Dict[str, Any]) -> None:
    rows: List[List[Any]] = []
    for key, by_label in sorted(results.items()):
        for label, entry in sorted(by_label.items()):
            for run in ('first', 'second'):
                r = entry.get(run)
                if not isinstance(r, dict):
                    continue
                growth = r.get('worker_growth_mb')
                rows.append([key, label, run, r.get('samples'), r.get('construct_s'), r.get('first_batch_s'),
                             r.get('start_s'), r.get('peak_rss_mb'), r.get('import_rss_mb'),
                             max(growth) if growth else None, r.get('error')])
    print(markdown_table(['reader@scale', 'tree', 'run', 'samples', 'construct s', 'first batch s', 'start s',
                          'peak RSS MB', 'import RSS MB', 'worker growth MB', 'error'], rows))


if __name__ == '__main__':
    main()
