"""Reader option values are checked where each reader is entered (issue 15, "values that slip past config
validation"), and every reader names the file of a sample (``sample_source``) for the engine's NaN errors."""
import inspect
import time
from pathlib import Path

import numpy as np
import pytest

from unimodal.config import ConfigError, safe_load
from unimodal.data import images, kinetics, modelnet, speech_commands, timeseries
from unimodal.data.errors import DataError
from unimodal.data.images import ImageFolderDataset
from unimodal.data.kinetics import Kinetics, make_builtin_kinetics
from unimodal.data.modelnet import ModelNet40
from unimodal.data.options import UnknownOptionError
from unimodal.data.speech_commands import SpeechCommands, make_builtin_speech
from unimodal.data.timeseries import build_timeseries_datasets
from unimodal.engine.build import EvenSubset
from unimodal.tasks.base import register_task
from unimodal.tasks.timeseries import TimeSeriesTask
from test_faults import RUN, one_line_error
from test_image import _write_png
from test_point_data import _dat_pair
from test_timeseries_data import _write_csv

# reader -> (entry point called as fn(root, **options), its option table, the parameters the task sets itself)
READERS = {
    'timeseries': (build_timeseries_datasets, timeseries.OPTIONS, ('root', 'skip_bad', 'splits')),
    'speech': (SpeechCommands, speech_commands.OPTIONS, ('self', 'root', 'split', 'skip_bad')),
    'modelnet': (ModelNet40, modelnet.OPTIONS, ('self', 'root', 'split', 'skip_bad')),
    'kinetics': (Kinetics, kinetics.OPTIONS, ('self', 'root', 'split', 'skip_bad')),
    'image': (ImageFolderDataset, images.OPTIONS, ('self', 'root', 'train', 'skip_bad')),
}

BAD = [
    ('timeseries', 'fill', 'bogus', "one of error, ffill, interpolate, zero, got 'bogus'"),
    ('timeseries', 'input_len', 0, 'a positive integer, got 0'),
    ('timeseries', 'horizon', -3, 'a positive integer'),
    ('timeseries', 'stride', 1.5, 'a positive integer'),
    ('timeseries', 'horizon', '24', "got '24'"),
    ('timeseries', 'format', 'parquet', 'one of auto, global_npy, tslib, csv'),
    ('timeseries', 'borders', 'yearly', 'one of auto, ratio, ett_hour, ett_minute'),
    ('timeseries', 'variable', 'rain', 'one of temp, wind or null'),
    ('timeseries', 'train_ratio', 1.0, 'a number in (0, 1), got 1.0'),
    ('timeseries', 'train_ratio', 0, 'a number in (0, 1)'),
    ('timeseries', 'test_ratio', float('nan'), 'a finite number, got nan'),
    ('timeseries', 'period', 0, 'a positive integer or null'),
    ('timeseries', 'scale', 'yes', 'true or false'),
    ('timeseries', 'columns', 'OT', 'a list of column names or null'),
    ('timeseries', 'columns', [1, 2], 'a list of column names'),
    ('timeseries', 'marks', 1, 'true or false'),
    ('timeseries', 'freq', 'fortnight', 'a frequency with calendar features'),
    ('timeseries', 'coords', 3, 'a coordinates file'),
    ('timeseries', 'time_column', 5, 'a column name or null'),
    ('timeseries', 'file', ['a.csv'], 'a file name'),
    ('timeseries', 'cache_dir', 7, 'a path or null'),
    ('speech', 'variant', 7, 'one of 35, 12, got 7'),
    ('speech', 'mixup.prob', {'prob': 2, 'alpha': 10}, 'a number in [0, 1], got 2'),
    ('speech', 'variant', '35', "got '35'"),
    ('speech', 'silence_fraction', 1.5, 'a number in [0, 1]'),
    ('speech', 'mixup', {'prob': 0.5}, '{prob: P, alpha: A}'),
    ('speech', 'sample_rate', 8, 'an integer >= 100 (Hz)'),
    ('speech', 'clip_samples', 0, 'a positive integer'),
    ('speech', 'mixup.alpha', {'prob': 0.5, 'alpha': 0}, 'a positive number, got 0'),
    ('speech', 'classes', 'yes', 'a list of class names or null'),
    ('speech', 'return_length', 'no', 'true or false'),
    ('speech', 'mixup', 0.6, '{prob: P, alpha: A}'),
    ('modelnet', 'format', 'ply', "one of auto, off, text, hdf5, dat, got 'ply'"),
    ('modelnet', 'num_points', 0, 'a positive integer'),
    ('modelnet', 'use_normals', 'y', 'true or false'),
    ('modelnet', 'sampling', 'random', 'one of fps, first or null'),
    ('modelnet', 'redraw_from', 2.5, 'a positive integer or null'),
    ('modelnet', 'surface_samples', 0, 'a positive integer or null'),
    ('modelnet', 'val_fraction', 1.0, 'a number in [0, 1)'),
    ('modelnet', 'val_from', 'val', 'one of train, test'),
    ('modelnet', 'off_up_axis', 'w', 'one of x, y, z or null'),
    ('modelnet', 'list_prefix', None, 'a file-name prefix'),
    ('modelnet', 'seed', -1, 'a non-negative integer'),
    ('modelnet', 'prepare', 2, 'true or false'),
    ('modelnet', 'workers', -1, 'a non-negative integer'),
    ('kinetics', 'num_frames', 0, 'a positive integer'),
    ('kinetics', 'stride', 0, 'a positive integer'),
    ('kinetics', 'image_size', -1, 'a positive integer'),
    ('kinetics', 'crop_scale', [0.5, 0.1], '[min, max] with 0 < min <= max <= 1, got [0.5, 0.1]'),
    ('kinetics', 'crop_scale', [0, 1], '0 < min'),
    ('kinetics', 'crop_scale', [0.5], '[min, max]'),
    ('kinetics', 'crop_ratio', [2, 1], '[min, max] with 0 < min <= max'),
    ('kinetics', 'flip', 'no', 'true or false'),
    ('kinetics', 'rand_augment', 5, 'a timm RandAugment string'),
    ('kinetics', 'rand_augment', 'rand-x9', 'unknown section'),
    ('kinetics', 'erase_prob', 1.5, 'a number in [0, 1]'),
    ('kinetics', 'repeats', 0, 'a positive integer'),
    ('kinetics', 'num_clips', 0, 'a positive integer'),
    ('kinetics', 'num_crops', 0, 'a positive integer'),
    ('kinetics', 'check_decode', None, 'true or false'),
    ('kinetics', 'check_threads', 0, 'a positive integer'),
    ('kinetics', 'classes', 7, 'a class-list file or a list of class names'),
    ('kinetics', 'video_dir', 3, 'a path or null'),
    ('kinetics', 'annotation', [1], 'a path or null'),
    ('image', 'image_size', 0, 'a positive integer or null'),
    ('image', 'crop_pct', 0, 'a number in (0, 1]'),
    ('image', 'crop_pct', 1.5, 'a number in (0, 1]'),
    ('image', 'interpolation', 'cubic', "one of bicubic, bilinear, nearest, lanczos or null, got 'cubic'"),
    ('image', 'crop_mode', 'middle', 'one of center, squash, border'),
    ('image', 'pretrained_cfg', 5, 'a timm model name with tag'),
    ('image', 'pretrained_cfg', 'unireplknet_b.nonsense', 'Invalid pretrained tag'),
    ('image', 'train_scale', [0.9, 0.1], '[min, max] with 0 < min <= max <= 1'),
    ('image', 'train_ratio', 'wide', '[min, max] with 0 < min <= max'),
    ('image', 'classes', [1], 'a list of class names'),
    ('image', 'verify', 'y', 'true or false'),
    ('image', 'seed', 1.5, 'an integer'),
]


def _call(reader, root, **options):
    fn = READERS[reader][0]
    return fn(root, **options)


@pytest.mark.parametrize('reader, option, value, needle', BAD, ids=[f'{r}-{o}-{v!r}' for r, o, v, _ in BAD])
def test_bad_option_value_is_a_config_error_naming_the_option(tmp_path, reader, option, value, needle):
    name = option.split('.')[0]
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        _call(reader, tmp_path, **{name: value})  # checked before the data folder is looked at
    assert time.perf_counter() - t0 < 5
    msg = str(info.value)
    assert msg.startswith(f'data.options.{option} '), msg
    assert needle in msg, msg
    assert '\n' not in msg and len(msg) < 400


@pytest.mark.parametrize('reader, options, needle', [
    ('timeseries', {'train_ratio': 0.8, 'test_ratio': 0.3}, 'data.options.train_ratio + data.options.test_ratio '
                                                            'must be < 1'),
    ('modelnet', {'num_points': 64, 'redraw_from': 50}, 'data.options.redraw_from must be >= '
                                                        'data.options.num_points (64), got 50'),
    ('modelnet', {'num_points': 1024, 'surface_samples': 512}, 'data.options.surface_samples must be >= the points '
                                                               'kept per cloud (1024), got 512'),
    ('speech', {'variant': 12, 'classes': ['yes']}, 'data.options.classes applies to variant 35 only'),
])
def test_options_that_contradict_each_other_name_both(tmp_path, reader, options, needle):
    with pytest.raises(ConfigError, match=needle.replace('(', r'\(').replace(')', r'\)').replace('+', r'\+')):
        _call(reader, tmp_path, **options)


def test_modelnet_val_split_without_held_out_files_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r'data\.options\.val_fraction=0 holds out no validation files'):
        ModelNet40(tmp_path, 'val', val_fraction=0)


@pytest.mark.parametrize('reader', sorted(READERS))
def test_every_option_of_every_reader_is_declared_and_its_default_passes(reader):
    fn, table, task_set = READERS[reader]
    params = inspect.signature(fn.__init__ if isinstance(fn, type) else fn).parameters
    undeclared = sorted(set(params) - set(table) - set(task_set))
    assert not undeclared, f'{reader}: options without a declared type/range: {undeclared}'
    for name, spec in table.items():
        default = params[name].default
        assert default is not inspect.Parameter.empty, name
        spec.check(f'data.options.{name}', list(default) if isinstance(default, tuple) else default)


@pytest.mark.parametrize('reader', sorted(READERS))
def test_unknown_option_is_a_config_error_and_a_type_error(tmp_path, reader):
    with pytest.raises(UnknownOptionError) as info:
        _call(reader, tmp_path, num_pointz=3, horizonn=2)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, TypeError)
    assert "unknown reader option 'data.options.num_pointz'" in str(info.value)
    assert 'valid options: ' in str(info.value)


# a 1 KB document that expands to 9**8 (43 million) items if anything walks it
ALIAS_BOMB = ('[&a [1,1,1,1,1,1,1,1,1],&b [*a,*a,*a,*a,*a,*a,*a,*a,*a],&c [*b,*b,*b,*b,*b,*b,*b,*b,*b],'
              '&d [*c,*c,*c,*c,*c,*c,*c,*c,*c],&e [*d,*d,*d,*d,*d,*d,*d,*d,*d],&f [*e,*e,*e,*e,*e,*e,*e,*e,*e],'
              '&g [*f,*f,*f,*f,*f,*f,*f,*f,*f],&h [*g,*g,*g,*g,*g,*g,*g,*g,*g]]')


@pytest.mark.parametrize('reader, option', [('timeseries', 'horizon'), ('timeseries', 'columns'),
                                            ('speech', 'classes'), ('kinetics', 'crop_scale'),
                                            ('kinetics', 'classes'), ('image', 'train_ratio'),
                                            ('modelnet', 'num_points')])
def test_an_alias_bomb_as_an_option_value_is_refused_at_once(tmp_path, reader, option):
    bomb = safe_load(ALIAS_BOMB)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        _call(reader, tmp_path, **{option: bomb})
    assert time.perf_counter() - t0 < 1
    assert str(info.value).startswith(f'data.options.{option} must be ') and len(str(info.value)) < 300


def test_mixup_bomb_inside_a_field_names_the_field(tmp_path):
    bomb = safe_load(ALIAS_BOMB)
    with pytest.raises(ConfigError, match=r'^data\.options\.mixup\.alpha must be a positive number, got \[\[') as info:
        SpeechCommands(tmp_path, mixup={'prob': 0.5, 'alpha': bomb})
    assert len(str(info.value)) < 300


# ------------------------------------------------------------------------------------------------ the CLI

@pytest.mark.parametrize('setting, needle', [
    ('data.options.fill=bogus', "data.options.fill must be one of error, ffill, interpolate, zero, got 'bogus'"),
    ('data.options.input_len=0', 'data.options.input_len must be a positive integer, got 0'),
    ('data.options.horizonn=3', "unknown reader option 'data.options.horizonn'"),
])
def test_cli_bad_reader_option_is_one_line_exit_2(tmp_path, run_cli, setting, needle):
    code, _, err = run_cli('train', '--task', 'timeseries', '--set', setting, '--out', tmp_path / 'r', *RUN)
    one_line_error(code, err, needle)


def test_cli_alias_bomb_as_an_option_is_refused_quickly_and_briefly(tmp_path, run_cli):
    t0 = time.perf_counter()
    code, _, err = run_cli('train', '--task', 'timeseries', '--set', f'data.options.horizon={ALIAS_BOMB}',
                           '--out', tmp_path / 'r', *RUN)
    line = one_line_error(code, err, 'data.options.horizon must be a positive integer, got [[')
    assert len(err) < 2000 and len(line) < 300
    assert time.perf_counter() - t0 < 60  # the built-in data set may be generated first (once per session)


# ------------------------------------------------------------------------------------------------ sample_source

def test_timeseries_windows_name_their_file_and_rows(tmp_path):
    _write_csv(tmp_path / 'w.csv', n_rows=200)
    sets = build_timeseries_datasets(tmp_path, input_len=10, horizon=5, cache_dir=tmp_path / 'cache')
    assert sets['train'].sample_source(3) == f'{tmp_path / "w.csv"} rows 3..17'
    # val/test windows are cut from the whole file: rows count from the file's first data row
    val = sets['val']
    first = int(200 * 0.7) - 10 + int(val.starts[2])
    assert val.sample_source(2) == f'{tmp_path / "w.csv"} rows {first}..{first + 14}'


def test_speech_clips_name_their_file_and_silence_its_frames(builtin_cache):
    root = make_builtin_speech(builtin_cache / 'speech_commands_builtin')
    ds = SpeechCommands(root, 'val', variant=12)
    words = [i for i in range(len(ds)) if not ds.samples[i].silence]
    assert ds.sample_source(words[0]) == str(ds.samples[words[0]].path)
    silence = next(i for i in range(len(ds)) if ds.samples[i].silence)
    item = ds.samples[silence]
    assert ds.sample_source(silence) == f'{item.path} frames {item.offset}..{item.offset + 16000 - 1}'
    assert '_background_noise_' in ds.sample_source(silence)


def test_modelnet_in_memory_samples_name_the_file_and_the_sample_in_it(tmp_path):
    clouds = _dat_pair(tmp_path, n_pts=(50, 60, 70, 80, 90, 100))
    ds = ModelNet40(tmp_path, 'train', num_points=16, val_fraction=0.4, sampling='fps')
    dat = tmp_path / 'modelnet40_train_8192pts_fps.dat'
    sizes = [len(c) for c in clouds['train']]
    assert len(ds) < len(sizes)  # some are held out as val: the names still point at the right sample
    for i in range(len(ds)):
        src = ds.sample_source(i)
        assert src.startswith(f'{dat} sample ')
        k = int(src.rsplit(' ', 1)[1])
        assert ds._offsets[i + 1] - ds._offsets[i] == sizes[k]


def test_modelnet_files_kinetics_and_images_name_their_file(tmp_path):
    from test_point_data import _text_tree
    root = _text_tree(tmp_path / 'pts')
    ds = ModelNet40(root, 'train', num_points=8, val_fraction=0)
    assert [ds.sample_source(i) for i in range(len(ds))] == [str(p) for p in ds.files]
    video = make_builtin_kinetics(tmp_path / 'video', per_class=(1, 1, 1), frames=8, size=16)
    clips = Kinetics(video, 'val', num_frames=2, image_size=16)
    assert clips.sample_source(3) == str(clips.samples[3][0]) and clips.sample_source(3).endswith('.mp4')
    for k in range(3):
        _write_png(tmp_path / 'img' / f'c{k % 2}' / f'{k}.png', 8, 8, seed=k)
    pics = ImageFolderDataset(tmp_path / 'img', image_size=8)
    assert [pics.sample_source(i) for i in range(3)] == [p for p, _ in pics.samples]
    # the engine's even subsets pass the names through
    sub = EvenSubset(pics, 2)
    assert sub.sample_source(1) == pics.sample_source(sub.indices[1])


@register_task
class _NanWeatherTask(TimeSeriesTask):
    """The timeseries task on a Global Temp layout whose training file gets NaN after the reader checked it (a
    file changed under a running job: the arrays are read on demand, so only the engine can see it)."""

    name = 'nan_weather_test'
    aliases = ()

    def build_datasets(self, root, options, skip_bad=False, splits=None):
        sets = super().build_datasets(root, options, skip_bad, splits)
        path = Path(root) / 'temp_global_hourly_train.npy'
        a = np.load(path, mmap_mode='r+')
        a[20:30, 1, 0] = np.nan
        a.flush()
        return sets


def test_nan_in_a_real_reader_file_is_named_by_the_engine(tmp_path, run_cli):
    rng = np.random.default_rng(0)
    for split, T in (('train', 60), ('val', 30), ('test', 30)):
        np.save(tmp_path / f'temp_global_hourly_{split}.npy', rng.normal(size=(T, 4, 1)).astype(np.float32))
    code, _, err = run_cli('train', '--task', 'nan_weather_test', '--data', tmp_path,
                           '--set', 'data.options.input_len=8', '--set', 'data.options.horizon=4',
                           '--set', 'data.options.stride=8', '--set', 'train.batch_size=8', '--set',
                           'data.cache_dir=' + str(tmp_path / 'cache'), '--out', tmp_path / 'r', *RUN)
    line = one_line_error(code, err, 'the training loss of task nan_weather_test is nan at epoch 1, step 1',
                          'input sample(s) of the batch hold NaN/inf values (samples: ',
                          'a data file holds bad values')
    named = line.split('(samples: ', 1)[1]
    assert f'{tmp_path / "temp_global_hourly_train.npy"} rows ' in named


def test_a_reader_that_finds_nan_itself_names_the_file_before_the_engine(tmp_path):
    # the readers that can see NaN check it when a sample is read (audio) or indexed (hdf5/dat, csv/npy)
    clouds = _dat_pair(tmp_path)
    clouds['train'][2][5] = np.nan
    import pickle
    with open(tmp_path / 'modelnet40_train_8192pts_fps.dat', 'wb') as f:
        pickle.dump((clouds['train'], [np.array([i % 2], np.int32) for i in range(4)]), f, protocol=4)
    with pytest.raises(DataError, match=r'modelnet40_train_8192pts_fps\.dat: sample 2: 1 of 300 points are NaN'):
        ModelNet40(tmp_path, 'train', val_fraction=0)
