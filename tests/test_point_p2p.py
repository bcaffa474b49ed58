"""The published P2P projector (``PointAdapter(mode='p2p')``): size, geometry against independent formulas of the
original rotations, the published grid and sum-splat, features on the canonical cloud, batch independence,
gradients, the 8-pose test protocol."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unimodal
from unimodal.modalities.point import PointAdapter, predict_poses, published_test_poses
from unimodal.modalities.point_ops import normalize_unit_sphere
from unimodal.modalities.point_p2p import (EdgePointEncoder, MultiViewFusion, P2PProjector, pose_matrix, sample_poses,
                                           splat_pixels, splat_sum, view_matrices)

VARIANT = 'unireplknet_test'
S = 28  # small grid for speed: 4x4 fusion tokens per view


def _clouds(b=2, n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 3, generator=g) * torch.tensor([1.0, 0.6, 0.8])


def _rodrigues(angle, axis):
    """Right-handed rotation by ``angle`` about the unit ``axis`` (numpy, float64)."""
    axis = np.asarray(axis, dtype=np.float64)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _rotate_theta_phi(theta, phi):
    """The original pose: Rod(-θ, e_z) · Rod(-φ, (sin θ, -cos θ, 0))."""
    return _rodrigues(-theta, [0, 0, 1]) @ _rodrigues(-phi, [np.sin(theta), -np.cos(theta), 0])


def _euler(a, b, c):
    """The original euler2mat: R_x(a) R_y(b) R_z(c), written as axis rotations."""
    return _rodrigues(a, [1, 0, 0]) @ _rodrigues(b, [0, 1, 0]) @ _rodrigues(c, [0, 0, 1])


def test_published_parameter_count():
    a = PointAdapter(mode='p2p')
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(a) == 1_157_987
    assert count(a.projector.fusion) == 1_074_304
    assert count(a.projector.encoder) == 32 + 16 * 64 + 2 * 64 + 64 * 64 + 64  # 3->8, edge 16->64 + GN, 64->64
    assert count(a.projector.img_block) == 2 * (64 * 64 * 9 + 2 * 64) + 64 * 64 + 64  # BasicBlock(64) + 1x1
    assert count(PointAdapter(mode='p2p', image_size=S)) == 1_157_987  # the grid size changes no weight


def test_pose_and_view_matrices_equal_the_original_formulas():
    g = torch.Generator().manual_seed(0)
    poses = torch.cat([published_test_poses(), (torch.rand(16, 2, generator=g) * 4 - 2) * math.pi])
    ref = np.stack([_rotate_theta_phi(t, p) for t, p in poses.double().numpy()])
    assert np.abs(pose_matrix(poses).numpy() - ref).max() < 1e-6
    ref_views = np.stack([_euler(k * np.pi / 2, 0, np.pi / 2) for k in range(4)])
    assert np.abs(view_matrices().numpy() - ref_views).max() < 1e-6


def test_published_test_poses():
    poses = published_test_poses()
    assert poses.shape == (8, 2)
    assert torch.allclose(poses[:, 0] / math.pi, torch.tensor([0.1 + i * 1.9 / 8 for i in range(8)]), atol=1e-6)
    assert torch.allclose(poses[:, 1] / math.pi, torch.full((8,), -0.35), atol=1e-6)


def _elevations(adapter, poses, up):
    """Degrees of each view camera (on +z of the view frame) above the object's horizontal plane: the camera's
    direction in object coordinates is ``C.T e_z``, so ``sin(elevation) = (C up)_z``."""
    cams = adapter.camera_matrices(poses)  # (P, 4, 3, 3)
    return torch.rad2deg(torch.asin((cams @ torch.tensor(up)).select(-1, 2)))


@pytest.mark.parametrize('up_axis, up', [('y', [0., 1., 0.]), ('z', [0., 0., 1.])])
def test_view_elevations_are_the_published_angles(up_axis, up):
    a = PointAdapter(mode='p2p', image_size=S, up_axis=up_axis)
    el = _elevations(a, published_test_poses(), up)
    assert torch.allclose(el, torch.tensor([27., -63., -27., 63.]).expand(8, 4), atol=1e-3)
    # the training tilt range spans (+18, -72, -18, +72) at phi = -0.4 pi to (+54, -36, -54, +36) at -0.2 pi
    ends = torch.tensor([[1.0, -0.4], [1.0, -0.2]]) * math.pi
    assert torch.allclose(_elevations(a, ends, up), torch.tensor([[18., -72., -18., 72.], [54., -36., -54., 36.]]),
                          atol=1e-3)


def test_camera_matrices_are_the_projection_path():
    a = PointAdapter(mode='p2p', image_size=S).eval()
    xyz = normalize_unit_sphere(_clouds(2, 50))
    canonical, posed = a.p2p_clouds(xyz)
    cams = a.camera_matrices(published_test_poses()[:1])[0]  # eval pose = first published test pose
    via_views = torch.einsum('bnj,vij->bvni', posed, a.projector.views)
    assert torch.allclose(via_views, torch.einsum('bnj,vij->bvni', xyz, cams), atol=1e-5)
    assert torch.allclose(canonical[..., 2], xyz[..., 1])  # the published frame is z-up: (-z, -x, y)


def test_sum_splat_of_three_points_by_hand():
    # S = 8: cell = max(5, 2) / (8 - 3) = 1. Grid indices floor(p - min): (0, 0), (5, 2), (2, 0) (2.7 floors to 2).
    # Centring: rows + 4 - floor((5 + 0 + 2) / 2) = +1, cols + 4 - floor((2 + 0 + 2) / 2) = +2.
    # Pixel centres: (1, 2), (6, 4), (3, 2).
    xy = torch.tensor([[[0.0, 0.0], [5.0, 2.0], [2.7, 0.4]]])
    pix = splat_pixels(xy, 8)
    assert pix.tolist() == [[[1, 2], [6, 4], [3, 2]]]
    feats = torch.tensor([[[1.0, -1.0], [10.0, 0.5], [100.0, 2.0]]])  # (B, N, C)
    img = splat_sum(feats, pix, 8)
    expected = torch.zeros(8, 8)
    expected[0:3, 1:4] += 1.0     # point 0 around (1, 2)
    expected[5:8, 3:6] += 10.0    # point 1 around (6, 4)
    expected[2:5, 1:4] += 100.0   # point 2 around (3, 2): row 2 overlaps point 0 (101)
    assert torch.equal(img[0, 0], expected)
    assert img[0, 1, 2, 2].item() == -1.0 + 2.0 and img[0, 1, 6, 4].item() == 0.5


def test_sum_splat_equals_adding_each_point_into_its_nine_pixels():
    g = torch.Generator().manual_seed(3)
    s, n = 16, 40
    xy = torch.randn(3, n, 2, generator=g) * torch.tensor([1.0, 0.3])
    feats = torch.randn(3, n, 4, generator=g)
    pix = splat_pixels(xy, s)
    assert pix.min() >= 1 and pix.max() <= s - 2  # every 3x3 footprint on the grid
    assert (pix[..., 0].amax(1) - pix[..., 0].amin(1) == s - 3).all()  # the longer axis spans pixels 1..S-2
    ref = torch.zeros(3, 4, s, s)
    for b in range(3):
        for i in range(n):
            r, c = pix[b, i].tolist()
            ref[b, :, r - 1:r + 2, c - 1:c + 2] += feats[b, i, :, None, None]
    assert torch.allclose(splat_sum(feats, pix, s), ref, atol=1e-5)


def test_point_encoder_equals_the_written_out_formula():
    torch.manual_seed(0)
    enc = EdgePointEncoder(k=6)
    for p in enc.parameters():  # non-trivial GroupNorm affine
        p.data.normal_(0, 0.5)
    xyz = _clouds(2, 20, seed=4)
    got = enc(xyz)
    w0, b0 = enc.embed.weight[..., 0], enc.embed.bias
    w1 = enc.edge[0].weight[..., 0, 0]
    gn = enc.edge[1]
    w2, b2 = enc.proj.weight[..., 0], enc.proj.bias
    f = xyz @ w0.T + b0  # (B, N, 8)
    nbr = torch.cdist(xyz, xyz).argsort(dim=-1)[..., :6]  # 6 nearest, itself included
    fj = torch.stack([f[b, nbr[b]] for b in range(2)])  # (B, N, k, 8)
    fi = f.unsqueeze(2).expand_as(fj)
    h = torch.cat([fj - fi, fi], dim=-1) @ w1.T  # (B, N, k, 64)
    g = h.reshape(2, 20, 6, 4, 16)  # GroupNorm(4): statistics over (N, k, 16 channels) per sample and group
    mu, var = g.mean(dim=(1, 2, 4), keepdim=True), g.var(dim=(1, 2, 4), unbiased=False, keepdim=True)
    h = ((g - mu) / torch.sqrt(var + gn.eps)).reshape(2, 20, 6, 64) * gn.weight + gn.bias
    ref = F.leaky_relu(h, 0.2).amax(dim=2) @ w2.T + b2  # (B, N, 64)
    assert torch.allclose(got, ref.transpose(1, 2), atol=1e-4)


def test_fusion_equals_the_written_out_formula():
    torch.manual_seed(0)
    fusion = MultiViewFusion(chans=6, num_views=4, dim=8, heads=2, head_dim=5, mlp_hidden=12, patch=7)
    x = torch.randn(2 * 4, 6, 14, 14)  # 2 samples x 4 views, 2x2 tokens per view
    got = fusion(x)
    t = F.conv2d(x, fusion.down.weight, stride=7)  # (8, 8, 2, 2)
    tokens = t.reshape(2, 4, 8, 4).permute(0, 1, 3, 2).reshape(2, 16, 8)  # view-major, then position
    blk = fusion.block
    q, k, v = (F.layer_norm(tokens, (8,), blk.norm1.weight, blk.norm1.bias) @ blk.attn.qkv.weight.T).split(10, -1)
    heads = lambda z: z.reshape(2, 16, 2, 5).transpose(1, 2)  # noqa: E731
    attn = (heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(5)).softmax(-1) @ heads(v)
    tokens = tokens + attn.transpose(1, 2).reshape(2, 16, 10) @ blk.attn.proj.weight.T + blk.attn.proj.bias
    h = F.layer_norm(tokens, (8,), blk.norm2.weight, blk.norm2.bias)
    tokens = tokens + F.gelu(h @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias) @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
    t = tokens.reshape(2, 4, 4, 8).permute(0, 1, 3, 2).reshape(8, 8, 2, 2)
    up = t.repeat_interleave(7, dim=-1).repeat_interleave(7, dim=-2)  # nearest upsample 2 -> 14
    u = F.gelu(F.conv2d(up, fusion.up[0].weight, fusion.up[0].bias, padding=1))
    ref = F.gelu(F.conv2d(torch.cat([u, x], 1), fusion.merge[0].weight, fusion.merge[0].bias))
    assert torch.allclose(got, ref, atol=1e-5)


def _capture(module, store, key):
    return module.register_forward_hook(lambda m, args, out: store.__setitem__(key, (args, out)))


def test_point_features_use_the_canonical_cloud_and_are_the_same_for_every_view():
    a = PointAdapter(mode='p2p', image_size=S, k=8)
    x = _clouds(2, 80)
    seen = {}
    hooks = [_capture(a.projector.encoder, seen, 'enc'), _capture(a.projector, seen, 'proj')]
    a.eval()
    a(x)
    feats_eval, (canon_eval, posed_eval) = seen['enc'][1], seen['proj'][0]
    a.train()
    torch.manual_seed(1)
    a(x)
    feats_1, (canon_1, posed_1) = seen['enc'][1], seen['proj'][0]
    torch.manual_seed(2)
    a(x)
    feats_2, posed_2 = seen['enc'][1], seen['proj'][0][1]
    for h in hooks:
        h.remove()
    # the augmentation moves the projected copy only; the features see the same canonical cloud
    assert not torch.allclose(posed_1, posed_2) and not torch.allclose(posed_1, posed_eval)
    assert torch.equal(canon_1, canon_eval)
    assert torch.equal(feats_1, feats_eval) and torch.equal(feats_2, feats_eval)
    # every view receives the same features: each map sums to 9 x the features' sum (all footprints on the grid)
    maps = a.projector.splat(feats_eval, posed_eval).reshape(2, 4, 64, S, S).sum(dim=(-1, -2))
    assert torch.allclose(maps, 9 * feats_eval.sum(-1, keepdim=True).transpose(1, 2).expand(2, 4, 64), rtol=1e-4,
                          atol=1e-3)


def test_training_poses_and_augmentation():
    poses = sample_poses(4000) / math.pi
    assert poses[:, 0].min() >= 0.04 and poses[:, 0].max() <= 1.94 and poses[:, 0].std() > 0.5
    assert poses[:, 1].min() >= -0.4 and poses[:, 1].max() <= -0.2
    a = PointAdapter(mode='p2p', image_size=S)
    x = _clouds(2, 30)
    assert a.augment(x) is x  # p2p augments inside encode (projected copy only)
    a.eval()
    assert torch.allclose(a.poses(3), torch.tensor([0.1, -0.35]).expand(3, 2) * math.pi)
    a.train()
    assert not torch.allclose(a.poses(3), a.poses(3))
    fixed = PointAdapter(mode='p2p', image_size=S, augment_rotate=False).train()
    assert torch.allclose(fixed.poses(2), torch.tensor([0.1, -0.35]).expand(2, 2) * math.pi)
    # per-axis scale U(2/3, 3/2) and translation +-0.2 on the posed copy: its extents change per axis
    _, posed = fixed.p2p_clouds(normalize_unit_sphere(x))
    _, plain = fixed.eval().p2p_clouds(normalize_unit_sphere(x))
    ratio = (posed.amax(1) - posed.amin(1)) / (plain.amax(1) - plain.amin(1))
    assert ((ratio > 2 / 3 - 1e-4) & (ratio < 1.5 + 1e-4)).all() and not torch.allclose(ratio, torch.ones_like(ratio))


def test_published_image_size_shapes():
    a = PointAdapter(mode='p2p').eval()  # 224 as published
    assert (a.image_size, a.num_views, a.out_chans, a.view_pool) == (224, 4, 3, 'concat')
    with torch.no_grad():
        img, _ = a(_clouds(1, 200))
    assert img.shape == (4, 3, 224, 224)
    lo = (0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    hi = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    per_chan = img.transpose(0, 1).reshape(3, -1)
    assert (per_chan.amin(1) >= lo - 1e-5).all() and (per_chan.amax(1) <= hi + 1e-5).all()  # sigmoid, normalised


@pytest.fixture(scope='module')
def p2p_model():
    torch.manual_seed(0)
    return unimodal.create_model('point', variant=VARIANT, num_classes=5, mode='p2p', image_size=S, k=8)


def test_batch_of_one_equals_batch_of_three(p2p_model):
    model = p2p_model.eval()
    x = _clouds(3, 64, seed=5)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(3)])
        imgs = model.adapter(x)[0]
        img_one = model.adapter(x[1:2])[0]
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(imgs[4:8], img_one, atol=1e-5)


def test_gradients_reach_every_parameter(p2p_model):
    model = p2p_model.train()
    model.zero_grad()
    out = model(_clouds(2, 64, seed=6))
    F.cross_entropy(out, torch.tensor([0, 3])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    zero = [n for n, p in model.adapter.named_parameters() if not p.grad.abs().sum() > 0]
    assert not zero
    model.zero_grad()


def test_predict_poses_is_the_published_protocol(p2p_model):
    model = p2p_model.train()
    x = _clouds(2, 64, seed=7)
    logits = predict_poses(model, x)
    assert logits.shape == (8, 2, 5) and model.training  # mode restored
    model.eval()
    with torch.no_grad():
        assert torch.allclose(logits[0], model(x), atol=1e-5)  # the plain eval pass uses the first test pose
        with model.adapter.fixed_pose(published_test_poses()[5]):
            assert torch.allclose(logits[5], model(x), atol=1e-5)
    assert not torch.allclose(logits[0], logits[4])  # different poses, different images
    two = predict_poses(model, x, published_test_poses()[[2, 6]])
    assert torch.allclose(two, logits[[2, 6]], atol=1e-5)
    with pytest.raises(ValueError, match='poses'):
        predict_poses(model, x, torch.zeros(3))
    depth = unimodal.create_model('point', variant=VARIANT, num_classes=5, image_size=16)
    with pytest.raises(ValueError, match='p2p'):
        predict_poses(depth, x)


def test_published_8pose_protocol_scores_all_8n_predictions(p2p_model):
    """eval.protocol=published_8pose through the engine's evaluate: top-1 and mean per-class accuracy over all 8·N
    predictions of predict_poses (no voting), and the results text names the protocol."""
    from torch.utils.data import DataLoader, TensorDataset

    from unimodal.engine.evaluate import evaluate
    from unimodal.engine.results import result_record
    from unimodal.tasks import get_task
    from unimodal.tasks.spec import TaskSpec
    model = p2p_model.eval()
    x, y = _clouds(6, 64, seed=8), torch.tensor([0, 1, 2, 3, 4, 0])
    task = get_task('point')
    predict = task.eval_predictor('published_8pose')
    spec = TaskSpec(name='point', kind='classification', adapter='point', head_kwargs={'num_classes': 5}, loss='ce')
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    metrics, _ = evaluate(model, loader, spec, torch.device('cpu'), predict=predict)
    pred = predict_poses(model, x).argmax(-1)  # (8, 6)
    hits = (pred == y).float()
    assert metrics['num_samples'] == 48
    assert metrics['top1'] == pytest.approx(100 * float(hits.mean()))
    per_class = [float(hits[:, y == c].mean()) for c in range(5)]
    assert metrics['mean_class_acc'] == pytest.approx(100 * float(np.mean(per_class)))
    assert sum(map(sum, metrics['confusion_matrix'])) == 48
    single, _ = evaluate(model, loader, spec, torch.device('cpu'))
    assert single['num_samples'] == 6
    record = result_record(spec, task, metrics, {'test': TensorDataset(x, y)}, split='test', dataset='d',
                           builtin=False, protocol='published_8pose')
    assert record['eval_protocol'].startswith('published_8pose') and '48 predictions' in record['eval_protocol']
    assert 'no voting' in record['eval_protocol']
    plain = result_record(spec, task, single, {'test': TensorDataset(x, y)}, split='test', dataset='d', builtin=False)
    assert plain['eval_protocol'] == task.eval_views(None)


def test_published_8pose_needs_the_p2p_adapter():
    from unimodal.config import ConfigError, resolve_run_config
    cfg = resolve_run_config({'task': 'point', 'model': {'adapter': {'mode': 'p2p'}},
                              'eval': {'protocol': 'published_8pose'}})
    assert cfg.eval.protocol == 'published_8pose'
    with pytest.raises(ConfigError, match=r'eval\.protocol=published_8pose.*mode=p2p.*mode=depth'):
        resolve_run_config({'task': 'point', 'eval': {'protocol': 'published_8pose'}})
    with pytest.raises(ConfigError, match=r"\(use one of published_8pose or null\); did you mean .published_8pose."):
        resolve_run_config({'task': 'point', 'model': {'adapter': {'mode': 'p2p'}},
                            'eval': {'protocol': 'published8pose'}})
    with pytest.raises(ConfigError, match=r'tasks\.audio\.eval\.protocol=published_8pose does not apply to task audio'):
        resolve_run_config({'task': ['point', 'audio'], 'model': {'adapter': {'mode': 'p2p'}},
                            'tasks': {'audio': {'eval': {'protocol': 'published_8pose'}}}})


def test_normals_are_ignored_and_bad_options_fail():
    a = PointAdapter(mode='p2p', image_size=S, k=8).eval()
    x = _clouds(1, 40)
    xn = torch.cat([x, F.normalize(torch.randn(1, 40, 3), dim=-1)], dim=-1)
    with torch.no_grad():
        assert torch.equal(a(xn)[0], a(x)[0])
    with pytest.raises(ValueError, match='even'):
        PointAdapter(mode='p2p', image_size=27)
    with pytest.raises(ValueError, match='train_phi'):
        PointAdapter(mode='p2p', train_phi=(-0.2, -0.4))
    with pytest.raises(ValueError, match='eval_pose'):
        PointAdapter(mode='p2p', eval_pose=(0.1,))
    with pytest.raises(ValueError, match='p2p'):
        with PointAdapter(mode='p2p_light', image_size=16).fixed_pose(torch.zeros(2)):
            pass
    with pytest.raises(ValueError, match='even'):
        P2PProjector(image_size=6)


def test_geometry_stays_float32_under_autocast():
    a = PointAdapter(mode='p2p', image_size=S, k=8).eval()
    xyz = normalize_unit_sphere(_clouds(2, 60))
    canonical, posed = a.p2p_clouds(xyz)
    feats = torch.randn(2, 64, 60)
    ref = a.projector.splat(feats, posed)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        c16, p16 = a.p2p_clouds(xyz)
        maps = a.projector.splat(feats, p16)
        img, _ = a(xyz)
    assert c16.dtype == p16.dtype == maps.dtype == torch.float32
    assert torch.equal(c16, canonical) and torch.equal(p16, posed) and torch.equal(maps, ref)
    assert img.shape == (8, 3, S, S) and torch.isfinite(img).all()
