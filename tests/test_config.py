"""The typed config: schema defaults and checks, merge order, --set parsing, joint resolution, stored configs, recipe
files (by path and by shipped name) and the shipped recipes."""
import dataclasses
import time
from pathlib import Path

import pytest
import timm
import yaml

from unimodal.config import (ConfigError, RunConfig, TaskSettings, dump_config, joint_recipe, list_recipes,
                             load_config_file, parse_set_overrides, resolve_run_config)
from unimodal.config.schema import SECTIONS, TASK_SECTIONS, TrainConfig, build_run_config, section_keys

CONFIGS = sorted((Path(__file__).resolve().parent.parent / 'configs').glob('*.yaml'))


def test_defaults_are_valid_and_documented_layout():
    cfg = build_run_config({})
    plain = cfg.to_dict()
    assert set(plain) == {'task', 'defaults', 'data', 'model', 'train', 'eval', 'joint', 'tasks'}
    assert cfg.model.variant == 'unireplknet_test'
    assert cfg.data.options == {} and cfg.model.adapter == {} and cfg.model.trunk == {}
    plain['train']['lr'] = 5.0
    assert RunConfig().train.lr == 1e-3  # to_dict() is a copy
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 5.0  # type: ignore[misc]


def test_the_schema_is_the_one_source():
    """Every key has a doc; the per-task keys are the Task* sections' fields, and they are a subset of the
    section's keys (one definition each)."""
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f.metadata.get('doc'), f'{section}.{f.name} has no doc'
    for section, cls in TASK_SECTIONS.items():
        assert issubclass(SECTIONS[section], cls)
        assert set(section_keys(section, per_task=True)) <= set(section_keys(section))
    assert section_keys('train', per_task=True) == ['batch_size', 'loss', 'label_smoothing', 'mixup', 'cutmix',
                                                    'mixup_prob', 'mixup_switch_prob', 'loss_weight', 'sample_weight',
                                                    'max_steps_per_epoch']
    assert section_keys('model', per_task=True) == ['adapter', 'adapter_class']


@pytest.mark.parametrize('override, bad, suggestion', [
    ({'trian': {'lr': 1}}, "'trian'", "'train'"),
    ({'train': {'learning_rate': 1}}, "'train.learning_rate'", None),
    ({'train': {'epoch': 3}}, "'train.epoch'", "'epochs'"),
    ({'model': {'varaint': 'x'}}, "'model.varaint'", "'variant'"),
    ({'data': {'skipbad': True}}, "'data.skipbad'", "'skip_bad'"),
])
def test_unknown_key_lists_valid_keys_and_suggests(override, bad, suggestion):
    with pytest.raises(ConfigError) as e:
        resolve_run_config({'task': 'audio', **override}, file_origin='my.yaml')
    msg = str(e.value)
    assert bad in msg and 'my.yaml' in msg
    section = next(iter(override))
    valid = ['task', *SECTIONS, 'tasks'] if section not in SECTIONS else section_keys(section)
    for key in valid:
        assert key in msg  # the valid keys at that level are listed
    if suggestion:
        assert f'did you mean {suggestion}' in msg


def test_free_form_sections_are_not_checked_here():
    cfg = resolve_run_config({'task': 'audio', 'data': {'options': {'anything': 1}},
                              'model': {'adapter': {'mode': 'fast'}, 'trunk': {'kernel_sizes': [3, 3, 3, 3]}}})
    assert cfg.data.options == {'variant': 35, 'return_length': True, 'anything': 1}  # merged over the task's
    task_trunk = resolve_run_config({'task': 'audio'}).model.trunk
    assert task_trunk and 'kernel_sizes' not in task_trunk  # the task sets trunk defaults, so there is a merge to test
    assert cfg.model.trunk == {**task_trunk, 'kernel_sizes': [3, 3, 3, 3]}  # merged over the task's
    with pytest.raises(ConfigError, match='data.options must be a mapping'):
        resolve_run_config({'task': 'audio', 'data': {'options': 3}})


@pytest.mark.parametrize('trunk, message', [
    ({'stem_strid': 2}, "'stem_strid' (did you mean 'stem_stride'?)"),
    ({'stem_stride': 3}, 'stem_stride must be one of 4, 2, got 3'),
    ({'weight_init': 'xavier'}, 'weight_init must be one of trunc_normal, fan_in'),
    ({'global_pool': 'mean'}, "global_pool must be one of avg, max, avgmax, got 'mean'"),
    ({'kernel_sizes': [3]}, 'kernel_sizes needs one entry per stage (4), got 1'),
    ({'in_chans': 3}, "model.trunk.in_chans cannot be set: it comes from the adapter's channel count"),
    ({'drop_path_rate': 0.1}, 'model.trunk.drop_path_rate cannot be set: it comes from model.drop_path_rate'),
])
def test_trunk_options_are_checked_when_the_config_is_resolved(trunk, message):
    # the trunk constructor's own checks, run on the meta device before any data is read
    with pytest.raises(ConfigError) as e:
        resolve_run_config({'task': 'image', 'model': {'trunk': trunk}})
    assert message in str(e.value) and 'model.trunk' in str(e.value)
    if 'did you mean' in message:  # an unknown name: the valid ones are listed
        assert 'trunk options: depths, dims, kernel_sizes' in str(e.value)
    elif 'cannot be set' not in message:  # a refused value: one line naming the option, without the whole dict
        name = next(iter(trunk))
        assert str(e.value).startswith(f'model.trunk.{name} for unireplknet_test: {name} ') and '{' not in str(e.value)


def test_released_weights_are_checked_against_the_variant():
    with pytest.raises(ConfigError) as e:  # the tiny default trunk has no released weights
        resolve_run_config({'task': 'image', 'model': {'pretrained': 'in1k'}})
    msg = str(e.value)
    assert msg.startswith("model.pretrained (--pretrained)='in1k': there are no in1k weights for unireplknet_test")
    assert 'unireplknet_a, unireplknet_f' in msg and 'unireplknet_b' not in msg and '--model' in msg
    with pytest.raises(ConfigError, match='no released weights for unireplknet_test; they exist for unireplknet_a'):
        resolve_run_config({'task': 'image', 'model': {'pretrained': True}})
    with pytest.raises(ConfigError, match=r'no in1k weights for unireplknet_b \(its tags: in22k, in22k_ft_in1k_384'):
        resolve_run_config({'task': 'image', 'model': {'variant': 'unireplknet_b', 'pretrained': 'in1k'}})
    for variant, tag in (('unireplknet_a', 'in1k'), ('unireplknet_b', 'in22k'), ('unireplknet_a', True),
                         ('unireplknet_test', '/some/checkpoint.pth')):  # a path is checked when it is loaded
        cfg = resolve_run_config({'task': 'image', 'model': {'variant': variant, 'pretrained': tag}})
        assert cfg.model.pretrained == tag


def test_set_overrides_parse_yaml_scalars():
    out = parse_set_overrides(['train.lr=1e-3', 'train.epochs=3', 'train.ema=true', 'train.clip_grad=null',
                               'train.betas=[0.9, 0.95]', 'data.options.variant=12', 'model.variant=unireplknet_a'])
    assert out['train'] == {'lr': 1e-3, 'epochs': 3, 'ema': True, 'clip_grad': None, 'betas': [0.9, 0.95]}
    assert out['data']['options']['variant'] == 12 and out['model']['variant'] == 'unireplknet_a'
    for bad in ['train.lr', '=3', 'train..lr=3']:
        with pytest.raises(ConfigError, match='key.path=value'):
            parse_set_overrides([bad])


def test_merge_order_defaults_task_file_cli_set():
    file = {'task': 'audio', 'train': {'lr': 2.0, 'epochs': 3}, 'data': {'options': {'b': 2}}}
    cli = {'train': {'lr': 3.0}}
    sets = parse_set_overrides(['train.lr=4.0'])
    cfg = resolve_run_config(file, cli, sets)
    assert cfg.train.lr == 4.0                   # --set wins
    assert cfg.train.epochs == 3                 # file over task (audio: 30)
    assert cfg.train.clip_grad == 1.0            # task over defaults (default: none)
    assert cfg.data.options == {'variant': 35, 'return_length': True, 'b': 2}  # nested dicts merge key by key
    assert cfg.train.momentum == TrainConfig().momentum


@pytest.mark.parametrize('override, match', [
    ({'train': {'optimizer': 'adamw_typo'}}, "train.optimizer must be a timm optimizer name.*did you mean 'adamw'"),
    ({'train': {'epochs': 0}}, 'train.epochs must be a positive integer'),
    ({'train': {'epochs': 2.5}}, 'train.epochs must be a positive integer'),
    ({'train': {'lr': -1}}, 'train.lr must be a non-negative'),
    ({'train': {'lr': float('nan')}}, 'train.lr must be a finite number, got nan'),
    ({'train': {'lr': float('inf')}}, 'train.lr must be a finite number, got inf'),
    ({'train': {'lr': 'fast'}}, "train.lr must be a non-negative number, got 'fast'"),
    ({'train': {'gamma': 'x'}}, 'train.gamma must be a finite number'),
    ({'train': {'betas': [0.9]}}, 'train.betas must be a list of 2 numbers'),
    ({'train': {'amp': 'fp8'}}, 'train.amp must be one of none, bf16, fp16'),
    ({'data': {'skip_bad': 'yes'}}, 'data.skip_bad must be true or false'),
    ({'joint': {'sampling': 'random'}}, 'joint.sampling'),
    ({'train': {'mixup_prob': 2}}, r'train.mixup_prob must be a number in \[0, 1\]'),
    ({'train': {'clip_grad': 0}}, 'train.clip_grad must be a positive number or null'),
    ({'eval': {'batch_size': 0}}, 'eval.batch_size must be a positive integer or null'),
    ({'model': {'pretrained': 3}}, 'model.pretrained must be false, true, a tag'),
])
def test_bad_values_are_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        resolve_run_config({'task': 'audio', **override})


def test_every_timm_optimizer_is_accepted():
    from timm.optim import list_optimizers
    for name in ('lamb', 'lion', 'sgd', 'adamw'):
        assert name in list_optimizers()
        assert resolve_run_config({'task': 'audio', 'train': {'optimizer': name}}).train.optimizer == name


def test_numbers_are_typed():
    cfg = resolve_run_config({'task': 'audio', 'train': {'lr': 1, 'warmup_epochs': 2}})
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 1.0 and isinstance(cfg.train.warmup_epochs, float)
    assert cfg.train.betas == [0.9, 0.999] and isinstance(cfg.train.epochs, int)


def test_error_values_are_shortened():
    """A YAML alias bomb as a value: the error names the key and stays one short line (no megabytes)."""
    lines = ['a: &a [x, x, x, x, x, x, x, x, x]']
    for i, name in enumerate('bcdefghij'):
        prev = 'abcdefghij'[i]
        lines.append(f'{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]')
    from unimodal.config import safe_load
    bomb = safe_load('\n'.join(lines))['j']  # 8**9 leaves if expanded
    for layer, key in (({'task': 'audio', 'model': {'adapter': bomb}}, 'model.adapter'),
                       ({'task': 'audio', 'train': {'lr': bomb}}, 'train.lr'), ({'task': [bomb]}, 'task')):
        start = time.perf_counter()
        with pytest.raises(ConfigError) as e:
            resolve_run_config(layer)
        assert time.perf_counter() - start < 5
        assert key in str(e.value) and len(str(e.value)) < 400


def test_tasks_section_is_restricted_to_per_task_keys():
    with pytest.raises(ConfigError, match=r"tasks.audio: unknown config key 'train.lr'"):
        resolve_run_config({'task': ['audio', 'point'], 'tasks': {'audio': {'train': {'lr': 1}}}})
    with pytest.raises(ConfigError, match='does not train'):
        resolve_run_config({'task': ['audio', 'weather'], 'tasks': {'point': {'train': {'batch_size': 4}}}})
    with pytest.raises(ConfigError, match='for joint runs'):
        resolve_run_config({'task': 'audio', 'tasks': {'audio': {'train': {'batch_size': 4}}}})
    with pytest.raises(ConfigError, match=r'tasks.point.train.loss=mse does not apply to a classification task'):
        resolve_run_config({'task': ['audio', 'point'], 'tasks': {'point': {'train': {'loss': 'mse'}}}})


def test_loss_must_fit_the_task_kind():
    with pytest.raises(ConfigError, match='train.loss=ce does not apply to a forecast task'):
        resolve_run_config({'task': 'timeseries', 'train': {'loss': 'ce'}})


def test_single_task_resolution_uses_task_defaults():
    cfg = resolve_run_config({}, {'task': 'timeseries'}, parse_set_overrides(['train.epochs=2']))
    assert cfg.task == 'timeseries' and cfg.task_names == ['timeseries'] and not cfg.is_joint
    assert cfg.data.options['horizon'] == 24   # from TimeSeriesTask.default_config()
    assert cfg.train.loss == 'mse' and cfg.train.epochs == 2
    settings = cfg.task_settings('timeseries')
    assert isinstance(settings, TaskSettings) and settings.data is cfg.data and settings.train.batch_size == 32


def test_the_old_task_name_still_resolves():
    cfg = resolve_run_config({'task': 'weather'})
    assert cfg.task == 'timeseries' and cfg.data.options['horizon'] == 24
    joint = resolve_run_config({'task': ['audio', 'weather'], 'tasks': {'weather': {'train': {'batch_size': 4}}}})
    assert joint.task == ['audio', 'timeseries'] and joint.task_settings('timeseries').train.batch_size == 4


def test_joint_resolution_materialises_per_task_keys():
    cfg = resolve_run_config({'tasks': {'point': {'train': {'batch_size': 4}}}},
                             {'task': ['audio', 'timeseries', 'point']},
                             parse_set_overrides(['train.max_steps_per_epoch=3', 'tasks.audio.train.loss_weight=0.5']))
    assert cfg.task == ['audio', 'timeseries', 'point'] and cfg.is_joint
    assert set(cfg.tasks) == {'audio', 'timeseries', 'point'}
    ts = cfg.task_settings('timeseries')
    assert ts.data.options['horizon'] == 24 and ts.train.loss == 'mse'
    assert cfg.task_settings('point').train.batch_size == 4          # tasks.point override
    assert cfg.task_settings('audio').train.loss_weight == 0.5
    assert all(cfg.task_settings(n).train.max_steps_per_epoch == 3 for n in cfg.task_names)  # top-level --set
    assert not hasattr(ts.train, 'lr') and not hasattr(ts.model, 'variant')  # shared keys stay on the RunConfig
    with pytest.raises(KeyError, match='no task'):
        cfg.task_settings('video')


def test_stored_config_round_trip_and_overrides_on_it():
    """Resume and eval rebuild the RunConfig from the stored one through resolve_run_config(base=...)."""
    cfg = resolve_run_config({'task': ['audio', 'point']}, parse_set_overrides(['train.epochs=2']))
    stored = yaml.safe_load(dump_config(cfg))
    assert resolve_run_config(base=stored) == cfg
    again = resolve_run_config(None, {'eval': {'batch_size': 3}, 'data': {'num_workers': 2}}, base=stored)
    assert all(again.task_settings(n).eval.batch_size == 3 and again.task_settings(n).data.num_workers == 2
               for n in again.task_names)  # top-level per-task keys reach every task, as in a fresh run
    assert again.train == cfg.train


def test_a_stored_config_of_the_old_name_loads():
    old = resolve_run_config({'task': ['audio', 'timeseries']}).to_dict()
    old['task'] = ['audio', 'weather']
    old['tasks'] = {('weather' if n == 'timeseries' else n): v for n, v in old['tasks'].items()}
    cfg = resolve_run_config(base=old)
    assert cfg.task == ['audio', 'timeseries'] and cfg.task_settings('timeseries').train.loss == 'mse'


def test_joint_recipe_merges_the_tasks_training_settings():
    shared, notes = joint_recipe({
        'a': {'train': {'lr': 2e-3, 'warmup_epochs': 1, 'clip_grad': 1.0, 'epochs': 30}},
        'b': {'train': {'lr': 2e-3, 'warmup_epochs': 2.5, 'epochs': 10}},      # no clipping, longer warm-up
        'c': {'train': {'lr': 3e-3, 'warmup_epochs': 0, 'clip_grad': 5.0, 'epochs': 30}},
    })
    train = shared['train']
    assert train['warmup_epochs'] == 2.5 and train['clip_grad'] == 1.0       # the safest of each
    assert 'lr' not in train and 'epochs' not in train                       # disagree: engine default stays
    assert train['weight_decay'] == TrainConfig().weight_decay               # nobody sets it: all agree
    assert set(notes) == {'lr', 'epochs', 'warmup_epochs', 'clip_grad'}
    assert "a 0.002, b 0.002, c 0.003" in notes['lr'] and 'engine default' in notes['lr']
    shared, notes = joint_recipe({'a': {'train': {'lr': 2e-3}}, 'b': {'train': {'lr': 2e-3}}})
    assert shared['train']['lr'] == 2e-3 and not notes and shared['train']['clip_grad'] is None
    # a plug-in recipe's odd values are not candidates (no crash; validation reports them if they are used)
    shared, notes = joint_recipe({'a': {'train': {'warmup_epochs': None, 'clip_grad': 'x'}},
                                  'b': {'train': {'warmup_epochs': 2, 'clip_grad': 0}}})
    assert shared['train']['warmup_epochs'] == 2 and 'clip_grad' not in shared['train']
    assert 'engine default' in notes['clip_grad']


def test_joint_run_inherits_warmup_and_clipping_unless_the_user_sets_them():
    """Every built-in recipe warms up for an epoch and audio/timeseries clip gradients; a joint run without them
    collapsed the point task to chance (benchmarks/README.md, joint training)."""
    cfg = resolve_run_config({}, {'task': ['audio', 'point', 'timeseries']})
    assert cfg.train.warmup_epochs == 1 and cfg.train.clip_grad == 1.0
    assert cfg.train.lr == TrainConfig().lr  # the recipes disagree (audio 2e-3): the engine default
    cfg = resolve_run_config({'train': {'clip_grad': None}}, {'task': ['audio', 'point'], 'train': {'lr': 5e-4}},
                             parse_set_overrides(['train.warmup_epochs=0']))
    assert cfg.train.clip_grad is None and cfg.train.warmup_epochs == 0 and cfg.train.lr == 5e-4


def test_wrong_task_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown task 'audoi'; known tasks: audio"):
        resolve_run_config({}, {'task': 'audoi'})


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    raw = yaml.safe_load(path.read_text())
    cfg = resolve_run_config(raw, {}, {}, file_origin=str(path))
    new = {'weather': 'timeseries'}
    assert cfg.task == ([new.get(n, n) for n in raw['task']] if isinstance(raw['task'], list)
                        else new.get(raw['task'], raw['task']))
    # downstream keyword checks: the trunk options must be accepted by the trunk constructor
    timm.create_model(cfg.model.variant, num_classes=0, device='meta', **cfg.model.trunk)


def test_every_published_recipe_is_shipped_and_named():
    names = {p.name for p in CONFIGS}
    for expected in ['audio_speechcommands35.yaml', 'point_modelnet40.yaml', 'video_kinetics400.yaml',
                     'weather_global_temp.yaml', 'weather_global_wind.yaml', 'weather_tslib.yaml',
                     'image_imagenet_eval.yaml', 'demo_audio.yaml', 'demo_point.yaml', 'demo_video.yaml',
                     'demo_timeseries.yaml', 'demo_joint.yaml']:
        assert expected in names
    assert list_recipes() == sorted(p.stem for p in CONFIGS)


def test_a_recipe_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the name resolves to the shipped copy
    path = next(p for p in CONFIGS if p.stem == 'audio_speechcommands35')
    assert load_config_file('audio_speechcommands35') == yaml.safe_load(path.read_text())
    assert load_config_file('audio_speechcommands35.yaml') == load_config_file(path)
    with pytest.raises(ConfigError, match='does not exist and is not a shipped recipe name.*demo_audio'):
        load_config_file('audio_speechcommands99')


def test_duplicate_key_in_a_config_file_is_an_error(tmp_path):
    path = tmp_path / 'dup.yaml'
    path.write_text('train:\n  lr: 0.1\n  lr: 0.2\n')
    with pytest.raises(ConfigError, match=r"duplicate key 'lr'.*line 3"):
        load_config_file(path)


@pytest.mark.parametrize('content, match', [
    (b'\x89PNG\r\n\x1a\n\xff\xd8\x00\x00', 'is not UTF-8 text'),
    (b'task: audio\x00\x00\x00', 'is binary'),
])
def test_a_binary_config_file_is_a_one_line_error(tmp_path, content, match):
    path = tmp_path / 'model.bin'
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match) as e:
        load_config_file(path)
    assert str(path) in str(e.value) and '\n' not in str(e.value)


def test_complete_recipe_sits_on_engine_defaults_only():
    """``defaults: engine`` (the published recipes): a task's demo settings must not leak into keys the recipe
    does not name; without it a small user file still gets the task's defaults."""
    from unimodal.config import resolve_run_config
    demo = resolve_run_config({'task': 'audio', 'train': {'epochs': 2}})
    assert demo.defaults == 'task' and demo.train.clip_grad == 1.0  # the audio demo clips gradients
    full = resolve_run_config({'task': 'audio', 'defaults': 'engine', 'train': {'epochs': 2}})
    assert full.defaults == 'engine' and full.train.clip_grad is None and full.model.variant == 'unireplknet_test'
    assert resolve_run_config(base=full.to_dict()).train.clip_grad is None  # a stored config keeps it


def test_defaults_key_is_checked():
    from unimodal.config import ConfigError, resolve_run_config
    with pytest.raises(ConfigError, match='defaults must be one of task, engine'):
        resolve_run_config({'task': 'audio', 'defaults': 'paper'})


@pytest.mark.parametrize('name', ['audio_speechcommands35', 'point_modelnet40', 'video_kinetics400',
                                  'weather_global_temp', 'weather_global_wind', 'weather_tslib',
                                  'image_imagenet_eval'])
def test_published_recipes_are_complete(name):
    """Every non-demo recipe states ``defaults: engine``: what it resolves to is what the file says."""
    from unimodal.config import load_config_file
    assert load_config_file(name).get('defaults') == 'engine'


def test_unknown_adapter_option_fails_at_resolution_with_the_valid_names():
    with pytest.raises(ConfigError, match=r"unknown model.adapter option 'freq_wrap' for the audio adapter; valid: "
                                          r".*freq_warp.*did you mean 'freq_warp'\?"):
        resolve_run_config({}, {'task': 'audio'}, parse_set_overrides(['model.adapter.freq_wrap=0.2']))
    with pytest.raises(ConfigError, match=r"tasks.point.model.adapter option 'up_axes'.*'up_axis'"):
        resolve_run_config({}, {'task': 'audio,point'}, parse_set_overrides(['tasks.point.model.adapter.up_axes=1']))
    ok = resolve_run_config({}, {'task': 'audio'}, parse_set_overrides(['model.adapter.freq_warp=0.1']))
    assert ok.model.adapter['freq_warp'] == 0.1


@pytest.mark.parametrize('task, option, message', [
    ('audio', 'model.adapter.num_mel_bins=2', r'model.adapter for task audio \(adapter audio\): audio adapter option '
                                              r'num_mel_bins must be an integer >= 4'),
    ('audio', 'model.adapter.mode=x', r'model.adapter for task audio \(adapter audio\): audio adapter option mode'),
    ('point', 'model.adapter.mode=p3p', r'point adapter option mode'),
    ('video', 'model.adapter.num_frames=0', r'video adapter option num_frames'),
    ('timeseries', 'model.adapter.embed_dim=-4', r'timeseries adapter option embed_dim'),
    ('audio,point', 'tasks.audio.model.adapter.freq_warp=2', r'tasks.audio.model.adapter for task audio '
                                                             r'\(adapter audio\): audio adapter option freq_warp'),
])
def test_bad_adapter_option_values_fail_at_resolution(task, option, message):
    # before any data is read (a real set's readers can take minutes), not when the model is built
    with pytest.raises(ConfigError, match=message):
        resolve_run_config({}, {'task': task}, parse_set_overrides([option]))


def test_plug_in_adapters_are_not_built_at_resolution(tmp_path):
    # a plug-in's constructor may do work (load files): its option values are checked when the model is built
    plugin = tmp_path / 'noisy_adapter.py'
    plugin.write_text('from unimodal.modalities.audio import AudioAdapter\n'
                      'class NoisyAdapter(AudioAdapter):\n'
                      '    pass\n')
    cfg = resolve_run_config({}, {'task': 'audio', 'model': {'adapter_class': f'{plugin}:NoisyAdapter'}},
                             parse_set_overrides(['model.adapter.num_mel_bins=2']))
    assert cfg.model.adapter['num_mel_bins'] == 2  # refused later, with the data, by the plug-in's own build
