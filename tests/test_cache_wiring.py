"""The engine hands every caching reader the run's cache folder (data.cache_dir, the one cache rule)."""
from pathlib import Path

import pytest

from unimodal.config import resolve_run_config
from unimodal.engine.build import build_task_datasets, data_root
from unimodal.tasks import resolve_task


@pytest.mark.parametrize('task_name, sub', [('point', 'modelnet40'), ('audio', None), ('timeseries', None)])
def test_reader_caches_go_to_data_cache_dir(tmp_path, task_name, sub):
    task = resolve_task(task_name)
    builtin = data_root(task, resolve_run_config({'task': task_name}).data)[0]
    cache = tmp_path / 'my_cache'
    cfg = resolve_run_config({'task': task_name, 'data': {'root': str(builtin), 'cache_dir': str(cache)}})
    sets = build_task_datasets(task, cfg.data, Path(builtin), splits=['train'])
    sets['train'][0]  # first read fills the lazy caches
    written = [p for p in cache.rglob('*') if p.is_file()]
    assert written, f'{task_name}: nothing cached under data.cache_dir'
    if sub:
        assert (cache / sub).is_dir()


def test_explicit_reader_option_wins(tmp_path):
    task = resolve_task('point')
    builtin = data_root(task, resolve_run_config({'task': 'point'}).data)[0]
    mine, run = tmp_path / 'mine', tmp_path / 'run'
    cfg = resolve_run_config({'task': 'point', 'data': {'root': str(builtin), 'cache_dir': str(run),
                                                        'options': {'cache_dir': str(mine)}}})
    build_task_datasets(task, cfg.data, Path(builtin), splits=['train'])['train'][0]
    assert any(p.is_file() for p in mine.rglob('*')) and not run.exists()
