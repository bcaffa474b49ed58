"""Video adapter: layouts (paper reshape, mosaic, channels), model wiring, errors, multi-view averaging."""
import logging

import pytest
import torch

import unimodal
from unimodal import InputShapeError
from unimodal.modalities import video as video_mod
from unimodal.modalities.video import VideoAdapter, mosaic_grid, multiview_predict


def _arange_clip(b=2, t=16, h=224, w=None):
    w = w or h
    return torch.arange(b * 3 * t * h * w, dtype=torch.float32).reshape(b, 3, t, h, w)


def test_paper_mode_equals_its_definition():
    x = _arange_clip(b=2, t=16, h=224)
    grid, _ = VideoAdapter(mode='paper', num_frames=16, image_size=224).encode(x)
    assert grid.shape == (2, 3, 896, 896)
    # frame t fills output rows 56t ... 56t+55; output row 56t+r holds frame rows 4r ... 4r+3 side by side
    for t in (0, 5, 15):
        for r in (0, 17, 55):
            row = grid[1, 2, 56 * t + r]
            expected = torch.cat([x[1, 2, t, 4 * r + k] for k in range(4)])
            assert torch.equal(row, expected)
    # so it is not a mosaic: the top-left 224x224 block is not frame 0
    assert not torch.equal(grid[0, 0, :224, :224], x[0, 0, 0])


def test_paper_mode_restrictions(caplog):
    video_mod._paper_warned = False
    with caplog.at_level(logging.WARNING, logger='unimodal.modalities.video'):
        VideoAdapter(mode='paper')
        VideoAdapter(mode='paper')
    assert sum('NOT a tiling' in r.getMessage() for r in caplog.records) == 1  # warned once
    with pytest.raises(ValueError, match='16 frames'):
        VideoAdapter(mode='paper', num_frames=8)
    with pytest.raises(ValueError, match='divisible by 4'):
        VideoAdapter(mode='paper', image_size=30)
    ad = VideoAdapter(mode='paper', image_size=None)
    assert ad.encode(_arange_clip(b=1, h=32))[0].shape == (1, 3, 128, 128)
    with pytest.raises(InputShapeError, match='square'):
        ad.check_input(torch.zeros(1, 3, 16, 32, 36))


@pytest.mark.parametrize('t,grid', [(16, (4, 4)), (8, (2, 4)), (12, (3, 4)), (4, (2, 2)), (5, (2, 3)), (7, (3, 3))])
def test_mosaic_default_grid(t, grid):
    assert mosaic_grid(t) == grid


def test_mosaic_puts_frame_t_in_tile_t():
    x = _arange_clip(b=2, t=16, h=8)
    ad = VideoAdapter(mode='mosaic', num_frames=16, image_size=8)
    grid, _ = ad.encode(x)
    assert ad.out_chans == 3 and grid.shape == (2, 3, 32, 32)
    for t in range(16):
        r, c = divmod(t, 4)
        assert torch.equal(grid[:, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8], x[:, :, t])


def test_mosaic_pads_missing_tiles_with_zeros():
    x = _arange_clip(b=1, t=5, h=4) + 1  # no zeros in the clip
    grid, _ = VideoAdapter(mode='mosaic', num_frames=5, image_size=4).encode(x)
    assert grid.shape == (1, 3, 8, 12)  # 2 x 3 tiles
    assert torch.equal(grid[:, :, 4:8, 4:8], x[:, :, 4])
    assert torch.count_nonzero(grid[:, :, 4:8, 8:12]) == 0
    with pytest.raises(ValueError, match='cannot hold'):
        VideoAdapter(mode='mosaic', num_frames=5, grid=(2, 2))


def test_channels_order_is_frame_major():
    x = _arange_clip(b=2, t=8, h=4)
    ad = VideoAdapter(mode='channels', num_frames=8, image_size=4)
    grid, _ = ad.encode(x)
    assert ad.out_chans == 24 and grid.shape == (2, 24, 4, 4)
    for t in range(8):
        for c in range(3):
            assert torch.equal(grid[:, 3 * t + c], x[:, c, t])


@pytest.mark.parametrize('mode,frames,size', [('mosaic', 4, 16), ('channels', 4, 32), ('paper', 16, 8)])
def test_model_gradients_and_reparameterize(mode, frames, size):
    torch.manual_seed(0)
    model = unimodal.create_model('video', variant='unireplknet_test', num_classes=4, mode=mode,
                                  num_frames=frames, image_size=size)
    x = torch.randn(2, 3, frames, size, size, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 4)
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the layout passes gradients through
    stem = next(p for n, p in model.trunk.named_parameters() if p.ndim == 4)
    assert stem.shape[1] == model.adapter.out_chans and stem.grad.abs().sum() > 0
    assert model.head.fc.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        # give BN non-trivial statistics so the fusion is really exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        before = model(x)
        model.reparameterize()
        after = model(x)
    assert ((after - before).norm() / before.norm()).item() <= 1e-5


@pytest.mark.parametrize('shape,match', [
    ((2, 3, 8, 16), '5 dims'),                # missing the batch or time dim
    ((2, 1, 8, 16, 16), '3 colour channels'),  # grey clip
    ((2, 8, 3, 16, 16), '3 colour channels'),  # time before channels
    ((2, 3, 4, 16, 16), 'T=8'),                # wrong number of frames
    ((2, 3, 8, 32, 32), '16x16'),              # wrong frame size
])
def test_wrong_input_raises_input_shape_error(shape, match):
    model = unimodal.create_model('video', variant='unireplknet_test', num_classes=4, mode='channels',
                                  num_frames=8, image_size=16)
    with pytest.raises(InputShapeError, match=match) as err:
        model(torch.zeros(shape))
    assert str(tuple(shape)) in str(err.value)  # names the received shape
    with pytest.raises(InputShapeError, match='float'):
        model(torch.zeros(2, 3, 8, 16, 16, dtype=torch.uint8))


def test_unknown_mode_and_options_fail():
    with pytest.raises(ValueError, match='mode'):
        VideoAdapter(mode='tubelets')
    with pytest.raises(TypeError):
        VideoAdapter(mode='mosaic', frames=8)


def test_multiview_averages_softmax_scores_per_video():
    torch.manual_seed(0)
    model = unimodal.create_model('video', variant='unireplknet_test', num_classes=5, mode='channels',
                                  num_frames=4, image_size=16).eval()
    clips = torch.randn(3, 6, 3, 4, 16, 16)  # 3 videos, 2 clips x 3 crops
    with torch.no_grad():
        per_clip = model(clips.flatten(0, 1)).softmax(-1).reshape(3, 6, 5)
        expected = per_clip.mean(1)
        probs = multiview_predict(model, clips, chunk_size=4)
        in_model = model(clips)  # a 6-D batch: the model returns log of the averaged scores
    assert probs.shape == (3, 5)
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(in_model.softmax(-1), expected, rtol=1e-5, atol=1e-6)
    # averaging scores is not averaging logits
    assert not torch.allclose(model(clips.flatten(0, 1)).reshape(3, 6, 5).mean(1).softmax(-1), expected, atol=1e-4)
    with pytest.raises(InputShapeError):
        multiview_predict(model, clips[0])
