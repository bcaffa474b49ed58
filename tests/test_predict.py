"""``unimodal predict``, ``unimodal.Predictor``, deploy artifacts and ONNX sidecars on tiny runs of every task.

Each task is trained once (1 epoch, 2 steps, ``unireplknet_test``) on its built-in data; the inputs are written here
in the real file formats (WAV/FLAC, OFF/PLY/OBJ/TXT/H5, MP4/AVI, CSV, PNG).
"""
import csv
import io
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FAST
from unimodal.cli import main

TASKS = ['audio', 'point', 'video', 'timeseries', 'image']
_RUNS = {}


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('predict_runs')

    def get(task: str) -> Path:
        if task not in _RUNS:
            out = root / task.replace(',', '+')
            assert main(['train', '--task', task, '--model', 'unireplknet_test', *FAST, '--out', str(out)]) == 0
            _RUNS[task] = out
        return _RUNS[task] / 'best.pt'
    return get


# ------------------------------------------------------------------------------------------------ input files

def _wav(path: Path, seconds: float = 0.8, rate: int = 16000, freq: float = 440.0) -> Path:
    import soundfile as sf
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.3 * np.sin(2 * math.pi * freq * t)).astype(np.float32), rate)
    return path


def _box_mesh():
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 2) for z in (0, 3)], dtype=float)
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return v, f


def _point_files(folder: Path) -> list:
    folder.mkdir()
    v, f = _box_mesh()
    off = folder / 'box.off'
    off.write_text('OFF\n%d %d 0\n' % (len(v), len(f)) + ''.join('%g %g %g\n' % tuple(p) for p in v)
                   + ''.join('3 %d %d %d\n' % tuple(t) for t in f))
    ply = folder / 'box_mesh.ply'
    ply.write_text(f'ply\nformat ascii 1.0\nelement vertex {len(v)}\nproperty float x\nproperty float y\n'
                   f'property float z\nelement face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n'
                   + ''.join('%g %g %g\n' % tuple(p) for p in v) + ''.join('3 %d %d %d\n' % tuple(t) for t in f))
    obj = folder / 'box.obj'
    obj.write_text(''.join('v %g %g %g\n' % tuple(p) for p in v) + ''.join('f %d %d %d\n' % tuple(t + 1) for t in f))
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(300, 3)).astype(np.float32)
    bply = folder / 'cloud_binary.ply'
    header = (f'ply\nformat binary_little_endian 1.0\nelement vertex {len(cloud)}\nproperty float x\n'
              f'property float y\nproperty float z\nend_header\n').encode()
    bply.write_bytes(header + b''.join(struct.pack('<3f', *p) for p in cloud))
    txt = folder / 'cloud.txt'
    txt.write_text(''.join(','.join('%.5f' % c for c in (*p, 0, 0, 1)) + '\n' for p in cloud))
    h5py = pytest.importorskip('h5py', reason='PointNet HDF5 files need the point extra (h5py)')
    h5 = folder / 'clouds.h5'
    with h5py.File(h5, 'w') as h:
        h['data'] = rng.normal(size=(2, 256, 3)).astype(np.float32)
        h['label'] = np.zeros((2, 1), np.int64)
    return [off, ply, obj, bply, txt, h5]


def _clip(path: Path, frames: int = 24) -> Path:
    pytest.importorskip('decord', reason='video needs the video extra (decord, av)')
    from unimodal.data.kinetics import _write_mp4
    rng = np.random.default_rng(1)
    _write_mp4(path, (rng.random((frames, 48, 64, 3)) * 255).astype(np.uint8))
    return path


def _builtin_csv(cache: Path) -> Path:
    return cache / 'weather' / 'weather_synthetic.csv'


def _window(src: Path, out: Path, first: int, rows: int = 48) -> Path:
    lines = src.read_text().splitlines()
    out.write_text('\n'.join([lines[0]] + lines[1 + first:1 + first + rows]) + '\n')
    return out


def _png(path: Path, seed: int = 0) -> Path:
    from PIL import Image
    Image.fromarray((np.random.default_rng(seed).random((40, 40, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _inputs(task: str, tmp: Path, cache: Path) -> list:
    if task == 'audio':
        return [_wav(tmp / 'a.wav'), _wav(tmp / 'b.flac', rate=8000, freq=880)]  # FLAC at 8 kHz: resampled
    if task == 'point':
        return _point_files(tmp / 'shapes')
    if task == 'video':
        return [_clip(tmp / 'c.mp4'), _clip(tmp / 'd.avi', frames=9)]
    if task == 'timeseries':
        return [_window(_builtin_csv(cache), tmp / 'window.csv', 100, rows=60)]
    return [_png(tmp / 'x.png'), _png(tmp / 'y.png', 1)]


# ------------------------------------------------------------------------------------------------ every task

@pytest.mark.parametrize('task', TASKS)
def test_predict_every_task_from_a_checkpoint(task, runs, run_cli, tmp_path, builtin_cache):
    ckpt = runs(task)
    files = _inputs(task, tmp_path, builtin_cache)
    code, out, err = run_cli('predict', '--checkpoint', ckpt, *files, '--top-k', '3', '--json', tmp_path / 'p.json',
                             '--csv', tmp_path / 'p.csv', '--no-progress')
    assert code == 0, err
    res = json.loads((tmp_path / 'p.json').read_text())
    rows = list(csv.reader(io.StringIO((tmp_path / 'p.csv').read_text())))
    expected = len(files) + (1 if task == 'point' else 0)  # the H5 file holds 2 clouds
    assert len(res['predictions']) == expected and res['task'] == task and not res['skipped']
    ck = torch.load(ckpt, weights_only=True)
    if task == 'timeseries':
        horizon = ck['tasks'][task]['head_kwargs']['horizon']
        fc = np.array(res['predictions'][0]['forecast'])
        assert fc.shape == (horizon, 24) and np.isfinite(fc).all()
        # in the CSV's units: the same range as the data, not z-scores
        data = np.loadtxt(tmp_path / 'window.csv', delimiter=',', skiprows=1, usecols=range(1, 25))
        assert abs(fc.mean() - data.mean()) < 3 * data.std()
        assert rows[0][:3] == ['input', 'step', 'st00'] and len(rows) == 1 + horizon
        assert 'forecast of the next' in out
        return
    classes = ck['tasks'][task]['classes']
    for p in res['predictions']:
        probs = [t['probability'] for t in p['top']]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(t['label'] == classes[t['index']] for t in p['top'])
    assert rows[0] == ['input', 'label_1', 'probability_1', 'label_2', 'probability_2', 'label_3', 'probability_3']
    assert len(rows) == 1 + expected
    for f in files:
        assert str(f) in out  # the table names every input


@pytest.mark.parametrize('task', TASKS)
def test_predict_gives_the_evaluation_paths_outputs(task, runs, builtin_cache, tmp_path):
    """The same sample through the engine's evaluation reader and model, and through predict on its file."""
    from unimodal import Predictor
    from unimodal.config import resolve_run_config
    from unimodal.engine.build import build_task_datasets, data_root
    from unimodal.engine.checkpoint import load_run_checkpoint
    from unimodal.tasks import resolve_task
    path = runs(task)
    ckpt = load_run_checkpoint(path)
    settings = resolve_run_config(None, None, None, base=ckpt.config).task_settings(task)
    root, _ = data_root(resolve_task(task), settings.data)
    ds = build_task_datasets(resolve_task(task), settings.data, root, splits=['test'])['test']
    model = ckpt.build_model()[0].task_model(task)
    i = 3
    x = ds[i][0]
    with torch.no_grad():
        ref = model(x.unsqueeze(0) if torch.is_tensor(x) else tuple(t.unsqueeze(0) for t in x))[0]
    source = ds.sample_source(i)
    predictor = Predictor(path)
    if task == 'timeseries':
        start = int(source.split(' rows ')[1].split('..')[0])
        window = _window(Path(source.split(' rows ')[0]), tmp_path / 'w.csv', start)
        got = torch.tensor(predictor.predict(window).rows[0]['forecast'])
        scale = torch.as_tensor(ckpt.specs[task].metric_info['phys_scale'])
        offset = torch.as_tensor(ckpt.specs[task].metric_info['phys_offset'])
        torch.testing.assert_close(got, ref * scale + offset, rtol=1e-4, atol=1e-4)
        return
    got = predictor.predict(source, top_k=len(ckpt.specs[task].classes)).rows[0]['top']
    probs = torch.zeros(len(got))
    for t in got:
        probs[t['index']] = t['probability']
    torch.testing.assert_close(probs, ref.softmax(-1), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ artifacts

def _same_rows(a, b, tol=1e-5) -> None:
    assert [r['input'] for r in a] == [r['input'] for r in b]
    for ra, rb in zip(a, b):
        if 'forecast' in ra:
            np.testing.assert_allclose(ra['forecast'], rb['forecast'], rtol=tol, atol=tol)
            continue
        assert [t['index'] for t in ra['top']][:1] == [t['index'] for t in rb['top']][:1]
        assert [t['probability'] for t in ra['top']] == pytest.approx([t['probability'] for t in rb['top']], abs=tol)


@pytest.mark.parametrize('task', TASKS)
def test_deploy_artifact_predicts_like_the_checkpoint_and_timm_loads_its_trunk(task, runs, run_cli, tmp_path,
                                                                              builtin_cache):
    import timm
    from safetensors.torch import load_file

    from unimodal import Predictor
    from unimodal.engine.checkpoint import load_run_checkpoint
    ckpt = runs(task)
    code, out, err = run_cli('reparam', ckpt, tmp_path / 'deploy')
    assert code == 0, err
    folder = tmp_path / 'deploy'
    assert sorted(p.name for p in folder.iterdir()) == ['config.json', 'model.safetensors', 'trunk.safetensors']
    config = json.loads((folder / 'config.json').read_text())
    assert config['format'] == 'unimodal-deploy' and config['model']['deploy'] is True and config['inputs'][task]
    spec = config['tasks'][task]
    assert spec['classes'] if task != 'timeseries' else spec['head_kwargs']['horizon'] == 24
    files = _inputs(task, tmp_path, builtin_cache)
    ref = Predictor(ckpt).predict(files, top_k=3)
    for source in (folder, folder / 'config.json', folder / 'model.safetensors'):
        got = Predictor(source).predict(files, top_k=3)
        assert got.form == 'artifact'
        _same_rows(ref.rows, got.rows)
    code, _, err = run_cli('reparam', ckpt, tmp_path / 'deploy.pt')  # the deploy-form .pt: a run checkpoint
    assert code == 0, err
    _same_rows(ref.rows, Predictor(tmp_path / 'deploy.pt').predict(files, top_k=3).rows)
    # timm loads the trunk file (strictly: every key used) and gives the trunk's features
    t = config['trunk']
    trunk = timm.create_model(t['timm_model'], pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(folder / t['file'])), **t['timm_kwargs']).eval()
    state = load_file(str(folder / 'trunk.safetensors'))
    assert sorted(trunk.state_dict()) == sorted(state)
    model = load_run_checkpoint(ckpt).build_model()[0].reparameterize().task_model(task)
    x = torch.randn(2, t['timm_kwargs']['in_chans'], 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(trunk(x), model.trunk.forward_head(model.trunk.forward_features(x),
                                                                      pre_logits=True), rtol=1e-5, atol=1e-5)


def test_artifact_errors_name_the_file(tmp_path, run_cli):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'a' / 'config.json').write_text('{"format": "something else"}')
    (tmp_path / 'a' / 'model.safetensors').write_bytes(b'')
    code, _, err = run_cli('predict', '--checkpoint', tmp_path / 'a', tmp_path)
    assert code == 2 and 'config.json' in err and 'not a unimodal deploy artifact' in err


# ------------------------------------------------------------------------------------------------ ONNX

@pytest.mark.parametrize('task,in_graph', [('audio', 'after_encode'), ('point', 'whole'), ('image', 'whole'),
                                           ('video', 'whole'), ('timeseries', 'whole')])
def test_onnx_export_sidecar_and_predict_with_onnxruntime(task, in_graph, runs, run_cli, tmp_path, builtin_cache):
    pytest.importorskip('onnxruntime')
    ckpt = runs(task)
    onnx_path = tmp_path / 'm.onnx'
    code, out, err = run_cli('export', ckpt, '--format', 'onnx', '--out', onnx_path)
    assert code == 0, err
    side = json.loads((tmp_path / 'm.onnx.json').read_text())
    assert side['format'] == 'unimodal-onnx' and side['task'] == task and side['adapter']['in_graph'] == in_graph
    assert side['classes'] == torch.load(ckpt, weights_only=True)['tasks'][task]['classes']
    assert side['graph']['inputs'][0]['shape'][0] == 'batch'
    if task == 'audio':  # the waveform -> fbank step runs before the graph, in PyTorch: (1, mel bands, frames)
        bands = torch.load(ckpt, weights_only=True)['config']['model']['adapter']['num_mel_bins']
        assert 'encode' in side['adapter']['before_graph']
        assert side['graph']['inputs'][0]['shape'][1:] == [1, bands, 128]
    files = _inputs(task, tmp_path, builtin_cache)
    code, out, err = run_cli('predict', '--checkpoint', onnx_path, *files, '--json', tmp_path / 'o.json')
    assert code == 0, err
    assert ('one view per video' in err) == (task == 'video')  # the single-view scoring is said, not silent
    from unimodal import Predictor
    # onnxruntime's shape-inference warnings (VerifyOutputSizes) are not the user's: errors only
    assert Predictor(onnx_path).model.session.get_session_options().log_severity_level == 3
    # the video export takes one view per clip: the same as the centre clip and crop of a PyTorch model
    views = ['--clips', '1', '--crops', '1'] if task == 'video' else []
    code, _, err = run_cli('predict', '--checkpoint', ckpt, *files, *views, '--json', tmp_path / 't.json')
    assert code == 0, err
    a, b = (json.loads((tmp_path / f).read_text())['predictions'] for f in ('o.json', 't.json'))
    assert len(a) == len(b)
    _same_rows(a, b, tol=1e-4)


# ------------------------------------------------------------------------------------------------ joint, API

def test_joint_checkpoint_needs_task(runs, run_cli, tmp_path, builtin_cache):
    ckpt = runs('audio,point')
    wav = _wav(tmp_path / 'a.wav')
    code, _, err = run_cli('predict', '--checkpoint', ckpt, wav)
    assert code == 2 and 'audio, point' in err and '--task' in err
    code, out, err = run_cli('predict', '--checkpoint', ckpt, '--task', 'audio', wav, '--json', '-')
    assert code == 0, err
    res = json.loads(out)
    assert res['task'] == 'audio' and len(res['predictions']) == 1
    code, _, err = run_cli('predict', '--checkpoint', ckpt, '--task', 'video', wav)
    assert code == 2 and "not 'video'" in err
    # the joint deploy artifact holds both tasks: the same choice
    code, _, err = run_cli('reparam', ckpt, tmp_path / 'joint')
    assert code == 0, err
    code, _, err = run_cli('predict', '--checkpoint', tmp_path / 'joint', wav)
    assert code == 2 and 'audio, point' in err
    code, out2, err = run_cli('predict', '--checkpoint', tmp_path / 'joint', '--task', 'audio', wav, '--json', '-')
    assert code == 0, err
    _same_rows(res['predictions'], json.loads(out2)['predictions'])


def test_python_api(runs, tmp_path, builtin_cache):
    import unimodal
    p = unimodal.Predictor(runs('point'), batch_size=2, votes=3)
    assert p.task == 'point' and p.kind == 'classification' and len(p.classes) == 8
    files = _point_files(tmp_path / 's')
    res = p.predict(tmp_path / 's', top_k=2)  # a folder: its shape files, sorted
    assert [r['input'] for r in res.rows][:2] == sorted(str(f) for f in files)[:2]
    assert len(res.rows) == len(files) + 1 and 'box.off' in res.table()
    x = torch.stack([p.load(f)[0][1] for f in files[:2]])
    probs = p.predict_tensor(x)
    assert probs.shape == (2, 8) and torch.allclose(probs.sum(-1), torch.ones(2))
    from unimodal.config import ConfigError
    with pytest.raises(ConfigError, match="video"):
        unimodal.Predictor(runs('point'), clips=2)


def test_long_recordings_are_classified_with_a_warning(runs, tmp_path, builtin_cache, caplog):
    import unimodal
    p = unimodal.Predictor(runs('audio'))
    long, short = _wav(tmp_path / 'noise.wav', seconds=4.0), _wav(tmp_path / 'word.wav', seconds=1.0)
    with caplog.at_level('WARNING', logger='unimodal.predict.inputs'):
        res = p.predict([long, short])
    assert len(res.rows) == 2                                   # nothing left out
    warned = [r.getMessage() for r in caplog.records if r.name == 'unimodal.predict.inputs']
    assert len(warned) == 1 and 'noise.wav: 4.0 s long' in warned[0] and 'first 1.00 s' in warned[0]


# ------------------------------------------------------------------------------------------------ bad files

def test_bad_files_are_named_or_skipped_and_listed(runs, run_cli, tmp_path, builtin_cache):
    ckpt = runs('audio')
    good = _wav(tmp_path / 'good.wav')
    empty = tmp_path / 'empty.wav'
    empty.write_bytes(b'')
    text = tmp_path / 'notes.wav'
    text.write_text('not audio at all\n' * 20)
    truncated = tmp_path / 'cut.wav'
    truncated.write_bytes(_wav(tmp_path / 'full.wav').read_bytes()[:3000])
    missing = tmp_path / 'nowhere.wav'
    for bad in (empty, text, truncated, missing):
        code, out, err = run_cli('predict', '--checkpoint', ckpt, good, bad)
        assert code == 2, (bad, out, err)
        errors = [ln for ln in err.splitlines() if 'error' in ln]
        assert len(errors) == 1 and errors[0].startswith('unimodal predict: error: ') and str(bad) in errors[0], err
    code, out, err = run_cli('predict', '--checkpoint', ckpt, good, empty, text, truncated, missing, '--skip-bad',
                             '--json', tmp_path / 'r.json')
    assert code == 0, err
    res = json.loads((tmp_path / 'r.json').read_text())
    assert [r['input'] for r in res['predictions']] == [str(good)]
    assert sorted(s['input'] for s in res['skipped']) == sorted(str(p) for p in (empty, text, truncated, missing))
    assert 'skipped 4 input(s)' in out and str(truncated) in out
    # a bad cloud inside a point file names the file too
    bad_off = tmp_path / 'bad.off'
    bad_off.write_text('OFF\n3 1 0\n0 0 0\n1 0 0\n')
    code, _, err = run_cli('predict', '--checkpoint', runs('point'), bad_off)
    assert code == 2 and str(bad_off) in err and 'OFF header promises' in err


def test_a_runs_named_eval_protocol_is_applied(runs, tmp_path, builtin_cache):
    """A point run evaluated with published_8pose: predict averages the softmax of the 8 poses, as evaluation
    scores them (here against the task's own protocol function on the evaluation reader's sample)."""
    from unimodal import Predictor
    from unimodal.config import resolve_run_config
    from unimodal.engine.build import build_task_datasets, data_root
    from unimodal.engine.checkpoint import load_run_checkpoint
    from unimodal.tasks import resolve_task
    out = tmp_path / 'p2p'
    assert main(['train', '--task', 'point', '--model', 'unireplknet_test', *FAST, '--out', str(out),
                 '--set', 'model.adapter.mode=p2p', '--set', 'model.adapter.image_size=28', '--set',
                 'model.adapter.k=8', '--set', 'data.options.num_points=64', '--set',
                 'eval.protocol=published_8pose']) == 0
    ckpt = load_run_checkpoint(out / 'best.pt')
    settings = resolve_run_config(None, None, None, base=ckpt.config).task_settings('point')
    task = resolve_task('point')
    ds = build_task_datasets(task, settings.data, data_root(task, settings.data)[0], splits=['test'])['test']
    model = ckpt.build_model()[0].task_model('point')
    x = ds[2][0].unsqueeze(0)
    with torch.no_grad():
        logits, _ = task.eval_predictor('published_8pose')(model, x, torch.zeros(1, dtype=torch.long))
    assert logits.shape[0] == 8
    p = Predictor(out / 'best.pt')
    assert p.protocol == 'published_8pose'
    got = p.predict(ds.sample_source(2), top_k=8).rows[0]['top']
    probs = torch.zeros(8)
    for t in got:
        probs[t['index']] = t['probability']
    torch.testing.assert_close(probs, logits.softmax(-1).mean(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match='votes'):
        Predictor(out / 'best.pt', votes=4)


# ------------------------------------------------------------------------------------------------ CPU backends

def test_backends_agree_and_are_checked(runs, tmp_path, builtin_cache):
    import unimodal
    from unimodal.config import ConfigError
    files = [_png(tmp_path / f'{i}.png', seed=i) for i in range(3)]
    ref = unimodal.Predictor(runs('image'), batch_size=2).predict(files, top_k=3)
    for backend in ('onnxruntime', 'auto'):
        p = unimodal.Predictor(runs('image'), batch_size=2, backend=backend)
        got = p.predict(files, top_k=3)
        _same_rows(ref.rows, got.rows, tol=1e-4)
        assert p.backend in ('torch', 'onnxruntime') and (backend == 'auto' or p.backend == 'onnxruntime')
    with pytest.raises(ConfigError, match='unknown option'):
        unimodal.Predictor(runs('image'), backend='tensorrt')
    with pytest.raises(ConfigError, match='rotation voting'):
        unimodal.Predictor(runs('point'), votes=3, backend='onnxruntime')


def test_a_failed_first_export_prints_nothing(runs, tmp_path, capfd, builtin_cache):
    # the audio fbank has no ONNX export: torch's exporter prints its whole IR graph to the C++ stdout when the
    # whole-model attempt fails; only the summary lines may reach the user's stdout
    pytest.importorskip('onnxruntime')
    ckpt = runs('audio')
    capfd.readouterr()
    assert main(['export', str(ckpt), '--format', 'onnx', '--out', str(tmp_path / 'a.onnx')]) == 0
    out = capfd.readouterr().out
    assert 'Torch IR graph' not in out and len(out.splitlines()) <= 6, out[:500]
    assert 'after_encode' in out


def test_table_columns_stay_aligned_with_long_class_names():
    from unimodal.predict.output import Predictions
    res = Predictions(task='audio', kind='classification', classes=['a_very_long_class_name_indeed', 'b', 'c'])
    res.add('x.wav', torch.tensor([0.7, 0.2, 0.1]), {}, top_k=3)
    res.add('longer_name.wav', torch.tensor([0.1, 0.2, 0.7]), {}, top_k=3)
    lines = res.table().splitlines()
    starts = [[line.index(cell) for cell in cells] for line, cells in
              zip(lines, [['top-1', 'top-2', 'top-3'], ['a_very', 'b 0.2', 'c 0.1'], ['c 0.7', 'b 0.2', 'a_very']])]
    assert starts[0] == starts[1] == starts[2]  # every column starts at the same offset in every line
