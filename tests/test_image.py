"""Image adapter, ImageFolder reader, built-in image set, image task and released-classifier loading."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import unimodal
from unimodal.data.errors import DataError
from unimodal.data.images import BUILTIN_IMAGE_CLASSES, ImageFolderDataset, eval_transform, make_builtin_images
from unimodal.models.unireplknet_checkpoint import CheckpointError
from unimodal.tasks.image import ImageTask, load_released_classifier

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics so re-parameterization has something to fold."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


# ------------------------------------------------------------------------------------------------ adapter

def test_image_model_shapes_and_normalisation():
    model = unimodal.create_model('image', variant='unireplknet_test', num_classes=7).eval()
    x = torch.rand(2, 3, 64, 64)
    assert model(x).shape == (2, 7)
    grid, state = model.adapter(x)
    assert state is None and grid.shape == x.shape
    torch.testing.assert_close(grid, (x - IMAGENET_MEAN) / IMAGENET_STD)
    # Non-square inputs work too (the trunk pools globally).
    assert model(torch.rand(1, 3, 48, 80)).shape == (1, 7)


def test_image_adapter_custom_stats_and_grayscale():
    ad = unimodal.get_adapter_class('image')(in_chans=1, mean=(0.5,), std=(0.25,))
    x = torch.full((1, 1, 8, 8), 0.75)
    grid, _ = ad(x)
    assert torch.allclose(grid, torch.ones_like(grid))
    assert ad.out_chans == 1
    with pytest.raises(ValueError, match='one per channel'):
        unimodal.get_adapter_class('image')(mean=(0.5,), std=(0.2, 0.2, 0.2))
    with pytest.raises(TypeError):
        unimodal.get_adapter_class('image')(nonsense=1)


@pytest.mark.parametrize('x, match', [
    (torch.rand(3, 32, 32), 'add a batch dimension'),
    (torch.rand(2, 32, 32, 3), 'channels-last'),
    (torch.rand(2, 1, 32, 32), 'expected 3 channels'),
    (torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), 'floating-point'),
])
def test_image_adapter_rejects_wrong_input(x, match):
    model = unimodal.create_model('image', variant='unireplknet_test', num_classes=3)
    with pytest.raises(unimodal.InputShapeError, match=match) as info:
        model(x)
    assert str(tuple(x.shape)) in str(info.value)  # names the received shape


def test_image_adapter_hflip_only_in_training():
    ad = unimodal.get_adapter_class('image')(hflip=1.0)
    x = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(ad.augment(x), x.flip(-1))
    model = unimodal.create_model('image', variant='unireplknet_test', num_classes=3, hflip=1.0).eval()
    asym = torch.rand(1, 3, 32, 32)
    # eval: no augmentation, so a flipped input gives a different output than the input itself
    assert not torch.allclose(model(asym), model(asym.flip(-1)))


def test_image_task_model_reparameterize_equivalent():
    torch.manual_seed(0)
    model = unimodal.create_model('image', variant='unireplknet_test', num_classes=5)
    _randomize_bn(model)
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        model.reparameterize()
        after = model(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.trunk.modules())
    rel = (after - before).norm() / before.norm()
    assert rel < 1e-5, rel


# ------------------------------------------------------------------------------------------------ released checkpoints

@pytest.mark.parametrize('form', ['train', 'deploy', 'train_into_deploy'])
def test_load_released_classifier_reproduces_logits(tmp_path, form):
    torch.manual_seed(1)
    released = timm.create_model('unireplknet_test', num_classes=1000)
    _randomize_bn(released)
    with torch.no_grad():  # a non-trivial final norm, so a missing or doubled norm would show
        released.norm.weight.uniform_(0.5, 2.0)
        released.norm.bias.uniform_(-0.5, 0.5)
        released.head.weight.normal_(0, 0.5)
    released.eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        expected = released((x - IMAGENET_MEAN) / IMAGENET_STD)
    if form == 'deploy':
        released.reparameterize()
    path = tmp_path / 'unireplknet_test_in1k.pth'
    torch.save({'model': released.state_dict()}, path)  # some releases wrap the weights under 'model'

    trunk_kwargs = {'deploy': True} if form != 'train' else None
    model = unimodal.create_model('image', variant='unireplknet_test', num_classes=1000, trunk_kwargs=trunk_kwargs)
    load_released_classifier(model, path)
    model.eval()
    assert isinstance(model.head.norm, torch.nn.Identity)
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_load_released_classifier_errors(tmp_path):
    ref = timm.create_model('unireplknet_test', num_classes=10)
    path = tmp_path / 'ten.pth'
    torch.save(ref.state_dict(), path)
    model = unimodal.create_model('image', variant='unireplknet_test', num_classes=1000)
    with pytest.raises(ValueError, match='num_classes=10'):
        load_released_classifier(model, path)
    headless = timm.create_model('unireplknet_test', num_classes=0)
    torch.save(headless.state_dict(), tmp_path / 'headless.pth')
    with pytest.raises(CheckpointError, match='headless.pth: no classifier'):  # one line for the CLI
        load_released_classifier(model, tmp_path / 'headless.pth')


# ------------------------------------------------------------------------------------------------ reader

def _write_png(path: Path, w: int, h: int, seed: int = 0) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def test_eval_transform_resize_and_centre_crop():
    # A 100x50 (w x h) image whose columns encode their x position: after resizing the short side to
    # floor(32 / 0.5) = 64 the width is 128, and the centre crop keeps x in [48, 80) of the resized image.
    arr = np.tile(np.linspace(0, 255, 100).astype(np.uint8)[None, :, None], (50, 1, 3))
    out = eval_transform(image_size=32, crop_pct=0.5, interpolation='bilinear')(Image.fromarray(arr))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    col = out[0, 16].numpy()
    assert np.all(np.diff(col) >= 0)  # still a left-to-right ramp
    assert abs(col.mean() - 0.5) < 0.05  # centred: the middle of the ramp
    assert 0.35 < col[0] < 0.4 and 0.6 < col[-1] < 0.65  # x = 48/128 .. 80/128 of the ramp


def _pil_tensor(img) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255)


def _photo(w: int, h: int) -> Image.Image:
    """A smooth non-square test image (a random pattern would hide a wrong resize behind aliasing noise)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    arr = np.stack([np.sin(9 * xx) * np.cos(5 * yy), np.cos(7 * xx + 3 * yy), xx * yy], -1)
    return Image.fromarray(((arr - arr.min()) / np.ptp(arr) * 255).astype(np.uint8))


@pytest.mark.parametrize('how', [dict(pretrained_cfg='unireplknet_b.in22k_ft_in1k_384'), dict(image_size=384),
                                 dict(pretrained_cfg=timm.models.get_pretrained_cfg('unireplknet_l.in22k_ft_in1k_384'))])
def test_384_evaluation_warps_without_a_crop(how):
    """The published 384-px evaluation of the 22K->1K models: resize (warp) to 384x384, no crop."""
    img = _photo(500, 300)
    out = eval_transform(**how)(img)
    expected = _pil_tensor(img.resize((384, 384), Image.Resampling.BICUBIC))
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)  # equal pixels (float rounding of /255 aside)
    cfg = unimodal.data.images.resolve_eval_config(**how)
    assert cfg['crop_mode'] == 'squash' and cfg['crop_pct'] == 1.0 and cfg['interpolation'] == 'bicubic'
    # an explicit crop mode wins over the published default: short side to 384, centre crop
    centre = eval_transform(**how, crop_mode='center', crop_pct=1.0)(img)
    expected = _pil_tensor(img.resize((640, 384), Image.Resampling.BICUBIC).crop((128, 0, 512, 384)))
    torch.testing.assert_close(centre, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize('how', [dict(pretrained_cfg='unireplknet_a.in1k'), dict(image_size=224), dict()])
def test_224_evaluation_resizes_short_side_to_256_and_centre_crops(how):
    img = _photo(300, 200)
    out = eval_transform(**how)(img)
    # int(224 / 0.875) = 256 on the short side (bicubic): 384 x 256; centre crop 224: left 80, top 16
    expected = _pil_tensor(img.resize((384, 256), Image.Resampling.BICUBIC).crop((80, 16, 304, 240)))
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)  # equal pixels (float rounding of /255 aside)
    assert not torch.allclose(out, _pil_tensor(img.resize((224, 224), Image.Resampling.BICUBIC)), atol=0.05)


def test_eval_config_from_a_model_and_bad_options():
    model = timm.create_model('unireplknet_test', pretrained=False)
    cfg = unimodal.data.images.resolve_eval_config(pretrained_cfg=model.pretrained_cfg)
    assert cfg['input_size'] == (3, 64, 64) and cfg['crop_pct'] == 0.875 and cfg['crop_mode'] == 'center'
    assert np.allclose(cfg['mean'], IMAGENET_MEAN.flatten()) and np.allclose(cfg['std'], IMAGENET_STD.flatten())
    for bad, match in ((dict(pretrained_cfg='unireplknet_b.nonsense'), 'Invalid pretrained tag'),
                       (dict(crop_mode='middle'), 'crop_mode'), (dict(crop_pct=1.5), 'crop_pct'),
                       (dict(interpolation='cubic'), 'interpolation'), (dict(image_size=0), 'image_size')):
        with pytest.raises(ValueError, match=match):
            unimodal.data.images.resolve_eval_config(**bad)


def test_train_transform_is_a_seeded_random_resized_crop(tmp_path):
    _write_png(tmp_path / 'train' / 'a' / 'x.png', 64, 48)
    ds = ImageFolderDataset(tmp_path / 'train', image_size=16, train=True, train_scale=(0.2, 0.5))
    torch.manual_seed(0)
    first = [ds[0][0] for _ in range(3)]
    assert all(x.shape == (3, 16, 16) and x.dtype == torch.float32 for x in first)
    assert not torch.equal(first[0], first[1])  # a new crop per call
    ds2 = ImageFolderDataset(tmp_path / 'train', image_size=16, train=True, train_scale=(0.2, 0.5))
    torch.manual_seed(0)
    assert all(torch.equal(a, ds2[0][0]) for a in first)  # reproducible under a fixed torch seed
    state = torch.get_rng_state()
    ds2[0]
    assert torch.equal(state, torch.get_rng_state())  # the crop draws do not disturb the global generator


def test_imagefolder_reader_and_corrupt_image(tmp_path):
    root = tmp_path / 'val'
    _write_png(root / 'n001' / 'a.png', 40, 30, 0)
    _write_png(root / 'n001' / 'b.png', 30, 40, 1)
    _write_png(root / 'n002' / 'c.png', 64, 64, 2)
    (root / 'n002' / 'notes.txt').write_text('not an image, ignored by extension')
    ds = ImageFolderDataset(root, image_size=24, crop_pct=0.875)
    assert ds.classes == ['n001', 'n002'] and len(ds) == 3
    x, y = ds[2]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and y == 1

    bad = root / 'n002' / 'broken.png'
    good_bytes = (root / 'n002' / 'c.png').read_bytes()
    bad.write_bytes(good_bytes[:len(good_bytes) // 3])  # truncated PNG
    (root / 'n001' / 'empty.jpg').write_bytes(b'')
    ds = ImageFolderDataset(root, image_size=24)
    idx = [i for i, (p, _) in enumerate(ds.samples) if p.endswith('broken.png')][0]
    with pytest.raises(DataError, match='broken.png') as info:
        ds[idx]
    assert 'corrupt or truncated' in str(info.value)

    # up-front verification fails naming a bad file ...
    with pytest.raises(DataError, match=r'empty\.jpg: zero-byte'):
        ImageFolderDataset(root, image_size=24, verify=True)
    # ... or, with skip_bad, drops and counts both
    ds = ImageFolderDataset(root, image_size=24, verify=True, skip_bad=True)
    assert len(ds) == 3
    report = ds.skip_report.as_dict()
    assert report['skipped'] == 2 and report['listed'] == 5 and report['used'] == 3
    assert {Path(s['path']).name for s in report['skipped_files']} == {'broken.png', 'empty.jpg'}

    # skip_bad without verify: a bad file met in __getitem__ is counted and replaced by a readable one
    ds = ImageFolderDataset(root, image_size=24, skip_bad=True)
    idx = [i for i, (p, _) in enumerate(ds.samples) if p.endswith('broken.png')][0]
    x, _ = ds[idx]
    assert x.shape == (3, 24, 24) and ds.skip_report.count == 1


def test_imagefolder_class_list_mismatch(tmp_path):
    _write_png(tmp_path / 'val' / 'n001' / 'a.png', 16, 16)
    _write_png(tmp_path / 'val' / 'zzz' / 'b.png', 16, 16)
    with pytest.raises(DataError, match='zzz'):
        ImageFolderDataset(tmp_path / 'val', image_size=8, classes=['n001', 'n002'])
    ds = ImageFolderDataset(tmp_path / 'val', image_size=8, classes=['n001', 'n002'], skip_bad=True)
    assert len(ds) == 1 and ds.skip_report.count == 1


def test_builtin_images_deterministic_and_structured(tmp_path):
    a = make_builtin_images(tmp_path / 'a', seed=0, per_class=(3, 1, 1))
    b = make_builtin_images(tmp_path / 'b', seed=0, per_class=(3, 1, 1))
    files = sorted(p.relative_to(a) for p in a.rglob('*.png'))
    assert len(files) == (3 + 1 + 1) * len(BUILTIN_IMAGE_CLASSES)
    for rel in files:
        assert hashlib.sha256((a / rel).read_bytes()).digest() == hashlib.sha256((b / rel).read_bytes()).digest()
    # Classes must not be separable by mean colour: the per-class mean brightness spread is small
    # compared to the spread within classes.
    c = make_builtin_images(tmp_path / 'c', seed=3, per_class=(30, 0, 0))
    means = {cls: [np.asarray(Image.open(p), dtype=np.float32).mean() for p in (c / 'train' / cls).glob('*.png')]
             for cls in BUILTIN_IMAGE_CLASSES}
    between = np.std([np.mean(v) for v in means.values()])
    within = np.mean([np.std(v) for v in means.values()])
    assert between < within


def test_image_task_datasets_and_options(tmp_path):
    task = ImageTask()
    assert task.name == 'image' and task.adapter == 'image'
    root = task.make_builtin(tmp_path)
    cfg = task.default_config()
    sets = task.build_datasets(root, (cfg.get('data') or {}).get('options') or {})
    assert set(sets) == {'train', 'val', 'test'}
    assert sets['train'].classes == sets['test'].classes == sorted(BUILTIN_IMAGE_CLASSES)
    assert task.model_kwargs(cfg, sets['train']) == {'num_classes': 6}
    assert sets['train'].train and not sets['val'].train
    # The built-in set declares its reader defaults (small images, no centre crop) ...
    x, y = sets['train'][0]
    assert x.shape == (3, 32, 32) and sets['val'].crop_pct == 1.0
    # ... explicit options win ...
    assert task.build_datasets(root, {'image_size': 24}, splits=['val'])['val'][0][0].shape == (3, 24, 24)
    # ... and a real ImageFolder (no declared defaults) gets the ImageNet evaluation protocol.
    _write_png(tmp_path / 'inet' / 'val' / 'n01440764' / 'a.JPEG', 300, 200)
    val = task.build_datasets(tmp_path / 'inet', {}, splits=['val', 'test'])
    assert val['val'][0][0].shape == (3, 224, 224) and val['val'].crop_pct == 0.875
    assert val['test'].root == val['val'].root  # no test/ folder: test is val
    with pytest.raises(TypeError, match='unknown image data option'):
        task.build_datasets(root, {'imgsize': 32})
    with pytest.raises(FileNotFoundError, match='ImageFolder'):
        task.build_datasets(tmp_path / 'nowhere', {})
