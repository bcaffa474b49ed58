"""Kinetics reader (path lists and official CSV), clip sampling, bad videos, built-in motion clips, video task."""
import csv
import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from unimodal.data.errors import DataError
from unimodal.data.kinetics import IMAGENET_MEAN, IMAGENET_STD, Kinetics, make_builtin_kinetics

av = pytest.importorskip('av')
decord = pytest.importorskip('decord')


def write_mp4(path, frames, fps=25):
    """Encode (T, H, W, 3) uint8 frames with PyAV (MPEG-4 Part 2)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), 'w') as c:
        s = c.add_stream('mpeg4', rate=fps)
        s.width, s.height, s.pix_fmt, s.bit_rate = frames.shape[2], frames.shape[1], 'yuv420p', 4_000_000
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format='rgb24')):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def grey_ramp(n=24, h=32, w=32):
    """Frame i is uniform grey 8*i (so a decoded value tells the frame index)."""
    return np.broadcast_to((np.arange(n) * 8).astype(np.uint8)[:, None, None, None], (n, h, w, 3)).copy()


def frame_ids(clip):
    """Frame indices of a normalised (3, T, S, S) clip made from grey_ramp frames."""
    grey = clip[0].mean((-1, -2)) * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    return [round(v) for v in (grey * 255 / 8).tolist()]


@pytest.fixture
def list_root(tmp_path):
    write_mp4(tmp_path / 'a.mp4', grey_ramp())
    write_mp4(tmp_path / 'sub dir' / 'b c.mp4', grey_ramp(h=32, w=64))  # a space in the path; wide frames
    (tmp_path / 'classes.txt').write_text('dribbling\njuggling\n')
    (tmp_path / 'train.txt').write_text('a.mp4 0\nsub dir/b c.mp4 1\n')
    return tmp_path


def test_path_list_sampling_shapes_and_frames(list_root):
    kw = dict(num_frames=4, stride=3, image_size=16)
    train = Kinetics(list_root, 'train', flip=True, **kw)
    assert train.classes == ['dribbling', 'juggling'] and train.labels == [0, 1]
    x, y = train[1]
    assert x.shape == (3, 4, 16, 16) and x.dtype == torch.float32 and y == 1
    ids = frame_ids(x)
    assert all(b - a == 3 for a, b in zip(ids, ids[1:])) and 0 <= ids[0] <= 24 - 10  # stride-3 clip inside
    val = Kinetics(list_root, 'val', annotation=list_root / 'train.txt', **kw)
    v, _ = val[0]
    assert v.shape == (3, 4, 16, 16) and frame_ids(v) == [7, 10, 13, 16]  # centre clip: (24 - 10) // 2 = 7
    test = Kinetics(list_root, 'test', annotation=list_root / 'train.txt', num_clips=3, num_crops=2, **kw)
    t, _ = test[1]
    assert test.num_views == 6 and t.shape == (6, 3, 4, 16, 16)
    # clips evenly spaced over the video, crops of each clip adjacent
    assert [frame_ids(t[i])[0] for i in range(6)] == [0, 0, 7, 7, 14, 14]
    # ImageNet normalisation of a uniform grey frame
    torch.testing.assert_close(v[:, 0].mean((-1, -2)), (torch.full((3,), 56 / 255) - torch.tensor(IMAGENET_MEAN))
                               / torch.tensor(IMAGENET_STD), atol=0.03, rtol=0)


def test_rand_augment_and_erasing_treat_the_clip_as_one_image(tmp_path):
    """Published train-time extras: every frame gets the same RandAugment ops and the same erased rectangle, so
    a clip of identical frames stays a clip of identical frames; bad settings are refused."""
    frames = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8).repeat(12, 0)
    write_mp4(tmp_path / 'a.mp4', frames)
    (tmp_path / 'train.txt').write_text('a.mp4 0\n')
    kw = dict(num_frames=4, stride=2, image_size=16, flip=False, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    plain = Kinetics(tmp_path, 'train', **kw)
    aug = Kinetics(tmp_path, 'train', rand_augment='rand-m9-n4-mstd0.5-inc1', erase_prob=1.0, **kw)
    torch.manual_seed(0)
    changed = 0
    for _ in range(6):
        x, _ = aug[0]
        assert x.shape == (3, 4, 16, 16)
        assert all(torch.allclose(x[:, 0], x[:, t], atol=1e-6) for t in range(1, 4))  # frames still identical
        changed += not torch.allclose(x, plain[0][0], atol=1e-3)
    assert changed == 6  # erasing (p = 1) alters every sample
    for bad in ([4, 7], 'm7-n4', 'rand-m7-n4-incx', 'rand-m7-q3', 7):
        with pytest.raises(ValueError, match='rand_augment'):
            Kinetics(tmp_path, 'train', rand_augment=bad, **kw)
    with pytest.raises(ValueError, match='erase_prob'):
        Kinetics(tmp_path, 'train', erase_prob=1.5, **kw)


def test_train_crop_and_flip_are_one_draw_per_clip(tmp_path):
    """torchvision v2's RandomResizedCrop and flip on the (T, C, H, W) clip: one crop and one flip for all frames."""
    frames = np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8).repeat(12, 0)
    write_mp4(tmp_path / 'a.mp4', frames)
    (tmp_path / 'train.txt').write_text('a.mp4 0\n')
    ds = Kinetics(tmp_path, 'train', num_frames=4, stride=2, image_size=16, crop_scale=(0.1, 0.3), flip=True)
    torch.manual_seed(0)
    clips = [ds[0][0] for _ in range(4)]
    for x in clips:
        assert x.shape == (3, 4, 16, 16)
        assert all(torch.allclose(x[:, 0], x[:, t], atol=1e-6) for t in range(1, 4))  # same crop in every frame
    assert not torch.allclose(clips[0], clips[1], atol=1e-2)  # a new crop for every clip


def test_test_crops_span_the_long_side(tmp_path):
    frames = np.zeros((12, 16, 64, 3), np.uint8)  # (decord 0.6 cannot read 48-pixel-wide frames)
    frames[:, :, :16] = 40   # left crop
    frames[:, :, 16:48] = 120
    frames[:, :, 48:] = 200  # right crop
    write_mp4(tmp_path / 'wide.mp4', frames)
    (tmp_path / 'test.txt').write_text('wide.mp4 0\n')
    ds = Kinetics(tmp_path, 'test', num_frames=2, stride=2, image_size=16, num_clips=1, num_crops=3)
    x, _ = ds[0]
    grey = x[:, 0].mean((-1, -2, -3)) * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    assert [round(g * 255 / 40) * 40 for g in grey.tolist()] == [40, 120, 200]


def test_official_csv_layout(tmp_path):
    rows = [('juggling balls', 'abcdefghijk', 10, 20), ('dribbling basketball', 'Zz-_0123456', 0, 10),
            ('juggling balls', 'q1w2e3r4t5y', 3, 13)]
    for label, yid, s, e in rows:  # per-class subfolders under the split folder
        write_mp4(tmp_path / 'train' / label / f'{yid}_{s:06d}_{e:06d}.mp4', grey_ramp(n=12))
    with open(tmp_path / 'train.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['label', 'youtube_id', 'time_start', 'time_end', 'split'])
        w.writerows([(label, yid, s, e, 'train') for label, yid, s, e in rows])
    ds = Kinetics(tmp_path, 'train', num_frames=4, stride=2, image_size=16)
    assert ds.classes == ['dribbling basketball', 'juggling balls']  # sorted label names
    assert ds.labels == [1, 0, 1]
    assert ds.samples[1][0].name == 'Zz-_0123456_000000_000010.mp4'
    assert ds[2][0].shape == (3, 4, 16, 16)
    # a given class list fixes the indices
    ds2 = Kinetics(tmp_path, 'train', classes=['juggling balls', 'dribbling basketball', 'x'],
                   num_frames=4, stride=2, image_size=16)
    assert ds2.labels == [0, 1, 0]


@pytest.fixture
def bad_root(tmp_path):
    write_mp4(tmp_path / 'good0.mp4', grey_ramp(n=12))
    write_mp4(tmp_path / 'good1.mp4', grey_ramp(n=12))
    (tmp_path / 'empty.mp4').write_bytes(b'')
    (tmp_path / 'garbage.mp4').write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / 'classes.txt').write_text('a\nb\n')
    return tmp_path


@pytest.mark.parametrize('line,name,problem', [
    ('empty.mp4 0', 'empty.mp4', '0 bytes'),
    ('missing.mp4 1', 'missing.mp4', 'does not exist'),
    ('good1.mp4 7', 'train.txt:2', 'not in the class list'),
    ('good1.mp4 running', 'train.txt:2', 'not in the class list'),
])
def test_bad_entries_fail_in_init_naming_the_file(bad_root, line, name, problem):
    (bad_root / 'train.txt').write_text(f'good0.mp4 0\n{line}\n')
    with pytest.raises(DataError, match=problem) as err:
        Kinetics(bad_root, 'train', num_frames=4, stride=2, image_size=16)
    assert name in str(err.value)


def test_undecodable_video_fails_naming_the_file(bad_root):
    (bad_root / 'train.txt').write_text('good0.mp4 0\ngarbage.mp4 1\n')
    ds = Kinetics(bad_root, 'train', num_frames=4, stride=2, image_size=16)  # stat-only check by default
    ds[0]
    with pytest.raises(DataError, match='cannot decode') as err:
        ds[1]
    assert 'garbage.mp4' in str(err.value)
    with pytest.raises(DataError, match='garbage.mp4'):
        Kinetics(bad_root, 'train', num_frames=4, stride=2, image_size=16, check_decode=True)


def test_skip_bad_counts_every_skipped_video(bad_root):
    (bad_root / 'train.txt').write_text('good0.mp4 0\nempty.mp4 0\ngarbage.mp4 1\nmissing.mp4 1\n'
                                        'good1.mp4 1\ngood0.mp4 5\n')
    ds = Kinetics(bad_root, 'train', num_frames=4, stride=2, image_size=16, skip_bad=True)
    # missing and empty files and bad lines are found by stat before step 1; decoding is checked when read
    assert len(ds) == 3 and ds.labels == [0, 1, 1] and ds.skip_report.count == 3
    x, y = ds[1]  # garbage.mp4 does not decode: the next video is served and garbage.mp4 reported
    assert x.shape == (3, 4, 16, 16) and y == 1
    rep = ds.skip_report.as_dict()
    assert (rep['listed'], rep['skipped'], rep['used']) == (6, 4, 2)
    assert rep['by_reason'] == {'bad label': 1, 'empty': 1, 'missing': 1, 'undecodable': 1}
    skipped = ' '.join(s['path'] for s in rep['skipped_files'])
    for name in ('empty.mp4', 'garbage.mp4', 'missing.mp4', 'train.txt:6'):
        assert name in skipped
    # check_decode opens every video up front instead
    eager = Kinetics(bad_root, 'train', num_frames=4, stride=2, image_size=16, skip_bad=True, check_decode=True)
    assert len(eager) == 2 and eager.labels == [0, 1] and eager.skip_report.count == 4


def test_skips_found_in_workers_reach_the_report_and_the_summary_stays_small(bad_root, tmp_path):
    lines = ['good0.mp4 0', 'garbage.mp4 1'] + [f'gone{i}.mp4 {i % 2}' for i in range(500)] + ['good1.mp4 1']
    (bad_root / 'train.txt').write_text('\n'.join(lines) + '\n')
    ds = Kinetics(bad_root, 'train', num_frames=4, stride=2, image_size=16, skip_bad=True)
    assert len(ds) == 3
    assert sum(len(y) for _, y in DataLoader(ds, batch_size=1, num_workers=2)) == 3
    rep = ds.skip_report.as_dict()
    assert rep['skipped'] == 501 and rep['by_reason'] == {'missing': 500, 'undecodable': 1}
    assert len(rep['skipped_files']) == 20 and rep['skipped_files_omitted'] == 481
    full = ds.skip_report.write(tmp_path / 'skipped_train.jsonl')
    assert len(full.read_text().splitlines()) == 501 and ds.skip_report.as_dict()['full_list'] == str(full)
    assert len(json.dumps(rep)) < 6000


def test_csv_test_split_does_not_walk_other_splits_and_follows_a_symlinked_val(tmp_path):
    store = tmp_path / 'elsewhere' / 'val_videos'
    write_mp4(store / 'juggling' / 'abcdefghijk_000010_000020.mp4', grey_ramp(n=12))
    root = tmp_path / 'k400'
    (root / 'train' / 'x').mkdir(parents=True)
    (root / 'train' / 'x' / 'qqqqqqqqqqq_000000_000010.mp4').write_bytes(b'not walked')
    (root / 'val').symlink_to(store, target_is_directory=True)
    with open(root / 'val.csv', 'w', newline='') as f:
        csv.writer(f).writerows([['label', 'youtube_id', 'time_start', 'time_end', 'split'],
                                 ['juggling', 'abcdefghijk', 10, 20, 'val']])
    from unimodal.data import kinetics_index
    walked = []
    real_walk = kinetics_index.os.walk
    kinetics_index.os.walk = lambda top, **kw: (walked.append(str(top)), real_walk(top, **kw))[1]
    try:
        for split in ('val', 'test'):  # the test split scored on the validation CSV
            ds = Kinetics(root, split, annotation=root / 'val.csv', num_frames=4, stride=2, image_size=16,
                          num_clips=1, num_crops=1)
            assert len(ds) == 1 and ds.samples[0][0].name == 'abcdefghijk_000010_000020.mp4'
    finally:
        kinetics_index.os.walk = real_walk
    assert walked == [str(root / 'val')]  # one walk (the list is parsed once), never train/


def test_list_file_that_is_not_utf8_names_file_and_line(bad_root):
    (bad_root / 'train.txt').write_bytes(b'good0.mp4 0\ngo\xffod1.mp4 1\n')
    with pytest.raises(DataError, match=r'train\.txt: line 2 is not UTF-8 text'):
        Kinetics(bad_root, 'train', num_frames=4, stride=2, image_size=16, skip_bad=True)


def test_builtin_is_deterministic_and_readable(tmp_path):
    kw = dict(seed=3, per_class=(2, 1, 1), frames=12, size=32)
    a = make_builtin_kinetics(tmp_path / 'a', **kw)
    b = make_builtin_kinetics(tmp_path / 'b', **kw)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith('.lock')) == ['a', 'b']  # no temp folders
    for name in ('classes.txt', 'train.txt', 'val.txt', 'test.txt'):
        assert (a / name).read_text() == (b / name).read_text()
    classes = (a / 'classes.txt').read_text().split()
    assert len(classes) == 8
    lines = (a / 'train.txt').read_text().split('\n')[:-1]
    assert len(lines) == 16 and sorted(int(line.split()[1]) for line in lines) == sorted(list(range(8)) * 2)
    rel = lines[0].split()[0]
    va, vb = decord.VideoReader(str(a / rel)), decord.VideoReader(str(b / rel))
    assert len(va) == 12 and va[0].shape == (32, 32, 3)
    assert np.array_equal(va.get_batch(range(12)).asnumpy(), vb.get_batch(range(12)).asnumpy())
    # a different seed gives different clips; a second call on a complete set writes nothing
    c = make_builtin_kinetics(tmp_path / 'c', **dict(kw, seed=4))
    assert (c / 'train.txt').read_text() != (a / 'train.txt').read_text()
    mtime = (a / rel).stat().st_mtime_ns
    assert make_builtin_kinetics(tmp_path / 'a', **kw) == a and (a / rel).stat().st_mtime_ns == mtime
    # other settings replace the set (the marker records them)
    make_builtin_kinetics(tmp_path / 'a', **dict(kw, seed=4))
    assert (a / 'train.txt').read_text() == (c / 'train.txt').read_text()


def test_builtin_class_is_in_the_motion_not_one_frame(tmp_path):
    from unimodal.data.kinetics import BUILTIN_CLASSES, _synth_clip
    rng = np.random.default_rng(0)
    right, left = BUILTIN_CLASSES.index('moving_right'), BUILTIN_CLASSES.index('moving_left')
    for label, sign in ((right, 1), (left, -1)):
        clip = _synth_clip(rng, label, 20, 48).astype(np.float32)
        # the blob's brightness-weighted x position moves in the class's direction
        diff = np.abs(clip - np.median(clip, axis=0)).sum(-1)
        xs = [(d.sum(0) * np.arange(48)).sum() / d.sum() for d in diff[[0, -1]]]
        assert sign * (xs[1] - xs[0]) > 5


def test_video_task_and_workers(tmp_path):
    from unimodal.tasks import get_task
    task = get_task('video')
    root = make_builtin_kinetics(tmp_path / 'bi', per_class=(1, 1, 1), frames=12, size=32)
    (root / 'test.txt').unlink()
    opts = dict(num_frames=4, stride=2, image_size=32, flip=False, num_clips=2, num_crops=1)
    sets = task.build_datasets(root, opts, splits=['train', 'test'])  # no test list: val is tested
    assert set(sets) == {'train', 'test'} and sets['test'].annotation.name == 'val.txt'
    assert sets['test'][0][0].shape == (2, 3, 4, 32, 32)
    from unimodal.config import TaskModelConfig, TaskSettings
    settings = TaskSettings(model=TaskModelConfig(adapter={'mode': 'channels'}))
    assert task.model_kwargs(settings, sets['train']) == {'num_classes': 8, 'num_frames': 4, 'image_size': 32}
    with pytest.raises(ValueError, match='num_frames'):
        task.model_kwargs(TaskSettings(model=TaskModelConfig(adapter={'num_frames': 16})), sets['train'])
    assert '2 clips x 1 crop,' in task.eval_views(sets['test']) and '8 of 8' in task.eval_views(sets['test'])
    with pytest.raises(TypeError):
        task.build_datasets(root, dict(opts, frames=3), splits=['train'])
    # one decord reader per worker: two worker processes read the whole split
    batches = list(DataLoader(sets['train'], batch_size=4, num_workers=2))
    assert sum(len(y) for _, y in batches) == 8


def test_a_list_serving_val_and_test_is_read_once(tmp_path, monkeypatch):
    from unimodal.data import kinetics_index
    from unimodal.tasks import get_task
    root = make_builtin_kinetics(tmp_path / 'bi', per_class=(1, 1, 1), frames=12, size=32)
    (root / 'test.txt').unlink()
    reads = []
    real = kinetics_index.read_list_lines
    monkeypatch.setattr(kinetics_index, 'read_list_lines', lambda path, *a: reads.append(path.name) or real(path, *a))
    sets = get_task('video').build_datasets(root, dict(num_frames=4, stride=2, image_size=32, flip=False),
                                            splits=['val', 'test'])
    assert len(sets['val']) == len(sets['test']) == 8
    assert reads.count('val.txt') == 1


# ---- published augmentation: timm RandAugment per clip, repeated augmentation -------------------------------------
def _textured(n=5, size=24, seed=0):
    """Distinct frames with structure (gradients + noise), so geometric and colour ops all show."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 255 / size, yy * 255 / size, (xx + yy) * 127 / size], -1)
    return np.stack([np.clip(base + rng.normal(0, 30, base.shape) + 10 * t, 0, 255) for t in range(n)]).astype(np.uint8)


def test_clip_rand_augment_is_timm_at_the_published_strength():
    from timm.data.auto_augment import _RAND_INCREASING_TRANSFORMS
    from unimodal.data.clip_augment import PUBLISHED_VIDEO_RAND_AUGMENT, ClipRandAugment
    ra = ClipRandAugment(PUBLISHED_VIDEO_RAND_AUGMENT, 224).transform
    assert ra.num_layers == 4 and [op.name for op in ra.ops] == list(_RAND_INCREASING_TRANSFORMS)
    assert all((op.magnitude, op.magnitude_std, op.prob) == (7, 0.5, 0.5) for op in ra.ops)
    ops = {op.name: op for op in ra.ops}
    level = lambda name: abs(ops[name].level_fn(ops[name].magnitude, ops[name].hparams)[0])  # noqa: E731
    # magnitude 7 on timm's 0-10 scale: rotate 21 degrees, shear 0.21, enhance 1 +- 0.63 (torchvision's 7/30: 7 deg)
    assert level('Rotate') == pytest.approx(21) and level('ShearX') == pytest.approx(0.21)
    assert abs(level('ColorIncreasing') - 1) == pytest.approx(0.63)


def test_clip_rand_augment_gives_every_frame_the_same_ops():
    import random

    from PIL import Image
    from unimodal.data.clip_augment import ClipRandAugment
    aug = ClipRandAugment('rand-m9-n4-mstd0.5-inc1', 24)
    clip, changed = _textured(), 0
    for seed in range(12):
        random.seed(seed)
        np.random.seed(seed)
        out = aug(clip)
        assert out.shape == clip.shape and out.dtype == np.uint8
        for t in range(len(clip)):  # each frame as if it were augmented alone from the same RNG state
            random.seed(seed)
            np.random.seed(seed)
            assert np.array_equal(out[t], np.asarray(aug.transform(Image.fromarray(clip[t]))))
        random.seed(seed)
        np.random.seed(seed)
        same = aug(np.repeat(clip[:1], 4, 0))  # one frame repeated stays one frame repeated
        assert all(np.array_equal(same[0], f) for f in same[1:]) and np.array_equal(same[0], out[0])
        changed += not np.array_equal(out, clip)
    assert changed >= 10  # 4 ops at p 0.5 each: nearly every draw changes the clip


def test_rand_augment_runs_before_the_crop(tmp_path):
    """Reader output == RandAugment on the decoded full-size frames, then the (here deterministic) resize crop."""
    import random
    frames = _textured(n=12, size=32, seed=3)
    write_mp4(tmp_path / 'a.mp4', frames)
    (tmp_path / 'train.txt').write_text('a.mp4 0\n')
    ds = Kinetics(tmp_path, 'train', num_frames=4, stride=4, image_size=16, flip=False, crop_scale=(1.0, 1.0),
                  crop_ratio=(1.0, 1.0), rand_augment='rand-m9-n4-mstd0.5-inc1')
    decoded = ds._decode(ds.samples[0][0])[0]  # 12 frames, span 13: the start is always 0
    for seed in range(4):
        random.seed(seed)
        np.random.seed(seed)
        x, _ = ds[0]
        random.seed(seed)
        np.random.seed(seed)
        ref = torch.from_numpy(ds._rand_augment(decoded)).permute(0, 3, 1, 2).float() / 255
        ref = torch.nn.functional.interpolate(ref, size=(16, 16), mode='bilinear', antialias=True)
        torch.testing.assert_close(x, ds._normalise(ref), atol=1e-4, rtol=0)


def test_repeats_give_independent_views_of_one_clip_and_a_flattening_collate(list_root):
    kw = dict(num_frames=4, stride=3, image_size=16, crop_scale=(0.2, 0.5))
    write_mp4(list_root / 'a.mp4', _textured(n=24, size=32))
    ds = Kinetics(list_root, 'train', repeats=2, **kw)
    decodes = []
    decode = ds._decode
    ds._decode = lambda path: decodes.append(path) or decode(path)
    torch.manual_seed(0)
    x, y = ds[0]
    assert x.shape == (2, 3, 4, 16, 16) and y == 0
    assert len(decodes) == 1                          # one decoded clip ...
    assert not torch.allclose(x[0], x[1], atol=1e-2)  # ... augmented twice, independently
    xb, yb = next(iter(DataLoader(ds, batch_size=2, collate_fn=ds.collate_fn)))
    assert xb.shape == (4, 3, 4, 16, 16) and yb.tolist() == [0, 0, 1, 1]  # video-major, labels repeated
    assert Kinetics(list_root, 'train', **kw).collate_fn is None
    with pytest.raises(ValueError, match='train split only'):
        Kinetics(list_root, 'val', annotation=list_root / 'train.txt', repeats=2, **kw)
    with pytest.raises(ValueError, match='repeats'):
        Kinetics(list_root, 'train', repeats=0, **kw)
    from unimodal.tasks import get_task
    sets = get_task('video').build_datasets(list_root, dict(kw, repeats=2, val_list=str(list_root / 'train.txt')),
                                            splits=['train', 'val'])
    assert sets['train'].repeats == 2 and sets['val'].repeats == 1


def test_video_recipe_is_the_published_one():
    from unimodal.config import load_config_file, resolve_run_config
    cfg = resolve_run_config(load_config_file('video_kinetics400'))
    opts, t = cfg.data.options, cfg.train
    assert opts['rand_augment'] == 'rand-m7-n4-mstd0.5-inc1' and opts['repeats'] == 2
    assert (opts['num_frames'], opts['stride'], opts['image_size'], opts['erase_prob']) == (16, 4, 224, 0.25)
    assert (opts['num_clips'], opts['num_crops'], opts['flip']) == (5, 3, True)
    assert (cfg.model.variant, cfg.model.drop_path_rate, cfg.model.adapter['mode']) == ('unireplknet_b', 0.4, 'paper')
    assert cfg.model.trunk['kernel_sizes'][3] == [11, 11, 11]
    for world in (1, 4, 8):  # 64 videos per optimizer step on any process count
        assert t.batch_size * world * cfg.grad_accum_steps(world) == t.global_batch_size == 64
    assert cfg.grad_accum_steps(8) == 2  # the published 4 per GPU x 8 GPUs x update_freq 2
    assert (t.lr, t.min_lr, t.warmup_epochs, t.epochs, t.schedule) == (1e-3, 2.5e-7, 5, 90, 'cosine')
    assert (t.optimizer, list(t.betas), t.weight_decay, t.layer_decay) == ('adamw', [0.9, 0.999], 0.05, 0.75)
    assert (t.mixup, t.cutmix, t.mixup_prob, t.mixup_switch_prob, t.label_smoothing) == (0.8, 1.0, 1.0, 0.5, 0.1)
    assert cfg.eval.checkpoint == 'last'  # the published test protocol: the last epoch


def test_training_with_repeats_mixes_the_2b_clips(tmp_path, run_cli):
    """Engine wiring: the reader's collate (2 clips per video) feeds batch mixup/cutmix, 8 videos per optimiser
    step from batches of 4, the last epoch tested; the spec describes one clip, not the repeats."""
    out = tmp_path / 'r'
    code, _, err = run_cli('train', '--task', 'video', '--epochs', '1', '--batch-size', '4', '--out', out,
                           '--no-progress', '--set', 'train.max_steps_per_epoch=4', '--set', 'data.limit_eval=8',
                           '--set', 'data.options.repeats=2', '--set', 'train.global_batch_size=8',
                           '--set', 'train.mixup=0.8', '--set', 'train.cutmix=1.0', '--set', 'eval.checkpoint=last')
    assert code == 0, err
    import json
    results = json.loads((out / 'results.json').read_text())
    assert results['tested_checkpoint'] == 'last' and results['checkpoint'].endswith('last.pt')
    assert json.loads((out / 'metrics.jsonl').read_text().splitlines()[0])['step'] == 2  # 4 batches / accum 2
    spec = torch.load(out / 'last.pt', weights_only=True)['tasks']['video']
    assert spec['input_shape'] == [3, 8, 64, 64]
