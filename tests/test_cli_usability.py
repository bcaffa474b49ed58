"""Issue 14's friction list: light imports (help, tasks without torch; timm registration in either import order),
``--threads``, ``unimodal tasks NAME``, ``analyze erf`` and ``data prepare`` wiring, subcommand usage on unknown
options, unknown ``--model`` before any data, the Ctrl-C resume hint, one short built-in-data line, and no DDP
gradient-stride warning under torchrun."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FAST
from unimodal.cli.threads import THREAD_ENV, apply_threads, default_threads, parse_threads

ROOT = Path(__file__).resolve().parents[1]


def _py(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


# ------------------------------------------------------------------------------------------------ light imports

def test_help_and_tasks_do_not_import_torch():
    out = _py('import sys, contextlib, io\n'
              'import unimodal\n'
              'assert "torch" not in sys.modules, "import unimodal"\n'
              'from unimodal.cli import main\n'
              'buf = io.StringIO()\n'
              'for argv in (["--help"], ["train", "--help"], ["analyze", "erf", "--help"]):\n'
              '    try:\n'
              '        with contextlib.redirect_stdout(buf):\n'
              '            main(argv)\n'
              '    except SystemExit as e:\n'
              '        assert e.code == 0, argv\n'
              '    assert "torch" not in sys.modules, argv\n'
              'assert main(["tasks"]) == 0 and main(["tasks", "audio"]) == 0\n'
              'heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "numpy"))\n'
              'print("HEAVY", heavy)\n'
              'print(buf.getvalue())\n').stdout
    assert 'HEAVY []' in out and 'usage: unimodal train' in out and 'usage: unimodal analyze erf' in out


@pytest.mark.parametrize('order', ['unimodal first', 'timm first', 'timm submodule first', 'find_spec first'])
def test_timm_finds_the_variants_in_either_import_order(order):
    first = {'unimodal first': 'import unimodal\nimport timm',
             'timm first': 'import timm\nimport unimodal',
             'timm submodule first': 'import unimodal\nfrom timm.models import create_model\nimport timm',
             # an "is timm installed?" check imports nothing: the import after it still registers the variants
             'find_spec first': 'import unimodal, importlib.util, sys\nassert importlib.util.find_spec("timm")\n'
                                'assert "timm" not in sys.modules\nimport timm'}[order]
    out = _py(f'{first}\n'
              'm = timm.create_model("unireplknet_test", num_classes=3)\n'
              'import importlib.resources\n'
              'assert type(timm.__spec__.loader).__name__ != "_RegisterAfterTimm"\n'
              'print(type(m).__name__, "unireplknet_a" in timm.list_models("unireplknet*"))\n').stdout
    assert out.split() == ['UniRepLKNet', 'True']


def test_public_names_load_on_first_use():
    out = _py('import sys, unimodal\n'
              'assert "torch" not in sys.modules\n'
              'from unimodal import Adapter, InputShapeError\n'
              'm = unimodal.create_model("audio", variant="unireplknet_test", num_classes=4)\n'
              'assert isinstance(m, unimodal.TaskModel) and isinstance(m.trunk, unimodal.UniRepLKNet)\n'
              'assert {"audio", "point", "video", "timeseries", "image"} <= set(unimodal.list_adapters())\n'
              'assert "create_model" in dir(unimodal) and unimodal.tasks.get_task("audio").name == "audio"\n'
              'print("OK", unimodal.__version__)\n').stdout
    assert out.startswith('OK ')
    import unimodal
    with pytest.raises(AttributeError, match='no attribute'):
        unimodal.no_such_name


# ------------------------------------------------------------------------------------------------ --threads

def test_threads_option_before_or_after_the_command_and_its_errors(run_cli):
    from unimodal.cli import build_parser
    p = build_parser()
    assert p.parse_args(['--threads', '2', 'tasks']).threads == 2
    assert p.parse_args(['tasks', '--threads', '3']).threads == 3
    assert p.parse_args(['data', 'prepare', '--task', 'audio', '--threads', 'auto']).threads == 0
    assert not hasattr(p.parse_args(['tasks']), 'threads')
    code, _, err = run_cli('train', '--threads', '0')
    assert code == 2 and 'usage: unimodal train' in err and 'positive number of threads' in err


def test_default_threads_rule():
    assert default_threads(cores=1) == 1 and default_threads(cores=2, load=0.0) == 1
    assert default_threads(cores=8, load=0.0) == 8 and default_threads(cores=8, load=3.2) == 5
    assert default_threads(cores=4, load=9.0) == 1
    assert parse_threads('auto') == 0 and parse_threads('4') == 4


def test_apply_threads_sets_torch_and_the_workers_environment(monkeypatch):
    before = torch.get_num_threads()
    for name in THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    try:
        assert apply_threads(2) == 2
        assert torch.get_num_threads() == 2 and all(os.environ[n] == '2' for n in THREAD_ENV)
        for name in THREAD_ENV:
            monkeypatch.delenv(name)
        assert apply_threads(None) == default_threads() and os.environ['OMP_NUM_THREADS'] == str(default_threads())
        monkeypatch.setenv('OMP_NUM_THREADS', '3')
        assert apply_threads(None) is None  # the user's environment wins without --threads
        assert apply_threads(1) == 1 and os.environ['OMP_NUM_THREADS'] == '1'
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------ usage errors

def test_unknown_option_shows_the_commands_usage(run_cli):
    code, _, err = run_cli('train', '--bogus')
    assert code == 2 and 'usage: unimodal train' in err and 'unrecognized arguments: --bogus' in err
    assert 'COMMAND' not in err
    code, _, err = run_cli('data', 'prepare', '--task', 'audio', '--bogus')
    assert code == 2 and 'usage: unimodal data prepare' in err


def test_unknown_model_is_reported_before_any_data(run_cli, tmp_path):
    # the data folder does not exist either: the model error must come first
    code, out, err = run_cli('train', '--task', 'audio', '--model', 'unireplknet_aa', '--data', tmp_path / 'none')
    assert code == 2 and "model.variant (--model)='unireplknet_aa' is not a known model" in err
    assert "did you mean 'unireplknet_a'?" in err and 'does not exist' not in err
    from unimodal.config import ConfigError, resolve_run_config
    with pytest.raises(ConfigError, match="did you mean 'unireplknet_xl'"):
        resolve_run_config({'task': 'point', 'model': {'variant': 'unireplknet_xxl'}})


# ------------------------------------------------------------------------------------------------ tasks

def test_tasks_long_form_says_where_the_data_comes_from(run_cli):
    code, out, _ = run_cli('tasks')
    assert code == 0 and 'unimodal tasks NAME' in out and out.count('\n') < 12
    code, out, _ = run_cli('tasks', 'audio')
    assert code == 0
    assert 'real data' in out and 'download.tensorflow.org' in out and 'validation_list.txt' in out
    assert 'built-in' in out and '--config audio_speechcommands35' in out and 'unimodal train --task audio' in out
    code, out, _ = run_cli('tasks', 'weather')  # the old name shows the time-series task
    assert code == 0 and out.startswith('timeseries:') and '--config weather_global_temp' in out
    code, out, _ = run_cli('tasks', '-v')
    assert code == 0 and all(f'\n{t}:' in f'\n{out}' for t in ('audio', 'image', 'point', 'timeseries', 'video'))
    code, _, err = run_cli('tasks', 'audoi')
    assert code == 2 and "did you mean 'audio'?" in err


def test_tasks_defaults_prints_the_resolved_config(run_cli):
    import yaml
    code, out, _ = run_cli('tasks', 'image', '--defaults')
    assert code == 0
    cfg = yaml.safe_load(out)                     # the comment line aside, valid YAML a --config file could hold
    assert cfg['task'] == 'image' and cfg['model']['trunk']['weight_init'] == 'fan_in'
    assert cfg['model']['trunk']['layer_scale_init_value'] == 1.0 and cfg['train']['precise_bn'] == 20
    # each key is preceded by its doc, and the trunk's doc names the allowed values
    assert '\n  # any timm optimizer name (timm.optim.list_optimizers())\n  optimizer: adamw\n' in out
    assert 'stem_stride 4 (published) | 2' in out and 'weight_init trunc_normal (published) | fan_in' in out
    # a value the task sets apart from the engine defaults (what the published recipes build on) says so
    assert '  lr: 0.002  # task default; engine default: 0.001\n' in out
    assert out.split('\n  trunk: ')[1].split('\n')[0].endswith('  # task default; engine default: {}')
    assert '  optimizer: adamw\n' in out  # the same as the engine's: unmarked
    # ... and why, between the key's doc and the key
    assert '\n  # peak learning rate\n  # why: a tiny set takes few steps an epoch' in out
    assert '  # why weight_init: fan-in' in out.split('\n  trunk: ')[0]
    code, out, _ = run_cli('tasks', 'weather', '--defaults')
    assert code == 0 and yaml.safe_load(out)['task'] == 'timeseries'
    code, _, err = run_cli('tasks', '--defaults')
    assert code == 2 and 'needs a task NAME' in err


def test_train_print_config_shows_the_merged_config_and_trains_nothing(run_cli, tmp_path):
    import yaml
    recipe = tmp_path / 'mine.yaml'
    recipe.write_text('train:\n  epochs: 7\n')
    out_dir = tmp_path / 'run'
    code, out, err = run_cli('train', '--task', 'audio', '--config', recipe, '--lr', '0.01', '--set',
                             'model.trunk.global_pool=avg', '--out', out_dir, '--print-config')
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg['train']['epochs'] == 7 and cfg['train']['lr'] == 0.01  # file and flag merged over the defaults
    assert cfg['model']['trunk']['global_pool'] == 'avg' and cfg['model']['adapter']['num_mel_bins'] == 64
    assert not out_dir.exists()  # nothing trained, nothing written
    code, out2, err = run_cli('train', '--task', 'audio', '--config', recipe, '--set', 'train.lr=0.01',
                              '--set', 'model.trunk.global_pool=avg', '--print-config')
    assert code == 0 and yaml.safe_load(out2) == cfg  # --lr and --set train.lr are one key


def test_train_summary_names_the_tested_epoch(run_cli, tmp_path, builtin_cache):
    common = ['--task', 'audio', '--epochs', '2', '--batch-size', '4', '--set', 'train.max_steps_per_epoch=1',
              '--set', 'data.limit_eval=8', '--no-progress']
    code, out, err = run_cli('train', *common, '--out', tmp_path / 'last')  # the audio defaults test the last epoch
    assert code == 0, err
    assert 'tested the last epoch, 2 (checkpoint ' in out and 'last.pt' in out and 'best validation epoch' in out
    code, out, err = run_cli('train', *common, '--set', 'eval.checkpoint=best', '--out', tmp_path / 'best')
    assert code == 0, err
    assert 'best epoch ' in out and 'best.pt' in out and 'tested the last epoch' not in out


def test_catalog_matches_the_registered_tasks():
    from unimodal.tasks import TASK_INFO, get_task, list_tasks
    # other tests register plug-in tasks (e.g. fake_blobs) in this process: compare the built-in ones
    built_in = [n for n in list_tasks() if type(get_task(n)).__module__.startswith('unimodal.tasks.')]
    assert sorted(TASK_INFO) == built_in
    for name, info in TASK_INFO.items():
        task = get_task(name)
        assert (task.name, tuple(task.aliases), task.adapter, task.kind, task.description, task.real_data) == \
            (info.name, info.aliases, info.adapter, info.kind, info.description, info.real_data)
        assert info.builtin


# ------------------------------------------------------------------------------------------------ analyze, data

def test_analyze_erf_command(run_cli, tmp_path):
    png, js = tmp_path / 'erf.png', tmp_path / 'erf.json'
    code, out, err = run_cli('analyze', 'erf', '--model', 'unireplknet_test', '--model', 'unireplknet_test:k3',
                             '--noise', '--size', '64', '--num', '1', '--out', png, '--json', js, '--no-progress',
                             '--device', 'cpu', '--threads', '1')
    assert code == 0, err
    assert png.is_file() and 'r(50%)' in out and [m['label'] for m in json.loads(js.read_text())['models']] == [
        'unireplknet_test', 'unireplknet_test:k3']
    code, _, err = run_cli('analyze', 'erf', '--model', 'unireplknet_test', '--out', tmp_path / 'a.jpg')
    assert code == 2 and 'unimodal analyze: error:' in err and 'ending in .png' in err
    code, _, err = run_cli('analyze')
    assert code == 2 and 'usage: unimodal analyze' in err


def test_data_prepare_reads_every_file_and_reports_skips(run_cli, tmp_path, builtin_cache):
    from unimodal.tasks import get_task
    src = get_task('audio').make_builtin(builtin_cache)
    root = tmp_path / 'speech'
    shutil.copytree(src, root)
    bad = sorted((root / 'ai').glob('*.wav'))[0]
    bad.write_bytes(b'RIFF\x00\x00not a wave file')
    rel = f'ai/{bad.name}'
    split = 'val' if rel in (root / 'validation_list.txt').read_text() else \
        'test' if rel in (root / 'testing_list.txt').read_text() else 'train'
    code, _, err = run_cli('data', 'prepare', '--task', 'audio', '--data', root, '--no-progress')
    assert code == 2 and bad.name in err
    code, out, err = run_cli('data', 'prepare', '--task', 'audio', '--data', root, '--skip-bad', '--no-progress',
                             '--workers', '1')
    assert code == 0, err
    lines = {line.split(':')[0]: line for line in out.splitlines() if ': ' in line}
    assert '1 skipped' in lines[split] and all('0 skipped' in lines[s] for s in ('train', 'val', 'test') if s != split)
    assert f'prepared audio data at {root}' in out


# ------------------------------------------------------------------------------------------------ train noise

def test_builtin_data_notice_is_one_short_line(run_cli, tmp_path):
    code, _, err = run_cli('train', '--task', 'audio', *FAST, '--out', tmp_path / 'r')
    assert code == 0
    notice = [line for line in err.splitlines() if 'BUILT-IN' in line]
    assert len(notice) == 1 and len(notice[0]) < 260 and 'unimodal tasks audio' in notice[0]


def test_interrupt_names_the_run_to_resume(run_cli, tmp_path, monkeypatch):
    from unimodal.engine import trainer

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    run = tmp_path / 'run'
    with monkeypatch.context() as m:
        m.setattr(trainer._Run, '_finish', interrupted)  # after the last epoch's checkpoint, before the test split
        code, _, err = run_cli('train', '--task', 'timeseries', *FAST, '--out', run)
    assert code == 130 and f'unimodal train --resume auto --out {run}' in err and 'last.pt' in err
    code, out, err = run_cli('train', '--resume', 'auto', '--out', run, '--no-progress')  # the hint works as printed
    assert code == 0, err
    assert json.loads((run / 'results.json').read_text())['task'] == 'timeseries'

    with monkeypatch.context() as m:
        m.setattr(trainer._Run, '_setup_tasks', interrupted)  # before any run directory is taken
        code, _, err = run_cli('train', '--task', 'timeseries', *FAST, '--out', tmp_path / 'early')
    assert code == 130 and err.strip().endswith('interrupted') and not (tmp_path / 'early').exists()


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed is not available')
def test_torchrun_has_no_grad_stride_warning(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', '-m', 'unimodal.cli',
           'train', '--task', 'timeseries', '--epochs', '1', '--set', 'train.max_steps_per_epoch=2', '--set',
           'data.limit_eval=4', '--device', 'cpu', '--no-progress', '--out', str(tmp_path / 'ddp')]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Grad strides do not match' not in proc.stderr + proc.stdout  # was printed once per rank


def test_grads_of_the_trunk_match_their_parameters_strides():
    """The cause of DDP's warning: every gradient in the parameter's own strides (channels-last fast path, CPU)."""
    import unimodal
    model = unimodal.create_model('timeseries', variant='unireplknet_test', horizon=4, num_series=6, input_len=16)
    model.train()
    model(torch.randn(2, 16, 6)).sum().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.stride() != p.stride()]
    assert bad == []


@pytest.mark.parametrize('name', ['audio', 'image', 'point', 'video', 'timeseries'])
def test_every_task_default_says_why(name):
    """Each key a built-in task sets apart from the engine defaults has a reason, and no reason is stale (names a key
    the task does not set, or sets to the engine's value)."""
    from unimodal.config import parse_set_overrides, resolve_run_config
    from unimodal.tasks import get_task
    engine = resolve_run_config({'defaults': 'engine'}, {'task': name}, parse_set_overrides([])).to_dict()
    task = resolve_run_config({}, {'task': name}, parse_set_overrides([])).to_dict()
    reasons = get_task(name).reasons()
    sections = ('data', 'model', 'train', 'eval')
    marked = [f'{s}.{k}' for s in sections for k, v in task[s].items() if engine[s].get(k) != v]
    assert marked
    unexplained = [m for m in marked if not any(r == m or r.startswith(m + '.') for r in reasons)]
    assert not unexplained, f'{name}: task defaults without a reason in default_reasons: {unexplained}'

    def lookup(cfg, path):
        node = cfg
        for part in path.split('.'):
            if not isinstance(node, dict) or part not in node:
                return KeyError
            node = node[part]
        return node
    stale = [r for r in reasons if lookup(task, r) is KeyError or lookup(task, r) == lookup(engine, r)]
    assert not stale, f'{name}: reasons for keys the task does not set apart from the engine: {stale}'
    # the commented dump reads back as the same config
    import yaml
    from unimodal.config import dump_config
    text = dump_config(task, comments=True, baseline=engine, reasons=reasons)
    assert yaml.safe_load(text) == yaml.safe_load(dump_config(task))
