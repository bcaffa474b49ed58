"""ModelNet40 readers (OFF, text, HDF5, Point-BERT .dat), the npz cache, bad input, and the built-in generator."""
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from unimodal.data import modelnet as mn
from unimodal.data import point_files
from unimodal.data.errors import DataError
from unimodal.data.modelnet import ModelNet40, detect_format, load_restricted_pickle, make_builtin_modelnet, read_off

CUBE_V = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], float)
CUBE_F = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                   [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]])


def _off_text(v, f, glued=False):
    head = f'OFF{len(v)} {len(f)} 0\n' if glued else f'OFF\n{len(v)} {len(f)} 0\n'
    return head + ''.join(f'{a} {b} {c}\n' for a, b, c in v) + ''.join(f'3 {a} {b} {c}\n' for a, b, c in f)


def _off_tree(root: Path, classes=('chair', 'desk'), n_train=3, n_test=1, glued_first=True):
    for ci, c in enumerate(classes):
        for i in range(n_train + n_test):
            split = 'train' if i < n_train else 'test'
            d = root / c / split
            d.mkdir(parents=True, exist_ok=True)
            v = CUBE_V * (1 + ci + 0.1 * i)
            (d / f'{c}_{i + 1:04d}.off').write_text(_off_text(v, CUBE_F, glued=glued_first and i == 0))
    return root


# ----------------------------------------------------------------------------------------- OFF


@pytest.mark.parametrize('glued', [False, True])
def test_read_off_normal_and_glued_header(tmp_path, glued):
    p = tmp_path / 'm.off'
    p.write_text(_off_text(CUBE_V, CUBE_F, glued=glued))
    v, f = read_off(p)
    assert v.shape == (8, 3) and f.shape == (12, 3)
    assert np.allclose(v, CUBE_V) and np.array_equal(f, CUBE_F)
    with pytest.raises(DataError, match='does not exist'):
        read_off(tmp_path / 'missing.off')


def test_read_off_polygons_are_triangulated(tmp_path):
    p = tmp_path / 'quad.off'
    p.write_text('OFF\n# a comment\n4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n')
    _, f = read_off(p)
    assert f.tolist() == [[0, 1, 2], [0, 2, 3]]


def test_off_dataset_points_labels_and_normalisation(tmp_path):
    root = _off_tree(tmp_path / 'ModelNet40')
    ds = ModelNet40(tmp_path, 'test', num_points=32, val_fraction=0)  # parent folder is resolved
    assert ds.format == 'off' and ds.classes == ['chair', 'desk'] and len(ds) == 2
    x, y = ds[1]
    assert x.shape == (32, 3) and x.dtype == torch.float32 and y == 1
    assert x.norm(dim=1).max().item() == pytest.approx(1.0, abs=1e-5)
    assert x.mean(0).abs().max() < 1e-5
    xn, _ = ModelNet40(root, 'test', num_points=32, use_normals=True)[0]
    assert xn.shape == (32, 6)
    assert torch.allclose(xn[:, 3:].norm(dim=1), torch.ones(32), atol=1e-5)


def test_off_cache_is_npz_and_second_pass_does_no_mesh_work(tmp_path, monkeypatch):
    root = _off_tree(tmp_path / 'm')
    cache = tmp_path / 'cache'
    first = ModelNet40(root, 'train', num_points=16, cache_dir=cache, val_fraction=0)
    assert not list(cache.rglob('*.npz'))  # nothing is sampled before the first read
    ref = [first[i][0] for i in range(len(first))]
    files = sorted((cache / 'modelnet40').glob('*.npz'))
    assert len(files) == len(first) == 6
    with np.load(files[0], allow_pickle=False) as z:  # a plain npz: no pickle inside
        assert z['points'].shape == (16, 6)

    files[0].write_bytes(b'not a zip')  # a damaged cache entry is recomputed, not fatal
    again = ModelNet40(root, 'train', num_points=16, cache_dir=cache, val_fraction=0)
    assert all(torch.equal(again[i][0], ref[i]) for i in range(len(again)))

    def boom(*a, **k):
        raise AssertionError('mesh read on a cached pass')

    monkeypatch.setattr(point_files, 'read_off', boom)  # the per-file step (unimodal.data.point_files)
    second = ModelNet40(root, 'train', num_points=16, cache_dir=cache, val_fraction=0, prepare=True)
    for i in range(len(second)):
        assert torch.equal(second[i][0], ref[i])
    # a changed file (new mtime) invalidates its cache entry: the mesh is read again
    victim = root / 'chair' / 'train' / 'chair_0002.off'
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 10**9))
    third = ModelNet40(root, 'train', num_points=16, cache_dir=cache, val_fraction=0)
    with pytest.raises(AssertionError, match='cached pass'):
        third[third.files.index(victim)]


def test_cache_goes_to_the_cache_folder_never_the_data_folder(tmp_path, monkeypatch):
    root = _off_tree(tmp_path / 'm')
    before = sorted(p.relative_to(root) for p in root.rglob('*'))
    monkeypatch.setenv('UNIMODAL_CACHE', str(tmp_path / 'env_cache'))
    ds = ModelNet40(root, 'test', num_points=8)
    ds[0]
    assert ds.cache_dir == tmp_path / 'env_cache' / 'modelnet40' and len(list(ds.cache_dir.glob('*.npz'))) == 1
    assert sorted(p.relative_to(root) for p in root.rglob('*')) == before
    # an explicit cache_dir (the config's data.cache_dir) wins over the environment
    ds = ModelNet40(root, 'test', num_points=8, cache_dir=tmp_path / 'cfg')
    assert ds.cache_dir == tmp_path / 'cfg' / 'modelnet40'
    # a folder that cannot be written: one clear error naming it and the two settings, no fallback
    (tmp_path / 'blocker').write_text('a file, not a folder')
    with pytest.raises(DataError, match=r'blocker/c.*not writable.*data\.cache_dir.*UNIMODAL_CACHE'):
        ModelNet40(root, 'test', num_points=8, cache_dir=tmp_path / 'blocker' / 'c')
    monkeypatch.setenv('UNIMODAL_CACHE', str(tmp_path / 'blocker' / 'env'))
    with pytest.raises(DataError, match=r'blocker/env.*\$UNIMODAL_CACHE'):
        ModelNet40(root, 'test', num_points=8)


def test_prepare_shards_by_rank_and_uses_worker_processes(tmp_path):
    root = _off_tree(tmp_path / 'm', n_train=5)
    kw = dict(num_points=8, val_fraction=0, cache_dir=tmp_path / 'c')
    calls = []
    ModelNet40(root, 'train', **kw).prepare(workers=2, rank=1, world_size=2, progress=lambda d, t: calls.append((d, t)))
    assert len(list((tmp_path / 'c' / 'modelnet40').glob('*.npz'))) == 5  # rank 1 of 2: every second of 10 files
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)
    ModelNet40(root, 'train', **kw).prepare(rank=0, world_size=2)
    assert len(list((tmp_path / 'c' / 'modelnet40').glob('*.npz'))) == 10
    assert not list((tmp_path / 'c').rglob('*.tmp'))


def test_off_bad_meshes_fail_or_are_skipped(tmp_path, monkeypatch):
    root = _off_tree(tmp_path / 'm', n_train=3)
    nofaces = root / 'chair' / 'train' / 'chair_0002.off'
    nofaces.write_text('OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n')
    garbage = root / 'desk' / 'train' / 'desk_0003.off'
    garbage.write_bytes(b'\x00\xff\x10garbage')
    lazy = ModelNet40(root, 'train', num_points=8, val_fraction=0)  # found when read, not before step 1
    with pytest.raises(DataError, match='chair_0002.off.*no faces'):
        lazy[lazy.files.index(nofaces)]
    with pytest.raises(DataError, match='chair_0002.off.*no faces'):
        ModelNet40(root, 'train', num_points=8, val_fraction=0, prepare=True)
    # skip_bad while training: the next sample is served and the file is reported then
    late = ModelNet40(root, 'train', num_points=8, val_fraction=0, skip_bad=True)
    got = [late[i] for i in range(len(late))]
    assert len(got) == 6 and late.skip_report.count == 2
    assert {Path(s['path']).name for s in late.skip_report.skipped} == {'chair_0002.off', 'desk_0003.off'}
    # the bad files are remembered in the cache: later runs drop them without reading them again
    monkeypatch.setattr(mn, 'read_off', lambda *a: (_ for _ in ()).throw(AssertionError('read again')))
    ds = ModelNet40(root, 'train', num_points=8, val_fraction=0, skip_bad=True, prepare=True)
    assert len(ds) == 4 and ds.skip_report.count == 2
    rep = ds.skip_report.as_dict()
    assert rep['listed'] == 6 and rep['used'] == 4 and sum(rep['by_reason'].values()) == 2
    assert {Path(s['path']).name for s in rep['skipped_files']} == {'chair_0002.off', 'desk_0003.off'}


def test_skips_found_in_dataloader_workers_are_reported(tmp_path):
    from torch.utils.data import DataLoader
    root = _off_tree(tmp_path / 'm', n_train=4)
    (root / 'desk' / 'train' / 'desk_0002.off').write_text('OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n')
    ds = ModelNet40(root, 'train', num_points=8, val_fraction=0, skip_bad=True)
    n = sum(len(y) for _, y in DataLoader(ds, batch_size=2, num_workers=2))
    assert n == 8
    rep = ds.skip_report.as_dict()  # the main process's report sees what a worker found
    assert rep['skipped'] == 1 and 'desk_0002.off' in rep['skipped_files'][0]['path']
    assert 'out of range' in rep['skipped_files'][0]['problem']


@pytest.mark.parametrize('text, problem', [
    ('OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 99999999999999999999999\n', 'bad OFF vertex or face list'),
    ('OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n', 'face index 3 out of range'),
    ('OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 -1 2\n', 'face index -1 out of range'),
    ('OFF\n3 2 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n', 'promises 3 vertices and 2 faces'),
    ('OFF\n4 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n', 'promises 4 vertices and 1 faces'),
    ('OFF\n3 1 0\n0 0 0\n1 0\n0 1 0\n3 0 1 2\n', 'expected 3 coordinates'),
    ('OFF\n3 1 0\n0 0 0\nnan 0 0\n0 1 0\n3 0 1 2\n', 'non-finite vertex'),
    ('OFF\nthree 1 0\n', 'bad OFF header'),
    ('OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n2 0 1\n', 'bad OFF face 0'),
])
def test_read_off_bad_files_name_the_file(tmp_path, text, problem):
    p = tmp_path / 'bad.off'
    p.write_text(text)
    with pytest.raises(DataError, match=problem) as exc:
        read_off(p)
    assert str(p) in str(exc.value)


def test_val_is_a_deterministic_heldout_part_of_train(tmp_path):
    root = _off_tree(tmp_path / 'm', n_train=6)
    kw = dict(num_points=8, val_fraction=0.34, prepare=False)
    tr, va = ModelNet40(root, 'train', **kw), ModelNet40(root, 'val', **kw)
    tr_files, va_files = set(tr.files), set(va.files)
    assert len(va_files) == 4 and not (tr_files & va_files) and len(tr_files | va_files) == 12
    assert sorted(va.prepare().targets) == [0, 0, 1, 1]  # stratified
    assert va_files == set(ModelNet40(root, 'val', **kw).files)
    with pytest.raises(ValueError, match='val_fraction=0'):
        ModelNet40(root, 'val', num_points=8, val_fraction=0, prepare=False)
    vt = ModelNet40(root, 'val', num_points=8, val_from='test', prepare=False)
    assert vt.files == ModelNet40(root, 'test', num_points=8, prepare=False).files


# ----------------------------------------------------------------------------------------- text


def _text_tree(root: Path, n_pts=40, cols=6):
    root.mkdir(parents=True)
    (root / 'modelnet40_shape_names.txt').write_text('airplane\nbed\n')
    rng = np.random.default_rng(0)
    ids = {'train': ['airplane_0001', 'airplane_0002', 'bed_0001'], 'test': ['bed_0002']}
    for split, names in ids.items():
        (root / f'modelnet40_{split}.txt').write_text('\n'.join(names) + '\n')
        for n in names:
            d = root / n.rsplit('_', 1)[0]
            d.mkdir(exist_ok=True)
            np.savetxt(d / f'{n}.txt', rng.normal(size=(n_pts, cols)), delimiter=',', fmt='%.6f')
    return root


def test_text_format(tmp_path):
    root = _text_tree(tmp_path / 'modelnet40_normal_resampled')
    assert detect_format(tmp_path) == (root, 'text')
    ds = ModelNet40(tmp_path, 'train', num_points=16, use_normals=True, val_fraction=0)
    assert ds.format == 'text' and ds.classes == ['airplane', 'bed'] and ds.targets == [0, 0, 1]
    x, y = ds[2]
    assert x.shape == (16, 6) and y == 1
    # FPS picks distinct points of the file
    raw = np.loadtxt(root / 'bed' / 'bed_0001.txt', delimiter=',')
    assert len(np.unique(x[:, :3].numpy().round(5), axis=0)) == 16
    # normals are the file's own normals of the chosen rows (normalisation moves xyz only)
    d = np.abs(x[:, None, 3:].numpy() - raw[None, :, 3:]).sum(-1)
    assert d.min(axis=1).max() < 1e-5
    assert len(ModelNet40(root, 'test', num_points=8)) == 1


def test_text_format_bad_inputs(tmp_path):
    root = _text_tree(tmp_path / 'r')
    np.savetxt(root / 'bed' / 'bed_0001.txt', np.zeros((10, 4)), delimiter=',')
    with pytest.raises(DataError, match=r'bed_0001\.txt.*6 columns'):
        ModelNet40(root, 'train', num_points=8, val_fraction=0)[2]  # found when read
    ds = ModelNet40(root, 'train', num_points=8, val_fraction=0, skip_bad=True, prepare=True)
    assert len(ds) == 2 and ds.skip_report.count == 1

    (root / 'modelnet40_train.txt').write_text('airplane_0001\nairplane_0009\n')
    with pytest.raises(DataError, match=r'airplane_0009\.txt.*missing'):
        ModelNet40(root, 'train', num_points=8, prepare=False)
    (root / 'modelnet40_train.txt').write_text('airplane_0001\nchair_0001\n')
    with pytest.raises(DataError, match=r'modelnet40_train\.txt.*chair.*not in'):
        ModelNet40(root, 'train', num_points=8, prepare=False)
    ds = ModelNet40(root, 'train', num_points=8, val_fraction=0, skip_bad=True)
    assert len(ds) == 1 and ds.skip_report.count == 1


# ----------------------------------------------------------------------------------------- HDF5


def test_hdf5_format(tmp_path):
    h5py = pytest.importorskip('h5py')
    root = tmp_path / 'modelnet40_ply_hdf5_2048'
    root.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (('train', 5), ('test', 3)):
        with h5py.File(root / f'ply_data_{split}0.h5', 'w') as h:
            h['data'] = rng.normal(size=(n, 64, 3)).astype(np.float32)
            h['label'] = np.arange(n, dtype=np.uint8).reshape(n, 1)
    (root / 'shape_names.txt').write_text('\n'.join(f'c{i}' for i in range(40)) + '\n')
    ds = ModelNet40(tmp_path, 'test', num_points=32)
    assert ds.format == 'hdf5' and len(ds) == 3 and ds.classes[:2] == ['c0', 'c1']
    x, y = ds[2]
    assert x.shape == (32, 3) and y == 2
    assert len(ModelNet40(root, 'train', num_points=32, val_fraction=0)) == 5
    with h5py.File(root / 'ply_data_test0.h5', 'a') as h:
        del h['label']
        h['label'] = np.array([[0], [1], [77]], dtype=np.uint8)
    with pytest.raises(DataError, match=r'ply_data_test0\.h5.*label 77 not in the class list'):
        ModelNet40(root, 'test', num_points=32)
    assert len(ModelNet40(root, 'test', num_points=32, skip_bad=True)) == 2


def test_hdf5_nan_points_name_the_file_and_sample(tmp_path):
    h5py = pytest.importorskip('h5py')
    root = tmp_path / 'modelnet40_ply_hdf5_2048'
    root.mkdir()
    data = np.random.default_rng(0).normal(size=(4, 64, 3)).astype(np.float32)
    data[1] = np.nan            # an all-NaN sample
    data[3, 10:12, 0] = np.nan  # a partly-NaN sample
    for split in ('train', 'test'):
        with h5py.File(root / f'ply_data_{split}0.h5', 'w') as h:
            h['data'] = data
            h['label'] = np.arange(4, dtype=np.uint8).reshape(4, 1)
    with pytest.raises(DataError, match=r'ply_data_test0\.h5: sample 1: 64 of 64 points are NaN or inf \(all\)'):
        ModelNet40(root, 'test', num_points=32)
    ds = ModelNet40(root, 'test', num_points=32, skip_bad=True)
    assert len(ds) == 2 and ds.targets == [0, 2]
    problems = [s['problem'] for s in ds.skip_report.skipped]
    assert problems == ['sample 1: 64 of 64 points are NaN or inf (all)',
                        'sample 3: 2 of 64 points are NaN or inf (first at point 10)']
    assert all(torch.isfinite(ds[i][0]).all() for i in range(len(ds)))


# ----------------------------------------------------------------------------------------- Point-BERT .dat


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_dat_format_legit_pickle(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (('train', 4), ('test', 2)):
        pts = [rng.normal(size=(100, 6)).astype(np.float32) for _ in range(n)]
        labels = [np.array([i % 3], dtype=np.int32) for i in range(n)]
        with open(tmp_path / f'modelnet40_{split}_8192pts_fps.dat', 'wb') as f:
            pickle.dump((pts, labels), f, protocol=4)
    ds = ModelNet40(tmp_path, 'test', num_points=50, use_normals=True)
    assert ds.format == 'dat' and len(ds) == 2 and ds[1][1] == 1 and ds[1][0].shape == (50, 6)
    # other protocols (numpy scalars as labels, protocol 2 bytes) load as well
    data = ([rng.normal(size=(10, 3))], [np.int64(2)])
    for proto in (2, 5):
        p = tmp_path / f'p{proto}.pkl'
        p.write_bytes(pickle.dumps(data, protocol=proto))
        got = load_restricted_pickle(p)
        assert np.array_equal(got[0][0], data[0][0]) and int(got[1][0]) == 2


@pytest.mark.parametrize('payload', ['evil', 'class'])
def test_dat_malicious_pickle_is_refused(tmp_path, payload):
    marker = tmp_path / 'pwned'
    obj = ([_Evil(marker)], [0]) if payload == 'evil' else ([np.zeros((4, 3))], [pytest.approx])
    (tmp_path / 'modelnet40_train_8192pts_fps.dat').write_bytes(pickle.dumps(obj))
    (tmp_path / 'modelnet40_test_8192pts_fps.dat').write_bytes(pickle.dumps(obj))
    with pytest.raises(DataError, match='refused to load global'):
        ModelNet40(tmp_path, 'train', num_points=4)
    assert not marker.exists()
    ds = ModelNet40(tmp_path, 'test', num_points=4, skip_bad=True)
    assert len(ds) == 0 and ds.skip_report.count == 1


# ----------------------------------------------------------------------------------------- re-drawn training clouds


def _dat_pair(root: Path, n_pts=(300, 300, 300, 300), n_test=2, seed=0):
    """A Point-BERT-style pair of .dat files: train clouds of ``n_pts`` points (labels 0, 1, 0, 1, ...); returns
    the clouds written, by split."""
    rng = np.random.default_rng(seed)
    clouds = {}
    for split, sizes in (('train', n_pts), ('test', (n_pts[0],) * n_test)):
        clouds[split] = [(rng.normal(size=(n, 3)) * [1, 2, 3] + 5).astype(np.float32) for n in sizes]
        labels = [np.array([i % 2], dtype=np.int32) for i in range(len(sizes))]
        with open(root / f'modelnet40_{split}_8192pts_fps.dat', 'wb') as f:
            pickle.dump((clouds[split], labels), f, protocol=4)
    return clouds


def _rows(a: np.ndarray) -> set:
    return {tuple(r) for r in np.round(a, 5)}


def test_redraw_draws_fps_pool_then_random_subset_every_read(tmp_path, monkeypatch):
    """Published P2P training draw: FPS of redraw_from points of the stored cloud (normalised over all its points)
    from a random start, then num_points of those without replacement, new on every read, not re-normalised; val
    and test clouds stay fixed: the first points of the cloud normalised over all its points."""
    root, clouds = tmp_path, _dat_pair(tmp_path)
    calls = []
    fps = mn.farthest_point_sample

    def recording_fps(points, num, start=0):
        idx = fps(points, num, start=start)
        calls.append((num, start, idx))
        return idx
    monkeypatch.setattr(mn, 'farthest_point_sample', recording_fps)
    torch.manual_seed(0)
    ds = ModelNet40(root, 'train', num_points=100, redraw_from=120, val_fraction=0)
    assert 'redraw_from=120' in repr(ds)
    source = mn.normalize_unit_sphere(clouds['train'][1])
    draws = [ds[1][0].numpy() for _ in range(3)]
    starts = [start for _, start, _ in calls]
    assert [num for num, _, _ in calls] == [120] * 3 and len(set(starts)) == 3  # a random start every read
    for x, (_, _, pool) in zip(draws, calls):
        assert x.shape == (100, 3) and len(_rows(x)) == 100  # without replacement
        assert _rows(x) <= _rows(source[pool])  # a subset of this read's FPS pool of the normalised cloud
    assert not np.allclose(draws[0], draws[1])
    # reproducible under a fixed torch seed (a fresh reader replays the same draws)
    torch.manual_seed(0)
    again = ModelNet40(root, 'train', num_points=100, redraw_from=120, val_fraction=0)
    assert np.array_equal(again[1][0].numpy(), draws[0])
    # test (and val) clouds: the fixed first num_points of the stored FPS order, the same on every read
    test = ModelNet40(root, 'test', num_points=100, redraw_from=120)
    assert np.allclose(test[0][0].numpy(), mn.normalize_unit_sphere(clouds['test'][0])[:100], atol=1e-6)
    assert test._offsets[1] - test._offsets[0] == 100  # only what a read uses is kept
    assert np.array_equal(test[0][0].numpy(), test[0][0].numpy())
    val = ModelNet40(root, 'val', num_points=100, redraw_from=120, val_fraction=0.5)
    assert np.array_equal(val[0][0].numpy(), val[0][0].numpy())


def test_redraw_bad_values_and_too_small_clouds(tmp_path):
    root = tmp_path
    _dat_pair(root, n_pts=(300, 90, 300, 300))
    for bad in (50, 2.5, True):
        with pytest.raises(ValueError, match=r'data\.options\.redraw_from must be'):
            ModelNet40(root, 'train', num_points=64, redraw_from=bad)
    with pytest.raises(DataError, match=r'modelnet40_train_8192pts_fps\.dat.*sample 1: 90 points, fewer than '
                                        r'redraw_from=120'):
        ModelNet40(root, 'train', num_points=100, redraw_from=120, val_fraction=0)
    ds = ModelNet40(root, 'train', num_points=100, redraw_from=120, val_fraction=0, skip_bad=True)
    assert len(ds) == 3 and ds.skip_report.count == 1
    assert len(ModelNet40(root, 'test', num_points=100, redraw_from=120)) == 2  # fixed clouds: no pool needed


def test_redraw_from_text_files_caches_the_source_cloud(tmp_path):
    root = _text_tree(tmp_path / 'r', n_pts=60)
    torch.manual_seed(0)
    ds = ModelNet40(root, 'train', num_points=20, redraw_from=30, val_fraction=0)
    ds[2]  # sampled and cached on first read
    cached = np.load(ds._cache_files(ds._paths[2])[1])['points']
    assert cached.shape == (60, 6)  # every point of the file (fewer than 8192): the source of the draws
    a, b = ds[2][0].numpy(), ds[2][0].numpy()
    assert a.shape == (20, 3) and not np.allclose(a, b)
    assert _rows(a) <= _rows(cached[:, :3]) and _rows(b) <= _rows(cached[:, :3])
    fixed = ModelNet40(root, 'train', num_points=20, val_fraction=0)
    fixed[2]
    assert np.load(fixed._cache_files(fixed._paths[2])[1])['points'].shape == (20, 6)  # their own cache entry
    with pytest.raises(DataError, match=r'bed_0001\.txt.*60 points, fewer than redraw_from=70'):
        ModelNet40(root, 'train', num_points=20, redraw_from=70, val_fraction=0)[2]  # the cached source, at read
    with pytest.raises(DataError, match=r'airplane_0001\.txt: 60 points, fewer than redraw_from=70'):
        ModelNet40(root, 'train', num_points=20, redraw_from=70, val_fraction=0, cache_dir=tmp_path / 'c2')[0]


# ----------------------------------------------------------------------------------------- detection, task


def test_unknown_layout_names_the_folder(tmp_path):
    (tmp_path / 'stuff.txt').write_text('x')
    with pytest.raises(FileNotFoundError, match='not a ModelNet40 folder'):
        ModelNet40(tmp_path, 'train')
    with pytest.raises(FileNotFoundError, match='does not exist'):
        ModelNet40(tmp_path / 'nope', 'train')


def test_point_task_builds_datasets(tmp_path):
    from unimodal.tasks import get_task
    task = get_task('point')
    root = _off_tree(tmp_path / 'm', n_train=4)
    sets = task.build_datasets(root, {'num_points': 16, 'val_fraction': 0.25}, splits=['train', 'val'])
    assert len(sets['train']) == 6 and len(sets['val']) == 2
    assert task.model_kwargs({}, sets['train']) == {'num_classes': 2}
    with pytest.raises(TypeError, match='unknown point data option'):
        task.build_datasets(root, {'npoints': 16})
    cfg = task.default_config()
    assert cfg['model']['adapter']['mode'] == 'depth'


# ----------------------------------------------------------------------------------------- built-in


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob('*.off')):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_builtin_is_deterministic_and_readable(tmp_path):
    a = make_builtin_modelnet(tmp_path / 'a', seed=0, per_class=(4, 2))
    b = make_builtin_modelnet(tmp_path / 'b', seed=0, per_class=(4, 2))
    assert _digest(a) == _digest(b)
    mtime = next(a.rglob('*.off')).stat().st_mtime_ns
    assert make_builtin_modelnet(tmp_path / 'a', seed=0, per_class=(4, 2)) == a  # reused
    assert next(a.rglob('*.off')).stat().st_mtime_ns == mtime
    assert _digest(make_builtin_modelnet(tmp_path / 'c', seed=1, per_class=(4, 2))) != _digest(a)
    heads = [p.read_text().split('\n', 1)[0] for p in a.rglob('*.off')]
    assert sum(h != 'OFF' and h.startswith('OFF') for h in heads) == 2  # the glued header, like the real data
    assert not list(tmp_path.glob('.*tmp*'))
    ds = ModelNet40(a, 'train', num_points=32, surface_samples=512, val_fraction=0)
    assert len(ds) == 8 * 4 and ds.classes == list(mn.BUILTIN_CLASSES)
    x, y = ds[len(ds) - 1]
    assert x.shape == (32, 3) and y == 7
    assert len(ModelNet40(a, 'test', num_points=32, surface_samples=512)) == 8 * 2
