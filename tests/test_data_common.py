"""What every reader shares: the cache rule, atomic cache writes, compact indices, list files, skip reports (also
from DataLoader workers), DataErrors raised in workers, and the data-side prepare pass."""
import json
import logging
import multiprocessing
import os
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from unimodal.data.cache import CacheDirError, atomic_write, reader_cache_dir, resolve_cache_dir
from unimodal.data.errors import DataError, SkipReport, load_or_next
from unimodal.data.index import StringTable, load_index, read_list_lines, save_index
from unimodal.data.prepare import prepare_datasets


# ---- the cache rule ----------------------------------------------------------------------------------------------
def test_cache_rule_explicit_then_environment_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv('UNIMODAL_CACHE', str(tmp_path / 'env'))
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert resolve_cache_dir(tmp_path / 'explicit') == tmp_path / 'explicit'
    assert resolve_cache_dir(None) == tmp_path / 'env'
    monkeypatch.delenv('UNIMODAL_CACHE')
    assert resolve_cache_dir(None) == tmp_path / 'home' / '.cache' / 'unimodal'
    assert resolve_cache_dir('~/c') == tmp_path / 'home' / 'c'
    assert all(p.is_dir() and not list(p.iterdir()) for p in (tmp_path / 'explicit', tmp_path / 'env'))


def test_unwritable_cache_is_one_clear_error_for_each_source(tmp_path, monkeypatch):
    (tmp_path / 'file').write_text('not a folder')  # root ignores permissions: a file in the way blocks instead
    monkeypatch.setenv('HOME', str(tmp_path / 'file'))
    monkeypatch.delenv('UNIMODAL_CACHE', raising=False)
    for explicit, source in ((tmp_path / 'file' / 'x', 'data.cache_dir'), (None, 'the default')):
        with pytest.raises(CacheDirError) as exc:
            resolve_cache_dir(explicit)
        msg = str(exc.value)
        assert str(tmp_path / 'file') in msg and source in msg and 'data.cache_dir' in msg and 'UNIMODAL_CACHE' in msg
        assert isinstance(exc.value, DataError) and '\n' not in msg  # the CLI's one-line error
    monkeypatch.setenv('UNIMODAL_CACHE', str(tmp_path / 'file' / 'env'))
    with pytest.raises(CacheDirError, match=r'\$UNIMODAL_CACHE'):
        reader_cache_dir(None, 'modelnet40')


def test_atomic_write_leaves_nothing_on_failure_and_stale_temps_are_removed(tmp_path):
    target = tmp_path / 'a.bin'

    def boom(f):
        f.write(b'half')
        raise RuntimeError('killed')

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert not list(tmp_path.iterdir())
    atomic_write(target, lambda f: f.write(b'whole'))
    assert target.read_bytes() == b'whole'
    folder = reader_cache_dir(tmp_path, 'r')
    old, fresh = folder / '.x.npz.abc.tmp', folder / '.y.npz.def.tmp'
    old.write_bytes(b'left by a killed writer')
    fresh.write_bytes(b'being written now')
    os.utime(old, (time.time() - 7200,) * 2)
    reader_cache_dir(tmp_path, 'r')
    assert not old.exists() and fresh.exists()


# ---- compact indices and list files ------------------------------------------------------------------------------
def test_string_table_round_trips_any_file_name(tmp_path):
    names = ['a/b.wav', 'ünï/cödé.mp4', os.fsdecode(b'raw/\xff\xfe.jpg'), '', 'sub dir/x y.JPEG']
    table = StringTable.from_strings(names)
    assert list(table) == names and table[-1] == names[-1] and len(table) == 5
    assert list(table.take(np.array([4, 0]))) == [names[4], names[0]]
    with pytest.raises(IndexError):
        table[5]
    save_index(tmp_path / 'i.npz', {'labels': np.arange(5)}, {'paths': table})
    arrays, tables = load_index(tmp_path / 'i.npz')
    assert list(tables['paths']) == names and arrays['labels'].tolist() == [0, 1, 2, 3, 4]
    (tmp_path / 'bad.npz').write_bytes(b'PK\x03\x04 truncated')
    assert load_index(tmp_path / 'bad.npz') is None and load_index(tmp_path / 'none.npz') is None


def test_list_lines_name_the_line_that_is_not_utf8(tmp_path):
    p = tmp_path / 'train.txt'
    p.write_bytes(b'\xef\xbb\xbfa.mp4 0\n\n  b.mp4 1  \n')
    assert read_list_lines(p) == [(1, 'a.mp4 0'), (3, 'b.mp4 1')]
    p.write_bytes(b'a.mp4 0\nb.mp4 1\nc\xe9.mp4 2\n')
    with pytest.raises(DataError, match=r'train\.txt: line 3 is not UTF-8 text \(byte 0xe9'):
        read_list_lines(p)


# ---- skip reports ------------------------------------------------------------------------------------------------
def test_skip_report_summary_stays_small_and_the_full_list_goes_to_a_file(tmp_path, caplog):
    report = SkipReport('kinetics/train')
    report.total = 240_000
    with caplog.at_level(logging.WARNING, logger='unimodal.data.errors'):
        for i in range(16_800):  # 7 % of 240k
            report.add(DataError(f'/k400/train/video_{i:06d}.mp4', 'video listed in train.txt does not exist',
                                 reason='missing'))
        report.add(DataError('/k400/train/x.mp4', 'cannot decode video (DECORDError: ...)', reason='undecodable'))
    assert len(caplog.records) == SkipReport.LOG_FIRST + 1  # the first 20, then one "counted, not logged" line
    summary = report.as_dict()
    assert summary['skipped'] == 16_801 and summary['used'] == 240_000 - 16_801
    assert summary['by_reason'] == {'missing': 16_800, 'undecodable': 1}
    assert len(summary['skipped_files']) == 20 and summary['skipped_files_omitted'] == 16_781
    assert len(json.dumps(summary)) < 5000
    path = report.write(tmp_path / 'skipped_train.jsonl')
    lines = path.read_text().splitlines()
    assert len(lines) == 16_801 and json.loads(lines[-1])['reason'] == 'undecodable'
    assert report.as_dict()['full_list'] == str(path)
    with caplog.at_level(logging.WARNING, logger='unimodal.data.errors'):
        caplog.clear()
        report.log_summary()
    assert len(caplog.records) == 1 and '16801 of 240000' in caplog.records[0].getMessage()
    report.merge(report.entries()[:5] + [{'path': 'other', 'problem': 'p', 'reason': 'r'}])  # another rank's
    assert report.count == 16_802


def _add_in_child(report):
    report.add(DataError('/x/child.wav', 'found in a child process', reason='late'))


def test_skips_recorded_in_other_processes_reach_the_owner():
    report = SkipReport('t')
    report.add(DataError('/x/main.wav', 'found in the main process'))
    ctx = multiprocessing.get_context('fork')
    for _ in range(2):  # the same file found twice counts once
        p = ctx.Process(target=_add_in_child, args=(report,))
        p.start()
        p.join()
    assert [e['path'] for e in report.entries()] == ['/x/main.wav', '/x/child.wav']
    spool = report._spool
    assert os.path.isdir(spool)
    del report
    import gc
    gc.collect()
    assert not os.path.exists(spool)  # the owner removes its spool


class _Flaky(Dataset):
    def __init__(self, bad, skip_bad):
        self.bad, self.skip_bad, self.skip_report = bad, skip_bad, SkipReport('flaky')
        self.skip_report.total = 10

    def __len__(self):
        return 10

    def _item(self, i):
        if i in self.bad:
            raise DataError(f'/data/{i}.wav', 'samples are NaN', reason='non-finite')
        return torch.tensor([i])

    def __getitem__(self, i):
        return load_or_next(self._item, i, len(self), self.skip_bad, self.skip_report, 'flaky')


def test_a_data_error_in_a_worker_stays_a_data_error_naming_the_file():
    with pytest.raises(DataError) as exc:
        list(DataLoader(_Flaky({3}, skip_bad=False), batch_size=2, num_workers=2))
    assert exc.value.path == '/data/3.wav' and exc.value.problem.startswith('samples are NaN (in DataLoader worker')
    got = torch.cat(list(DataLoader(_Flaky({3, 4}, skip_bad=True), batch_size=2, num_workers=2))).flatten()
    assert got.tolist() == [0, 1, 2, 5, 5, 5, 6, 7, 8, 9]  # 3 and 4 replaced by the next good sample
    with pytest.raises(DataError, match='64 samples in a row|10 samples in a row'):
        _Flaky(set(range(10)), skip_bad=True)[0]


# ---- prepare -----------------------------------------------------------------------------------------------------
def test_prepare_reads_every_sample_of_the_rank_share_and_reports_progress():
    calls = []
    ds = _Flaky({7}, skip_bad=True)
    out = prepare_datasets({'train': ds}, workers=2, rank=1, world_size=2,
                           progress=lambda split, done, total: calls.append((split, done, total)))
    assert calls[0] == ('train', 0, 5) and calls[-1] == ('train', 5, 5)
    assert out['train']['samples'] == 5 and out['train']['skip_report']['skipped'] == 1  # 7 is in rank 1's share
    with pytest.raises(DataError, match='7.wav'):
        prepare_datasets({'train': _Flaky({7}, skip_bad=False)}, workers=0, rank=1, world_size=2)
