"""Config defaults, validation, merge order, --set parsing, joint resolution and the shipped recipes."""
from pathlib import Path

import pytest
import timm
import yaml

from unimodal.config import (DEFAULTS, ConfigError, default_config, joint_recipe, merge_config,
                             parse_set_overrides, resolve_config, task_config, validate_config)
from unimodal.engine.trainer import resolve_run_config

CONFIGS = sorted((Path(__file__).resolve().parent.parent / 'configs').glob('*.yaml'))


def test_defaults_are_valid_and_documented_layout():
    cfg = default_config()
    validate_config(cfg)
    assert set(cfg) == {'task', 'data', 'model', 'train', 'eval', 'joint', 'tasks'}
    assert cfg['model']['variant'] == 'unireplknet_test'
    assert cfg['data']['options'] == {} and cfg['model']['adapter'] == {} and cfg['model']['trunk'] == {}
    cfg['train']['lr'] = 5.0
    assert DEFAULTS['train']['lr'] != 5.0  # default_config() is a copy


@pytest.mark.parametrize('override, bad, suggestion', [
    ({'trian': {'lr': 1}}, "'trian'", "'train'"),
    ({'train': {'learning_rate': 1}}, "'train.learning_rate'", None),
    ({'train': {'epoch': 3}}, "'train.epoch'", "'epochs'"),
    ({'model': {'varaint': 'x'}}, "'model.varaint'", "'variant'"),
    ({'data': {'skipbad': True}}, "'data.skipbad'", "'skip_bad'"),
])
def test_unknown_key_lists_valid_keys_and_suggests(override, bad, suggestion):
    with pytest.raises(ConfigError) as e:
        merge_config(default_config(), override, 'my.yaml')
    msg = str(e.value)
    assert bad in msg and 'my.yaml' in msg
    section = next(iter(override))
    valid = DEFAULTS if section not in DEFAULTS else DEFAULTS[section]
    for key in list(valid)[:3]:
        assert key in msg  # the valid keys at that level are listed
    if suggestion:
        assert f'did you mean {suggestion}' in msg


def test_free_form_sections_are_not_checked_here():
    cfg = merge_config(default_config(), {'data': {'options': {'anything': 1}},
                                          'model': {'adapter': {'mode': 'x'}, 'trunk': {'kernel_sizes': [3]}}})
    assert cfg['data']['options'] == {'anything': 1}
    assert cfg['model']['trunk'] == {'kernel_sizes': [3]}
    with pytest.raises(ConfigError, match='mapping'):
        merge_config(default_config(), {'data': {'options': 3}})


def test_set_overrides_parse_yaml_scalars():
    out = parse_set_overrides(['train.lr=1e-3', 'train.epochs=3', 'train.ema=true', 'train.clip_grad=null',
                               'train.betas=[0.9, 0.95]', 'data.options.variant=12', 'model.variant=unireplknet_a'])
    assert out['train'] == {'lr': 1e-3, 'epochs': 3, 'ema': True, 'clip_grad': None, 'betas': [0.9, 0.95]}
    assert out['data']['options']['variant'] == 12 and out['model']['variant'] == 'unireplknet_a'
    for bad in ['train.lr', '=3', 'train..lr=3']:
        with pytest.raises(ConfigError, match='key.path=value'):
            parse_set_overrides([bad])


def test_merge_order_defaults_task_file_cli_set():
    task = {'train': {'lr': 1.0, 'epochs': 2, 'batch_size': 8}, 'data': {'options': {'a': 1, 'b': 1}}}
    file = {'train': {'lr': 2.0, 'epochs': 3}, 'data': {'options': {'b': 2}}}
    cli = {'train': {'lr': 3.0}}
    sets = parse_set_overrides(['train.lr=4.0'])
    cfg = resolve_config(task, file, cli, sets)
    assert cfg['train']['lr'] == 4.0            # --set wins
    assert cfg['train']['epochs'] == 3          # file over task
    assert cfg['train']['batch_size'] == 8      # task over defaults
    assert cfg['data']['options'] == {'a': 1, 'b': 2}  # nested dicts merge key by key
    assert cfg['train']['weight_decay'] == DEFAULTS['train']['weight_decay']


@pytest.mark.parametrize('override, match', [
    ({'train': {'optimizer': 'lamb'}}, 'train.optimizer must be one of'),
    ({'train': {'epochs': 0}}, 'train.epochs must be a positive integer'),
    ({'train': {'lr': -1}}, 'train.lr must be a non-negative'),
    ({'train': {'betas': [0.9]}}, 'train.betas'),
    ({'train': {'amp': 'fp8'}}, 'train.amp'),
    ({'data': {'skip_bad': 'yes'}}, 'data.skip_bad must be true or false'),
    ({'joint': {'sampling': 'random'}}, 'joint.sampling'),
    ({'train': {'mixup_prob': 2}}, 'mixup_prob'),
])
def test_bad_values_are_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config(None, override)


def test_tasks_section_is_restricted_to_per_task_keys():
    with pytest.raises(ConfigError, match=r"tasks.audio: unknown config key 'train.lr'"):
        resolve_config(None, {'task': ['audio', 'point'], 'tasks': {'audio': {'train': {'lr': 1}}}})
    with pytest.raises(ConfigError, match='does not train'):
        resolve_config(None, {'task': ['audio', 'weather'], 'tasks': {'point': {'train': {'batch_size': 4}}}})
    with pytest.raises(ConfigError, match='for joint runs'):
        resolve_config(None, {'task': 'audio', 'tasks': {'audio': {'train': {'batch_size': 4}}}})


def test_single_task_resolution_uses_task_defaults():
    cfg = resolve_run_config({}, {'task': 'weather'}, parse_set_overrides(['train.epochs=2']))
    assert cfg['task'] == 'weather'
    assert cfg['data']['options']['horizon'] == 24   # from WeatherTask.default_config()
    assert cfg['train']['loss'] == 'mse' and cfg['train']['epochs'] == 2


def test_joint_resolution_materialises_per_task_keys():
    cfg = resolve_run_config({'tasks': {'point': {'train': {'batch_size': 4}}}}, {'task': ['audio', 'weather', 'point']},
                             parse_set_overrides(['train.max_steps_per_epoch=3', 'tasks.audio.train.loss_weight=0.5']))
    assert cfg['task'] == ['audio', 'weather', 'point']
    assert set(cfg['tasks']) == {'audio', 'weather', 'point'}
    weather = task_config(cfg, 'weather')
    assert weather['task'] == 'weather'
    assert weather['data']['options']['horizon'] == 24 and weather['train']['loss'] == 'mse'
    assert task_config(cfg, 'point')['train']['batch_size'] == 4          # tasks.point override
    assert task_config(cfg, 'audio')['train']['loss_weight'] == 0.5
    assert all(task_config(cfg, n)['train']['max_steps_per_epoch'] == 3 for n in cfg['task'])  # top-level --set
    assert task_config(cfg, 'audio')['model']['variant'] == cfg['model']['variant']  # shared trunk


def test_joint_recipe_merges_the_tasks_training_settings():
    shared, notes = joint_recipe({
        'a': {'train': {'lr': 2e-3, 'warmup_epochs': 1, 'clip_grad': 1.0, 'epochs': 30}},
        'b': {'train': {'lr': 2e-3, 'warmup_epochs': 2.5, 'epochs': 10}},      # no clipping, longer warm-up
        'c': {'train': {'lr': 3e-3, 'warmup_epochs': 0, 'clip_grad': 5.0, 'epochs': 30}},
    })
    train = shared['train']
    assert train['warmup_epochs'] == 2.5 and train['clip_grad'] == 1.0       # the safest of each
    assert 'lr' not in train and 'epochs' not in train                       # disagree: engine default stays
    assert train['weight_decay'] == DEFAULTS['train']['weight_decay']         # nobody sets it: all agree
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
    """Every built-in recipe warms up for an epoch and audio/weather clip gradients; a joint run without them
    collapsed the point task to chance (benchmarks/README.md, joint training)."""
    cfg = resolve_run_config({}, {'task': ['audio', 'point', 'weather']})
    assert cfg['train']['warmup_epochs'] == 1 and cfg['train']['clip_grad'] == 1.0
    assert cfg['train']['lr'] == DEFAULTS['train']['lr']  # 2e-3 vs 3e-3: the engine default
    cfg = resolve_run_config({'train': {'clip_grad': None}}, {'task': ['audio', 'point'], 'train': {'lr': 5e-4}},
                             parse_set_overrides(['train.warmup_epochs=0']))
    assert cfg['train']['clip_grad'] is None and cfg['train']['warmup_epochs'] == 0 and cfg['train']['lr'] == 5e-4


def test_wrong_task_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown task 'audoi'; known tasks: audio"):
        resolve_run_config({}, {'task': 'audoi'})


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    raw = yaml.safe_load(path.read_text())
    cfg = resolve_run_config(raw, {}, {}, file_origin=str(path))
    assert cfg['task'] == raw['task']
    # downstream keyword checks: the trunk options must be accepted by the trunk constructor
    timm.create_model(cfg['model']['variant'], num_classes=0, device='meta', **cfg['model']['trunk'])


def test_every_published_recipe_is_shipped():
    names = {p.name for p in CONFIGS}
    for expected in ['audio_speechcommands35.yaml', 'point_modelnet40.yaml', 'video_kinetics400.yaml',
                     'weather_global_temp.yaml', 'weather_global_wind.yaml', 'weather_tslib.yaml',
                     'image_imagenet_eval.yaml', 'demo_audio.yaml', 'demo_point.yaml', 'demo_video.yaml',
                     'demo_weather.yaml', 'demo_joint.yaml']:
        assert expected in names


def test_duplicate_key_in_a_config_file_is_an_error(tmp_path):
    from unimodal.config import load_config_file
    path = tmp_path / 'dup.yaml'
    path.write_text('train:\n  lr: 0.1\n  lr: 0.2\n')
    with pytest.raises(ConfigError, match=r"duplicate key 'lr'.*line 3"):
        load_config_file(path)
