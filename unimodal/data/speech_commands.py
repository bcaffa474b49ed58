"""Speech Commands V2 reader (official layout) and the built-in synthetic Speech-Commands-style data set.

Official layout (``speech_commands_v0.02/``)::

    <word>/<speaker>_nohash_<n>.wav     one folder per word, 16 kHz mono 16-bit WAV clips of <= 1 s
    validation_list.txt                 relative paths (``<word>/<file>``) of the validation clips
    testing_list.txt                    relative paths of the test clips
    _background_noise_/*.wav            long noise recordings, not a class

Train is every clip named in neither list. The 35-class variant uses every word folder as a class; the
12-class variant keeps ``yes no up down left right on off stop go``, maps every other word to ``_unknown_``
and adds ``_silence_`` clips cut deterministically from ``_background_noise_``.
"""
from __future__ import annotations

import hashlib
import logging
import math
import struct
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple, Union

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from .builtin import build_once
from .errors import DataError, SkipReport

_logger = logging.getLogger(__name__)

__all__ = ['SpeechCommands', 'mix_waveforms', 'make_builtin_speech', 'file_digest', 'V2_WORDS', 'V12_WORDS', 'UNKNOWN', 'SILENCE', 'BACKGROUND']

#: The 35 words of Speech Commands V2.
V2_WORDS = (
    'backward', 'bed', 'bird', 'cat', 'dog', 'down', 'eight', 'five', 'follow', 'forward', 'four', 'go', 'happy',
    'house', 'learn', 'left', 'marvin', 'nine', 'no', 'off', 'on', 'one', 'right', 'seven', 'sheila', 'six', 'stop',
    'three', 'tree', 'two', 'up', 'visual', 'wow', 'yes', 'zero')
#: The 10 command words of the 12-class variant (plus ``_unknown_`` and ``_silence_``).
V12_WORDS = ('yes', 'no', 'up', 'down', 'left', 'right', 'on', 'off', 'stop', 'go')
UNKNOWN = '_unknown_'
SILENCE = '_silence_'
BACKGROUND = '_background_noise_'

_AUDIO_SUFFIXES = ('.wav', '.flac')
_SPLIT_LISTS = {'val': 'validation_list.txt', 'test': 'testing_list.txt'}
_SPLITS = ('train', 'val', 'test')
# Disjoint parts of every background-noise file feed the _silence_ clips of each split (no leakage).
_SILENCE_PARTS = {'train': (0.0, 0.8), 'val': (0.8, 0.9), 'test': (0.9, 1.0)}
_SILENCE_SEED = {'train': 0, 'val': 1, 'test': 2}

LAYOUT_HELP = ('expected the Speech Commands V2 layout: <root>/<word>/*.wav (one folder per word), '
               '<root>/validation_list.txt, <root>/testing_list.txt, <root>/_background_noise_/*.wav')


class _Item(NamedTuple):
    path: Path
    label: int
    frames: int          # frames the header declares (in the file's own sample rate)
    sample_rate: int
    silence: bool = False  # a _silence_ window cut from a background-noise file
    offset: int = 0        # _silence_: start frame inside the noise file
    gain: float = 1.0      # _silence_: deterministic level


def _wav_truncation(path: Path) -> Optional[Tuple[int, int]]:
    """For a RIFF/WAVE file, ``(declared_bytes, available_bytes)`` of the data chunk if it is truncated.

    libsndfile silently reads a truncated WAV as a shorter clip, so the header is checked here.
    Returns ``None`` when the file is not RIFF/WAVE, the size is unknown (streamed files write 0 or
    0xFFFFFFFF), or the data chunk is complete.
    """
    size = path.stat().st_size
    with open(path, 'rb') as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b'RIFF' or head[8:12] != b'WAVE':
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, csize = chunk[:4], struct.unpack('<I', chunk[4:])[0]
            if cid == b'data':
                available = size - pos - 8
                if csize in (0, 0xFFFFFFFF) or available >= csize:
                    return None
                return csize, available
            pos += 8 + csize + (csize & 1)
    return None


class SpeechCommands(Dataset):
    """Speech Commands V2 clips as ``(waveform float32 (clip_samples,), label int)``.

    Files are read with ``soundfile`` (WAV or FLAC); other sample rates are resampled to ``sample_rate`` with
    ``torchaudio.functional.resample`` (logged once per data set), multi-channel audio is mixed down, and every
    clip is zero-padded or cropped to ``clip_samples``. File headers are validated in ``__init__`` so bad files
    fail early (or are skipped and counted in :attr:`skip_report` in the main process).

    With ``return_length`` a sample's input is ``(waveform, real length)`` (an int64 scalar, the samples before the
    zero padding), so the audio adapter pads in the feature domain as published. With ``mixup`` (training split
    only) the target is a float ``(num_classes,)`` vector: the published per-sample waveform mixup
    (:meth:`_mixed`).

    Args:
        root: the data set folder (holding the word folders and the split lists).
        split: ``'train'``, ``'val'`` or ``'test'``.
        variant: ``35``: every word folder is a class (35 words in V2); ``12``: :data:`V12_WORDS` +
            ``_unknown_`` (every other word) + ``_silence_`` (cut from ``_background_noise_``).
        classes: variant 35 only: the class list (its order sets the label indices). A word folder or list
            entry whose word is not in it is bad input. Default: the word folders found, sorted.
        skip_bad: skip bad files and record them in :attr:`skip_report` instead of raising :class:`DataError`.
        silence_fraction: variant 12: ``_silence_`` clips per split as a fraction of the split's word clips.
        sample_rate: output sample rate in Hz.
        clip_samples: output length in samples (1 s at 16 kHz).
        return_length: yield ``((waveform, length), label)``: the adapter then computes features over the real
            samples and pads with zero frames (the published features; needed for clips shorter than
            ``clip_samples``).
        mixup: training split only: ``{'prob': p, 'alpha': a}``, the published per-sample mixup (AST loader):
            each clip is, with probability ``p``, mixed at waveform level with a partner drawn uniformly from the
            whole split (possibly itself) with its own ``lambda ~ Beta(a, a)``; the target becomes
            ``lambda`` on the clip's class plus ``1 - lambda`` on the partner's. Published: ``{prob: 0.6,
            alpha: 10}``. Every target is then a float vector (one-hot when not mixed).

    Attributes:
        classes: class names; ``label`` indexes this list.
        targets: the label of every sample.
        skip_report: what was skipped (empty unless ``skip_bad``).
    """

    def __init__(self, root: Union[str, Path], split: str = 'train', variant: int = 35,
                 classes: Optional[Sequence[str]] = None, skip_bad: bool = False, silence_fraction: float = 0.1,
                 sample_rate: int = 16000, clip_samples: int = 16000, return_length: bool = False,
                 mixup: Optional[Mapping[str, float]] = None) -> None:
        if split not in _SPLITS:
            raise ValueError(f'split must be one of {_SPLITS}, got {split!r}')
        self.return_length = bool(return_length)
        self.mixup = _check_mixup(mixup, split)
        if variant not in (35, 12):
            raise ValueError(f'variant must be 35 or 12, got {variant!r}')
        if classes is not None and variant != 35:
            raise ValueError('classes applies to variant 35 only (variant 12 has a fixed class list)')
        self.root = Path(root)
        self.split = split
        self.variant = variant
        self.skip_bad = skip_bad
        self.sample_rate = sample_rate
        self.clip_samples = clip_samples
        self.skip_report = SkipReport(f'speech_commands/{split}')
        if not self.root.is_dir():
            raise FileNotFoundError(f'Speech Commands root {self.root} does not exist; {LAYOUT_HELP}')

        words = sorted(p.name for p in self.root.iterdir()
                       if p.is_dir() and not p.name.startswith(('.', '_')))
        if not words:
            raise DataError(self.root, f'no word folders found; {LAYOUT_HELP}')
        if variant == 12:
            self.classes: List[str] = list(V12_WORDS) + [UNKNOWN, SILENCE]
        elif classes is not None:
            self.classes = list(classes)
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f'classes has duplicates: {self.classes}')
        else:
            self.classes = words
        self._class_index = {c: i for i, c in enumerate(self.classes)}

        rel_paths = self._split_files(words)
        items = self._validated_items(rel_paths)
        if variant == 12:
            items += self._silence_items(max(1, round(silence_fraction * len(items))) if items else 0)
        self.samples: List[_Item] = items
        self.targets = [it.label for it in items]
        self.skip_report.total = len(items) + self.skip_report.count
        if not items:
            raise DataError(self.root, f'no usable clips for split {split!r}; {LAYOUT_HELP}')

        rates = {}
        for it in items:
            if it.sample_rate != sample_rate:
                rates[it.sample_rate] = rates.get(it.sample_rate, 0) + 1
        if rates:
            _logger.warning('speech_commands/%s: clips not at %d Hz are resampled to %d Hz (%s)', split, sample_rate,
                            sample_rate, ', '.join(f'{n} at {sr} Hz' for sr, n in sorted(rates.items())))
        _logger.info('speech_commands/%s: %d clips, %d classes (variant %d), %d skipped', split, len(items),
                     len(self.classes), variant, self.skip_report.count)

    # ---- index building (main process) ---------------------------------------------------------------
    def _bad(self, error: DataError) -> None:
        if not self.skip_bad:
            raise error
        self.skip_report.add(error)

    def _read_list(self, name: str) -> List[Tuple[int, str]]:
        path = self.root / name
        if not path.is_file():
            raise FileNotFoundError(f'{path} does not exist; {LAYOUT_HELP}')
        out = []
        for i, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1):
            line = line.strip().replace('\\', '/')
            if line:
                out.append((i, line))
        return out

    def _label_of(self, rel: str) -> Optional[int]:
        word = rel.split('/', 1)[0]
        if self.variant == 12:
            return self._class_index.get(word, self._class_index[UNKNOWN])
        return self._class_index.get(word)

    def _split_files(self, words: List[str]) -> List[str]:
        """Relative paths (``word/file``) of the split's clips; list entries are checked to exist."""
        if self.split == 'train':
            listed: Set[str] = set()
            for name in _SPLIT_LISTS.values():
                listed.update(rel for _, rel in self._read_list(name))
            rels = []
            for word in words:
                for f in sorted((self.root / word).iterdir()):
                    if f.is_file() and f.suffix.lower() in _AUDIO_SUFFIXES:
                        rel = f'{word}/{f.name}'
                        if rel not in listed:
                            rels.append(rel)
            return rels
        list_name = _SPLIT_LISTS[self.split]
        rels = []
        for line_no, rel in self._read_list(list_name):
            if not (self.root / rel).is_file():
                self._bad(DataError(self.root / rel, f'listed in {list_name} (line {line_no}) but does not exist'))
                continue
            rels.append(rel)
        return rels

    def _validated_items(self, rels: List[str]) -> List[_Item]:
        items = []
        for rel in rels:
            path = self.root / rel
            label = self._label_of(rel)
            if label is None:
                self._bad(DataError(path, f'word {rel.split("/", 1)[0]!r} is not in the class list {self.classes}'))
                continue
            try:
                info = self._check_header(path)
            except DataError as e:
                self._bad(e)
                continue
            items.append(_Item(path, label, info.frames, info.samplerate))
        return items

    @staticmethod
    def _check_header(path: Path) -> Any:  # soundfile's info object
        if path.stat().st_size == 0:
            raise DataError(path, 'zero-length file (0 bytes), expected a WAV/FLAC clip')
        try:
            info = sf.info(str(path))
        except (RuntimeError, sf.SoundFileError) as e:
            raise DataError(path, f'unreadable audio file ({e}); expected a WAV/FLAC clip') from None
        if info.frames <= 0:
            raise DataError(path, 'zero-length audio (the header declares 0 frames)')
        trunc = _wav_truncation(path)
        if trunc is not None:
            declared, available = trunc
            raise DataError(path, f'truncated WAV: the header declares {declared} data bytes, '
                                  f'the file holds {available}')
        return info

    def _silence_items(self, count: int) -> List[_Item]:
        """``count`` deterministic 1-s windows from this split's part of each background-noise file."""
        folder = self.root / BACKGROUND
        noise = []
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                if f.is_file() and f.suffix.lower() in _AUDIO_SUFFIXES:
                    try:
                        info = self._check_header(f)
                    except DataError as e:
                        self._bad(e)
                        continue
                    noise.append((f, info))
        if count and not noise:
            raise DataError(folder, f'variant 12 needs background noise files for {SILENCE} clips; {LAYOUT_HELP}')
        rng = np.random.default_rng(_SILENCE_SEED[self.split])
        lo, hi = _SILENCE_PARTS[self.split]
        label = self._class_index[SILENCE]
        items = []
        for k in range(count):
            f, info = noise[k % len(noise)]
            need = int(math.ceil(self.clip_samples * info.samplerate / self.sample_rate))
            start, stop = int(lo * info.frames), int(hi * info.frames)
            offset = start + int(rng.integers(0, max(1, stop - start - need + 1)))
            gain = float(rng.uniform(0.1, 1.0))
            items.append(_Item(f, label, info.frames, info.samplerate, silence=True, offset=offset, gain=gain))
        return items

    # ---- loading ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    @property
    def soft_targets(self) -> bool:
        """Targets are float class vectors (the reader mixes), not class indices."""
        return self.mixup is not None

    def _load(self, it: _Item) -> torch.Tensor:
        """The clip's real samples (at most ``clip_samples``), not padded."""
        is_silence = it.silence
        try:
            if is_silence:
                need = int(math.ceil(self.clip_samples * it.sample_rate / self.sample_rate))
                data, sr = sf.read(str(it.path), start=it.offset, frames=need, dtype='float32', always_2d=True)
            else:
                data, sr = sf.read(str(it.path), dtype='float32', always_2d=True)
        except (RuntimeError, sf.SoundFileError) as e:
            raise DataError(it.path, f'unreadable audio file ({e})') from None
        if not is_silence and data.shape[0] < it.frames:
            raise DataError(it.path, f'truncated audio: the header declares {it.frames} frames, '
                                     f'{data.shape[0]} could be decoded')
        wav = torch.from_numpy(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0])
        if sr != self.sample_rate:
            wav = _resample(wav, sr, self.sample_rate)
        if is_silence:
            wav = wav * it.gain
        return wav[:self.clip_samples].contiguous()

    def _output(self, wav: torch.Tensor, it: _Item) -> Tuple[Any, Any]:
        """``(input, target)`` of a loaded clip: mixed when ``mixup`` draws so, padded, with its length if asked."""
        target: Any = it.label
        if self.mixup is not None:
            wav, target = self._mixed(wav, it.label)
        x = torch.nn.functional.pad(wav, (0, self.clip_samples - wav.shape[0]))
        return ((x, torch.tensor(wav.shape[0], dtype=torch.int64)) if self.return_length else x), target

    def _mixed(self, wav: torch.Tensor, label: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The published per-sample mixup (AST ``_wav2fbank`` / ``__getitem__``) and its soft target.

        With probability ``prob``: a partner uniform over the whole split (may be the clip itself),
        ``lambda ~ Beta(alpha, alpha)``, waveform :func:`mix_waveforms`; target ``lambda`` on this clip's class
        plus ``1 - lambda`` on the partner's. Otherwise the clip and its one-hot target. NumPy's global RNG, as
        published (the engine seeds it per epoch and per DataLoader worker).
        """
        target = torch.zeros(len(self.classes), dtype=torch.float32)
        if np.random.rand() >= self.mixup['prob']:
            target[label] = 1.0
            return wav, target
        other, other_label = self._partner()
        lam = float(np.random.beta(self.mixup['alpha'], self.mixup['alpha']))
        target[label] += lam
        target[other_label] += 1.0 - lam
        return mix_waveforms(wav, other, lam), target

    def _partner(self) -> Tuple[torch.Tensor, int]:
        for _ in range(len(self)):
            it = self.samples[np.random.randint(len(self))]
            try:
                return self._load(it), it.label
            except DataError as e:
                if not self.skip_bad:
                    raise
                self.skip_report.add(e)  # an unreadable partner is reported and another one drawn
        raise DataError(self.root, f'no readable mixup partner left in split {self.split!r}')

    def __getitem__(self, index: int) -> Tuple[Any, Any]:
        for attempt in range(len(self)):
            it = self.samples[(index + attempt) % len(self)]
            try:
                wav = self._load(it)
            except DataError as e:
                if not self.skip_bad:
                    raise
                # A file that went bad after validation: record it (logged) and serve the next sample.
                self.skip_report.add(e)
                continue
            return self._output(wav, it)
        raise DataError(self.root, f'no readable clip left in split {self.split!r}')


def _check_mixup(mixup: Optional[Mapping[str, float]], split: str) -> Optional[Dict[str, float]]:
    if mixup is None:
        return None
    if split != 'train':
        raise ValueError(f'mixup applies to the train split only (got split {split!r}): evaluation is never mixed')
    if not isinstance(mixup, Mapping) or set(mixup) != {'prob', 'alpha'}:
        raise ValueError(f'mixup must be {{prob: P, alpha: A}} (published: {{prob: 0.6, alpha: 10}}), got {mixup!r}')
    prob, alpha = mixup['prob'], mixup['alpha']
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 <= prob <= 1:
        raise ValueError(f'mixup.prob must be a probability in [0, 1], got {prob!r}')
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < math.inf:
        raise ValueError(f'mixup.alpha must be a positive number (the Beta parameter), got {alpha!r}')
    return {'prob': float(prob), 'alpha': float(alpha)}


def mix_waveforms(a: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    """Published waveform mixup of clip ``a`` with partner ``b`` (both 1-D, real samples).

    ``m = lam * (a - mean a) + (1 - lam) * fit(b - mean b)``, returned as ``m - mean m``, where ``fit`` zero-pads
    or cuts the partner to ``a``'s length (so the result has ``a``'s real length).
    """
    a = a - a.mean()
    b = b - b.mean()
    b = torch.nn.functional.pad(b, (0, max(0, a.shape[0] - b.shape[0])))[:a.shape[0]]
    m = lam * a + (1.0 - lam) * b
    return m - m.mean()


def _resample(wav: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """Resample a 1-D waveform with torchaudio's band-limited sinc interpolation."""
    import torchaudio.functional as AF
    return AF.resample(wav, orig, new)


# ==== built-in synthetic data set ==========================================================================

_BUILTIN_VERSION = 1
_SR = 16000

# Phone inventory: vowels by (F1, F2, F3) formants in Hz; fricatives by their noise band in Hz.
_VOWELS = {'a': (750, 1200, 2500), 'i': (300, 2300, 3000), 'u': (320, 800, 2300), 'e': (500, 1850, 2600),
           'o': (500, 900, 2400)}
_FRICATIVES = {'s': (4500, 7500), 'sh': (2200, 4000), 'f': (1000, 7000)}
# Each word: phones with a pitch contour (start, end) relative to the speaker's f0 and a relative duration.
# Pairs such as ai/ia and sa/as use the same phones in a different order: equal average spectra, so the
# classes differ in their structure over time, not in a global mean.
_WORDS: Dict[str, List[Tuple[str, float, float, float]]] = {
    'ai':   [('a', 1.0, 1.0, 1.0), ('i', 1.0, 1.35, 1.0)],
    'ia':   [('i', 1.0, 1.0, 1.0), ('a', 1.0, 1.35, 1.0)],
    'sa':   [('s', 1.0, 1.0, 0.7), ('a', 1.2, 0.85, 1.2)],
    'as':   [('a', 1.2, 0.85, 1.2), ('s', 1.0, 1.0, 0.7)],
    'uwe':  [('u', 0.9, 1.2, 0.8), ('e', 1.2, 1.2, 0.6), ('u', 1.2, 0.9, 0.8)],
    'shi':  [('sh', 1.0, 1.0, 0.7), ('i', 1.3, 0.9, 1.1)],
    'isho': [('i', 1.0, 1.0, 0.7), ('sh', 1.0, 1.0, 0.5), ('o', 1.0, 1.0, 0.8)],
    'fou':  [('f', 1.0, 1.0, 0.5), ('o', 0.9, 0.9, 0.8), ('u', 0.9, 1.3, 0.8)],
}
_SPEAKERS = (25, 5, 5)                           # train / val / test speakers: speaker-disjoint, as in the real lists
_REPEATS = 2                                     # clips per speaker and word (``_nohash_0``, ``_nohash_1``)


def _envelope(n: int, ramp: int) -> np.ndarray:
    ramp = max(1, min(ramp, n // 2))
    env = np.ones(n)
    r = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
    env[:ramp] = r
    env[n - ramp:] = r[::-1]
    return env


def _vowel(rng: np.random.Generator, n: int, f0_start: float, f0_end: float, formants: Sequence[float],
           scale: float) -> np.ndarray:
    """Source-filter vowel: a band-limited glottal-like source on a pitch glide through formant resonances."""
    t = np.arange(n)
    f0 = np.linspace(f0_start, f0_end, n) * (1 + 0.01 * np.sin(2 * np.pi * rng.uniform(4, 7) * t / _SR))
    phase = 2 * np.pi * np.cumsum(f0) / _SR
    k = np.arange(1, int(7600 / max(f0_start, f0_end)) + 1, dtype=np.float32)
    source = (np.sin(k[:, None] * phase[None, :].astype(np.float32)) / k[:, None]).sum(0)
    freqs = np.fft.rfftfreq(n, 1 / _SR)
    gain = np.full_like(freqs, 0.02)
    for j, fm in enumerate(formants):
        bw = 90 + 60 * j
        gain += (1.0 / (j + 1)) * np.exp(-0.5 * ((freqs - fm * scale) / bw) ** 2)
    return np.fft.irfft(np.fft.rfft(source) * gain, n)


def _fricative(rng: np.random.Generator, n: int, band: Tuple[float, float], scale: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / _SR)
    lo, hi = band[0] * scale, min(band[1] * scale, 7900)
    spec[(freqs < lo) | (freqs > hi)] = 0
    return np.fft.irfft(spec, n)


def _synth_word(rng: np.random.Generator, word: str, speaker: Dict[str, float]) -> np.ndarray:
    """One 1-s clip of ``word``: its phones in order, at a random onset, level and signal-to-noise ratio."""
    tempo = speaker['tempo'] * rng.uniform(0.9, 1.1)
    parts = []
    for phone, p0, p1, dur in _WORDS[word]:
        n = int(_SR * 0.18 * dur * tempo)
        if phone in _VOWELS:
            f0 = speaker['f0'] * rng.uniform(0.95, 1.05)
            seg = _vowel(rng, n, f0 * p0, f0 * p1, _VOWELS[phone], speaker['formant_scale'])
        else:
            seg = _fricative(rng, n, _FRICATIVES[phone], speaker['formant_scale'])
        seg = seg / (np.abs(seg).max() + 1e-9) * (0.5 if phone not in _VOWELS else 1.0)
        parts.append(seg * _envelope(n, int(0.015 * _SR)))
    word_wave = np.concatenate(parts)
    clip = np.zeros(_SR)
    onset = int(rng.integers(0, max(1, _SR - len(word_wave))))
    word_wave = word_wave[:_SR - onset] * rng.uniform(0.1, 0.7)
    clip[onset:onset + len(word_wave)] = word_wave
    snr_db = rng.uniform(10, 35)  # relative to the word's RMS
    clip += rng.standard_normal(_SR) * np.sqrt(np.mean(word_wave ** 2)) * 10 ** (-snr_db / 20)
    return np.clip(clip, -1, 1)


def _background_noises(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    n = 10 * _SR
    white = rng.standard_normal(n)
    spec = np.fft.rfft(rng.standard_normal(n))
    pink = np.fft.irfft(spec / np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / _SR), 20.0)), n)
    hum = np.sin(2 * np.pi * 100 * np.arange(n) / _SR) + 0.3 * rng.standard_normal(n)
    out = {}
    for name, x in (('white_noise', white), ('pink_noise', pink), ('hum', hum)):
        out[name] = 0.3 * x / np.abs(x).max()
    return out


def _write_wav(path: Path, x: np.ndarray) -> None:
    sf.write(str(path), x.astype(np.float32), _SR, subtype='PCM_16', format='WAV')


def _generate(out: Path, seed: int, speakers_per_split: Tuple[int, int, int]) -> None:
    rng = np.random.default_rng(seed)
    lists = {'val': [], 'test': []}
    speakers = []
    for split, count in zip(_SPLITS, speakers_per_split):
        for _ in range(count):
            speakers.append((split, {
                'id': f'{int(rng.integers(0, 2**32)):08x}',
                'f0': float(rng.uniform(90, 260)),
                'formant_scale': float(rng.uniform(0.85, 1.2)),
                'tempo': float(rng.uniform(0.8, 1.25)),
            }))
    for word in _WORDS:
        (out / word).mkdir(parents=True)
    for split, spk in speakers:
        for word in _WORDS:
            for rep in range(_REPEATS):
                name = f'{spk["id"]}_nohash_{rep}.wav'
                _write_wav(out / word / name, _synth_word(rng, word, spk))
                if split in lists:
                    lists[split].append(f'{word}/{name}')
    (out / 'validation_list.txt').write_text(''.join(f'{r}\n' for r in sorted(lists['val'])))
    (out / 'testing_list.txt').write_text(''.join(f'{r}\n' for r in sorted(lists['test'])))
    (out / BACKGROUND).mkdir()
    for name, x in _background_noises(rng).items():
        _write_wav(out / BACKGROUND / f'{name}.wav', x)
    (out / 'README.md').write_text(
        '# Built-in synthetic Speech-Commands-style data (unimodal)\n\n'
        f'Generated by `unimodal.data.speech_commands.make_builtin_speech` (seed {seed}). Synthetic "words" made of\n'
        'formant-like vowels and noise fricatives with per-speaker pitch, vocal-tract length and tempo, random\n'
        'onset, level and noise. Same layout as Speech Commands V2; not speech. Real data:\n'
        'http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz\n')


def make_builtin_speech(root: Union[str, Path], seed: int = 0, *,
                        speakers: Tuple[int, int, int] = _SPEAKERS) -> Path:
    """Write (once) a deterministic synthetic data set in the Speech Commands V2 layout; return ``root``.

    8 synthetic words (``ai ia sa as uwe shi isho fou``) made of formant-like vowels on pitch glides and
    noise-band fricatives, said by speakers with their own pitch, vocal-tract length and tempo, at a random
    onset, level and noise. By default 35 speakers split speaker-disjointly into 25 train / 5 validation /
    5 test, 2 clips per speaker and word (50 / 10 / 10 clips per word): 16-bit 16 kHz mono WAVs of 1 s,
    ``validation_list.txt``, ``testing_list.txt`` and a ``_background_noise_`` folder. Same arguments,
    same bytes. Written and reused as :func:`unimodal.data.builtin.build_once` describes.

    Args:
        root: folder to create.
        seed: generator seed.
        speakers: speakers in the train, validation and test splits.
    """
    speakers = tuple(int(n) for n in speakers)
    if len(speakers) != 3 or min(speakers) < 1:
        raise ValueError(f'speakers must be three positive counts (train, val, test), got {speakers}')
    return build_once(root, generator='speech', version=_BUILTIN_VERSION, settings={'seed': seed, 'speakers': speakers},
                      write=lambda out: _generate(out, seed, speakers))


def file_digest(root: Union[str, Path]) -> str:
    """sha256 over the relative paths and bytes of every file under ``root`` (determinism checks)."""
    h = hashlib.sha256()
    root = Path(root)
    for p in sorted(q for q in root.rglob('*') if q.is_file()):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()
