"""The `unimodal` CLI end to end on the built-in data: every task trains a few steps and evaluates; resume;
reparam/export; plug-in adapters; joint multi-task runs and transfer; clear errors with exit code 2."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from conftest import FAST
from unimodal.cli import main

TASKS = ['audio', 'point', 'video', 'timeseries', 'image']
_RUNS = {}


def _train(out: Path, *args) -> dict:
    code = main(['train', *FAST, '--out', str(out), *[str(a) for a in args]])
    assert code == 0
    return json.loads((out / 'results.json').read_text())


@pytest.fixture(scope='module')
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('runs')


def trained(runs_dir: Path, task: str) -> Path:
    """A small training run of ``task`` shared by the tests of this module."""
    if task not in _RUNS:
        _train(runs_dir / task, '--task', task)
        _RUNS[task] = runs_dir / task
    return _RUNS[task]


def _same_metrics(a: dict, b: dict) -> None:
    assert a['num_samples'] == b['num_samples']
    for k, v in a.items():
        if isinstance(v, float):
            assert b[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
        elif not isinstance(v, dict):
            assert b[k] == v, k


# ------------------------------------------------------------------------------------------------ every task

@pytest.mark.parametrize('task', TASKS)
def test_task_trains_and_evaluates_on_builtin_data(task, runs_dir, run_cli, tmp_path):
    run = trained(runs_dir, task)
    for name in ['config.yaml', 'metrics.jsonl', 'results.json', 'best.pt', 'last.pt', 'curves.png']:
        assert (run / name).is_file(), name
    plot = run / (f'forecast_{task}.png' if task == 'timeseries' else f'confusion_{task}.png')
    assert plot.is_file()
    results = json.loads((run / 'results.json').read_text())
    entry = results['tasks'][task]
    assert entry['builtin_data'] and entry['num_samples'] == 8  # data.limit_eval=8: all of them, once
    assert 'skip_report' in entry and entry['split'] == 'test'
    record = json.loads((run / 'metrics.jsonl').read_text().splitlines()[0])
    assert record['epoch'] == 1 and task in record['val'] and record['train'][task]['steps'] == 2

    code, out, err = run_cli('eval', '--task', task, '--checkpoint', run / 'best.pt', '--json', tmp_path / 'e.json',
                             '--no-progress')
    assert code == 0, err
    got = json.loads((tmp_path / 'e.json').read_text())
    assert {'task', 'dataset', 'split', 'num_samples', 'metrics', 'checkpoint', 'model'} <= set(got)
    assert got['task'] == task and got['split'] == 'test' and got['num_samples'] == 8
    _same_metrics(entry['metrics'], got['metrics'])  # same numbers as the run's own test evaluation
    assert 'num_samples' in out and ('top1' in out or 'mse' in out)
    if task == 'timeseries':
        assert {'mse', 'mae', 'mse_phys', 'mae_phys', 'mse_per_step'} <= set(got['metrics'])
        assert {'persistence', 'seasonal_naive'} <= set(got['metrics']['baselines'])
    else:
        assert {'top1', 'mean_class_acc'} <= set(got['metrics'])


def test_point_published_8pose_protocol_end_to_end(run_cli, tmp_path):
    """eval.protocol=published_8pose scores validation and test over 8 poses per cloud, the results say so, and
    `unimodal eval` of the checkpoint repeats it (or runs the standard single pass with eval.protocol=null)."""
    res = _train(tmp_path / 'run', '--task', 'point', '--set', 'model.adapter.mode=p2p', '--set',
                 'model.adapter.image_size=28', '--set', 'model.adapter.k=8', '--set', 'data.options.num_points=64',
                 '--set', 'eval.protocol=published_8pose')
    entry = res['tasks']['point']
    assert entry['num_samples'] == 64 and entry['eval_protocol'].startswith('published_8pose: the published')
    assert '8 clouds at 8 fixed poses' in entry['eval_protocol'] and '64 predictions' in entry['eval_protocol']
    record = json.loads((tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()[0])
    assert record['val']['point']['num_samples'] == 64
    code, out, err = run_cli('eval', '--checkpoint', tmp_path / 'run' / 'best.pt', '--json', tmp_path / 'e.json',
                             '--no-progress')
    assert code == 0, err
    got = json.loads((tmp_path / 'e.json').read_text())
    assert got['eval_protocol'] == entry['eval_protocol'] and 'protocol: published_8pose' in out
    _same_metrics(entry['metrics'], got['metrics'])
    code, _, err = run_cli('eval', '--checkpoint', tmp_path / 'run' / 'best.pt', '--set', 'eval.protocol=null',
                           '--json', tmp_path / 'single.json', '--no-progress')
    assert code == 0, err
    single = json.loads((tmp_path / 'single.json').read_text())
    assert single['num_samples'] == 8 and single['eval_protocol'].startswith('single pass')


def test_builtin_data_is_announced(runs_dir, run_cli, tmp_path):
    code, out, err = run_cli('train', '--task', 'timeseries', *FAST, '--out', tmp_path / 'r')
    assert code == 0
    assert 'BUILT-IN SYNTHETIC' in err and '--data' in err
    assert f'run directory: {tmp_path / "r"}' in out and 'results.json' in out and 'forecast_timeseries.png' in out
    assert out.startswith('run directory:')  # not a terminal: no blank line to set it apart from progress bars


def test_the_old_task_name_still_works(runs_dir, run_cli, tmp_path):
    """``--task weather`` trains the time-series task, quietly; a checkpoint saved under the old name (tasks,
    adapter and weights keyed ``weather``) evaluates with either name and gives its own numbers."""
    code, out, err = run_cli('train', '--task', 'weather', *FAST, '--out', tmp_path / 'r')
    assert code == 0, err
    assert 'deprecat' not in err.lower() and json.loads((tmp_path / 'r' / 'results.json').read_text())['task'] \
        == 'timeseries'
    run = trained(runs_dir, 'timeseries')
    ck = torch.load(run / 'best.pt', weights_only=True)
    rename = lambda s: {k.replace('.timeseries.', '.weather.'): v for k, v in s.items()}  # noqa: E731
    ck['model'] = rename(ck['model'])
    ck['tasks'] = {'weather': {**ck['tasks']['timeseries'], 'name': 'weather', 'adapter': 'weather'}}
    ck['config']['task'] = 'weather'
    torch.save(ck, tmp_path / 'old.pt')
    want = json.loads((run / 'results.json').read_text())['metrics']
    for name in ('weather', 'timeseries'):
        code, _, err = run_cli('eval', '--task', name, '--checkpoint', tmp_path / 'old.pt', '--json',
                               tmp_path / f'{name}.json')
        assert code == 0, err
        _same_metrics(want, json.loads((tmp_path / f'{name}.json').read_text())['metrics'])


def test_console_script_smoke(tmp_path):
    exe = shutil.which('unimodal')
    cmd = [exe] if exe else [sys.executable, '-m', 'unimodal.cli']
    proc = subprocess.run([*cmd, 'train', '--task', 'timeseries', *FAST, '--out', str(tmp_path / 'r')],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / 'r' / 'results.json').is_file()
    proc = subprocess.run([*cmd, 'train', '--task', 'timeseries', '--no-such-option'], capture_output=True, text=True)
    assert proc.returncode == 2 and 'unrecognized arguments: --no-such-option' in proc.stderr


# ------------------------------------------------------------------------------------------------ resume

def test_resume_auto_continues_the_run(tmp_path):
    common = ['--task', 'timeseries', '--set', 'train.schedule=constant', '--set', 'train.deterministic=true']
    full = _train(tmp_path / 'full', *common, '--epochs', '2')
    _train(tmp_path / 'part', *common, '--epochs', '1')
    resumed = _train(tmp_path / 'part', *common, '--epochs', '2', '--resume', 'auto')
    assert resumed['metrics'] == full['metrics']
    assert len((tmp_path / 'part' / 'metrics.jsonl').read_text().splitlines()) == 2


# ------------------------------------------------------------------------------------------------ reparam, export

def test_reparam_checkpoint_gives_the_same_metrics(runs_dir, run_cli, tmp_path):
    run = trained(runs_dir, 'audio')
    code, out, err = run_cli('reparam', run / 'best.pt', tmp_path / 'deploy.pt')
    assert code == 0, err
    assert 'max relative difference' in out
    ck = torch.load(tmp_path / 'deploy.pt', weights_only=True)
    assert ck['model_meta']['deploy'] is True and ck['optimizer'] is None
    assert not any('origin_bn' in k or re.search(r'stages\.\d+\.\d+\.gamma$', k) for k in ck['model'])  # deploy
    code, _, err = run_cli('eval', '--checkpoint', tmp_path / 'deploy.pt', '--json', tmp_path / 'd.json')
    assert code == 0, err
    code, _, err = run_cli('eval', '--checkpoint', run / 'best.pt', '--json', tmp_path / 't.json')
    assert code == 0, err
    dep, tra = (json.loads((tmp_path / f).read_text())['metrics'] for f in ('d.json', 't.json'))
    assert dep['top1'] == tra['top1'] and dep['num_samples'] == tra['num_samples']
    assert dep['loss'] == pytest.approx(tra['loss'], rel=1e-4)


def test_onnx_export_matches_pytorch(runs_dir, run_cli, tmp_path):
    pytest.importorskip('onnxruntime', reason='onnxruntime not installed: the export cannot be checked')
    run = trained(runs_dir, 'point')
    code, out, err = run_cli('export', run / 'best.pt', '--format', 'onnx', '--out', tmp_path / 'm.onnx')
    assert code == 0, err
    assert 'onnxruntime vs PyTorch: max relative difference' in out
    import onnxruntime as ort
    from unimodal.engine.checkpoint import load_run_checkpoint
    ck = load_run_checkpoint(run / 'best.pt')
    model = ck.build_model()[0].task_model('point')
    x = ck.specs['point'].example_input(batch=3)  # another batch size: the batch axis is dynamic
    sess = ort.InferenceSession(str(tmp_path / 'm.onnx'), providers=['CPUExecutionProvider'])
    got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        ref = model(x)
    assert torch.allclose(got, ref, rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------------------------------------ plug-ins

PLUGIN = '''
import torch
from torch.utils.data import Dataset
from unimodal import Adapter


class Stripes(Dataset):
    classes = ["horizontal", "vertical"]

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        self.x = torch.randn(n, 12, 12, generator=g) * 0.3
        for i, c in enumerate(self.y.tolist()):
            if c:
                self.x[i, :, ::3] += 1
            else:
                self.x[i, ::3, :] += 1

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


class StripeAdapter(Adapter):
    """(B, 12, 12) single-channel grids for the shared trunk."""
    name = "stripes"
    head_kind = "classification"
    input_desc = "(B, 12, 12) float"

    def __init__(self, gain: float = 1.0):
        super().__init__()
        self.out_chans = 1
        self.gain = gain

    def encode(self, x):
        return (x * self.gain).unsqueeze(1), None

    @classmethod
    def make_datasets(cls, root):
        return {"train": Stripes(16, 0), "val": Stripes(6, 1), "test": Stripes(10, 2)}


class WindowImage(Adapter):
    """Replacement adapter for the timeseries task: (B, L, N) windows as one (1, L, N) image, forecast head."""
    name = "window_image"
    head_kind = "forecast"
    input_desc = "(B, L, N) float"

    def __init__(self, num_series: int, input_len: int):
        super().__init__()
        self.out_chans = 1
        self.series_per_view = num_series

    def encode(self, x):
        return x.unsqueeze(1), None
'''


def test_plugin_adapter_with_its_own_data(tmp_path, run_cli):
    plugin = tmp_path / 'my_adapter.py'
    plugin.write_text(PLUGIN)
    out = tmp_path / 'r'
    code, stdout, err = run_cli('train', '--adapter', f'{plugin}:StripeAdapter', *FAST, '--out', out,
                                '--set', 'model.adapter.gain=2.0')
    assert code == 0, err
    res = json.loads((out / 'results.json').read_text())
    assert res['task'] == 'stripes' and res['num_samples'] == 8
    code, _, err = run_cli('eval', '--checkpoint', out / 'best.pt', '--json', tmp_path / 'e.json')
    assert code == 0, err
    assert json.loads((tmp_path / 'e.json').read_text())['metrics']['top1'] == res['metrics']['top1']


def test_plugin_adapter_replaces_a_tasks_adapter(tmp_path, run_cli):
    plugin = tmp_path / 'my_adapter.py'
    plugin.write_text(PLUGIN)
    code, _, err = run_cli('train', '--task', 'timeseries', '--adapter', f'{plugin}:WindowImage', *FAST,
                           '--out', tmp_path / 'r')
    assert code == 0, err
    ck = torch.load(tmp_path / 'r' / 'best.pt', weights_only=True)
    assert ck['tasks']['timeseries']['adapter'].endswith('my_adapter.py:WindowImage')
    assert json.loads((tmp_path / 'r' / 'results.json').read_text())['metrics']['mse'] > 0


# ------------------------------------------------------------------------------------------------ joint (issue 7)

def test_joint_run_and_single_task_eval_from_joint_checkpoint(tmp_path, run_cli):
    out = tmp_path / 'joint'
    res = _train(out, '--task', 'audio,point,timeseries')
    assert set(res['tasks']) == {'audio', 'point', 'timeseries'}
    assert 'top1' in res['tasks']['audio']['metrics'] and 'mse' in res['tasks']['timeseries']['metrics']
    record = json.loads((out / 'metrics.jsonl').read_text().splitlines()[0])
    assert set(record['val']) == {'audio', 'point', 'timeseries'}
    assert all(record['train'][t]['steps'] == 2 for t in ('audio', 'point', 'timeseries'))  # round robin
    ck = torch.load(out / 'best.pt', weights_only=True)
    keys = ck['model'].keys()
    for t in ('audio', 'point', 'timeseries'):
        assert any(k.startswith(f'adapters.{t}.') for k in keys) and any(k.startswith(f'heads.{t}.') for k in keys)
    assert sum(k == 'trunk.downsample_layers.0.0.weight' for k in keys) == 1  # one shared trunk, one stem
    assert 'channel_proj' in ''.join(keys)  # adapters with fewer channels project to the trunk's
    for t in ('audio', 'timeseries'):
        code, _, err = run_cli('eval', '--task', t, '--checkpoint', out / 'best.pt', '--json', tmp_path / f'{t}.json')
        assert code == 0, err
        _same_metrics(res['tasks'][t]['metrics'], json.loads((tmp_path / f'{t}.json').read_text())['metrics'])
    code, _, err = run_cli('eval', '--checkpoint', out / 'best.pt')
    assert code == 2 and 'choose one with --task' in err


def test_freeze_trunk_with_init_from_keeps_the_trunk_bit_identical(runs_dir, tmp_path):
    source = trained(runs_dir, 'timeseries') / 'best.pt'
    _train(tmp_path / 'probe', '--task', 'timeseries', '--init-from', source, '--freeze-trunk', '--lr', '0.01')
    before = torch.load(source, weights_only=True)['model']
    after = torch.load(tmp_path / 'probe' / 'best.pt', weights_only=True)['model']
    trunk = [k for k in before if k.startswith('trunk.')]
    assert trunk and all(torch.equal(before[k], after[k]) for k in trunk)  # incl. BatchNorm statistics
    heads = [k for k in before if k.startswith('heads.')]
    assert any(not torch.equal(before[k], after[k]) for k in heads)  # the head did train


def test_pretrained_released_layout_file_is_loaded_with_adapted_channels(tmp_path, caplog):
    released = timm.create_model('unireplknet_test', in_chans=3, num_classes=10)
    torch.save({'model': released.state_dict()}, tmp_path / 'released.pth')
    caplog.set_level('INFO')
    _train(tmp_path / 'r', '--task', 'audio', '--pretrained', tmp_path / 'released.pth', '--freeze-trunk')
    assert 'Adapted the stem conv from 3 to 1 input channels' in caplog.text
    state = torch.load(tmp_path / 'r' / 'best.pt', weights_only=True)['model']
    src = released.state_dict()
    for k, v in src.items():
        if k.startswith(('head.', 'norm.')) or k == 'downsample_layers.0.0.weight':
            continue
        assert torch.equal(state[f'trunk.{k}'], v), k
    assert state['trunk.downsample_layers.0.0.weight'].shape[1] == 1


# ------------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize('args, needle', [
    (['train', '--task', 'audoi'], "unknown task 'audoi'; known tasks: audio"),
    (['train', '--task', 'timeseries', '--set', 'train.batchsize=1'], "did you mean 'batch_size'?"),
    (['train', '--task', 'timeseries', '--set', 'trian.lr=1'], "valid keys at the top level: data, defaults, eval"),
    (['train', '--task', 'timeseries', '--data', '/no/such/dir'], 'data directory /no/such/dir does not exist'),
    (['train', '--task', 'timeseries', '--config', '/no/such.yaml'], 'config file /no/such.yaml does not exist'),
    (['train', '--task', 'timeseries', '--set', 'data.options.horizn=3'], 'horizn'),
    (['train', '--task', 'timeseries', '--model', 'unireplknet_zz'], 'unireplknet_zz'),
    (['train', '--task', 'timeseries', '--lr', 'nan'], 'train.lr must be a finite number, got nan'),
    (['train', '--task', 'timeseries', '--set', 'train.lr=.inf'], 'train.lr must be a finite number, got inf'),
    (['train', '--task', 'timeseries', '--config', '/bin/sh'], 'config file /bin/sh is '),
    (['eval', '--checkpoint', '/no/such.pt'], '/no/such.pt'),
    (['data', 'download', 'no_such_set', '--root', '/tmp'], 'no_such_set'),
])
def test_usage_errors_exit_2_with_one_line(args, needle, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(*args)
    assert code == 2
    assert needle in err
    assert 'Traceback' not in err
    assert len([line for line in err.splitlines() if 'error' in line]) == 1
    assert not (tmp_path / 'runs').exists()  # a run that fails to set up leaves no directory behind


def test_unknown_key_in_config_file(tmp_path, run_cli):
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('task: timeseries\ntrain:\n  epocs: 3\n')
    code, _, err = run_cli('train', '--config', cfg, '--no-progress')
    assert code == 2 and "'train.epocs'" in err and str(cfg) in err and "did you mean 'epochs'?" in err


def test_checkpoint_from_another_task_is_refused(runs_dir, run_cli):
    run = trained(runs_dir, 'timeseries')
    code, _, err = run_cli('eval', '--task', 'audio', '--checkpoint', run / 'best.pt')
    assert code == 2 and "trained for task(s) timeseries, not 'audio'" in err


def test_unknown_cli_option_is_an_error(run_cli):
    code, _, err = run_cli('eval', '--checkpoint', 'x.pt', '--bogus')
    assert code == 2 and 'unrecognized arguments: --bogus' in err


# ------------------------------------------------------------------------------------------------ small commands

def test_models_tasks_bench_and_data_commands(run_cli, tmp_path):
    code, out, _ = run_cli('models')
    assert code == 0 and 'unireplknet_a' in out and 'unireplknet_test' in out and 'M' in out
    code, out, _ = run_cli('tasks')
    assert code == 0 and all(t in out for t in TASKS)
    code, out, err = run_cli('bench', '--model', 'unireplknet_test', '--input-size', '32', '--batch-size', '2',
                             '--steps', '1', '--warmup', '0', '--device', 'cpu')
    assert code == 0, err
    assert 'training form' in out and 'deploy form' in out and 'samples/s' in out
    code, out, _ = run_cli('data', 'download')
    assert code == 0 and 'speech_commands' in out
    code, out, err = run_cli('data', 'prepare', '--task', 'timeseries')
    assert code == 0, err
    assert 'test:' in out and 'prepared timeseries data' in out
    for command in ['train', 'eval', 'reparam', 'export', 'bench', 'models', 'tasks', 'data']:
        code, out, _ = run_cli(command, '--help')
        assert code == 0 and 'usage: unimodal' in out


def test_eval_of_a_released_imagenet_layout_file(tmp_path, run_cli):
    """`--task image` with a released-layout .pth (trunk + classifier, no engine metadata) and an ImageFolder."""
    from unimodal.config import DataConfig
    from unimodal.engine.build import cache_dir
    from unimodal.tasks import get_task
    root = get_task('image').make_builtin(cache_dir(DataConfig()))
    n_classes = len([d for d in (Path(root) / 'train').iterdir() if d.is_dir()])
    model = timm.create_model('unireplknet_test', num_classes=n_classes)
    path = tmp_path / 'unireplknet_test_in1k_224_acc00.00.pth'
    torch.save({'model': model.state_dict()}, path)
    code, out, err = run_cli('eval', '--task', 'image', '--checkpoint', path, '--data', root, '--split', 'val',
                             '--json', tmp_path / 'r.json', '--set', 'data.limit_eval=12', '--no-progress')
    assert code == 0, err
    res = json.loads((tmp_path / 'r.json').read_text())
    assert res['model']['released'] and res['model']['variant'] == 'unireplknet_test'
    assert res['num_samples'] == 12 and 0 <= res['metrics']['top1'] <= 100
    code, _, err = run_cli('eval', '--task', 'audio', '--checkpoint', path)
    assert code == 2 and 'not a unimodal run checkpoint' in err


def test_skipped_samples_listed_in_a_file_and_summarised(tmp_path):
    """--skip-bad: the results hold a compact summary; the full list of skipped files is a file of the run."""
    from unimodal.config import resolve_run_config
    from unimodal.engine.build import data_root
    from unimodal.tasks import resolve_task
    src = data_root(resolve_task('audio'), resolve_run_config({'task': 'audio'}).data)[0]
    data = tmp_path / 'speech'
    shutil.copytree(src, data)
    test_list = (data / 'testing_list.txt').read_text().split()
    for rel in test_list[:3]:
        (data / rel).write_bytes(b'not a wav file')
    out = tmp_path / 'run'
    results = _train(out, '--task', 'audio', '--data', data, '--skip-bad', '--set', 'data.limit_eval=null')
    report = results['tasks']['audio']['skip_report']['test']
    assert report['skipped'] == 3 and report['full_list'] == str(out / 'skipped_audio_test.jsonl')
    lines = [json.loads(line) for line in (out / 'skipped_audio_test.jsonl').read_text().splitlines()]
    assert sorted(Path(e['path']).name for e in lines) == sorted(Path(r).name for r in test_list[:3])
