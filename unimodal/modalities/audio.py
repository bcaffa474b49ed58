"""Audio adapter: a batch of 16 kHz waveforms → log-mel filterbank images for the trunk.

Input: ``(B, samples)`` waveforms, or the structured pair ``(waveforms (B, samples), lengths (B,))`` of clips
zero-padded to a common length with their real lengths in samples (the Speech Commands reader's
``return_length``). With lengths, each clip's features are computed over its real samples only and the frames
after its end are **zero frames** in the log-mel domain, as the published (AST) loader pads: fbank of the
real-length clip, then zero frames up to ``target_frames``. Without lengths the whole waveform counts as signal
(a zero-padded tail then gives log(eps) frames, not zero frames).

Two feature paths produce the same layout ``(B, 1, num_mel_bins=128, target_frames=128)`` (mel bins × frames):

* ``mode='paper'``: the published (AST-style) features: mean subtraction over the clip's real samples,
  Kaldi-compatible fbank (``torchaudio.compliance.kaldi.fbank``; htk_compat, hanning window, 128 bins, no dither,
  25 ms / 10 ms, no energy), zero frames up to / crop to 128 frames, normalisation ``(x - mean) / (2 * std)`` with
  the published Speech Commands statistics. Batched: one Kaldi call over the concatenated batch (exact, see
  :meth:`AudioAdapter._kaldi_fbank`).
* ``mode='fast'``: one batched ``torchaudio.transforms.MelSpectrogram`` over the whole batch (runs on the
  batch's device, e.g. GPU), configured to approximate the Kaldi features: same frames (400-sample symmetric
  Hann window, 160-sample hop, 512-point FFT), pre-emphasis 0.97, HTK mel scale 20 Hz–Nyquist, natural log.
  Same shape and roughly the same scale, so the same normalisation statistics apply. Lengths are honoured the
  same way (mean over the real samples, zero frames after the end).

Train-time augmentation as published (inside :meth:`AudioAdapter.encode`, only when ``self.training``):
SpecAugment (frequency mask 48, time mask 48) applied to the un-normalised fbank, then after normalisation
additive noise ``U(0,1) * U(0,1) / 10`` with a random time roll of up to ±10 frames. The published per-sample
waveform mixup draws its partner from the whole training set, so it lives in the reader
(:class:`unimodal.data.speech_commands.SpeechCommands`, option ``mixup``), not here.
"""
from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Iterable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
import torchaudio
from torch.utils.data import DataLoader, Dataset

from ..data.inputs import is_structured
from .base import Adapter, InputShapeError, register_adapter

_logger = logging.getLogger(__name__)

__all__ = ['AudioAdapter', 'compute_norm_stats', 'random_axis_warp', 'random_band_gain', 'SPEECH_COMMANDS_NORM']

#: Published fbank statistics of Speech Commands V2 (AST), used by ``(x - mean) / (2 * std)``.
SPEECH_COMMANDS_NORM = (-6.845978, 5.5654526)

_MODES = ('paper', 'fast')


@register_adapter('audio')
class AudioAdapter(Adapter):
    """Waveform batch ``(B, samples)`` → ``(B, 1, num_mel_bins, target_frames)`` log-mel image.

    Args:
        mode: ``'paper'`` (Kaldi fbank per clip, published) or ``'fast'`` (batched MelSpectrogram).
        target_frames: frames after zero pad / crop (128 in the published set-up: 1.28 s at 10 ms shift).
        num_mel_bins: mel bands (the image height).
        norm_mean: mean of the un-normalised features (see :func:`compute_norm_stats`).
        norm_std: standard deviation of the un-normalised features; features are divided by ``2 * norm_std``.
        spec_augment: SpecAugment frequency + time masking in training.
        freq_mask: maximum width of the frequency mask (bins).
        time_mask: maximum width of the time mask (frames).
        noise: additive noise + random time roll in training.
        sample_rate: sample rate of the input waveforms in Hz.
        freq_warp: training only: each clip's mel axis is stretched by a factor drawn log-uniformly from
            ``[1/(1+w), 1+w]`` around the lowest band (vocal-tract-length perturbation: a speaker's formants move
            together); 0 = off (published).
        time_warp: training only: each clip's time axis is stretched the same way around its centre (speaking
            rate); 0 = off (published).
        eq_gain_db: training only: each clip's bands get a random smooth gain, linear between 4 gains drawn from
            ``U(-eq_gain_db, eq_gain_db)`` dB (a random equaliser: voice quality, microphones and channels tilt and
            shape the spectrum); centred so the clip's level stays unless ``eq_keep_level`` is off; 0 = off
            (published).
        eq_prob: the probability that a training clip gets that gain (the others stay as they are); 1 = every
            clip.
        eq_keep_level: centre the gain curve over the bands, so it reshapes the spectrum and keeps the clip's
            level; ``False``: the curve is used as drawn, so it also moves the level.
        eq_warmup_epochs: the gain's bound grows linearly from 0 to ``eq_gain_db`` over this many epochs of
            training (read from :meth:`set_progress`, which the engine calls); 0 = full from the first step.
    """

    name = 'audio'
    head_kind = 'classification'
    input_desc = ('(B, samples) float waveform at 16 kHz, or ((B, samples) zero-padded waveforms, (B,) integer '
                  'real lengths)')

    def __init__(self, mode: str = 'paper', target_frames: int = 128, num_mel_bins: int = 128,
                 norm_mean: float = SPEECH_COMMANDS_NORM[0], norm_std: float = SPEECH_COMMANDS_NORM[1],
                 spec_augment: bool = True, freq_mask: int = 48, time_mask: int = 48, noise: bool = True,
                 sample_rate: int = 16000, freq_warp: float = 0.0, time_warp: float = 0.0,
                 eq_gain_db: float = 0.0, eq_prob: float = 1.0, eq_keep_level: bool = True,
                 eq_warmup_epochs: float = 0.0) -> None:
        super().__init__()
        mode = self.option('mode', mode, str, choices=_MODES)
        target_frames = self.option('target_frames', target_frames, int, lo=1)
        num_mel_bins = self.option('num_mel_bins', num_mel_bins, int, lo=4,  # Kaldi's mel banks need more than 3
                                   expects='an integer >= 4 (mel bands; published 128)')
        norm_mean = self.option('norm_mean', norm_mean, float)
        norm_std = self.option('norm_std', norm_std, float, lo=0, lo_open=True)
        spec_augment = self.option('spec_augment', spec_augment, bool)
        freq_mask = self.option('freq_mask', freq_mask, int, lo=0)
        time_mask = self.option('time_mask', time_mask, int, lo=0)
        noise = self.option('noise', noise, bool)
        self.freq_warp = self.option('freq_warp', freq_warp, float, lo=0, hi=1)
        self.time_warp = self.option('time_warp', time_warp, float, lo=0, hi=1)
        self.eq_gain_db = self.option('eq_gain_db', eq_gain_db, float, lo=0, hi=40)
        self.eq_prob = self.option('eq_prob', eq_prob, float, lo=0, hi=1)
        self.eq_keep_level = self.option('eq_keep_level', eq_keep_level, bool)
        self.eq_warmup_epochs = self.option('eq_warmup_epochs', eq_warmup_epochs, float, lo=0)
        # a 25 ms Kaldi window needs a few samples: below ~100 Hz the frame geometry degenerates
        sample_rate = self.option('sample_rate', sample_rate, int, lo=100, expects='an integer >= 100 (Hz)')
        self.mode = mode
        self.target_frames = target_frames
        self.num_mel_bins = num_mel_bins
        self.norm_mean = float(norm_mean)
        self.norm_std = float(norm_std)
        self.spec_augment = spec_augment
        self.noise = noise
        self.sample_rate = sample_rate
        self.out_chans = 1
        # Kaldi frame geometry: 25 ms window, 10 ms shift, FFT size = next power of two of the window.
        self.win_length = int(round(sample_rate * 0.025))
        self.hop_length = int(round(sample_rate * 0.010))
        self.n_fft = 1 << (self.win_length - 1).bit_length()
        self.freq_masking = torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True)
        self.time_masking = torchaudio.transforms.TimeMasking(time_mask, iid_masks=True)
        self.melspec: Optional[torchaudio.transforms.MelSpectrogram] = None
        if mode == 'fast':
            with warnings.catch_warnings():
                # With 128 bands from 20 Hz a low band can fall between FFT bins; Kaldi's fbank has the same
                # degenerate band (log(eps)), so the warning says nothing useful here.
                warnings.filterwarnings('ignore', message='At least one mel filterbank has all zero values')
                self.melspec = torchaudio.transforms.MelSpectrogram(
                    sample_rate=sample_rate, n_fft=self.n_fft, win_length=self.win_length,
                    hop_length=self.hop_length, f_min=20.0, f_max=sample_rate / 2, n_mels=num_mel_bins,
                    window_fn=torch.hann_window, wkwargs={'periodic': False}, power=2.0, center=False, norm=None,
                    mel_scale='htk')

    def extra_repr(self) -> str:
        return (f'mode={self.mode!r}, mel_bins={self.num_mel_bins}, target_frames={self.target_frames}, '
                f'norm=({self.norm_mean:.4f}, {self.norm_std:.4f}), spec_augment={self.spec_augment}, '
                f'noise={self.noise}, freq_warp={self.freq_warp}, time_warp={self.time_warp}, '
                f'eq_gain_db={self.eq_gain_db}, eq_prob={self.eq_prob}, eq_keep_level={self.eq_keep_level}, '
                f'eq_warmup_epochs={self.eq_warmup_epochs}')

    @staticmethod
    def split_input(x: Any) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(waveforms, lengths or None)`` of a plain or structured batch."""
        if is_structured(x):
            if len(x) != 2:
                raise InputShapeError(f'audio adapter expects (waveforms, lengths), got a tuple of {len(x)} tensors')
            return x[0], x[1]
        return x, None

    def check_input(self, x: Any) -> None:
        x, lengths = self.split_input(x)
        super().check_input(x)
        if x.ndim == 1:
            raise self.shape_error(x, 'a single waveform where a batch was expected; use x.unsqueeze(0)')
        if x.ndim != 2:
            hint = '; mix channels down (x.mean(1)) for (B, C, samples)' if x.ndim == 3 else ''
            raise self.shape_error(x, f'expected 2 dimensions, got {x.ndim}{hint}')
        if not x.is_floating_point():
            raise self.shape_error(x, 'waveforms must be floating point (e.g. int16 PCM / 32768.0)')
        if x.shape[0] == 0:
            raise self.shape_error(x, 'empty batch')
        if x.shape[1] < self.win_length:
            raise self.shape_error(x, f'clips must hold at least one {self.win_length}-sample (25 ms) frame')
        if lengths is not None:
            if not torch.is_tensor(lengths) or lengths.shape != (x.shape[0],) or lengths.is_floating_point():
                got = tuple(lengths.shape) if torch.is_tensor(lengths) else type(lengths).__name__
                raise self.shape_error(x, f'lengths must be a ({x.shape[0]},) integer tensor, got {got}')
            if bool((lengths < 1).any()) or bool((lengths > x.shape[1]).any()):
                raise self.shape_error(x, f'lengths must lie in [1, {x.shape[1]}], got {lengths.min().item()}..'
                                          f'{lengths.max().item()}')

    # ---- features ----------------------------------------------------------------------------------------
    def _pad_crop(self, feats: torch.Tensor) -> torch.Tensor:
        """Zero pad or crop ``(..., frames, bins)`` to ``target_frames`` (as the published loader does)."""
        n = feats.shape[-2]
        if n < self.target_frames:
            return F.pad(feats, (0, 0, 0, self.target_frames - n))
        return feats[..., :self.target_frames, :]

    def _centre(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Subtract each clip's mean over its real samples (as published); the padding stays zero."""
        real = torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]
        mean = (x * real).sum(1, keepdim=True) / lengths[:, None].to(x.dtype)
        return (x - mean) * real

    def _frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Kaldi frame count of each clip (``snip_edges``: whole 25 ms windows only; 0 below one window)."""
        return torch.where(lengths >= self.win_length, 1 + (lengths - self.win_length) // self.hop_length,
                           torch.zeros_like(lengths))

    def _zero_after(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """``(B, frames, bins)`` with every frame past each clip's own count set to 0 (feature-domain padding)."""
        keep = torch.arange(feats.shape[1], device=feats.device)[None] < frames.to(feats.device)[:, None]
        return feats * keep[..., None]

    def _kaldi(self, wav: torch.Tensor) -> torch.Tensor:
        return torchaudio.compliance.kaldi.fbank(
            wav.unsqueeze(0), htk_compat=True, sample_frequency=self.sample_rate, use_energy=False,
            window_type='hanning', num_mel_bins=self.num_mel_bins, dither=0.0, frame_length=25., frame_shift=10.)

    def _kaldi_fbank(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-clip Kaldi fbank of the real samples, frames past the end zero; one Kaldi call for the batch.

        Kaldi fbank is per utterance, but every step after framing (DC removal, pre-emphasis, window, FFT, mel,
        log) acts on one frame at a time, and a clip's frames (whole windows only) never reach past its real
        samples. So with the clips zero-padded to a whole number of hops and concatenated, clip i's frame k is
        frame ``i * padded / hop + k`` of one call over the batch: the same numbers as B calls on the
        real-length clips (frames straddling two clips are dropped), without B small-op loops.
        """
        x = self._centre(x, lengths)
        x = F.pad(x, (0, -x.shape[1] % self.hop_length))
        b, padded = x.shape
        per_clip = padded // self.hop_length
        n_frames = 1 + (padded - self.win_length) // self.hop_length
        feats = self._kaldi(x.reshape(-1))
        idx = (torch.arange(b, device=feats.device) * per_clip)[:, None] + torch.arange(n_frames, device=feats.device)
        return self._zero_after(feats[idx], self._frames(lengths))  # (B, frames, bins)

    def _fast_fbank(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        assert self.melspec is not None
        x = self._centre(x, lengths)
        # Kaldi pre-emphasis (per frame there; over the whole clip here, identical except at frame starts).
        x = torch.cat([x[:, :1] * 0.03, x[:, 1:] - 0.97 * x[:, :-1]], dim=1)
        # Centre each 400-sample window in its 512-sample FFT frame so frame i covers Kaldi's samples
        # [i*hop, i*hop + win): pad (n_fft - win) / 2 on both sides.
        pad = (self.n_fft - self.win_length) // 2
        x = F.pad(x, (pad, self.n_fft - self.win_length - pad))
        mel = self.melspec(x)  # (B, bins, frames)
        eps = torch.finfo(mel.dtype).eps
        return self._zero_after(mel.clamp_min(eps).log().transpose(1, 2), self._frames(lengths))  # (B, frames, bins)

    def fbank(self, x: Any) -> torch.Tensor:
        """Un-normalised log-mel features ``(B, target_frames, num_mel_bins)`` (no augmentation).

        ``x``: waveforms ``(B, samples)`` or ``(waveforms, lengths)``. This is what :func:`compute_norm_stats`
        measures.
        """
        x, lengths = self.split_input(x)
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        lengths = lengths.to(x.device, torch.long)
        feats = self._kaldi_fbank(x, lengths) if self.mode == 'paper' else self._fast_fbank(x.float(), lengths)
        return self._pad_crop(feats)

    def normalize(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.norm_mean) / (2 * self.norm_std)

    def _add_noise_and_roll(self, img: torch.Tensor) -> torch.Tensor:
        """Published noise augmentation on ``(B, 1, bins, frames)``: fbank + U(0,1)·U(0,1)/10, roll ±10 frames."""
        b = img.shape[0]
        scale = torch.rand(b, 1, 1, 1, device=img.device, dtype=img.dtype)
        img = img + torch.rand_like(img) * scale / 10
        shifts = torch.randint(-10, 10, (b,)).tolist()  # numpy randint(-10, 10) in the published loader
        return torch.stack([torch.roll(s, shifts=k, dims=-1) for s, k in zip(img, shifts)])

    def _eq_ramp(self) -> float:
        """The share of ``eq_gain_db`` in force at the current training progress."""
        if not self.eq_warmup_epochs:
            return 1.0
        if self.progress is None:
            raise RuntimeError('audio adapter option eq_warmup_epochs needs the training progress: the engine sets '
                               'it; a training loop of your own must call adapter.set_progress(epochs_done) before '
                               'each step')
        return min(1.0, self.progress / self.eq_warmup_epochs)

    def encode(self, x: Any) -> Tuple[torch.Tensor, Any]:
        feats = self.fbank(x)                       # (B, frames, bins)
        if self.training and self.eq_gain_db and self.eq_prob:
            wav, lengths = self.split_input(x)
            if lengths is None:  # every clip is as long as the batch (fbank pads shorter ones with zero frames)
                lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long)
            frames = self._frames(lengths.to(feats.device, torch.long))
            if self.eq_prob < 1:  # a clip left out gets no frames to change
                frames = frames * (torch.rand(frames.shape, device=frames.device) < self.eq_prob)
            feats = random_band_gain(feats, self.eq_gain_db * self._eq_ramp(), frames, keep_level=self.eq_keep_level)
        img = feats.transpose(1, 2).unsqueeze(1)    # (B, 1, bins, frames)
        if self.training and self.spec_augment:
            # Masks are applied to the un-normalised fbank (masked cells are 0 before normalisation), as published.
            img = self.time_masking(self.freq_masking(img))
        img = self.normalize(img)
        if self.training and (self.freq_warp or self.time_warp):
            img = random_axis_warp(img, self.freq_warp, self.time_warp)
        if self.training and self.noise:
            img = self._add_noise_and_roll(img)
        return img.contiguous(), None


def random_axis_warp(img: torch.Tensor, freq_warp: float, time_warp: float) -> torch.Tensor:
    """Stretch each ``(B, C, bins, frames)`` spectrogram's two axes by its own random factors (bilinear).

    Factors ``a`` (bins) and ``b`` (frames) are ``exp(U(-log(1+w), log(1+w)))``. Output row ``y`` (normalised to
    ``[-1, 1]``, row 0 = lowest band) reads source row ``(y + 1) / a - 1`` (the lowest band stays put, the rest
    moves by a factor ``a`` like formants under a longer or shorter vocal tract); column ``x`` reads ``x / b``
    (stretch around the centre). Edges beyond the source repeat the border rows / frames.
    """
    b = img.shape[0]

    def factors(w: float) -> torch.Tensor:
        span = torch.log1p(torch.tensor(float(w)))
        return torch.exp((torch.rand(b, device=img.device) * 2 - 1) * span).to(img.dtype)

    a, s = factors(freq_warp), factors(time_warp)
    theta = torch.zeros(b, 2, 3, device=img.device, dtype=img.dtype)
    theta[:, 0, 0] = 1 / s
    theta[:, 1, 1] = 1 / a
    theta[:, 1, 2] = 1 / a - 1
    grid = F.affine_grid(theta, list(img.shape), align_corners=True)
    return F.grid_sample(img, grid, mode='bilinear', padding_mode='border', align_corners=True)


def random_band_gain(feats: torch.Tensor, max_db: float, frames: torch.Tensor, points: int = 4,
                     keep_level: bool = True) -> torch.Tensor:
    """Add a random smooth gain curve across the bands of each clip's log-mel features ``(B, frames, bins)``.

    The curve is linear between ``points`` gains drawn from ``U(-max_db, max_db)`` dB, spread evenly from the lowest
    to the highest band. With ``keep_level`` its mean over the bands is taken off: it reshapes the spectrum without
    changing the clip's overall level (so it lies within ``+-2 max_db``); without, it lies within ``+-max_db`` and
    moves the level too. In natural-log power units a gain of ``g`` dB adds ``g * ln(10) / 10``.
    Only each clip's first ``frames[i]`` frames change: the zero frames after a short clip (feature-domain padding)
    stay zero.
    """
    b, n, bins = feats.shape
    gains = (torch.rand(b, 1, points, device=feats.device, dtype=feats.dtype) * 2 - 1) * (max_db * math.log(10) / 10)
    curve = F.interpolate(gains, size=bins, mode='linear', align_corners=True)        # (B, 1, bins)
    if keep_level:
        curve = curve - curve.mean(-1, keepdim=True)
    real = torch.arange(n, device=feats.device)[None] < frames.to(feats.device)[:, None]  # (B, frames)
    return feats + curve * real[..., None].to(feats.dtype)


def _iter_waveform_batches(data: Union[Dataset, Iterable], batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(data, Dataset):
        data = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)
    for batch in data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def compute_norm_stats(data: Union[Dataset, Iterable], adapter: AudioAdapter, batch_size: int = 64,
                       max_batches: Optional[int] = None) -> Tuple[float, float]:
    """Mean and standard deviation of the adapter's un-normalised features over a data set.

    Published (AST) style: the mean of the per-batch means and the mean of the per-batch standard deviations
    of the padded fbank, without augmentation. Use the result as ``norm_mean`` / ``norm_std`` of
    :class:`AudioAdapter` when training on data other than Speech Commands.

    Args:
        data: a dataset yielding ``(waveform, label)`` or a loader/iterable of ``(waveforms, labels)`` batches.
        adapter: the adapter whose features are measured (its mode and frame settings matter).
        batch_size: batch size when ``data`` is a dataset.
        max_batches: stop after this many batches (``None``: the whole data set).

    Returns:
        ``(mean, std)``.
    """
    means, stds = [], []
    for i, wav in enumerate(_iter_waveform_batches(data, batch_size)):
        if max_batches is not None and i >= max_batches:
            break
        adapter.check_input(wav)
        feats = adapter.fbank(wav)
        means.append(feats.mean().item())
        stds.append(feats.std().item())
    if not means:
        raise ValueError('compute_norm_stats got no batches')
    mean, std = sum(means) / len(means), sum(stds) / len(stds)
    _logger.info('audio feature statistics over %d batches: mean %.6f std %.6f', len(means), mean, std)
    return mean, std

