"""Speech Commands reader (official layout, variants, bad input) and the built-in synthetic data set."""
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from unimodal.data.errors import DataError
from unimodal.data.speech_commands import (
    SILENCE, UNKNOWN, V12_WORDS, SpeechCommands, file_digest, make_builtin_speech)
from unimodal.tasks import get_task
from unimodal.tasks.audio import AudioTask

SR = 16000


def _wav(path: Path, seconds=1.0, sr=SR, channels=1, seed=0, subtype='PCM_16'):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    data = (0.1 * rng.standard_normal((n, channels))).astype(np.float32)
    sf.write(str(path), data if channels > 1 else data[:, 0], sr, subtype=subtype)
    return data


def _layout(root: Path, words=('yes', 'no', 'cat', 'dog'), per_word=4, noise=True):
    """A miniature official layout: clip 0 of each word is validation, clip 1 test, the rest train."""
    val, test = [], []
    for wi, w in enumerate(words):
        for k in range(per_word):
            rel = f'{w}/spk{k:02d}_nohash_0.wav'
            _wav(root / rel, seconds=0.6 + 0.1 * k, seed=wi * 10 + k)
            (val if k == 0 else test if k == 1 else []).append(rel)
    (root / 'validation_list.txt').write_text('\n'.join(val) + '\n')
    (root / 'testing_list.txt').write_text('\n'.join(test) + '\n')
    if noise:
        _wav(root / '_background_noise_' / 'white.wav', seconds=5.0, seed=99)
        (root / '_background_noise_' / 'README.md').write_text('noise\n')
    (root / 'LICENSE').write_text('x')
    return root


# ---- layout and splits --------------------------------------------------------------------------------------
def test_split_logic_35(tmp_path):
    root = _layout(tmp_path)
    sets = {s: SpeechCommands(root, split=s) for s in ('train', 'val', 'test')}
    assert sets['train'].classes == ['cat', 'dog', 'no', 'yes']  # _background_noise_ is not a class
    assert [len(sets[s]) for s in ('train', 'val', 'test')] == [8, 4, 4]
    names = {s: {it.path.relative_to(root).as_posix() for it in d.samples} for s, d in sets.items()}
    assert not names['train'] & names['val'] and not names['train'] & names['test']
    assert names['val'] == set((root / 'validation_list.txt').read_text().split())
    x, y = sets['train'][0]
    assert x.shape == (SR,) and x.dtype == torch.float32 and isinstance(y, int)
    assert sets['train'].classes[y] == sets['train'].samples[0].path.parent.name
    # clip of 0.8 s is zero padded to 1 s, keeping the audio at the start
    it = next(i for i, s in enumerate(sets['train'].samples) if s.path.name.startswith('spk03'))
    wav = sets['train'][it][0]
    ref, _ = sf.read(str(sets['train'].samples[it].path), dtype='float32')
    np.testing.assert_allclose(wav[:len(ref)].numpy(), ref, atol=1e-6)
    assert (wav[len(ref):] == 0).all()


def test_variant_12_unknown_and_silence(tmp_path):
    root = _layout(tmp_path)
    train = SpeechCommands(root, split='train', variant=12)
    assert train.classes == list(V12_WORDS) + [UNKNOWN, SILENCE]
    counts = np.bincount(train.targets, minlength=12)
    assert counts[train.classes.index('yes')] == 2 and counts[train.classes.index('no')] == 2
    assert counts[train.classes.index(UNKNOWN)] == 4                  # cat + dog
    assert counts[train.classes.index(SILENCE)] == 1                  # 10 % of 8 clips, at least 1
    sil = [i for i, t in enumerate(train.targets) if t == train.classes.index(SILENCE)][0]
    x, _ = train[sil]
    assert x.shape == (SR,) and x.abs().max() > 0
    torch.testing.assert_close(train[sil][0], x)                       # deterministic
    # silence windows come from disjoint parts of the noise file per split
    test = SpeechCommands(root, split='test', variant=12, silence_fraction=1.0)
    n_frames = sf.info(str(root / '_background_noise_' / 'white.wav')).frames
    for it in (s for s in test.samples if s.silence):
        assert it.offset >= 0.9 * n_frames - 1
    for it in (s for s in train.samples if s.silence):
        assert it.offset + SR <= 0.8 * n_frames


def test_class_list_rejects_unknown_folder(tmp_path):
    root = _layout(tmp_path)
    ds = SpeechCommands(root, split='val', classes=['yes', 'no', 'cat', 'dog'])
    assert ds.classes == ['yes', 'no', 'cat', 'dog'] and sorted(set(ds.targets)) == [0, 1, 2, 3]
    with pytest.raises(DataError, match="'dog' is not in the class list") as exc:
        SpeechCommands(root, split='train', classes=['yes', 'no', 'cat'])
    assert 'dog/' in str(exc.value)
    ds = SpeechCommands(root, split='train', classes=['yes', 'no', 'cat'], skip_bad=True)
    assert len(ds) == 6 and ds.skip_report.count == 2
    assert all('dog/' in s['path'] for s in ds.skip_report.skipped)


def test_missing_root_and_lists_explain_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match='validation_list.txt'):
        SpeechCommands(tmp_path / 'nope')
    root = _layout(tmp_path / 'a')
    (root / 'testing_list.txt').unlink()
    with pytest.raises(FileNotFoundError, match='testing_list.txt'):
        SpeechCommands(root, split='train')


# ---- bad input ------------------------------------------------------------------------------------------------
def _truncate(p: Path):
    b = p.read_bytes()
    p.write_bytes(b[:len(b) // 3])


def _zero_bytes(p: Path):
    p.write_bytes(b'')


def _zero_frames(p: Path):
    sf.write(str(p), np.zeros(0, np.float32), SR, subtype='PCM_16')


def _garbage(p: Path):
    p.write_bytes(b'this is not audio' * 50)


@pytest.mark.parametrize('damage, problem', [
    (_truncate, 'truncated WAV'),
    (_zero_bytes, 'zero-length'),
    (_zero_frames, 'zero-length'),
    (_garbage, 'unreadable'),
])
def test_bad_files_raise_or_skip(tmp_path, damage, problem):
    root = _layout(tmp_path)
    bad = root / 'cat' / 'spk02_nohash_0.wav'  # a training clip
    damage(bad)
    with pytest.raises(DataError, match=problem) as exc:
        SpeechCommands(root, split='train')
    assert exc.value.path == str(bad) and str(bad) in str(exc.value)
    ds = SpeechCommands(root, split='train', skip_bad=True)
    assert len(ds) == 7
    rep = ds.skip_report.as_dict()
    assert rep['skipped'] == 1 and rep['listed'] == 8 and rep['used'] == 7
    assert rep['skipped_files'][0]['path'] == str(bad) and problem in rep['skipped_files'][0]['problem']
    assert all(x.shape == (SR,) for x, _ in (ds[i] for i in range(len(ds))))
    # the other splits do not contain the file and are unaffected
    assert len(SpeechCommands(root, split='val')) == 4


def test_list_naming_missing_file(tmp_path):
    root = _layout(tmp_path)
    with (root / 'testing_list.txt').open('a') as f:
        f.write('yes/ghost_nohash_0.wav\n')
    with pytest.raises(DataError, match='testing_list.txt') as exc:
        SpeechCommands(root, split='test')
    assert 'ghost_nohash_0.wav' in str(exc.value) and 'does not exist' in str(exc.value)
    ds = SpeechCommands(root, split='test', skip_bad=True)
    assert len(ds) == 4 and ds.skip_report.count == 1
    assert len(SpeechCommands(root, split='train')) == 8  # train only excludes listed files


def test_file_damaged_after_validation(tmp_path):
    root = _layout(tmp_path)
    ds = SpeechCommands(root, split='val')
    _truncate(ds.samples[1].path)  # cut after the header was validated: decoding comes up short
    with pytest.raises(DataError, match='truncated') as exc:
        ds[1]
    assert str(ds.samples[1].path) in str(exc.value)


# ---- formats that are not errors -------------------------------------------------------------------------
def test_8khz_resampled_and_stereo_mixed_down(tmp_path, caplog):
    root = _layout(tmp_path)
    p8 = root / 'yes' / 'spk10_nohash_0.wav'
    p8.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(8000) / 8000
    sf.write(str(p8), (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000, subtype='PCM_16')
    pst = root / 'no' / 'spk11_nohash_0.flac'
    _wav(pst, seconds=1.0, channels=2, seed=6)
    with caplog.at_level(logging.WARNING, logger='unimodal.data.speech_commands'):
        ds = SpeechCommands(root, split='train')
    assert sum('resampled to 16000' in r.getMessage() for r in caplog.records) == 1  # logged once
    names = [s.path.name for s in ds.samples]
    x8, _ = ds[names.index(p8.name)]
    assert x8.shape == (SR,)
    spec = torch.fft.rfft(x8).abs()
    assert abs(spec.argmax().item() - 440) <= 2  # still a 440 Hz tone after resampling (1 Hz bins)
    xs, _ = ds[names.index(pst.name)]
    stereo16, _ = sf.read(str(pst), dtype='float32')
    np.testing.assert_allclose(xs.numpy(), stereo16.mean(1), atol=1e-6)


# ---- index cache, NaN audio, list files, odd sample rates --------------------------------------------------
def test_index_is_cached_and_a_second_run_opens_no_clip(tmp_path, monkeypatch):
    from unimodal.data import speech_commands as sc
    root = _layout(tmp_path / 'data')
    cache = tmp_path / 'cache'
    first = SpeechCommands(root, split='train', cache_dir=cache)
    assert len(list((cache / 'speech_commands').glob('train-*.npz'))) == 1
    assert not [p for p in root.rglob('*') if 'cache' in p.name]  # nothing written into the data folder

    def no_open(path):
        raise AssertionError(f'{path} opened on a cached start')

    monkeypatch.setattr(sc, 'read_audio_header', no_open)
    second = SpeechCommands(root, split='train', cache_dir=cache)
    assert list(second.samples) == list(first.samples) and second.targets == first.targets
    torch.testing.assert_close(second[3][0], first[3][0])
    # a new clip changes its folder: the index is rebuilt and holds it
    monkeypatch.undo()
    _wav(root / 'cat' / 'spk09_nohash_0.wav', seed=5)
    assert len(SpeechCommands(root, split='train', cache_dir=cache)) == len(first) + 1
    # a clip damaged in place leaves its folder's stamp as it was: the cached index is used and the damage is
    # found when the clip is read
    bad = root / 'dog' / 'spk02_nohash_0.wav'
    _truncate(bad)
    ds = SpeechCommands(root, split='train', cache_dir=cache)
    with pytest.raises(DataError, match='truncated audio'):
        ds[[s.path for s in ds.samples].index(bad)]
    # once the index is rebuilt the bad file is part of it: cached starts fail (or skip) on it up front
    os.utime(bad.parent)
    for _ in range(2):
        with pytest.raises(DataError, match='truncated WAV'):
            SpeechCommands(root, split='train', cache_dir=cache)
    assert SpeechCommands(root, split='train', cache_dir=cache, skip_bad=True).skip_report.count == 1


@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_float_wav_with_nan_samples_names_the_file_or_is_skipped(tmp_path, bad):
    root = _layout(tmp_path)
    path = root / 'cat' / 'spk02_nohash_0.wav'
    data = _wav(path, seconds=0.5, seed=1, subtype='FLOAT')
    data[100] = bad
    sf.write(str(path), data[:, 0], SR, subtype='FLOAT')
    ds = SpeechCommands(root, split='train')
    index = [s.path for s in ds.samples].index(path)
    msg = r'spk02_nohash_0\.wav: 1 of 8000 samples are NaN or inf \(first at frame 100\)'
    with pytest.raises(DataError, match=msg):
        ds[index]
    ds = SpeechCommands(root, split='train', skip_bad=True)
    x, _ = ds[index]  # the next clip is served, the file is reported
    assert torch.isfinite(x).all()
    rep = ds.skip_report.as_dict()
    assert rep['skipped'] == 1 and rep['skipped_files'][0]['path'] == str(path)
    assert rep['by_reason'] == {'non-finite': 1}


def test_list_file_that_is_not_utf8_names_file_and_line(tmp_path):
    root = _layout(tmp_path)
    (root / 'testing_list.txt').write_bytes(b'yes/spk01_nohash_0.wav\nno/caf\xe9_nohash_0.wav\n')
    for split in ('test', 'train'):
        with pytest.raises(DataError, match=r'testing_list\.txt: line 2 is not UTF-8 text'):
            SpeechCommands(root, split=split)


def test_missing_validation_file_under_skip_bad_is_counted(tmp_path):
    root = _layout(tmp_path)
    with (root / 'validation_list.txt').open('a') as f:
        f.write('yes/ghost_nohash_0.wav\n')
    rep = SpeechCommands(root, split='val', skip_bad=True).skip_report.as_dict()
    assert (rep['listed'], rep['skipped'], rep['used']) == (5, 1, 4) and rep['by_reason'] == {'missing': 1}
    assert rep['skipped_files'][0]['problem'] == 'listed in validation_list.txt (line 5) but does not exist'


def test_a_16001_hz_header_costs_what_16000_costs(tmp_path, monkeypatch):
    import torchaudio.functional as AF

    from unimodal.data import audio_io
    root = _layout(tmp_path)
    path = root / 'yes' / 'spk09_nohash_0.wav'
    t = np.arange(16001) / 16001
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16001, subtype='PCM_16')
    ds = SpeechCommands(root, split='train')
    x, _ = ds[[s.path for s in ds.samples].index(path)]
    assert x.shape == (SR,) and abs(torch.fft.rfft(x).abs().argmax().item() - 440) <= 2
    # the resampling kernel's size follows the ratio's terms: they stay small for any pair of rates
    seen = []
    monkeypatch.setattr(AF, 'resample', lambda w, a, b: seen.append((a, b)) or w)
    for orig in (16001, 44100, 22050, 8000, 48000, 44101, 96001, 7919):
        audio_io.resample(torch.zeros(100), orig, 16000)
    assert seen[:4] == [(441, 160), (441, 320), (1, 2), (3, 1)]  # exact for the usual rates
    assert all(max(a, b) <= 2 * audio_io.MAX_RATIO_TERM for a, b in seen)
    assert len(seen) == 7  # 16001 Hz is within 1/1000 of 16000: no resampling at all


def test_resampling_a_16001_hz_clip_keeps_memory_bounded(tmp_path):
    import subprocess
    import sys
    code = (
        'import resource, torch\n'
        'from unimodal.data.audio_io import resample\n'
        'x = torch.randn(16001)\n'
        'before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n'
        'for orig in (16001, 44101, 96001):\n'
        '    resample(x, orig, 16000)\n'
        'print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) < 100  # MB of peak growth (torchaudio at 16001/16000 itself: ~1-4 GB)


# ---- built-in data set ----------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def builtin(builtin_cache):
    # the session's built-in cache (conftest), shared with the engine/CLI tests that train on it
    return AudioTask().make_builtin(builtin_cache)


def test_builtin_layout_readable(builtin):
    assert (builtin / 'validation_list.txt').is_file() and (builtin / 'testing_list.txt').is_file()
    assert any((builtin / '_background_noise_').glob('*.wav'))
    info = sf.info(str(next((builtin / 'ai').glob('*.wav'))))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (SR, 1, 'PCM_16', SR)
    sets = {s: SpeechCommands(builtin, split=s) for s in ('train', 'val', 'test')}
    assert len(sets['train'].classes) == 8
    for s, per_class in (('train', 50), ('val', 10), ('test', 10)):
        assert np.bincount(sets[s].targets).tolist() == [per_class] * 8
    speakers = {s: {it.path.name.split('_')[0] for it in d.samples} for s, d in sets.items()}
    assert not speakers['train'] & speakers['test'] and not speakers['val'] & speakers['test']  # unseen speakers
    x, _ = sets['test'][0]
    assert x.shape == (SR,) and 0.01 < x.abs().max() <= 1
    assert len(SpeechCommands(builtin, split='train', variant=12).classes) == 12


def test_builtin_deterministic_and_reused(tmp_path):
    small = dict(speakers=(2, 1, 1))
    first = make_builtin_speech(tmp_path / 'a', seed=0, **small)
    again = make_builtin_speech(tmp_path / 'b', seed=0, **small)
    assert file_digest(again) == file_digest(first)  # same seed, same bytes
    assert file_digest(make_builtin_speech(tmp_path / 'c', seed=1, **small)) != file_digest(first)
    assert len(SpeechCommands(first, split='test')) == 16  # 1 speaker x 8 words x 2 clips
    # a complete set is reused, not regenerated
    stamp = (again / 'ai').stat().st_mtime_ns
    assert make_builtin_speech(tmp_path / 'b', seed=0, **small) == tmp_path / 'b'
    assert (again / 'ai').stat().st_mtime_ns == stamp
    # a set from other settings is replaced atomically
    make_builtin_speech(tmp_path / 'b', seed=1, **small)
    assert file_digest(tmp_path / 'b') == file_digest(tmp_path / 'c')
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.') and not p.name.endswith('.lock')]  # no temp
    (tmp_path / 'foreign').mkdir()
    (tmp_path / 'foreign' / 'notes.txt').write_text('not ours')  # an empty folder would be used
    with pytest.raises(FileExistsError):
        make_builtin_speech(tmp_path / 'foreign', **small)


# ---- task -------------------------------------------------------------------------------------------------------
def test_task_builds_readers_and_model_kwargs(builtin, caplog):
    from unimodal.config import load_config_file, resolve_run_config

    task = get_task('audio')
    assert isinstance(task, AudioTask) and task.adapter == 'audio' and task.kind == 'classification'
    assert 'speech_commands_v0.02.tar.gz' in task.real_data and 'validation_list.txt' in task.real_data
    paper = resolve_run_config(load_config_file('audio_speechcommands35'))  # the published recipe: one copy
    train = paper.train
    assert (train.schedule, train.step_start, train.gamma, train.loss) == ('step', 5, 0.85, 'bce')
    cfg = resolve_run_config({'task': 'audio'})
    sets = task.build_datasets(builtin, cfg.data.options, splits=['train', 'test'])
    assert set(sets) == {'train', 'test'}
    assert task.model_kwargs(cfg.task_settings('audio'), sets['train']) == {'num_classes': 8}
    # a band-gain warm-up longer than the run is said (the gain would never reach eq_gain_db)
    short = resolve_run_config({'task': 'audio', 'train': {'epochs': 2}})
    def warnings_for(settings):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger='unimodal.tasks.audio'):
            task.model_kwargs(settings, sets['train'])
        return [r.getMessage() for r in caplog.records if r.name == 'unimodal.tasks.audio']

    assert warnings_for(cfg.task_settings('audio')) == []
    assert any('eq_warmup_epochs 3) is longer than the run (train.epochs 2)' in m
               for m in warnings_for(short.task_settings('audio')))
    sets12 = task.build_datasets(builtin, {'variant': 12}, skip_bad=True, splits=['val'])
    assert sets12['val'].classes[-2:] == [UNKNOWN, SILENCE] and sets12['val'].skip_bad
    with pytest.raises(TypeError):
        task.build_datasets(builtin, {'varient': 12})  # unknown reader options are errors


# ---- published input: real lengths and per-sample mixup ---------------------------------------------------------
def _one_clip_per_word(root: Path, words=30):
    """Every training clip is its own class (the label names the clip), with a DC offset and its own length."""
    for i in range(words):
        path = root / f'w{i:02d}' / 'a_nohash_0.wav'
        path.parent.mkdir(parents=True)
        clip = 0.05 + 0.1 * np.random.default_rng(i).standard_normal(int((0.5 + 0.01 * i) * SR))
        sf.write(str(path), clip.astype(np.float32), SR, subtype='FLOAT')
    for name in ('v', 't'):
        _wav(root / 'w00' / f'{name}_nohash_0.wav', seconds=0.7, seed=90)
    (root / 'validation_list.txt').write_text('w00/v_nohash_0.wav\n')
    (root / 'testing_list.txt').write_text('w00/t_nohash_0.wav\n')
    return root


def test_return_length_gives_the_published_adapter_input(tmp_path):
    import torchaudio
    from unimodal.modalities.audio import AudioAdapter
    root = _layout(tmp_path)
    ds = SpeechCommands(root, split='train', return_length=True)
    (wav, length), label = ds[0]
    real = sf.read(str(ds.samples[0].path), dtype='float32')[0]
    assert wav.shape == (SR,) and length.dtype == torch.int64 and int(length) == len(real) == 12800
    assert torch.equal(wav[:len(real)], torch.from_numpy(real)) and not wav[len(real):].any()
    got = AudioAdapter(mode='paper').eval()((wav[None], length[None]))[0][0, 0]
    ref = torchaudio.compliance.kaldi.fbank(
        torch.from_numpy(real - real.mean())[None], htk_compat=True, sample_frequency=SR, use_energy=False,
        window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10)
    ref = (torch.nn.functional.pad(ref, (0, 0, 0, 128 - ref.shape[0])) + 6.845978) / (2 * 5.5654526)
    torch.testing.assert_close(got, ref.T, rtol=1e-5, atol=1e-5)


def test_mix_waveforms_pads_or_cuts_the_partner_and_recentres():
    from unimodal.data.speech_commands import mix_waveforms
    a, short, long = torch.arange(6.), torch.tensor([1., 3.]), torch.arange(10.)
    m = mix_waveforms(a, short, 0.75)
    expected = 0.75 * (a - a.mean()) + 0.25 * torch.tensor([-1., 1., 0, 0, 0, 0])
    torch.testing.assert_close(m, expected - expected.mean())
    cut = (long - long.mean())[:6]  # the partner is centred over its own samples, then cut to the clip's length
    expected = 0.5 * (a - a.mean()) + 0.5 * cut
    torch.testing.assert_close(mix_waveforms(a, long, 0.5), expected - expected.mean())


def test_per_sample_mixup_statistics_as_published(tmp_path):
    """Each clip mixed with p 0.6, its own lambda ~ Beta(10, 10), partner uniform over the whole split (itself
    included), soft targets summing to 1; evaluation splits are never mixed."""
    root = _one_clip_per_word(tmp_path)
    ds = SpeechCommands(root, split='train', return_length=True, mixup={'prob': 0.6, 'alpha': 10})
    n = len(ds)
    assert n == 30 and ds.soft_targets
    clips = [torch.from_numpy(sf.read(str(it.path), dtype='float32')[0]) for it in ds.samples]
    np.random.seed(0)
    draws, mixed, lams, partners = 2400, 0, [], torch.zeros(n)
    from unimodal.data.speech_commands import mix_waveforms
    for k in range(draws):
        i = k % n
        (wav, length), target = ds[i]
        assert target.dtype == torch.float32 and target.shape == (n,)
        assert abs(float(target.sum()) - 1) < 1e-6 and int(length) == len(clips[i])  # the clip's own length
        if abs(float(wav[:len(clips[i])].mean())) > 1e-3:  # not mixed: the raw clip (DC offset kept)
            assert torch.equal(wav[:len(clips[i])], clips[i]) and float(target[i]) == 1
            continue
        mixed += 1
        if float(target[i]) == 1:  # mixed with itself
            partners[i] += 1
            continue
        lam, j = float(target[i]), next(c for c in target.nonzero().flatten().tolist() if c != i)
        partners[j] += 1
        lams.append(lam)
        if len(lams) <= 50:
            torch.testing.assert_close(wav[:len(clips[i])], mix_waveforms(clips[i], clips[j], lam), atol=1e-6, rtol=0)
    assert abs(mixed / draws - 0.6) < 0.03
    lams = torch.tensor(lams)
    assert abs(float(lams.mean()) - 0.5) < 0.01 and abs(float(lams.var()) - 1 / 84) < 0.0015  # Beta(10, 10)
    assert partners.min() >= 20 and partners.max() <= 80  # ~48 each: the whole split, the clip itself included
    with pytest.raises(ValueError, match='train split only'):
        SpeechCommands(root, split='val', mixup={'prob': 0.6, 'alpha': 10})
    for bad in ({'prob': 1.5, 'alpha': 10}, {'prob': 0.6}, {'prob': 0.6, 'alpha': 0}, [0.6, 10]):
        with pytest.raises(ValueError, match='mixup'):
            SpeechCommands(root, split='train', mixup=bad)
    # the task gives mixup to the training reader only
    sets = get_task('audio').build_datasets(root, {'mixup': {'prob': 1.0, 'alpha': 10}}, splits=['train', 'val'])
    assert sets['train'].soft_targets and not sets['val'].soft_targets
    assert isinstance(sets['val'][0][1], int)


def test_recipe_audio_input_and_mixup_are_published():
    from unimodal.config import load_config_file, resolve_run_config
    cfg = resolve_run_config(load_config_file('audio_speechcommands35'))
    assert cfg.data.options['return_length'] is True and cfg.model.adapter['mode'] == 'paper'
    assert cfg.data.options['mixup'] == {'prob': 0.6, 'alpha': 10.0}
    assert cfg.train.mixup == 0 and cfg.train.cutmix == 0  # the reader mixes: no second, batch-level mixup
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.train.lr, cfg.train.weight_decay) == (128, 100, 2.5e-4, 5e-7)
    assert (cfg.train.optimizer, list(cfg.train.betas), cfg.train.loss) == ('adam', [0.95, 0.999], 'bce')
    assert (cfg.model.variant, cfg.model.drop_path_rate) == ('unireplknet_s', 0.4)
    assert (cfg.model.adapter['freq_mask'], cfg.model.adapter['time_mask']) == (48, 48)
    assert cfg.eval.checkpoint == 'best'  # published: best on the validation list, then the test list


def test_training_with_reader_mixup_soft_targets(tmp_path, run_cli):
    mix = ['--set', 'data.options.mixup.prob=0.6', '--set', 'data.options.mixup.alpha=10']
    fast = ['--epochs', '1', '--batch-size', '4', '--set', 'train.max_steps_per_epoch=2', '--set',
            'data.limit_eval=8', '--no-progress']
    code, _, err = run_cli('train', '--task', 'audio', *fast, *mix, '--out', tmp_path / 'r')  # float targets
    assert code == 0, err
    code, _, err = run_cli('train', '--task', 'audio', *fast, *mix, '--set', 'train.mixup=0.8',
                           '--set', 'data.options.return_length=false', '--out', tmp_path / 'twice')
    assert code == 2 and 'one mixup per purpose' in err


def test_soft_targets_from_the_data_in_the_loss():
    from unimodal.tasks.kinds import get_kind
    from unimodal.tasks.spec import TaskSpec
    kind = get_kind('classification')
    out = torch.randn(3, 4)
    soft = torch.tensor([[0.3, 0.7, 0, 0], [0, 0, 1., 0], [0.5, 0, 0, 0.5]])
    for loss, ref in (('ce', -(soft * out.log_softmax(-1)).sum(-1).mean()),
                      ('bce', torch.nn.functional.binary_cross_entropy_with_logits(out, soft))):
        spec = TaskSpec(name='a', kind='classification', adapter='audio', loss=loss)
        torch.testing.assert_close(kind.train_loss(spec, out, soft, None, 0.0), ref)
    smoothed = soft * 0.9 + 0.1 / 4
    torch.testing.assert_close(kind.train_loss(spec, out, soft, None, 0.1),
                               torch.nn.functional.binary_cross_entropy_with_logits(out, smoothed))
    with pytest.raises(ValueError, match='soft targets'):
        kind.train_loss(spec, out, soft[:, :3], None, 0.0)
