"""Shared fixtures: one cache of built-in data sets per test session, and CLI helpers."""
import os
from pathlib import Path

import pytest


@pytest.fixture(scope='session', autouse=True)
def builtin_cache(tmp_path_factory) -> Path:
    """Built-in synthetic data sets are generated once per session into this folder (``$UNIMODAL_CACHE``).

    Set ``UNIMODAL_TEST_CACHE`` to reuse a folder across sessions (faster local runs).
    """
    path = Path(os.environ.get('UNIMODAL_TEST_CACHE') or tmp_path_factory.mktemp('unimodal_cache'))
    old = os.environ.get('UNIMODAL_CACHE')
    os.environ['UNIMODAL_CACHE'] = str(path)
    yield path
    if old is None:
        os.environ.pop('UNIMODAL_CACHE', None)
    else:
        os.environ['UNIMODAL_CACHE'] = old


@pytest.fixture(scope='session', autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster, and immune to OpenMP oversubscription on a busy machine
    (also for the subprocesses the tests start)."""
    import torch
    n = torch.get_num_threads()
    old = os.environ.get('OMP_NUM_THREADS')
    torch.set_num_threads(1)
    os.environ['OMP_NUM_THREADS'] = '1'
    yield
    torch.set_num_threads(n)
    if old is None:
        os.environ.pop('OMP_NUM_THREADS', None)
    else:
        os.environ['OMP_NUM_THREADS'] = old


# Few steps, few evaluation samples: the CLI tests check plumbing and consistency, not accuracy.
FAST = ['--epochs', '1', '--batch-size', '4', '--set', 'train.max_steps_per_epoch=2', '--set', 'data.limit_eval=8',
        '--no-progress']


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*args) -> (exit_code, stdout, stderr)`` of ``unimodal.cli.main`` in-process."""
    from unimodal.cli import main

    def run(*args):
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse usage errors
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err
    return run
