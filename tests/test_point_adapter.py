"""Point-cloud adapter: depth and p2p_light projections (published p2p: test_point_p2p.py), gradients,
re-parameterization, augmentation, voting, errors."""
import math

import pytest
import torch
import torch.nn.functional as F

import unimodal
from unimodal import InputShapeError
from unimodal.modalities.point import P2PLightProjector, PointAdapter, rotation_about_axis, vote_predict

VARIANT = 'unireplknet_test'


def _clouds(b=2, n=64, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, c, generator=g)
    if c == 6:
        x[..., 3:] = F.normalize(x[..., 3:], dim=-1)
    return x


@pytest.fixture(scope='module')
def depth_model():
    """One small depth-mode task model shared by the read-only tests (eval mode)."""
    return unimodal.create_model('point', variant=VARIANT, num_classes=4, image_size=32).eval()


def _randomize_bn(model):
    """Give every BatchNorm non-trivial statistics so folding them is actually exercised."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if m.weight is not None:
                m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def test_depth_mode_shapes_and_range():
    a = PointAdapter()  # default: depth
    assert (a.num_views, a.out_chans) == (1, 6)
    x = _clouds(3, 200)
    grid, _ = a(x)
    assert grid.shape == (3, 6, 64, 64)
    assert grid.min() >= 0 and grid.max() <= 1
    occupied = (grid > 0).float().mean()
    assert 0.02 < occupied < 0.9  # a silhouette, not an empty or full image
    # normals are accepted and ignored by the depth views
    xn = torch.cat([x, F.normalize(torch.randn(3, 200, 3), dim=-1)], dim=-1)
    assert torch.equal(a(xn)[0], grid)


def test_depth_zbuffer_keeps_nearest_point():
    a = PointAdapter(normalize=False, splat=0, image_size=16, num_depth_views=4)
    # two points on the optical axis of view 0 (camera looks down -z, +z is towards it)
    x = torch.tensor([[[0., 0., 0.5], [0., 0., -0.5]]])
    img = a(x)[0][0, 0]
    assert img.max().item() == pytest.approx(0.25 + 0.375 * 1.5)
    assert (img > 0).sum() == 1


def test_depth_views_follow_up_axis_rotation():
    a = PointAdapter(image_size=32, num_depth_views=6, splat=0)
    x = _clouds(1, 500)
    rot = rotation_about_axis(torch.tensor(math.pi / 2), 'y')
    img, rimg = a(x)[0][0], a(x @ rot.T)[0][0]
    # a 90° turn about the up axis moves each side view to the previous one
    for i in range(4):
        assert ((rimg[i] - img[(i + 1) % 4]).abs() > 1e-4).float().mean() < 0.01
        assert ((rimg[i] - img[i]).abs() > 1e-4).float().mean() > 0.1  # views do differ


def test_p2p_light_shapes():
    a = PointAdapter(mode='p2p_light', image_size=32, k=8)
    assert (a.num_views, a.out_chans, a.view_pool) == (4, 3, 'concat')
    grid, _ = a(_clouds(2, 64))
    assert grid.shape == (8, 3, 32, 32)


def test_p2p_light_scatter_equals_explicit_3x3_neighbourhood():
    p = P2PLightProjector(image_size=12)
    feats = torch.randn(2, 5, 30)
    xy = torch.rand(2, 30, 2) * 2 - 1
    got = p.scatter(feats, xy)
    # reference: every point written (max) into its 3x3 neighbourhood, empty pixels 0
    s = 12
    lo, hi = xy.amin(1, keepdim=True), xy.amax(1, keepdim=True)
    half = ((hi - lo) / 2).amax(-1, keepdim=True)
    uv = ((xy - (lo + hi) / 2) / half + 1) * 0.5 * (s - 1)
    ref = torch.full((2, 5, s, s), float('-inf'))
    for b in range(2):
        for i in range(30):
            c, r = int(uv[b, i, 0].round()), s - 1 - int(uv[b, i, 1].round())
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    if 0 <= r + dr < s and 0 <= c + dc < s:
                        ref[b, :, r + dr, c + dc] = torch.maximum(ref[b, :, r + dr, c + dc], feats[b, :, i])
    ref[torch.isinf(ref)] = 0
    assert torch.allclose(got, ref)


def test_p2p_light_gradients_reach_point_encoder_through_task_model():
    model = unimodal.create_model('point', variant=VARIANT, num_classes=5, mode='p2p_light', image_size=32, k=8)
    assert model.head.norm.normalized_shape[0] == 4 * model.trunk.num_features  # views concatenated
    model.train()
    out = model(_clouds(2, 64))
    assert out.shape == (2, 5)
    F.cross_entropy(out, torch.tensor([0, 3])).backward()
    proj = model.adapter.projector
    for name in ('point_conv', 'edge_conv', 'dw', 'pw', 'fuse', 'to_rgb'):
        grad = getattr(proj, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize('mode', ['depth', 'p2p_light', 'p2p'])
def test_task_model_reparameterize_keeps_outputs(mode):
    kw = dict(mode=mode, image_size=32, k=8) if mode != 'depth' else dict(image_size=32)
    model = unimodal.create_model('point', variant=VARIANT, num_classes=5, **kw)
    _randomize_bn(model)
    model.eval()
    x = _clouds(2, 96)
    with torch.no_grad():
        ref = model(x)
        model.reparameterize()
        out = model(x)
    rel = ((out - ref).norm() / ref.norm()).item()
    assert rel <= 1e-5
    if mode != 'depth':
        bns = [m for m in model.adapter.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert not bns  # folded away


def test_augment_keeps_shape_changes_points_and_normals_stay_unit():
    a = PointAdapter()
    x = _clouds(4, 128, c=6)
    y = a.augment(x)
    assert y.shape == x.shape
    assert not torch.allclose(y[..., :3], x[..., :3])
    assert torch.allclose(y[..., 3:].norm(dim=-1), torch.ones(4, 128), atol=1e-5)
    # rotation only: norms and the up coordinate are preserved, points still move
    r = PointAdapter(augment_scale=None, augment_translate=0.)
    z = r.augment(x[..., :3])
    assert torch.allclose(z.norm(dim=-1), x[..., :3].norm(dim=-1), atol=1e-5)
    assert torch.allclose(z[..., 1], x[..., 1], atol=1e-6)
    assert not torch.allclose(z, x[..., :3])


def test_augment_only_in_training(depth_model):
    x = _clouds(2, 100)
    with torch.no_grad():
        assert torch.equal(depth_model(x), depth_model(x))


def test_vote_predict(depth_model):
    model = depth_model
    x = _clouds(2, 100)
    model.train()
    p1 = vote_predict(model, x, num_votes=1)
    assert model.training  # mode restored
    model.eval()
    rotated = torch.cat([x @ rotation_about_axis(torch.tensor(2 * math.pi * i / 3), 'y').T for i in range(3)])
    with torch.no_grad():
        assert torch.allclose(p1, model(x).softmax(-1), atol=1e-6)
        manual = model(rotated).softmax(-1).reshape(3, 2, -1).mean(0)
    p3 = vote_predict(model, x, num_votes=3)
    assert p3.shape == (2, 4)
    assert torch.allclose(p3.sum(-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(p3, manual, atol=1e-5)


@pytest.mark.parametrize('bad, problem', [
    (torch.randn(2, 50, 2), 'values per point, got 2'),
    (torch.randn(50, 3), '3 dimensions'),
    (torch.randn(2, 3, 50, 3), '3 dimensions'),
    (torch.randint(0, 5, (2, 50, 3)), 'floating-point'),
    (torch.full((2, 50, 3), float('nan')), 'NaN'),
])
def test_wrong_inputs_raise_input_shape_error(depth_model, bad, problem):
    with pytest.raises(InputShapeError, match=problem) as e:
        depth_model(bad)
    assert str(tuple(bad.shape)) in str(e.value) and '(B, N, 3)' in str(e.value)


def test_bad_options():
    with pytest.raises(ValueError, match='mode'):
        PointAdapter(mode='voxel')
    with pytest.raises(ValueError, match='use_normals'):
        PointAdapter(use_normals=True)  # depth ignores normals
    with pytest.raises(ValueError, match='use_normals'):
        PointAdapter(mode='p2p', use_normals=True)  # the published projector reads xyz only
    a = PointAdapter(mode='p2p_light', use_normals=True, image_size=16, k=4)
    with pytest.raises(InputShapeError, match='use_normals'):
        a.check_input(torch.randn(1, 10, 3))
    assert a(_clouds(1, 20, c=6))[0].shape == (4, 3, 16, 16)
