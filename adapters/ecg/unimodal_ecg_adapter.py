"""ECG rhythm classification with the unimodal trunk: an example plug-in adapter.

Written as an outside user would: it imports only the public ``unimodal`` API (plus torch and NumPy).

``ECGAdapter`` turns a batch of multi-lead ECG records ``(B, leads, samples)`` into a stack of per-lead
log-magnitude spectrograms ``(B, leads, freq, frames)`` (one trunk input channel per lead), so the trunk's
large kernels see rhythm (beat spacing along time) and morphology (QRS width → spectral spread) at once.

``ECGSynthetic`` is a small deterministic data set of ECG-like records in five rhythm classes that differ in
timing and waveform shape, not in amplitude, so the example trains out of the box. ``ECGAdapter.make_datasets``
returns it, or reads your own data from ``{train,val,test}.npz`` files (arrays ``x`` (N, leads, samples) and
``y`` (N,)) when a folder is given.

Use it::

    unimodal train --adapter adapters/ecg/unimodal_ecg_adapter.py:ECGAdapter --epochs 3
    # or, after `pip install adapters/ecg`: the entry point makes it available by name
    unimodal train --adapter ecg

    import unimodal
    from unimodal_ecg_adapter import ECGAdapter
    model = unimodal.create_model(ECGAdapter(leads=3), variant='unireplknet_test', num_classes=5)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

import unimodal

__all__ = ['ECGAdapter', 'ECGSynthetic', 'ECGArrays', 'ECG_CLASSES']

ECG_CLASSES = ('normal', 'tachycardia', 'atrial_fibrillation', 'bundle_branch_block', 'premature_ventricular')


@unimodal.register_adapter('ecg')
class ECGAdapter(unimodal.Adapter):
    """Multi-lead ECG ``(B, leads, samples)`` → per-lead log spectrograms stacked as channels.

    Args:
        leads: number of ECG leads (trunk input channels).
        fs: sampling rate in Hz (only used to check a record is long enough to hold a few beats).
        n_fft: STFT window length in samples.
        hop: STFT hop in samples.
        min_seconds: shortest record accepted.
        augment_scale: train-time random gain range (records are standardised anyway; this adds robustness to
            lead-gain differences between devices).
        noise_std: train-time additive Gaussian noise (in units of each lead's standard deviation).
    """

    name = 'ecg'
    head_kind = 'classification'
    input_desc = '(B, leads, samples) float ECG batch'
    num_classes = len(ECG_CLASSES)

    def __init__(self, leads: int = 3, fs: float = 100., n_fft: int = 64, hop: int = 16, min_seconds: float = 2.,
                 augment_scale: Tuple[float, float] = (0.8, 1.25), noise_std: float = 0.05) -> None:
        super().__init__()
        if leads < 1:
            raise ValueError(f'leads must be >= 1, got {leads}')
        if not 0 < hop <= n_fft:
            raise ValueError(f'hop must be in [1, n_fft], got hop={hop}, n_fft={n_fft}')
        self.leads = leads
        self.fs = fs
        self.n_fft = n_fft
        self.hop = hop
        self.min_samples = max(n_fft, int(round(min_seconds * fs)))
        self.augment_scale = tuple(augment_scale)
        self.noise_std = noise_std
        self.out_chans = leads
        self.register_buffer('window', torch.hann_window(n_fft), persistent=False)
        # Learnable per-lead affine on the log spectrogram (BatchNorm statistics: robust to device gain).
        self.norm = nn.BatchNorm2d(leads)

    @classmethod
    def default_config(cls) -> Dict[str, Any]:
        """Config overrides that train the synthetic set well in about a minute on a laptop CPU."""
        return {'train': {'epochs': 4, 'batch_size': 32, 'lr': 2e-3, 'warmup_epochs': 0.5}}

    @classmethod
    def make_datasets(cls, root: Optional[Path] = None) -> Dict[str, Dataset]:
        """``{'train', 'val', 'test'}``: the synthetic set, or ``root/{train,val,test}.npz`` (``x``, ``y``)."""
        if root is None:
            return {'train': ECGSynthetic('train', 320), 'val': ECGSynthetic('val', 100),
                    'test': ECGSynthetic('test', 100)}
        return {split: ECGArrays(Path(root) / f'{split}.npz') for split in ('train', 'val', 'test')
                if (Path(root) / f'{split}.npz').is_file() or split == 'train'}

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if x.ndim != 3:
            hint = ' (one record? add a batch dimension with x[None])' if x.ndim == 2 else ''
            raise self.shape_error(x, f'expected 3 dimensions (B, leads, samples), got {x.ndim}{hint}')
        if x.shape[1] != self.leads:
            hint = ' (samples-first? use x.transpose(1, 2))' if x.shape[2] == self.leads else ''
            raise self.shape_error(x, f'expected {self.leads} leads in dim 1, got {x.shape[1]}{hint}')
        if x.shape[2] < self.min_samples:
            raise self.shape_error(x, f'records need at least {self.min_samples} samples, got {x.shape[2]}')
        if not x.is_floating_point():
            raise self.shape_error(x, 'expected a floating-point tensor')

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.augment_scale
        gain = torch.empty(x.shape[0], x.shape[1], 1, device=x.device, dtype=x.dtype).uniform_(lo, hi)
        x = x * gain
        if self.noise_std > 0:
            x = x + self.noise_std * x.std(dim=-1, keepdim=True) * torch.randn_like(x)
        shift = int(torch.randint(0, x.shape[-1], (1,)))
        return torch.roll(x, shift, dims=-1)  # records have no fixed start: any phase is valid

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        b, leads, n = x.shape
        # Standardise each lead (removes baseline offset and amplitude: devices differ in both).
        x = (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-6)
        spec = torch.stft(x.reshape(b * leads, n).float(), self.n_fft, hop_length=self.hop,
                          window=self.window.to(x.device), center=True, return_complex=True)
        img = torch.log1p(spec.abs()).reshape(b, leads, spec.shape[-2], spec.shape[-1])
        return self.norm(img.to(x.dtype)), None


class ECGSynthetic(Dataset):
    """Deterministic ECG-like records in five rhythm classes (``ECG_CLASSES``).

    Each record is a sum of Gaussian P/Q/R/S/T waves per beat, projected onto ``leads`` leads with
    random per-record lead gains, plus baseline wander and noise. Classes differ in rhythm (rate, regularity,
    premature beats) and morphology (QRS width, missing P waves), not in amplitude.

    Args:
        split: ``'train'``, ``'val'`` or ``'test'`` (different records from the same distribution).
        size: number of records (balanced over classes).
        leads, fs, seconds: record layout.
        seed: base seed.
    """

    classes = list(ECG_CLASSES)

    def __init__(self, split: str = 'train', size: int = 300, leads: int = 3, fs: float = 100.,
                 seconds: float = 10., seed: int = 0) -> None:
        if split not in ('train', 'val', 'test'):
            raise ValueError(f'split must be train, val or test, got {split!r}')
        self.split_id = ('train', 'val', 'test').index(split)
        self.size, self.leads, self.fs, self.seed = size, leads, fs, seed
        self.samples = int(round(seconds * fs))
        # Balanced labels in a fixed shuffled order (not i % classes: evenly spaced subsets would see one class).
        labels = np.arange(size) % len(ECG_CLASSES)
        self.targets = np.random.default_rng([seed, self.split_id, 12345]).permutation(labels).tolist()

    def __len__(self) -> int:
        return self.size

    def _beat_times(self, label: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        duration = self.samples / self.fs
        t, times, ectopic = rng.uniform(0, 0.8), [], []
        rr_mean = rng.uniform(0.45, 0.6) if label == 1 else rng.uniform(0.8, 1.05)
        k = 0
        while t < duration + 0.5:
            is_pvc = label == 4 and k % 4 == 2  # every fourth beat is a premature ventricular one
            times.append(t)
            ectopic.append(is_pvc)
            if label == 2:
                rr = rng.uniform(0.4, 1.1)  # irregularly irregular
            elif label == 4 and k % 4 == 1:
                rr = rr_mean * 0.6  # the ectopic beat comes early ...
            elif is_pvc:
                rr = rr_mean * 1.4  # ... and is followed by a compensatory pause
            else:
                rr = rr_mean * rng.normal(1, 0.02)
            t += rr
            k += 1
        return np.asarray(times), np.asarray(ectopic)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        label = self.targets[index]
        rng = np.random.default_rng([self.seed, self.split_id, index])
        t = np.arange(self.samples) / self.fs
        times, ectopic = self._beat_times(label, rng)
        qrs = 0.045 if label == 3 else 0.012  # bundle branch block: wide QRS
        # waves: (offset s, amplitude, width s)
        normal = [(-0.2, 0.15, 0.025), (-0.03, -0.12, qrs * 0.8), (0., 1., qrs), (0.035, -0.25, qrs), (0.3, 0.3, 0.06)]
        if label == 2:
            normal = normal[1:]  # atrial fibrillation: no P waves
        wide = [(0., 1.2, 0.05), (0.08, -0.5, 0.05), (0.32, -0.35, 0.07)]  # premature ventricular beat
        sig = np.zeros_like(t)
        for tb, ect in zip(times, ectopic):
            for off, amp, width in (wide if ect else normal):
                sig += amp * rng.normal(1, 0.05) * np.exp(-0.5 * ((t - tb - off) / width) ** 2)
        if label == 2:
            sig += 0.05 * np.sin(2 * np.pi * rng.uniform(5, 8) * t + rng.uniform(0, 6.3))  # fibrillatory waves
        gains = rng.normal(0, 1, size=self.leads) * 0.4 + np.linspace(1, -0.5, self.leads)
        x = gains[:, None] * sig[None] * rng.uniform(0.5, 2.)
        wander = rng.uniform(0.05, 0.3, size=(self.leads, 1)) * np.sin(
            2 * np.pi * rng.uniform(0.1, 0.5) * t[None] + rng.uniform(0, 6.3, size=(self.leads, 1)))
        x = x + wander + rng.normal(0, 0.03, size=x.shape)
        return torch.from_numpy(x.astype(np.float32)), label


class ECGArrays(Dataset):
    """Your own records from an ``.npz`` with ``x`` (N, leads, samples) and integer ``y`` (N,)."""

    def __init__(self, path: Path, classes: Optional[Sequence[str]] = None) -> None:
        if not path.is_file():
            raise FileNotFoundError(f'{path}: expected an .npz with arrays x (N, leads, samples) and y (N,)')
        with np.load(path, allow_pickle=False) as data:  # never unpickle data files
            if 'x' not in data or 'y' not in data:
                raise ValueError(f'{path}: expected arrays "x" and "y", found {sorted(data.files)}')
            self.x = np.asarray(data['x'], dtype=np.float32)
            self.y = np.asarray(data['y'], dtype=np.int64)
        if self.x.ndim != 3 or len(self.x) != len(self.y):
            raise ValueError(f'{path}: x must be (N, leads, samples) and y (N,), got {self.x.shape} and {self.y.shape}')
        n = int(self.y.max()) + 1 if len(self.y) else 0
        self.classes = list(classes) if classes is not None else [str(i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        return torch.from_numpy(self.x[index]), int(self.y[index])
