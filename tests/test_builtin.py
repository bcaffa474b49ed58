"""build_once: the one writer of built-in data sets (atomic, versioned, concurrent-safe), and its five users."""
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from unimodal.data.builtin import MARKER, NotABuiltinSetError, build_once, read_marker

REPO = Path(__file__).resolve().parents[1]


def _writer(calls, text='payload'):
    def write(out: Path) -> None:
        calls.append(out)
        (out / 'sub').mkdir()
        (out / 'sub' / 'data.txt').write_text(text)
    return write


def _siblings(folder: Path):
    """Everything next to ``folder`` except the lock file."""
    return sorted(p.name for p in folder.parent.iterdir() if not p.name.endswith('.lock'))


def test_writes_once_then_reuses(tmp_path):
    calls = []
    root = build_once(tmp_path / 'set', generator='t', version=1, settings={'seed': 0, 'n': (2, 3)},
                      write=_writer(calls))
    assert root == tmp_path / 'set' and (root / 'sub' / 'data.txt').read_text() == 'payload'
    assert read_marker(root) == {'generator': 't', 'version': 1, 'settings': {'seed': 0, 'n': [2, 3]}}
    assert calls[0].parent == tmp_path and calls[0].name.startswith('.set.tmp-')  # a temporary sibling
    mtime = (root / 'sub' / 'data.txt').stat().st_mtime_ns
    build_once(root, generator='t', version=1, settings={'seed': 0, 'n': (2, 3)}, write=_writer(calls))
    assert len(calls) == 1 and (root / 'sub' / 'data.txt').stat().st_mtime_ns == mtime
    assert _siblings(root) == ['set']


def test_a_writer_that_raises_leaves_nothing(tmp_path):
    def broken(out: Path) -> None:
        (out / 'half.txt').write_text('half')
        raise RuntimeError('generator bug')

    with pytest.raises(RuntimeError, match='generator bug'):
        build_once(tmp_path / 'set', generator='t', version=1, settings={}, write=broken)
    assert _siblings(tmp_path / 'set') == []
    # a failed rebuild keeps the complete older set as it was
    build_once(tmp_path / 'set', generator='t', version=1, settings={}, write=_writer([], 'v1'))
    with pytest.raises(RuntimeError):
        build_once(tmp_path / 'set', generator='t', version=2, settings={}, write=broken)
    assert (tmp_path / 'set' / 'sub' / 'data.txt').read_text() == 'v1'
    assert read_marker(tmp_path / 'set')['version'] == 1 and _siblings(tmp_path / 'set') == ['set']


def test_version_bump_and_other_settings_rebuild(tmp_path):
    root = tmp_path / 'set'
    calls = []
    build_once(root, generator='t', version=1, settings={'seed': 0}, write=_writer(calls, 'v1'))
    build_once(root, generator='t', version=2, settings={'seed': 0}, write=_writer(calls, 'v2'))
    assert len(calls) == 2 and (root / 'sub' / 'data.txt').read_text() == 'v2'
    assert read_marker(root)['version'] == 2
    build_once(root, generator='t', version=2, settings={'seed': 1}, write=_writer(calls, 'seed1'))
    assert len(calls) == 3 and (root / 'sub' / 'data.txt').read_text() == 'seed1'
    assert _siblings(root) == ['set']  # the replaced set was deleted


def test_sets_of_older_formats_are_rebuilt_foreign_folders_refused(tmp_path):
    old = tmp_path / 'old'
    old.mkdir()
    (old / '.complete').write_text('seed=0\n')  # the marker the generators wrote before build_once
    (old / 'stale.png').write_text('x')
    build_once(old, generator='t', version=1, settings={}, write=_writer([]))
    assert not (old / 'stale.png').exists() and read_marker(old) is not None
    legacy = tmp_path / 'legacy'
    legacy.mkdir()
    (legacy / 'weather_synthetic.csv').write_text('date,a\n')
    build_once(legacy, generator='t', version=1, settings={}, write=_writer([]), legacy=('weather_synthetic.csv',))
    assert not (legacy / 'weather_synthetic.csv').exists()
    empty = tmp_path / 'empty'
    empty.mkdir()
    build_once(empty, generator='t', version=1, settings={}, write=_writer([]))
    assert (empty / MARKER).is_file()

    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'thesis.tex').write_text('precious')
    with pytest.raises(NotABuiltinSetError, match=f'{mine} exists and is not a built-in'):
        build_once(mine, generator='t', version=1, settings={}, write=_writer([]))
    assert (mine / 'thesis.tex').read_text() == 'precious' and sorted(os.listdir(mine)) == ['thesis.tex']
    (tmp_path / 'afile').write_text('x')
    with pytest.raises(NotABuiltinSetError, match='not a folder'):
        build_once(tmp_path / 'afile', generator='t', version=1, settings={}, write=_writer([]))


def test_unwritable_folder_is_a_clear_error(tmp_path):
    (tmp_path / 'blocker').write_text('a file where a folder should be')
    target = tmp_path / 'blocker' / 'cache' / 'set'
    with pytest.raises(OSError, match=f'cannot write the built-in t data set to {target}.*cache_dir'):
        build_once(target, generator='t', version=1, settings={}, write=_writer([]))


def _script(body: str) -> str:
    # builtin.py needs only the standard library and filelock: load the file alone (no torch import, fast start)
    return textwrap.dedent(f'''
        import importlib.util, os, sys, time
        from pathlib import Path
        spec = importlib.util.spec_from_file_location('builtin', {str(REPO / 'unimodal' / 'data' / 'builtin.py')!r})
        builtin = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(builtin)
        build_once = builtin.build_once
        root, log, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
        while not go.exists():
            time.sleep(0.01)
    ''') + textwrap.dedent(body)


def _spawn(script: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-c', script, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_processes_building_at_once_end_with_one_good_copy(tmp_path):
    script = _script('''
        def write(out):
            with open(log, 'a') as f:
                f.write(f'{os.getpid()}\\n')
            for i in range(20):
                (out / f'part{i}.txt').write_text(str(i) * 1000)
                time.sleep(0.02)
        build_once(root, generator='t', version=1, settings={}, write=write)
        expected = sorted([f'part{i}.txt' for i in range(20)] + ['.unimodal_builtin.json'])
        print(sorted(p.name for p in root.iterdir()) == expected)
    ''')
    root, log, go = tmp_path / 'set', tmp_path / 'writers.log', tmp_path / 'go'
    procs = [_spawn(script, root, log, go) for _ in range(2)]
    time.sleep(0.5)
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert [o[0].strip() for o in outs] == ['True', 'True']  # each sees the complete set
    assert len(log.read_text().split()) == 1  # generated once
    assert read_marker(root) is not None and _siblings(root) == ['go', 'set', 'writers.log']


def test_temp_folder_of_a_killed_writer_is_removed_by_the_next_call(tmp_path):
    script = _script('''
        def write(out):
            (out / 'half.txt').write_text('half')
            log.write_text(str(out))
            time.sleep(600)
        build_once(root, generator='t', version=1, settings={}, write=write)
    ''')
    root, log, go = tmp_path / 'set', tmp_path / 'tmpdir.txt', tmp_path / 'go'
    go.touch()
    proc = _spawn(script, root, log, go)
    deadline = time.time() + 120
    while not log.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert log.exists(), proc.communicate()[1][-2000:]
    tmp = Path(log.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert tmp.is_dir() and (tmp / 'half.txt').is_file() and not root.exists()
    calls = []
    build_once(root, generator='t', version=1, settings={}, write=_writer(calls))  # the lock died with it
    assert len(calls) == 1 and not tmp.exists() and read_marker(root) is not None
    # a leftover next to a complete set is removed too (without rebuilding the set)
    (tmp_path / '.set.tmp-dead').mkdir()
    (tmp_path / '.set.old-dead').mkdir()
    build_once(root, generator='t', version=1, settings={}, write=_writer(calls))
    assert len(calls) == 1 and _siblings(root) == ['go', 'set', 'tmpdir.txt']


def test_every_builtin_generator_writes_through_build_once(tmp_path):
    from unimodal.data.images import make_builtin_images
    from unimodal.data.kinetics import make_builtin_kinetics
    from unimodal.data.modelnet import make_builtin_modelnet
    from unimodal.data.speech_commands import make_builtin_speech
    from unimodal.data.timeseries import make_builtin_weather
    roots = {
        'modelnet': make_builtin_modelnet(tmp_path / 'point', per_class=(1, 1)),
        'image': make_builtin_images(tmp_path / 'image', per_class=(1, 1, 1), size=8),
        'weather': make_builtin_weather(tmp_path / 'weather', num_hours=48, num_stations=2).parent,
        'speech': make_builtin_speech(tmp_path / 'speech', speakers=(1, 1, 1)),
    }
    if importlib.util.find_spec('av') is not None:  # the video extra
        roots['video'] = make_builtin_kinetics(tmp_path / 'video', per_class=(1, 1, 1), frames=4, size=16)
    for generator, root in roots.items():
        marker = read_marker(root)
        assert marker is not None and marker['generator'] == generator, root
    assert not [p for p in tmp_path.iterdir() if '.tmp-' in p.name or '.old-' in p.name]
