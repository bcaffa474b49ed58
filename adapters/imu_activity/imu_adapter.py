"""Human activity recognition from a wrist/hip IMU with the unimodal trunk: an example plug-in adapter.

Written as an outside user would: it imports only the public ``unimodal`` API (plus torch and NumPy).

``IMUAdapter`` turns windows of inertial data ``(B, T, 6)`` (accelerometer x, y, z in g, gyroscope x, y, z in
rad/s, e.g. 128 samples at 50 Hz as in UCI-HAR) into a 2D image per axis, stacked as trunk input channels:

* ``mode='spectrogram'`` (default): per-axis log-magnitude STFT (frequency × time), resized to
  ``image_size``; gait and pedalling show up as harmonic ridges.
* ``mode='recurrence'``: per-axis recurrence plot ``|x_i - x_j|`` (time × time); periodic motion shows as
  diagonal stripes at the period.

``IMUSynthetic`` is a small deterministic set of five activities (still, walking, running, cycling, jumping)
with random sensor orientation and gains, so classes differ in temporal structure, not in a global mean.

Use it::

    unimodal train --adapter adapters/imu_activity/imu_adapter.py:IMUAdapter --epochs 3

    import unimodal
    cls = unimodal.get_adapter_class('adapters/imu_activity/imu_adapter.py:IMUAdapter')
    model = unimodal.create_model(cls(mode='recurrence'), variant='unireplknet_test', num_classes=5)
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import unimodal

__all__ = ['IMUAdapter', 'IMUSynthetic', 'IMU_CLASSES']

IMU_CLASSES = ('still', 'walking', 'running', 'cycling', 'jumping')

_MODES = ('spectrogram', 'recurrence')


@unimodal.register_adapter('imu')
class IMUAdapter(unimodal.Adapter):
    """IMU windows ``(B, T, channels)`` → one 2D image per sensor axis, stacked as channels.

    Args:
        channels: sensor axes per sample (6: accelerometer xyz + gyroscope xyz).
        mode: ``'spectrogram'`` or ``'recurrence'`` (see the module docstring).
        n_fft: STFT window (spectrogram mode).
        hop: STFT hop (spectrogram mode).
        image_size: side of the square image each axis becomes (the trunk downsamples by 32).
        min_len: shortest window accepted.
        rotate: train-time random rotation of the sensor frame (the same rotation for accelerometer and
            gyroscope), so the model does not rely on how the device was worn.
    """

    name = 'imu'
    head_kind = 'classification'
    input_desc = '(B, T, 6) float IMU window (accelerometer xyz, gyroscope xyz)'
    num_classes = len(IMU_CLASSES)

    def __init__(self, channels: int = 6, mode: str = 'spectrogram', n_fft: int = 32, hop: int = 4,
                 image_size: int = 32, min_len: int = 32, rotate: bool = True) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f'mode must be one of {_MODES}, got {mode!r}')
        if rotate and channels % 3:
            raise ValueError(f'rotate needs xyz triplets of channels, got {channels} channels')
        self.channels = channels
        self.mode = mode
        self.n_fft = n_fft
        self.hop = hop
        self.image_size = image_size
        self.min_len = max(min_len, n_fft if mode == 'spectrogram' else 2)
        self.rotate = rotate
        self.out_chans = channels
        self.register_buffer('window', torch.hann_window(n_fft), persistent=False)
        self.norm = nn.BatchNorm2d(channels)  # learnable per-axis affine of the images

    @classmethod
    def default_config(cls) -> Dict[str, Any]:
        """Config overrides that train the synthetic set well in about a minute on a laptop CPU."""
        return {'train': {'epochs': 4, 'batch_size': 32, 'lr': 2e-3, 'warmup_epochs': 0.5}}

    @classmethod
    def make_datasets(cls, root: Optional[Path] = None) -> Dict[str, Dataset]:
        """``{'train', 'val', 'test'}`` of the synthetic set (``root`` unused: point it at your own reader)."""
        if root is not None:
            raise NotImplementedError(f'IMUAdapter has no reader for {root}: this example ships only synthetic '
                                      f'data (write make_datasets for your recordings)')
        return {'train': IMUSynthetic('train', 300), 'val': IMUSynthetic('val', 100), 'test': IMUSynthetic('test', 100)}

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if x.ndim != 3:
            hint = ' (one window? add a batch dimension with x[None])' if x.ndim == 2 else ''
            raise self.shape_error(x, f'expected 3 dimensions (B, T, channels), got {x.ndim}{hint}')
        if x.shape[2] != self.channels:
            hint = ' (channels-first? use x.transpose(1, 2))' if x.shape[1] == self.channels else ''
            raise self.shape_error(x, f'expected {self.channels} sensor channels in the last dim, '
                                      f'got {x.shape[2]}{hint}')
        if x.shape[1] < self.min_len:
            raise self.shape_error(x, f'windows need at least {self.min_len} time steps, got {x.shape[1]}')
        if not x.is_floating_point():
            raise self.shape_error(x, 'expected a floating-point tensor')

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        if not self.rotate:
            return x
        # One random rotation per sample (QR of a Gaussian matrix), applied to every xyz triplet.
        q, r = torch.linalg.qr(torch.randn(x.shape[0], 3, 3, device=x.device))
        q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
        b, t, c = x.shape
        return torch.einsum('btgi,bji->btgj', x.reshape(b, t, c // 3, 3), q.to(x.dtype)).reshape(b, t, c)

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        b, t, c = x.shape
        x = x.transpose(1, 2).float()  # (B, C, T)
        if self.mode == 'spectrogram':
            x = x - x.mean(-1, keepdim=True)  # drop gravity / gyro bias: the image is about motion
            spec = torch.stft(x.reshape(b * c, t), self.n_fft, hop_length=self.hop, window=self.window.to(x.device),
                              center=True, return_complex=True)
            img = torch.log1p(spec.abs()).reshape(b, c, spec.shape[-2], spec.shape[-1])
        else:
            # Recurrence plot on a time axis pooled to at most image_size steps (keeps it O(image_size^2)).
            if t > self.image_size:
                x = F.adaptive_avg_pool1d(x, self.image_size)
            img = torch.log1p((x.unsqueeze(-1) - x.unsqueeze(-2)).abs())
        img = F.interpolate(img, size=(self.image_size, self.image_size), mode='bilinear', align_corners=False)
        return self.norm(img), None


class IMUSynthetic(Dataset):
    """Deterministic IMU windows of five activities (``IMU_CLASSES``), 50 Hz, ``(T, 6)`` float32.

    Every window gets a random device orientation (gravity direction), random gains and noise, so the mean
    acceleration and the axes carry little class information; the activities differ in their temporal
    patterns: step frequency and harmonics (walking vs running), smooth rotation (cycling), ballistic flight
    phases (jumping), or no motion at all.
    """

    classes = list(IMU_CLASSES)

    def __init__(self, split: str = 'train', size: int = 300, length: int = 128, fs: float = 50.,
                 seed: int = 0) -> None:
        if split not in ('train', 'val', 'test'):
            raise ValueError(f'split must be train, val or test, got {split!r}')
        self.split_id = ('train', 'val', 'test').index(split)
        self.size, self.length, self.fs, self.seed = size, length, fs, seed
        # Balanced labels in a fixed shuffled order (not i % classes: evenly spaced subsets would see one class).
        labels = np.arange(size) % len(IMU_CLASSES)
        self.targets = np.random.default_rng([seed, self.split_id, 12345]).permutation(labels).tolist()

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        label = self.targets[index]
        rng = np.random.default_rng([self.seed, self.split_id, index])
        t = np.arange(self.length) / self.fs
        phase = rng.uniform(0, 2 * math.pi)
        acc = np.zeros((self.length, 3))
        gyro = np.zeros((self.length, 3))
        if label == 1 or label == 2:  # walking / running: vertical bounce at the step rate with harmonics
            f = rng.uniform(1.6, 2.0) if label == 1 else rng.uniform(2.6, 3.2)
            amp = rng.uniform(0.2, 0.4) if label == 1 else rng.uniform(0.5, 0.9)
            step = np.sin(2 * math.pi * f * t + phase)
            acc[:, 2] = amp * (step + 0.5 * np.sin(4 * math.pi * f * t + 2 * phase))
            if label == 2:  # heel strike impacts
                acc[:, 2] += amp * 1.5 * np.maximum(step, 0) ** 8
            acc[:, 0] = 0.3 * amp * np.sin(math.pi * f * t + phase)  # sway at half the step rate
            gyro[:, 1] = 0.8 * amp * np.cos(2 * math.pi * f * t + phase)
        elif label == 3:  # cycling: smooth pedalling rotation, little vertical acceleration
            f = rng.uniform(1.0, 1.5)
            gyro[:, 0] = rng.uniform(1.0, 2.0) * np.sin(2 * math.pi * f * t + phase)
            gyro[:, 2] = 0.5 * np.cos(2 * math.pi * f * t + phase)
            acc[:, 1] = 0.15 * np.sin(2 * math.pi * f * t + phase)
        elif label == 4:  # jumping: take-off spikes, near free fall in flight, landing spikes
            period = rng.uniform(0.6, 0.9)
            start = rng.uniform(0, period)
            for tj in np.arange(start - period, t[-1] + period, period):
                flight = (t > tj) & (t < tj + 0.35 * period)
                acc[flight, 2] -= 0.9  # cancels most of gravity
                acc[:, 2] += 2.0 * np.exp(-0.5 * ((t - tj) / 0.03) ** 2)
                acc[:, 2] += 2.5 * np.exp(-0.5 * ((t - tj - 0.35 * period) / 0.03) ** 2)
        acc[:, 2] += 1.0  # gravity (device frame, before the random orientation)
        # random device orientation (gravity can point anywhere) and gains
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))
        acc = acc @ q.T * rng.uniform(0.9, 1.1)
        gyro = gyro @ q.T * rng.uniform(0.9, 1.1)
        x = np.concatenate([acc + rng.normal(0, 0.03, acc.shape), gyro + rng.normal(0, 0.05, gyro.shape)], axis=1)
        return torch.from_numpy(x.astype(np.float32)), label
