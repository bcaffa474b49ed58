"""The published recipes held to the published values (``shared/reference/published_recipes.md``).

Each test reads a recipe file from ``configs/`` and resolves it the way ``unimodal train --config`` does (then builds
the reader, adapter or schedule from it where the value only shows there), so a recipe cannot drift from the
published set-up without a test failing. One test function per recipe and aspect.
"""
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from test_image import _photo, _pil_tensor  # the smooth non-square test image, PIL → tensor
from unimodal.config import ConfigError, load_config_file, resolve_run_config

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'


def _recipe(name: str, set_overrides=None):
    path = CONFIGS / f'{name}.yaml'
    return resolve_run_config(load_config_file(path), {}, set_overrides or {}, file_origin=str(path))


# ------------------------------------------------------------------------------------------------ point: ModelNet40


def test_point_modelnet40_trunk_loss_and_optimisation():
    """Trunk S, drop path 0.4, from scratch; AdamW 5e-4, wd 0.05; 300 epochs, batch 16, cosine to 1e-6 without
    warm-up; the original's label smoothing (0.2, off-target 0.2/39); bf16 the one named precision deviation."""
    cfg = _recipe('point_modelnet40')
    assert cfg.task == 'point' and cfg.defaults == 'engine'
    assert cfg.model.variant == 'unireplknet_s' and cfg.model.drop_path_rate == 0.4
    assert cfg.model.pretrained is False and cfg.model.init_from is None
    t = cfg.train
    assert (t.optimizer, t.lr, t.weight_decay, tuple(t.betas)) == ('adamw', 5e-4, 0.05, (0.9, 0.999))
    assert (t.epochs, t.batch_size, cfg.grad_accum_steps(1), t.schedule, t.warmup_epochs, t.min_lr) == \
        (300, 16, 1, 'cosine', 0.0, 1e-6)
    assert t.mixup == 0 and t.cutmix == 0 and t.clip_grad is None and t.layer_decay is None and not t.ema
    assert t.loss == 'auto' and t.amp == 'bf16'
    # label smoothing: the original's targets are 1 - 0.2 on the true class and 0.2 / 39 on each other class
    c = 40
    logits, y = torch.randn(64, c, generator=torch.Generator().manual_seed(0)), torch.arange(64) % c
    one_hot = F.one_hot(y, c).float()
    original = -(((1 - 0.2) * one_hot + 0.2 / (c - 1) * (1 - one_hot)) * logits.log_softmax(-1)).sum(-1).mean()
    ours = F.cross_entropy(logits.double(), y, label_smoothing=t.label_smoothing)
    assert float(ours) == pytest.approx(float(original), rel=1e-6)
    # the schedule: at every epoch start the lr of timm's per-epoch CosineLRScheduler(t_initial=300, lr_min=1e-6)
    from unimodal.engine.optim import create_schedule
    steps = 3
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=t.lr)
    sched = create_schedule(opt, schedule=t.schedule, epochs=t.epochs, steps_per_epoch=steps,
                            warmup_epochs=t.warmup_epochs, min_lr=t.min_lr)
    for epoch in range(t.epochs + 1):
        expected = 1e-6 + 0.5 * (5e-4 - 1e-6) * (1 + math.cos(math.pi * epoch / 300))
        assert sched.get_last_lr()[0] == pytest.approx(expected, rel=1e-9, abs=1e-12), epoch
        for _ in range(steps if epoch < t.epochs else 0):
            sched.step()


def test_point_modelnet40_projector_and_poses():
    """The published P2P projector (1 157 987 parameters), 224 px, k-NN 32; training poses θ ∈ [0.04, 1.94]π, tilt
    φ ∈ [-0.4, -0.2]π, per-axis scale U(2/3, 3/2) and translation ±0.2; the plain eval pass at (0.1, -0.35)π."""
    from unimodal.modalities.point import PointAdapter
    cfg = _recipe('point_modelnet40')
    adapter = PointAdapter(**cfg.model.adapter)
    assert adapter.mode == 'p2p' and adapter.image_size == 224 and adapter.projector.encoder.k == 32
    assert sum(p.numel() for p in adapter.parameters()) == 1_157_987
    assert adapter.num_views == 4 and adapter.view_pool == 'concat'
    assert adapter.augment_rotate and adapter.train_theta == (0.04, 1.94) and adapter.train_phi == (-0.4, -0.2)
    assert adapter.eval_pose == (0.1, -0.35)
    assert adapter.augment_scale == pytest.approx((2 / 3, 3 / 2), abs=1e-6) and adapter.augment_translate == 0.2
    assert adapter.up_axis == 'y'  # the reader's y-up clouds; the adapter turns them to the published z-up frame
    assert not adapter.normalize  # the reader's clouds as they come (normalised over the stored 8192 points)


def test_point_modelnet40_eval_protocol():
    """The published test protocol: the 8 fixed poses θ = linspace(0.1, 2, 9)[:8]·π, φ = -0.35π, accuracy over all
    8·N predictions (no voting); it needs the p2p projector."""
    from unimodal.modalities.point import published_test_poses
    from unimodal.tasks import get_task
    cfg = _recipe('point_modelnet40')
    assert cfg.eval.protocol == 'published_8pose' and cfg.eval.split == 'test'
    task = get_task('point')
    assert task.eval_predictor(cfg.eval.protocol) is not None
    theta = np.linspace(0.1, 2, 9)[:8] * np.pi
    assert np.allclose(published_test_poses().numpy(), np.stack([theta, np.full(8, -0.35 * np.pi)], -1), atol=1e-6)
    text = task.describe_protocol(cfg.eval.protocol, list(range(2468)))
    assert '8 fixed poses' in text and '19744 predictions' in text and 'no voting' in text
    with pytest.raises(ConfigError, match='mode=p2p'):
        _recipe('point_modelnet40', {'model': {'adapter': {'mode': 'p2p_light'}}})


def _dat(root: Path, n_train: int = 2, n_test: int = 1) -> dict:
    """Point-BERT-style .dat files of 8192-point clouds; returns the clouds written, by split."""
    rng = np.random.default_rng(0)
    clouds = {}
    for split, n in (('train', n_train), ('test', n_test)):
        clouds[split] = [(rng.normal(size=(8192, 3)) + 3).astype(np.float32) for _ in range(n)]
        with open(root / f'modelnet40_{split}_8192pts_fps.dat', 'wb') as f:
            pickle.dump((clouds[split], [np.array([0], dtype=np.int32)] * n), f, protocol=4)
    return clouds


def test_point_modelnet40_points_per_shape(tmp_path):
    """4096 points per shape; training clouds re-drawn on every read from an FPS pool of 4800 of the .dat's 8192;
    test clouds the first 4096 of the stored FPS order; both normalised over the 8192 points, not after."""
    from unimodal.data.modelnet import normalize_unit_sphere
    from unimodal.tasks import get_task
    cfg = _recipe('point_modelnet40')
    assert cfg.data.options == {'num_points': 4096, 'redraw_from': 4800}
    clouds = _dat(tmp_path)
    sets = get_task('point').build_datasets(tmp_path, cfg.data.options, splits=['train', 'test'])
    train, test = sets['train'], sets['test']
    assert train.redraw_from == 4800 and train.num_points == 4096 and train.sampling == 'first'
    a, b = train[0][0], train[0][0]
    assert a.shape == b.shape == (4096, 3) and not torch.equal(a, b)
    assert len(np.unique(a.numpy(), axis=0)) == 4096
    full = {tuple(p) for p in normalize_unit_sphere(clouds['train'][0]).round(5)}
    assert {tuple(p) for p in a.numpy().round(5)} <= full
    expected = normalize_unit_sphere(clouds['test'][0])[:4096]
    assert torch.allclose(test[0][0], torch.from_numpy(expected), atol=1e-6)
    # the p2p adapter takes the clouds as they come (normalize: false): no re-normalising of a draw or of the 4096
    assert cfg.model.adapter['normalize'] is False


# ------------------------------------------------------------------------------------------------ image: ImageNet eval


def _val_reader(root: Path, cfg):
    from unimodal.tasks import get_task
    return get_task('image').build_datasets(root, cfg.data.options, splits=['val'])['val']


@pytest.fixture()
def image_folder(tmp_path):
    img = _photo(300, 200)
    (tmp_path / 'val' / 'n0001').mkdir(parents=True)
    img.save(tmp_path / 'val' / 'n0001' / 'a.png')
    return tmp_path, img


def test_image_imagenet_eval_224(image_folder):
    """224 px: short side resized to int(224 / 0.875) = 256 (bicubic), centre crop 224."""
    root, img = image_folder
    cfg = _recipe('image_imagenet_eval')
    assert cfg.task == 'image' and cfg.model.variant == 'unireplknet_a' and cfg.eval.split == 'val'
    ds = _val_reader(root, cfg)
    dc = ds.data_config
    assert (dc['input_size'], dc['crop_pct'], dc['crop_mode'], dc['interpolation']) == \
        ((3, 224, 224), 0.875, 'center', 'bicubic')
    expected = _pil_tensor(img.resize((384, 256), Image.Resampling.BICUBIC).crop((80, 16, 304, 240)))
    torch.testing.assert_close(ds[0][0], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize('override', [{'pretrained_cfg': 'unireplknet_b.in22k_ft_in1k_384'}, {'image_size': 384}])
def test_image_imagenet_eval_384_warps(image_folder, override):
    """The 384-px models (22K -> 1K), as the recipe's comment says to run them: warp to 384x384, no crop."""
    root, img = image_folder
    cfg = _recipe('image_imagenet_eval', {'data': {'options': override}})
    ds = _val_reader(root, cfg)
    dc = ds.data_config
    assert (dc['input_size'], dc['crop_pct'], dc['crop_mode'], dc['interpolation']) == \
        ((3, 384, 384), 1.0, 'squash', 'bicubic')
    torch.testing.assert_close(ds[0][0], _pil_tensor(img.resize((384, 384), Image.Resampling.BICUBIC)),
                               atol=1e-6, rtol=0)


def test_small_data_defaults_are_not_in_the_published_recipes():
    """The audio warp, 64 mel bands and last-epoch test, the image and video fan-in init, the image, video and audio
    stride-2 stem and the video and audio max pooling are task defaults for training from scratch on small data; the
    published recipes keep the published settings (no warp, 128 bands, std .02 init, stride-4 stem, average pooling,
    best validation epoch)."""
    from unimodal.config import parse_set_overrides
    audio = resolve_run_config({}, {'task': 'audio'}, parse_set_overrides([]))
    assert audio.model.adapter['freq_warp'] == 0.25 and audio.model.adapter['time_warp'] == 0.25
    assert audio.model.adapter['num_mel_bins'] == 64 and audio.model.trunk['global_pool'] == 'max'
    assert audio.eval.checkpoint == 'last'
    image = resolve_run_config({}, {'task': 'image'}, parse_set_overrides([]))
    assert image.model.trunk['weight_init'] == 'fan_in'
    video = resolve_run_config({}, {'task': 'video'}, parse_set_overrides([]))
    assert video.model.trunk['weight_init'] == 'fan_in' and video.model.trunk['global_pool'] == 'max'
    for task in ('audio', 'point', 'timeseries'):
        cfg = resolve_run_config({}, {'task': task}, parse_set_overrides([]))
        assert cfg.model.trunk.get('weight_init', 'trunc_normal') == 'trunc_normal', task
    recipe = resolve_run_config(load_config_file('video_kinetics400'))
    assert recipe.model.trunk.get('weight_init', 'trunc_normal') == 'trunc_normal'
    assert recipe.model.trunk.get('global_pool', 'avg') == 'avg'
    recipe = resolve_run_config(load_config_file('audio_speechcommands35'))
    assert recipe.model.adapter.get('freq_warp', 0) == 0 and recipe.model.adapter.get('time_warp', 0) == 0
    assert recipe.model.trunk.get('global_pool', 'avg') == 'avg' and recipe.eval.checkpoint == 'best'
    assert recipe.model.adapter.get('num_mel_bins', 128) == 128  # the published features
    recipe = resolve_run_config(load_config_file('image_imagenet_eval'))
    assert recipe.model.trunk.get('weight_init', 'trunc_normal') == 'trunc_normal'
    # the stride-2 stem: image, video and audio from scratch only; never in a recipe, never under loaded weights
    assert image.model.trunk['stem_stride'] == 2 == video.model.trunk['stem_stride'] == audio.model.trunk['stem_stride']
    for task in ('point', 'timeseries'):
        cfg = resolve_run_config({}, {'task': task}, parse_set_overrides([]))
        assert 'stem_stride' not in cfg.model.trunk, task
    for name in ('video_kinetics400', 'image_imagenet_eval', 'audio_speechcommands35'):
        assert resolve_run_config(load_config_file(name)).model.trunk.get('stem_stride', 4) == 4, name
    for weights in ({'pretrained': 'in1k', 'variant': 'unireplknet_a'}, {'init_from': 'run/best.pt'}):
        for task in ('image', 'video', 'audio'):
            cfg = resolve_run_config({}, {'task': task, 'model': weights}, parse_set_overrides([]))
            assert 'stem_stride' not in cfg.model.trunk, (task, weights)
            assert cfg.model.trunk.get('weight_init') == (None if task == 'audio' else 'fan_in'), (task, weights)
    chosen = resolve_run_config({}, {'task': 'image', 'model': {'pretrained': 'in1k', 'variant': 'unireplknet_a'}},
                                parse_set_overrides(['model.trunk.stem_stride=2']))
    assert chosen.model.trunk['stem_stride'] == 2                      # the user's own choice stands
    import unimodal
    model = unimodal.create_model('image', variant='unireplknet_test', num_classes=6, trunk_kwargs=image.model.trunk)
    w = model.trunk.stages[2][0].pwconv1[1].weight.detach()         # fan-in 64: std 1/8 instead of .02
    assert abs(float(w.std()) - 0.125) < 0.02
