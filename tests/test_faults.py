"""Faults and hostile input on the engine side (issue 15): checkpoints (hostile, garbage, wrong shape, disk full),
the run directory (lock, reuse, stale temporary files, torn log lines, a crash between last.pt and best.pt),
NaN losses and outputs, and option values that used to fail deep inside a library.

Runs use a tiny in-process task (a few seconds each); the CLI is called in-process through ``run_cli``.
"""
import errno
import itertools
import json
import os
import re
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch.utils.data import Dataset

import unimodal
from unimodal.config import parse_set_overrides, resolve_run_config
from unimodal.engine import trainer as trainer_mod
from unimodal.engine.checkpoint import WriteError, load_checkpoint, save_checkpoint
from unimodal.engine.finite import NonFiniteError
from unimodal.engine.rundir import LOCK_NAME, RunDirError, RunDirLock, read_metrics_log
from unimodal.engine.trainer import train
from unimodal.tasks import get_kind
from unimodal.tasks.base import Task, register_task
from test_engine import FakeGridAdapter  # noqa: F401  (registers the adapter 'fake_grid')

RUN = ['--set', 'train.device=cpu', '--no-progress']


# ------------------------------------------------------------------------------------------------ a tiny task

class Blobs(Dataset):
    """(2, 8, 8) images, 4 classes; ``nan`` samples hold NaN values (a bad data file)."""

    classes = ['a', 'b', 'c', 'd']

    def __init__(self, n, seed, nan=()):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 4
        self.x = torch.randn(n, 2, 8, 8, generator=g)
        for i, c in enumerate(self.y.tolist()):
            self.x[i, :, (c // 2) * 4:(c // 2) * 4 + 4, (c % 2) * 4:(c % 2) * 4 + 4] += 2.0
        for i in nan:
            self.x[i, 0, 0, 0] = float('nan')
        self.seed = seed

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])

    def sample_source(self, i):
        return f'blobs{self.seed}/{i:03d}.npy'


@register_task
class FaultTask(Task):
    name = 'fault_blobs'
    adapter = 'fake_grid'  # test_engine's: (B, 2, H, W) grids as they are
    kind = 'classification'
    description = 'test-only task of the fault tests'
    real_data = 'none (test task)'

    def default_config(self):
        return {'train': {'epochs': 2, 'batch_size': 8, 'lr': 3e-3}, 'eval': {'batch_size': 8}}

    def make_builtin(self, cache_dir):
        return Path(cache_dir)

    def build_datasets(self, root, options, skip_bad=False, splits=None):
        options = dict(options)
        nan = {s: options.pop(f'nan_{s}', ()) for s in ('train', 'val', 'test')}
        if options:
            raise TypeError(f'unexpected keyword argument(s) {sorted(options)}')
        sets = {'train': Blobs(16, 0, nan['train']), 'val': Blobs(8, 1, nan['val']), 'test': Blobs(8, 2, nan['test'])}
        return {k: v for k, v in sets.items() if splits is None or k in splits}

    def model_kwargs(self, cfg, train_set):
        return {'num_classes': 4}


def cfg(*sets):
    return resolve_run_config({}, {'task': 'fault_blobs'}, parse_set_overrides(['train.device=cpu', *sets]))


def one_line_error(code, err, *needles):
    assert code == 2, err
    assert 'Traceback' not in err, err
    lines = [line for line in err.splitlines() if ' error: ' in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    """A finished two-epoch run of the tiny task (shared, read-only)."""
    out = tmp_path_factory.mktemp('finished') / 'run'
    train(cfg(), out_dir=out)
    return out


# ------------------------------------------------------------------------------------------------ checkpoints

class Hostile:
    """A pickle that would create ``marker`` when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, 'w')


@pytest.mark.parametrize('how', ['pretrained', 'init_from', 'eval', 'reparam'])
def test_hostile_pickle_is_refused_and_nothing_runs(how, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / 'PWNED'
    evil = tmp_path / 'evil.pth'
    torch.save({'model': {'w': torch.zeros(1)}, 'x': Hostile(marker)}, evil)
    args = {'pretrained': ['train', '--task', 'fault_blobs', '--pretrained', evil, '--out', tmp_path / 'r', *RUN],
            'init_from': ['train', '--task', 'fault_blobs', '--init-from', evil, '--out', tmp_path / 'r', *RUN],
            'eval': ['eval', '--task', 'image', '--checkpoint', evil],
            'reparam': ['reparam', evil, tmp_path / 'out.pt']}[how]
    code, _, err = run_cli(*args)
    one_line_error(code, err, 'evil.pth', '(io.open) besides tensors', 'nothing in it was run')
    assert not marker.exists()
    assert not (tmp_path / 'r').exists()  # a run that fails to set up leaves no directory


def test_garbage_and_wrong_shape_safetensors(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    garbage = tmp_path / 'garbage.safetensors'
    garbage.write_bytes(os.urandom(3000))
    foreign = tmp_path / 'foreign.safetensors'
    save_file({'foo': torch.zeros(3, 3)}, str(foreign))
    other = tmp_path / 'other.safetensors'  # the test variant with other widths: every shape differs
    save_file({k: v.contiguous() for k, v in timm.create_model('unireplknet_test', dims=(8, 16, 32, 64),
                                                               num_classes=0).state_dict().items()}, str(other))
    expected = {garbage: 'not a loadable checkpoint (SafetensorError', foreign: 'missing: downsample_layers.0.0',
                other: 'do not fit the unireplknet_test model (a checkpoint of another variant or other trunk '
                       'options?): shapes differ: downsample_layers.0.0.bias (4,) in the file, (8,) in the model'}
    for path, needle in expected.items():
        code, _, err = run_cli('train', '--task', 'fault_blobs', '--pretrained', path, '--out', tmp_path / 'r', *RUN)
        line = one_line_error(code, err, 'model.pretrained', path.name, needle)
        assert len(line) < 600  # torch's own message lists every key (tens of kilobytes for a real trunk)
    image = tmp_path / 'images'
    for c in 'ab':
        (image / 'val' / c).mkdir(parents=True)
        from PIL import Image
        Image.new('RGB', (32, 32)).save(image / 'val' / c / '0.JPEG')
    for path, needle in {garbage: 'not a loadable checkpoint', foreign: 'no classifier'}.items():
        code, _, err = run_cli('eval', '--task', 'image', '--model', 'unireplknet_test', '--checkpoint', path,
                               '--data', image, '--no-progress')
        one_line_error(code, err, path.name, needle)
    headed = tmp_path / 'headed.safetensors'  # a classifier of another width: the trunk does not fit
    save_file({k: v.contiguous() for k, v in timm.create_model('unireplknet_test', dims=(8, 16, 32, 64),
                                                               num_classes=2).state_dict().items()}, str(headed))
    code, _, err = run_cli('eval', '--task', 'image', '--model', 'unireplknet_test', '--checkpoint', headed,
                           '--data', image, '--no-progress')
    one_line_error(code, err, 'headed.safetensors: the classifier takes 64 features, this model\'s trunk gives 128')


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, run_cli, monkeypatch):
    out = tmp_path / 'run'
    train(cfg('train.epochs=3'), out_dir=out, stop_after_epochs=1)
    before = (out / 'last.pt').read_bytes()
    real_save = torch.save

    def disk_full(obj, f, *a, **k):
        f.write(b'PK\x03\x04 the first bytes')
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(torch, 'save', disk_full)
    code, _, err = run_cli('train', '--resume', out / 'last.pt', *RUN)
    one_line_error(code, err, f'could not write {out / "last.pt"}: No space left on device',
                   'its previous version is unchanged')
    assert (out / 'last.pt').read_bytes() == before
    assert load_checkpoint(out / 'last.pt')['epoch'] == 1
    assert not [p.name for p in out.iterdir() if p.name.endswith('.tmp')]
    # the epoch whose checkpoint failed is in the log (written first) and is re-run on resume
    assert [r['epoch'] for r in read_metrics_log(out / 'metrics.jsonl')] == [1, 2]
    monkeypatch.setattr(torch, 'save', real_save)
    code, _, err = run_cli('train', '--resume', 'auto', '--out', out, *RUN)
    assert code == 0, err
    assert [r['epoch'] for r in read_metrics_log(out / 'metrics.jsonl')] == [1, 2, 3]


def test_write_error_names_the_file(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise OSError(errno.EROFS, 'Read-only file system')

    monkeypatch.setattr(torch, 'save', broken)
    with pytest.raises(WriteError, match=r'could not write .*new\.pt: Read-only file system$') as info:
        save_checkpoint({'w': torch.ones(1)}, tmp_path / 'new.pt')
    assert info.value.errno == errno.EROFS and info.value.filename == str(tmp_path / 'new.pt')
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ crashes mid-epoch

def test_crash_between_last_and_best_loses_no_epoch(tmp_path, monkeypatch):
    """A kill while best.pt is copied (after last.pt was replaced): the log keeps that epoch and the resumed run
    restores best.pt from last.pt."""
    counter = itertools.count()
    kind = type(get_kind('classification'))
    monkeypatch.setattr(kind, 'selection_score', lambda self, metrics: float(next(counter)))  # every epoch improves
    real_copy = trainer_mod.copy_atomic
    calls = []

    def killed_on_second_copy(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies here: last.pt is epoch 2, best.pt still epoch 1
        return real_copy(src, dst)

    monkeypatch.setattr(trainer_mod, 'copy_atomic', killed_on_second_copy)
    out = tmp_path / 'run'
    with pytest.raises(KeyboardInterrupt):
        train(cfg('train.epochs=3'), out_dir=out)
    assert load_checkpoint(out / 'last.pt')['epoch'] == 2 and load_checkpoint(out / 'best.pt')['epoch'] == 1
    assert [r['epoch'] for r in read_metrics_log(out / 'metrics.jsonl')] == [1, 2]
    monkeypatch.setattr(trainer_mod, 'copy_atomic', real_copy)
    res = train(resolve_run_config({}, {}, {}, base=load_checkpoint(out / 'last.pt')['config']), out_dir=out,
                resume=out / 'last.pt')
    assert [r['epoch'] for r in read_metrics_log(out / 'metrics.jsonl')] == [1, 2, 3]
    assert res['best_epoch'] == 3 == load_checkpoint(out / 'best.pt')['epoch']


def test_best_is_restored_when_the_crash_left_it_behind(tmp_path, monkeypatch):
    counter = itertools.count()
    monkeypatch.setattr(type(get_kind('classification')), 'selection_score', lambda self, m: float(next(counter)))
    out = tmp_path / 'run'
    train(cfg('train.epochs=2'), out_dir=out)
    last = load_checkpoint(out / 'last.pt')
    assert last['best']['epoch'] == 2
    save_checkpoint({**last, 'epoch': 1}, out / 'best.pt')  # the state a kill during the copy leaves
    res = train(resolve_run_config({}, {}, {}, base=last['config']), out_dir=out, resume=out / 'last.pt')
    assert load_checkpoint(out / 'best.pt')['epoch'] == 2 == res['best_epoch']


def test_stale_temp_files_are_removed_on_resume(tmp_path, caplog):
    out = tmp_path / 'run'
    train(cfg('train.epochs=2'), out_dir=out, stop_after_epochs=1)
    stale = [out / '.last.pt.k3j_x8.tmp', out / '.best.pt.9zz1q2.tmp', out / '.results.json.abcd.tmp']
    for p in stale:
        p.write_bytes(b'half a file')
        os.utime(p, (time.time() - 60, time.time() - 60))
    keep = [out / 'notes.tmp', out / '.mine.tmp']
    for p in keep:
        p.write_text('not ours')
    caplog.set_level('WARNING')
    train(resolve_run_config({}, {}, {}, base=load_checkpoint(out / 'last.pt')['config']), out_dir=out,
          resume=out / 'last.pt')
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
    assert 'removed 3 temporary file(s) an interrupted run left' in caplog.text


def test_torn_metrics_line_is_dropped_on_resume(tmp_path, run_cli, caplog):
    out = tmp_path / 'run'
    train(cfg('train.epochs=2'), out_dir=out, stop_after_epochs=1)
    with open(out / 'metrics.jsonl', 'a') as f:
        f.write('{"epoch": 2, "step": 4, "lr": 0.00')  # the process died while appending
    caplog.set_level('WARNING')
    code, _, err = run_cli('train', '--resume', 'auto', '--out', out, *RUN)
    assert code == 0, err
    assert 'line 2 is not a complete epoch record' in caplog.text
    assert [r['epoch'] for r in read_metrics_log(out / 'metrics.jsonl')] == [1, 2]
    assert all(json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines())


# ------------------------------------------------------------------------------------------------ one directory

def test_a_locked_run_directory_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / 'run'
    out.mkdir()
    with RunDirLock(out):
        with pytest.raises(RunDirError, match=rf'run directory {re.escape(str(out))} is in use by another unimodal '
                                              rf'run \(pid {os.getpid()} on '):
            train(cfg('train.epochs=1'), out_dir=out)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # the refused run wrote nothing
    assert list(out.iterdir()) == []  # the holder removed its lock file
    train(cfg('train.epochs=1'), out_dir=out)  # free again once the holder is gone
    assert not (out / LOCK_NAME).exists()


def test_two_runs_at_once_on_one_directory(tmp_path):
    """The second of two concurrent ``unimodal train`` processes with one --out fails at once, naming the first."""
    import subprocess
    import sys
    out = tmp_path / 'run'
    out.mkdir()
    env = {**os.environ, 'PYTHONPATH': str(Path(unimodal.__file__).parents[1])}  # this checkout's package
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time; from unimodal.engine.rundir import '
                               'RunDirLock; RunDirLock(sys.argv[1]).acquire(); print("locked", flush=True); '
                               'time.sleep(60)', str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(RunDirError, match=rf'in use by another unimodal run \(pid {holder.pid} on '):
            train(cfg('train.epochs=1'), out_dir=out)
    finally:
        holder.kill()
        holder.wait()


def test_a_finished_run_is_not_replaced_without_overwrite(finished, tmp_path, run_cli, monkeypatch):
    code, _, err = run_cli('train', '--task', 'fault_blobs', '--out', finished, *RUN)
    one_line_error(code, err, f'{finished} already holds a run (best.pt, last.pt, results.json)', '--overwrite')
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'thesis.tex').write_text('keep me')
    code, _, err = run_cli('train', '--task', 'fault_blobs', '--out', other, *RUN)
    one_line_error(code, err, f'{other} is not empty (it holds thesis.tex)')
    code, _, err = run_cli('train', '--task', 'fault_blobs', '--out', other, '--overwrite', '--epochs', '1', *RUN)
    assert code == 0, err
    assert (other / 'thesis.tex').read_text() == 'keep me'
    # --overwrite replaces a run: none of the old run's epochs stay in the log
    copy = tmp_path / 'copy'
    copy.mkdir()
    for p in finished.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    code, _, err = run_cli('train', '--task', 'fault_blobs', '--out', copy, '--overwrite', '--epochs', '1', *RUN)
    assert code == 0, err
    assert [r['epoch'] for r in read_metrics_log(copy / 'metrics.jsonl')] == [1]
    assert load_checkpoint(copy / 'last.pt')['epoch'] == 1


def test_a_run_that_never_checkpointed_is_restarted(tmp_path, run_cli):
    out = tmp_path / 'run'
    out.mkdir()
    (out / 'config.yaml').write_text('task: fault_blobs\n')
    (out / 'metrics.jsonl').write_text('{"epoch": 1, "step": 99}\n')  # logged, then killed before last.pt
    code, _, err = run_cli('train', '--task', 'fault_blobs', '--out', out, '--resume', 'auto', '--epochs', '1', *RUN)
    assert code == 0, err
    assert [r['step'] for r in read_metrics_log(out / 'metrics.jsonl')] == [2]  # the new run's line only


def test_out_naming_a_file(tmp_path, run_cli):
    (tmp_path / 'file').write_text('x')
    code, _, err = run_cli('train', '--task', 'fault_blobs', '--out', tmp_path / 'file', *RUN)
    one_line_error(code, err, f'--out {tmp_path / "file"} is an existing file, not a directory')


# ------------------------------------------------------------------------------------------------ resume / eval flags

def test_resume_with_another_tasks_checkpoint_blames_the_checkpoint(finished, run_cli):
    code, _, err = run_cli('train', '--task', 'timeseries', '--resume', finished / 'last.pt', *RUN)
    one_line_error(code, err, f'--resume {finished / "last.pt"}: that checkpoint is a run of task(s) fault_blobs, '
                              f'this run trains timeseries')


def test_resume_with_another_variant_names_both(finished, run_cli, tmp_path):
    code, _, err = run_cli('train', '--resume', finished / 'last.pt', '--model', 'unireplknet_a', '--out',
                           tmp_path / 'r', *RUN)
    one_line_error(code, err, 'holds a unireplknet_test trunk, this run asks for unireplknet_a')
    code, _, err = run_cli('train', '--resume', finished / 'last.pt', '--set', 'model.trunk.dims=[8,16,32,64]',
                           '--out', tmp_path / 'r', *RUN)
    one_line_error(code, err, 'trained with model.trunk={}', "this run sets {'dims': [8, 16, 32, 64]}")
    code, _, err = run_cli('train', '--resume', finished / 'last.pt', '--set', 'train.optimizer=sgd',
                           '--out', tmp_path / 'r', *RUN)
    one_line_error(code, err, "trained with train.optimizer='adamw', this run sets 'sgd'")
    assert not (tmp_path / 'r').exists()


def test_eval_model_flag_on_a_run_checkpoint(finished, run_cli):
    code, _, err = run_cli('eval', '--checkpoint', finished / 'best.pt', '--model', 'unireplknet_a')
    one_line_error(code, err, '--model unireplknet_a', 'run checkpoint with a unireplknet_test trunk')
    code, out, err = run_cli('eval', '--checkpoint', finished / 'best.pt', '--model', 'unireplknet_test',
                             '--no-progress')
    assert code == 0, err  # the checkpoint's own variant: nothing to override


# ------------------------------------------------------------------------------------------------ NaN

def test_nan_sample_in_training_names_task_epoch_step_and_file(tmp_path, run_cli):
    code, _, err = run_cli('train', '--task', 'fault_blobs', '--data', tmp_path, '--set', 'data.options.nan_train=[5]',
                           '--set', 'train.batch_size=16', '--out', tmp_path / 'r', *RUN)
    one_line_error(code, err, 'the training loss of task fault_blobs is nan at epoch 1, step 1',
                   '1 input sample(s) of the batch hold NaN/inf values (samples: blobs0/005.npy)',
                   'a data file holds bad values', '--skip-bad')


def test_diverged_training_says_so(tmp_path):
    with pytest.raises(NonFiniteError, match=r'at epoch 1, step \d with finite inputs: training diverged; lower '
                                             r'train\.lr'):
        train(cfg('train.lr=1e30', 'train.optimizer=sgd', 'train.batch_size=4'), out_dir=tmp_path / 'r')


def test_eval_refuses_nan_inputs_and_outputs(finished, tmp_path, run_cli):
    code, _, err = run_cli('eval', '--checkpoint', finished / 'best.pt', '--data', tmp_path,
                           '--set', 'data.options.nan_test=[3,6]', '--no-progress')
    one_line_error(code, err, 'eval fault_blobs/test: 2 input sample(s) of batch 0 hold NaN/inf values '
                              '(samples: blobs2/003.npy, blobs2/006.npy)')
    ck = load_checkpoint(finished / 'best.pt')
    ck['model'] = {k: v.fill_(float('nan')) if k.startswith('heads.') and v.is_floating_point() else v
                   for k, v in ck['model'].items()}
    save_checkpoint(ck, tmp_path / 'nan.pt')
    code, _, err = run_cli('eval', '--checkpoint', tmp_path / 'nan.pt', '--no-progress')
    one_line_error(code, err, 'eval fault_blobs/test: the model outputs NaN/inf for 8 sample(s) of batch 0',
                   'the weights are not finite')


# ------------------------------------------------------------------------------------------------ option values

@pytest.mark.parametrize('adapter, kwargs, needle', [
    ('audio', {'target_frames': 0}, 'audio adapter option target_frames must be a positive integer, got 0'),
    ('audio', {'norm_std': float('nan')}, 'norm_std must be a finite number, got nan'),
    ('audio', {'sample_rate': 8.5}, 'sample_rate must be an integer >= 100 (Hz), got 8.5'),
    ('audio', {'spec_augment': 'yes'}, 'spec_augment must be true or false'),
    ('image', {'in_chans': -1}, 'image adapter option in_chans must be a positive integer'),
    ('image', {'hflip': 2}, 'hflip must be a number in [0, 1], got 2'),
    ('point', {'num_depth_views': 0}, 'point adapter option num_depth_views must be a positive integer'),
    ('point', {'k': 'many'}, 'k must be a positive integer'),
    ('point', {'augment_translate': -1}, 'augment_translate must be a non-negative number'),
    ('point', {'eval_pose': [0.1]}, 'eval_pose must be a list of 2 numbers'),
    ('timeseries', {'embed_dim': -4}, 'timeseries adapter option embed_dim must be a positive integer or null'),
    ('timeseries', {'image_size': [0, 32]}, 'image_size must hold positive sizes'),
    ('timeseries', {'eps': 0}, 'eps must be a positive number'),
    ('timeseries', {'affine': 'bogus'}, "affine must be one of series, group, shared, none or null, got 'bogus'"),
    ('video', {'num_frames': 0}, 'video adapter option num_frames must be a positive integer'),
    ('video', {'grid': [4]}, 'grid must be [rows, cols] or null'),
    ('video', {'image_size': -2}, 'image_size must be a positive integer or null'),
])
def test_adapter_options_are_checked_naming_the_option(adapter, kwargs, needle):
    with pytest.raises(ValueError) as info:  # as constructors raise for bad arguments (ConfigError is one)
        unimodal.create_model(adapter, variant='unireplknet_test', num_classes=3, **kwargs)
    assert needle in str(info.value)


@pytest.mark.parametrize('option, needle', [
    ('model.adapter.embed_dim=-4', 'model.adapter for task timeseries (adapter timeseries): timeseries adapter '
                                   'option embed_dim must be a positive integer or null, got -4'),
    ('model.trunk.dims=[-4,8,8,8]', 'dims must be a sequence of integers >= 2, got [-4, 8, 8, 8]'),
    ('model.trunk.layer_scale_init_value=.nan', 'layer_scale_init_value must be a finite number or None, got nan'),
])
def test_bad_option_values_fail_before_training_with_one_line(option, needle, run_cli, tmp_path):
    code, _, err = run_cli('train', '--task', 'timeseries', '--set', option, '--out', tmp_path / 'r', *RUN)
    one_line_error(code, err, needle)
    assert not (tmp_path / 'r').exists()


# ------------------------------------------------------------------------------------------------ clean behaviours

def _calls(text, name):
    """The argument text of every ``name(...)`` call in ``text``."""
    for m in re.finditer(re.escape(name) + r'\(', text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {'(': 1, ')': -1}.get(text[i], 0)
            i += 1
        yield text[m.end():i - 1]


def test_every_torch_load_is_weights_only_and_yaml_is_safe():
    """The catalog's clean cases stay clean: no unrestricted unpickling or YAML loading anywhere in the package."""
    package = Path(unimodal.__file__).parent
    loads = 0
    for path in package.rglob('*.py'):
        text = path.read_text()
        for args in _calls(text, 'torch.load'):
            loads += 1
            assert 'weights_only=True' in args, f'{path}: torch.load({args}) without weights_only=True'
        for args in _calls(text, 'yaml.load'):
            assert 'Loader=_Loader' in args, f'{path}: yaml.load({args})'  # the SafeLoader subclass
        assert not re.search(r'\bpickle\.loads?\(|yaml\.(unsafe_load|full_load)\(|yaml\.Loader\b', text), path
    assert loads >= 2
