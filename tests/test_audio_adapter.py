"""Audio adapter: shapes, published fbank parity, augmentation, errors, and the whole audio task model."""
import math

import pytest
import torch
import torchaudio

import unimodal
from unimodal import InputShapeError
from unimodal.modalities.audio import AudioAdapter, compute_norm_stats, random_axis_warp

SR = 16000


def _tone_batch(b=3, samples=SR, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / SR
    freqs = torch.linspace(300, 3000, b)[:, None]
    return 0.3 * torch.sin(2 * torch.pi * freqs * t) + 0.05 * torch.randn(b, samples, generator=g) + 0.02


@pytest.mark.parametrize('mode', ['paper', 'fast'])
@pytest.mark.parametrize('samples', [SR, 12345, 20000])
def test_output_shape(mode, samples):
    ad = AudioAdapter(mode=mode).eval()
    grid, state = ad(_tone_batch(2, samples))
    assert grid.shape == (2, 1, 128, 128)
    assert torch.isfinite(grid).all()
    assert ad.out_chans == 1


def test_target_frames_and_bins_options():
    ad = AudioAdapter(mode='fast', target_frames=64, num_mel_bins=40).eval()
    assert ad(_tone_batch(2))[0].shape == (2, 1, 40, 64)


def test_paper_fbank_equals_kaldi_with_published_arguments():
    x = _tone_batch(3)
    ad = AudioAdapter(mode='paper').eval()
    got, _ = ad(x)
    for i, wav in enumerate(x):
        ref = torchaudio.compliance.kaldi.fbank(
            (wav - wav.mean()).unsqueeze(0), htk_compat=True, sample_frequency=16000, use_energy=False,
            window_type='hanning', num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10)
        assert ref.shape == (98, 128)
        ref = torch.nn.functional.pad(ref, (0, 0, 0, 128 - 98))            # zero pad to 128 frames
        ref = (ref - (-6.845978)) / (2 * 5.5654526)                         # published normalisation
        torch.testing.assert_close(got[i, 0], ref.T, rtol=1e-5, atol=1e-5)  # (mel bins, frames)


def test_paper_fbank_crops_long_clips_and_handles_odd_lengths():
    ad = AudioAdapter(mode='paper').eval()
    x = _tone_batch(2, 21003)  # not a whole number of hops: per-clip path
    feats = ad.fbank(x)
    ref = torchaudio.compliance.kaldi.fbank(
        (x[1] - x[1].mean()).unsqueeze(0), htk_compat=True, sample_frequency=16000, use_energy=False,
        window_type='hanning', num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10)
    torch.testing.assert_close(feats[1], ref[:128], rtol=1e-5, atol=1e-5)



def _published_input(wav):
    """The published pipeline for one real-length clip: mean removal, Kaldi fbank, zero frames up to 128,
    normalisation; as (mel bins, frames)."""
    ref = torchaudio.compliance.kaldi.fbank(
        (wav - wav.mean()).unsqueeze(0), htk_compat=True, sample_frequency=16000, use_energy=False,
        window_type='hanning', num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10)
    ref = torch.nn.functional.pad(ref, (0, 0, 0, 128 - ref.shape[0]))
    return ((ref - (-6.845978)) / (2 * 5.5654526)).T


@pytest.mark.parametrize('lengths', [[11200, 12345], [12345, SR, 6400]])
def test_paper_mode_pads_short_clips_in_the_feature_domain(lengths):
    """(zero-padded waveform, real length) -> fbank of the real samples, then zero frames: the published input."""
    full = _tone_batch(len(lengths))
    real = [full[i, :n] for i, n in enumerate(lengths)]
    padded = torch.stack([torch.nn.functional.pad(r, (0, SR - len(r))) for r in real])
    got, _ = AudioAdapter(mode='paper').eval()((padded, torch.tensor(lengths)))
    for i, r in enumerate(real):
        torch.testing.assert_close(got[i, 0], _published_input(r), rtol=1e-5, atol=1e-5)
        n = 1 + (len(r) - 400) // 160
        zero_frame = (0 - (-6.845978)) / (2 * 5.5654526)   # +0.615: a zero log-mel frame after normalisation
        assert torch.allclose(got[i, 0, :, n:], torch.tensor(zero_frame))
    # without the length the padded tail is signal: its frames are log(eps), 1.43 away after normalisation
    plain, _ = AudioAdapter(mode='paper').eval()(padded[:1])
    assert (plain[0, 0] - _published_input(real[0])).abs().max() == pytest.approx(1.432, abs=0.01)


def test_lengths_in_fast_mode_and_bad_lengths():
    x = _tone_batch(2)
    lengths = torch.tensor([8000, SR])
    fast = AudioAdapter(mode='fast').eval()((x * (torch.arange(SR) < lengths[:, None]), lengths))[0]
    zero_frame = torch.tensor((0 - (-6.845978)) / (2 * 5.5654526))
    n = 1 + (8000 - 400) // 160
    assert torch.allclose(fast[0, 0, :, n:], zero_frame) and not torch.allclose(fast[0, 0, :, :n], zero_frame)
    ad = AudioAdapter()
    for bad, problem in [((x, torch.tensor([SR + 1, 5])), r'\[1, 16000\]'), ((x, torch.tensor([0.5, 1.0])), 'integer'),
                         ((x, torch.tensor([3])), 'lengths'), ((x, lengths, lengths), 'tuple of 3')]:
        with pytest.raises(InputShapeError, match=problem):
            ad.check_input(bad)


def test_fast_mode_approximates_paper_features():
    x = _tone_batch(4)
    paper = AudioAdapter(mode='paper').eval()(x)[0]
    fast = AudioAdapter(mode='fast').eval()(x)[0]
    valid = slice(0, 98)  # frames holding audio (the rest is padding in both)
    p, f = paper[..., valid].flatten(), fast[..., valid].flatten()
    assert torch.corrcoef(torch.stack([p, f]))[0, 1] > 0.99
    assert (p.mean() - f.mean()).abs() < 0.05 and (p.std() / f.std() - 1).abs() < 0.05


def test_train_augmentation_only_in_training_and_each_switch_works():
    x = _tone_batch(4)
    ad = AudioAdapter(mode='fast')
    clean = ad.eval()(x)[0]
    torch.testing.assert_close(ad(x)[0], clean)  # deterministic in eval
    ad.train()
    assert not torch.allclose(ad(x)[0], clean)
    ad_none = AudioAdapter(mode='fast', spec_augment=False, noise=False).train()
    torch.testing.assert_close(ad_none(x)[0], clean)
    torch.manual_seed(0)
    masked = AudioAdapter(mode='fast', noise=False, freq_mask=48, time_mask=48).train()(x)[0]
    # masked cells are zero in the raw fbank, i.e. exactly the normalised zero value
    zero_value = torch.tensor((0 - (-6.845978)) / (2 * 5.5654526))
    def at_zero(t):
        return torch.isclose(t, zero_value, rtol=0, atol=1e-6).float().mean()
    assert at_zero(masked) > at_zero(clean) + 0.05
    noisy = AudioAdapter(mode='fast', spec_augment=False).train()(x)[0]
    rolled_back = torch.stack([torch.stack([torch.roll(noisy[i], k, -1) for k in range(-10, 11)]) for i in range(4)])
    # some roll of ±10 frames brings each sample back to within the noise amplitude (<= 0.1) of the clean one
    err = (rolled_back - clean[:, None]).abs().amax(dim=(-1, -2, -3)).amin(dim=1)
    assert (err <= 0.1 + 1e-5).all()


def test_axis_warp_is_identity_at_zero_and_moves_bands_by_the_factor():
    img = torch.randn(3, 1, 16, 20)
    torch.testing.assert_close(random_axis_warp(img, 0.0, 0.0), img, atol=1e-5, rtol=0)
    # rows hold their band index: after a frequency stretch by a, output row r reads source row r / a
    ramp = torch.arange(64.).view(1, 1, 64, 1).expand(200, 1, 64, 4).contiguous()
    torch.manual_seed(0)
    out = random_axis_warp(ramp, 0.2, 0.0)
    assert (out[:, 0, 0] == 0).all()                         # the lowest band stays put
    a = 10 / out[:, 0, 10, 0]                                 # each sample's own factor, read back from row 10
    assert a.min() >= 1 / 1.2 - 1e-4 and a.max() <= 1.2 + 1e-4
    assert a.min() < 0.9 and a.max() > 1.1                    # the whole range is drawn
    expect = (torch.arange(64.)[None] / a[:, None]).clamp(max=63)
    torch.testing.assert_close(out[:, 0, :, 0], expect, atol=1e-3, rtol=0)
    assert torch.equal(out[..., 0], out[..., 3])              # a frequency warp leaves time alone
    # a time stretch around the centre: the centre frame stays, rows are untouched
    cols = torch.arange(21.).view(1, 1, 1, 21).expand(50, 1, 8, 21).contiguous()
    t = random_axis_warp(cols, 0.0, 0.3)
    torch.testing.assert_close(t[..., 10], cols[..., 10], atol=1e-4, rtol=0)
    assert not torch.allclose(t, cols)


def test_axis_warp_only_in_training_and_checked():
    x = _tone_batch(2)
    ad = AudioAdapter(mode='fast', spec_augment=False, noise=False, freq_warp=0.2, time_warp=0.2)
    clean = ad.eval()(x)[0]
    torch.testing.assert_close(AudioAdapter(mode='fast').eval()(x)[0], clean)
    assert not torch.allclose(ad.train()(x)[0], clean)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match='freq_warp'):
            AudioAdapter(freq_warp=bad)
    with pytest.raises(ValueError, match='time_warp'):
        AudioAdapter(time_warp='a lot')


def test_band_gain_is_a_smooth_bounded_curve_on_real_frames_only():
    from unimodal.modalities.audio import random_band_gain
    torch.manual_seed(0)
    feats = torch.randn(64, 20, 32)
    frames = torch.randint(1, 21, (64,))
    out = random_band_gain(feats, 6.0, frames)
    gain = out - feats
    limit = 6.0 * math.log(10) / 10
    for i in range(64):
        n = int(frames[i])
        # one curve per clip: the same for every real frame, zero on the padding frames after it
        torch.testing.assert_close(gain[i, :n], gain[i, :1].expand(n, -1))
        assert bool((gain[i, n:] == 0).all())
        curve = gain[i, 0]
        # centred: the clip's level stays; the shape is bounded by the control gains' range
        assert abs(float(curve.mean())) < 1e-5 and float(curve.abs().max()) <= 2 * limit + 1e-6
        # piecewise linear between 4 control points: second differences vanish except at the 2 inner knots
        assert int((curve.diff().diff().abs() > 1e-4).sum()) <= 4
    # the curves span the range (not near-flat)
    assert float(gain[:, 0].max()) > 0.8 * limit and float(gain[:, 0].min()) < -0.8 * limit


def test_band_gain_only_in_training_and_checked():
    x = _tone_batch(2)
    ad = AudioAdapter(mode='fast', spec_augment=False, noise=False, eq_gain_db=10)
    torch.testing.assert_close(ad.eval()(x)[0], AudioAdapter(mode='fast', noise=False).eval()(x)[0])
    assert not torch.allclose(ad.train()(x)[0], ad.eval()(x)[0])
    for bad in (-1, 41):
        with pytest.raises(ValueError, match='eq_gain_db'):
            AudioAdapter(eq_gain_db=bad)
    with pytest.raises(ValueError, match='eq_prob'):
        AudioAdapter(eq_prob=1.5)
    # eq_prob: each clip is changed or left exactly as it was
    torch.manual_seed(0)
    xs = _tone_batch(1).expand(64, -1).contiguous()
    clean = AudioAdapter(mode='fast', noise=False).eval()(xs)[0]
    half = AudioAdapter(mode='fast', spec_augment=False, noise=False, eq_gain_db=10, eq_prob=0.5).train()(xs)[0]
    same = torch.tensor([torch.equal(a, b) for a, b in zip(half, clean)])
    assert 16 <= int(same.sum()) <= 48
    none = AudioAdapter(mode='fast', spec_augment=False, noise=False, eq_gain_db=10, eq_prob=0.0).train()(xs)[0]
    torch.testing.assert_close(none, clean, rtol=0, atol=0)


def test_band_gain_without_keep_level_moves_the_level_within_its_bound():
    from unimodal.modalities.audio import random_band_gain
    torch.manual_seed(0)
    feats = torch.randn(256, 5, 32)
    frames = torch.full((256,), 5)
    limit = 6.0 * math.log(10) / 10
    curves = (random_band_gain(feats, 6.0, frames, keep_level=False) - feats)[:, 0]
    assert float(curves.abs().max()) <= limit + 1e-6            # the drawn gains themselves: within +-max_db
    levels = curves.mean(-1)
    assert float(levels.std()) > 0.2 * limit                    # the level moves (centred: exactly 0, tested above)
    # the same draw centred is the uncentred curve less its mean
    torch.manual_seed(1)
    a = random_band_gain(feats, 6.0, frames, keep_level=False) - feats
    torch.manual_seed(1)
    b = random_band_gain(feats, 6.0, frames) - feats
    torch.testing.assert_close(b, a - a.mean(-1, keepdim=True))


def test_band_gain_warmup_grows_with_the_training_progress():
    x = _tone_batch(1).expand(8, -1).contiguous()
    ad = AudioAdapter(mode='fast', spec_augment=False, noise=False, eq_gain_db=20, eq_warmup_epochs=4)
    clean = ad.eval()(x)[0]
    ad.train()
    with pytest.raises(RuntimeError, match='set_progress'):   # a loop that never says how far it is
        ad(x)

    def size(epoch):
        ad.set_progress(epoch)
        torch.manual_seed(0)
        return float((ad(x)[0] - clean).abs().max())

    assert size(0) == 0.0
    quarter, half, full, later = size(1), size(2), size(4), size(9)
    assert quarter > 0 and half == pytest.approx(2 * quarter, rel=1e-4) and full == pytest.approx(4 * quarter, rel=1e-4)
    assert later == pytest.approx(full, rel=1e-6)
    for bad in (-1, float('nan'), float('inf')):                # a negative ramp would flip the gains' sign
        with pytest.raises(ValueError, match='set_progress expects the epochs done'):
            ad.set_progress(bad)
    ad.progress = None
    torch.testing.assert_close(ad.eval()(x)[0], clean)          # evaluation never needs it
    with pytest.raises(ValueError, match='eq_warmup_epochs'):
        AudioAdapter(eq_warmup_epochs=-1)
    with pytest.raises(ValueError, match='eq_keep_level'):
        AudioAdapter(eq_keep_level='yes')


@pytest.mark.parametrize('with_lengths', [True, False])
def test_band_gain_leaves_the_padding_frames_zero(with_lengths):
    # 1 s clips give 98 Kaldi frames, zero-padded to 128: the gain must not touch frames 98-127, with or without lengths
    x = _tone_batch(4)
    ad = AudioAdapter(mode='paper', spec_augment=False, noise=False, eq_gain_db=20).train()
    inputs = (x, torch.full((4,), x.shape[1], dtype=torch.long)) if with_lengths else x
    feats = ad.fbank(inputs)
    img = ad.encode(inputs)[0]                           # normalised: padding frames hold normalize(0)
    pad = ad.normalize(torch.zeros(()))
    assert bool((feats[:, 98:] == 0).all())
    torch.testing.assert_close(img[..., 98:], torch.full_like(img[..., 98:], float(pad)), rtol=0, atol=0)
    assert not torch.allclose(img[..., :98], ad.normalize(feats.transpose(1, 2).unsqueeze(1))[..., :98])


def test_mel_bands_below_four_are_refused_by_name():
    # Kaldi's mel banks assert more than 3 bands: the option check says so instead of a bare AssertionError
    for bad in (0, 1, 3):
        with pytest.raises(ValueError, match=r'num_mel_bins must be an integer >= 4 \(mel bands; published 128\)'):
            AudioAdapter(mode='paper', num_mel_bins=bad)
    assert AudioAdapter(mode='paper', num_mel_bins=4, noise=False).eval()(_tone_batch(1))[0].shape[2] == 4


@pytest.mark.parametrize('bad, problem', [
    (torch.randn(SR), 'single waveform'),
    (torch.randn(2, 1, SR), '3'),
    (torch.randint(-100, 100, (2, SR), dtype=torch.int16), 'floating point'),
    (torch.randn(2, 100), 'at least'),
])
def test_wrong_inputs_raise_input_shape_error(bad, problem):
    model = unimodal.create_model('audio', variant='unireplknet_test', num_classes=5)
    with pytest.raises(InputShapeError, match=problem) as exc:
        model(bad)
    assert str(tuple(bad.shape)) in str(exc.value)  # names the received shape
    assert '(B, samples)' in str(exc.value)          # and the expected one


def test_unknown_mode_and_option_rejected():
    with pytest.raises(ValueError, match='mode'):
        AudioAdapter(mode='mfcc')
    with pytest.raises(TypeError):
        AudioAdapter(hop=5)


@pytest.mark.parametrize('mode', ['paper', 'fast'])
def test_whole_model_gradients_and_reparameterize(mode):
    torch.manual_seed(0)
    model = unimodal.create_model('audio', variant='unireplknet_test', num_classes=5, mode=mode)
    x = _tone_batch(2).requires_grad_(True)
    model.train()
    out = model(x)
    assert out.shape == (2, 5)
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f'no gradient for {missing[:5]}'
    assert model.head.fc.weight.grad.abs().sum() > 0
    assert model.trunk.downsample_layers[0][0].weight.grad.abs().sum() > 0  # reaches the stem
    assert x.grad is not None and x.grad.abs().sum() > 0                      # features are differentiable

    # a few BN statistics that are not the init values, so re-parameterisation has something to fold
    with torch.no_grad():
        for _ in range(2):
            model(_tone_batch(2, seed=1))
    model.eval()
    xe = _tone_batch(3, seed=2)
    with torch.no_grad():
        before = model(xe)
        model.reparameterize()
        after = model(xe)
    rel = (after - before).norm() / before.norm()
    assert rel <= 1e-5, rel


def test_compute_norm_stats_matches_features():
    x = _tone_batch(6)
    ad = AudioAdapter(mode='paper').eval()
    loader = [(x[:3], torch.zeros(3)), (x[3:], torch.zeros(3))]
    mean, std = compute_norm_stats(loader, ad)
    f1, f2 = ad.fbank(x[:3]), ad.fbank(x[3:])
    assert mean == pytest.approx((f1.mean().item() + f2.mean().item()) / 2, rel=1e-5)
    assert std == pytest.approx((f1.std().item() + f2.std().item()) / 2, rel=1e-5)
    # with its own statistics the adapter's features are centred with spread 1/2
    ad2 = AudioAdapter(mode='paper', norm_mean=mean, norm_std=std).eval()
    g = ad2(x)[0]
    assert abs(g.mean().item()) < 0.05 and g.std().item() == pytest.approx(0.5, rel=0.05)

