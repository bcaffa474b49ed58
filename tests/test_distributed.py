"""`torchrun --nproc_per_node=2` on CPU (gloo): training matches one process with the same global batch, and
evaluation counts every sample exactly once (metrics equal to a single-process evaluation)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not dist.is_available(), reason='torch.distributed is not available')

# 13 evaluation windows: an odd number, so the two ranks' shards differ in size (7 + 6)
COMMON = ['--task', 'timeseries', '--epochs', '1', '--set', 'train.max_steps_per_epoch=3', '--set',
          'data.limit_eval=13', '--set', 'train.schedule=constant', '--set', 'train.deterministic=true',
          '--set', 'train.clip_grad=null', '--device', 'cpu', '--no-progress']
# The DDP-vs-one-process comparison: BatchNorm statistics come from each rank's own batches (4 windows here against
# 8 in the single process), so they differ by design. With the task defaults' open residual branches (layer scale
# 1.0) and precise BN that difference reaches the validation MSE (7 %); with the published layer scale 1e-6 and the
# running averages it stays below the tolerance. Precise BN under DDP is checked on its own below.
EXACT = [*COMMON, '--set', 'train.precise_bn=0', '--set', 'model.trunk.layer_scale_init_value=1e-6']


def _run(args, nproc=1):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    if nproc > 1:
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}',
               '-m', 'unimodal.cli', *args]
    else:
        cmd = [sys.executable, '-m', 'unimodal.cli', *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('ddp')
    _run(['train', *EXACT, '--batch-size', '4', '--out', str(root / 'ddp')], nproc=2)
    _run(['train', *EXACT, '--batch-size', '8', '--out', str(root / 'single')], nproc=1)
    return root


def _log(run: Path) -> dict:
    return json.loads((run / 'metrics.jsonl').read_text().splitlines()[0])


def test_ddp_training_matches_single_process_with_same_global_batch(runs):
    ddp, single = _log(runs / 'ddp'), _log(runs / 'single')
    assert ddp['step'] == single['step'] == 3
    assert ddp['train']['timeseries']['steps'] == 3
    # same samples per step (DistributedSampler splits the same permutation); BatchNorm statistics are per rank
    assert ddp['train']['loss'] == pytest.approx(single['train']['loss'], rel=2e-3)
    assert ddp['val']['timeseries']['mse'] == pytest.approx(single['val']['timeseries']['mse'], rel=2e-3)
    res = json.loads((runs / 'ddp' / 'results.json').read_text())
    assert res['world_size'] == 2
    assert res['num_samples'] == 13  # every test window once, none padded or dropped
    assert ddp['val']['timeseries']['num_samples'] == 13
    assert not any(p.name.startswith('.') for p in (runs / 'ddp').iterdir())  # no stray temp files


def test_ddp_evaluation_equals_single_process(runs, tmp_path):
    """Two ranks evaluating the single-process run's best.pt give that run's own test numbers."""
    ckpt = runs / 'single' / 'best.pt'
    _run(['eval', '--checkpoint', str(ckpt), '--json', str(tmp_path / 'two.json'), '--no-progress',
          '--batch-size', '3'], nproc=2)
    one = json.loads((runs / 'single' / 'results.json').read_text())['metrics']
    two = json.loads((tmp_path / 'two.json').read_text())['metrics']
    assert one['num_samples'] == two['num_samples'] == 13
    for key in ('mse', 'mae', 'mse_phys', 'mae_phys', 'loss'):
        assert two[key] == pytest.approx(one[key], rel=1e-5)
    assert two['mse_per_step'] == pytest.approx(one['mse_per_step'], rel=1e-5)
    assert two['baselines']['persistence']['mse'] == pytest.approx(one['baselines']['persistence']['mse'], rel=1e-9)


def test_ddp_precise_bn_gives_every_rank_the_same_statistics(tmp_path):
    """Precise BN under torchrun: the ranks' statistics are averaged, so the validation each epoch (every rank
    scoring its shard with its own model) equals one process scoring the saved model (rank 0's) on the same split."""
    out = tmp_path / 'pbn'
    _run(['train', *COMMON, '--set', 'train.precise_bn=3', '--batch-size', '4', '--out', str(out)], nproc=2)
    val = _log(out)['val']['timeseries']
    _run(['eval', '--checkpoint', str(out / 'last.pt'), '--split', 'val', '--json', str(tmp_path / 'val.json'),
          '--no-progress'], nproc=1)
    one = json.loads((tmp_path / 'val.json').read_text())['metrics']
    assert one['num_samples'] == val['num_samples'] == 13
    assert one['mse'] == pytest.approx(val['mse'], rel=1e-5)


def test_joint_run_under_torchrun(tmp_path):
    """Issue 7 under torchrun: one shared trunk, two tasks interleaved, DataLoader workers, exact evaluation."""
    out = tmp_path / 'joint'
    _run(['train', '--task', 'audio,timeseries', '--epochs', '1', '--batch-size', '4', '--set',
          'train.max_steps_per_epoch=2', '--set', 'data.limit_eval=9', '--workers', '1', '--device', 'cpu',
          '--out', str(out), '--no-progress'], nproc=2)
    res = json.loads((out / 'results.json').read_text())
    assert res['world_size'] == 2 and set(res['tasks']) == {'audio', 'timeseries'}
    assert all(res['tasks'][t]['num_samples'] == 9 for t in ('audio', 'timeseries'))
    log = _log(out)
    assert log['train']['audio']['steps'] == log['train']['timeseries']['steps'] == 2
