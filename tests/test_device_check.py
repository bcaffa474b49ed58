"""The GPU device check's scripts in their CPU dry mode (tiny models), so a broken script shows up in CI and not
on the GPU machine (benchmarks/device_check.sh, bench_cuda.py, bench_dwconv.py, device_runs.py)."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / 'benchmarks'
STANDIN = ['--public', str(ROOT / 'unimodal' / 'models' / 'unireplknet.py'), '--public-package', 'unimodal.models']


def _run(args, timeout=300):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
               OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable] + [str(a) for a in args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def test_device_check_script_parses_and_rejects_unknown_options():
    assert subprocess.run(['bash', '-n', str(BENCH / 'device_check.sh')]).returncode == 0
    proc = subprocess.run(['bash', str(BENCH / 'device_check.sh'), '--fast'], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and 'unknown option --fast' in proc.stderr


def test_bench_cuda_dry_run(tmp_path):
    out = tmp_path / 'speed.json'
    _run([BENCH / 'bench_cuda.py', '--device', 'cpu', '--tiny', '--dtypes', 'bf16', '--peers', 'convnext_atto',
          '--out', out] + STANDIN)
    res = json.loads(out.read_text())
    speed = res['speed']
    assert not speed['failed'] and not speed['skipped']
    kinds = {(r['impl'], r['mode'], r['layout']) for r in speed['rows']}
    assert {('unimodal', 'infer', 'fast'), ('unimodal', 'train', 'fast'), ('public', 'infer', 'nchw'),
            ('public', 'train', 'nchw'), ('timm', 'infer', 'nchw'), ('unimodal', 'infer', 'plain'),
            ('timm', 'train', 'channels_last')} <= kinds
    assert all(r['images_per_s'] > 0 for r in speed['rows'])
    assert speed['public_rel_err']['unireplknet_test'] < 1e-5  # the stand-in is our own file: same function
    assert set(speed['summary']['unimodal_over_public']) == {'test/infer/bf16', 'test/train/bf16'}
    assert res['compile']['infer']['compiled_ms'] > 0 and res['compile']['train']['compiled_ms'] > 0
    assert res['machine']['device'] == 'cpu'


def test_bench_dwconv_dry_run(tmp_path):
    pytest.importorskip('triton', reason='Triton is not installed')
    from unimodal.layers.dwconv import load_table
    out = tmp_path / 'table.json'
    _run([BENCH / 'bench_dwconv.py', '--device', 'cpu', '--tiny', '--out', out])
    table = load_table(out)
    assert table['device_name'] == 'cpu' and len(table['entries']) == 2 and not table['failed']
    assert all(e['triton_agrees'] and e['triton_vs_cudnn_rel_diff'] < 1e-5 for e in table['entries'])
    assert {e['channels_last'] for e in table['entries']} == {True, False}


def test_device_runs_ddp_dry_run(tmp_path):
    out = tmp_path / 'runs.json'
    _run([BENCH / 'device_runs.py', '--device', 'cpu', '--tiny', '--sections', 'ddp', '--out', out])
    res = json.loads(out.read_text())
    ddp = res['ddp']['runs']['ddp_check']['result']
    assert res['ddp']['ok'] and ddp['ok'] and ddp['world_size'] == 1 and ddp['backend'] == 'gloo'
    assert ddp['replica_checksum_max_diff'] == 0.0 and len(ddp['losses']) == 3


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_device_runs_epoch_commands_are_valid_cli_runs(tmp_path, amp):
    """The epoch runs' command lines (run on the GPU machine) parse and resolve to a valid run config here."""
    sys.path.insert(0, str(BENCH))
    import device_runs
    from unimodal.cli import _train_overrides, build_parser
    from unimodal.config import parse_set_overrides
    from unimodal.config import resolve_run_config
    args = argparse.Namespace(device='cuda', steps=20, limit_eval=64, workers=2)
    for task in device_runs.TASKS:
        cmd = device_runs._train_cmd(task, amp, args, tmp_path / task)
        assert cmd[1:3] == ['-m', 'unimodal.cli']
        ns = build_parser().parse_args(cmd[3:])
        cfg = resolve_run_config({}, _train_overrides(ns), parse_set_overrides(ns.set))
        assert cfg.train.amp == amp and cfg.train.max_steps_per_epoch == 20
        assert cfg.data.limit_eval == 64
