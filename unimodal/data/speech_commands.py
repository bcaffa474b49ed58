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
import json
import logging
import math
import os
from collections.abc import Sequence as _SequenceABC
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple, Union

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from ..config.errors import ConfigError, short_repr
from .audio_io import AudioHeader, clip_input, frames_needed, load_clip, read_audio, read_audio_header, resample
from .builtin import build_once
from .cache import file_stamp, reader_cache_dir, stable_key
from .errors import DataError, SkipReport, load_or_next
from .index import StringTable, load_index, read_list_lines, save_index
from .options import CLASS_NAMES, OPTIONAL_PATH, Option, checked_options

_logger = logging.getLogger(__name__)

__all__ = ['SpeechCommands', 'OPTIONS', 'mix_waveforms', 'make_builtin_speech', 'file_digest', 'V2_WORDS', 'V12_WORDS',
           'UNKNOWN', 'SILENCE', 'BACKGROUND']

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

#: The options of :class:`SpeechCommands` and their allowed values.
OPTIONS = {
    'variant': Option(int, choices=(35, 12)),
    'classes': CLASS_NAMES,
    'silence_fraction': Option(float, lo=0, hi=1),
    'sample_rate': Option(int, lo=100, expects='an integer >= 100 (Hz)'),
    'clip_samples': Option(int, lo=1),
    'cache_dir': OPTIONAL_PATH,
    'return_length': Option(bool),
    'mixup': Option(fields={'prob': Option(float, lo=0, hi=1), 'alpha': Option(float, lo=0, lo_open=True)},
                    expects='{prob: P, alpha: A} (published: {prob: 0.6, alpha: 10})'),
}

LAYOUT_HELP = ('expected the Speech Commands V2 layout: <root>/<word>/*.wav (one folder per word), '
               '<root>/validation_list.txt, <root>/testing_list.txt, <root>/_background_noise_/*.wav')


_INDEX_VERSION = 1


class _Item(NamedTuple):
    path: Path
    label: int
    frames: int          # frames the header declares (in the file's own sample rate)
    sample_rate: int
    silence: bool = False  # a _silence_ window cut from a background-noise file
    offset: int = 0        # _silence_: start frame inside the noise file
    gain: float = 1.0      # _silence_: deterministic level


class _Samples(_SequenceABC):
    """A read-only view of a :class:`SpeechCommands` index as :class:`_Item` tuples (built on access)."""

    def __init__(self, ds: 'SpeechCommands') -> None:
        self._ds = ds

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, i: int) -> _Item:  # type: ignore[override]
        d = self._ds
        if not -len(d) <= i < len(d):
            raise IndexError(i)
        return _Item(d.root / d._rel[i], int(d._labels[i]), int(d._frames[i]), int(d._rates[i]),
                     bool(d._silence[i]), int(d._offsets[i]), float(d._gains[i]))


class SpeechCommands(Dataset):
    """Speech Commands V2 clips as ``(waveform float32 (clip_samples,), label int)``.

    Files are read with ``soundfile`` (WAV or FLAC); other sample rates are resampled to ``sample_rate``
    (:func:`unimodal.data.audio_io.resample`, logged once per data set), multi-channel audio is mixed down, and every
    clip is zero-padded or cropped to ``clip_samples``.

    The index (every clip's path, label, frame count and sample rate, and the bad files found) is built in one pass
    (one open and one header read per clip) and cached in ``<cache folder>/speech_commands``, keyed by the list
    files' and the folders' sizes and modification times, so later runs start without opening any clip. Bad headers
    fail early (or are skipped and counted in :attr:`skip_report`); NaN/inf samples and files damaged after
    indexing are found when a clip is read (under ``skip_bad`` the next clip is served and the file reported).

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
        cache_dir: the cache folder (default ``$UNIMODAL_CACHE``, else ``~/.cache/unimodal``).
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
        samples: the index as a sequence of ``(path, label, frames, sample_rate, silence, offset, gain)``.
        skip_report: what was skipped (empty unless ``skip_bad``).
    """

    @checked_options(OPTIONS)
    def __init__(self, root: Union[str, Path], split: str = 'train', variant: int = 35,
                 classes: Optional[Sequence[str]] = None, skip_bad: bool = False, silence_fraction: float = 0.1,
                 sample_rate: int = 16000, clip_samples: int = 16000,
                 cache_dir: Optional[Union[str, Path]] = None, return_length: bool = False,
                 mixup: Optional[Mapping[str, float]] = None) -> None:
        if split not in _SPLITS:
            raise ValueError(f'split must be one of {_SPLITS}, got {split!r}')
        if mixup is not None and split != 'train':
            raise ValueError(f'mixup applies to the train split only (got split {split!r}): evaluation is never mixed')
        self.return_length = return_length
        self.mixup = mixup
        if classes is not None and variant != 35:
            raise ConfigError('data.options.classes applies to variant 35 only (variant 12 has a fixed class list)')
        self.root = Path(root)
        self._root_s = str(self.root)
        self.split = split
        self.variant = variant
        self.skip_bad = skip_bad
        self.sample_rate = sample_rate
        self.clip_samples = clip_samples
        self.silence_fraction = silence_fraction
        self.skip_report = SkipReport(f'speech_commands/{split}')
        if not self.root.is_dir():
            raise FileNotFoundError(f'Speech Commands root {self.root} does not exist; {LAYOUT_HELP}')

        words = sorted(e.name for e in os.scandir(self.root)
                       if e.is_dir() and not e.name.startswith(('.', '_')))
        if not words:
            raise DataError(self.root, f'no word folders found; {LAYOUT_HELP}')
        if variant == 12:
            self.classes: List[str] = list(V12_WORDS) + [UNKNOWN, SILENCE]
        elif classes is not None:
            self.classes = list(classes)
            if len(set(self.classes)) != len(self.classes):
                raise ConfigError(f'data.options.classes names a class twice: {short_repr(self.classes)}')
        else:
            self.classes = words
        self._class_index = {c: i for i, c in enumerate(self.classes)}

        for name in _SPLIT_LISTS.values():
            if not (self.root / name).is_file():
                raise FileNotFoundError(f'{self.root / name} does not exist; {LAYOUT_HELP}')
        cache = reader_cache_dir(cache_dir, 'speech_commands') / f'{split}-{self._index_key(words)}.npz'
        errors = self._load_index(cache)
        if errors is None:
            errors = self._build_index(words)
            self._save_index(cache, errors)
        else:
            _logger.info('speech_commands/%s: index read from %s', split, cache)
        if errors and not skip_bad:
            raise errors[0]
        for e in errors:
            self.skip_report.add(e)
        self.skip_report.total = len(self) + len(errors)
        if not len(self):
            raise DataError(self.root, f'no usable clips for split {split!r}; {LAYOUT_HELP}')

        other, counts = np.unique(self._rates[self._rates != sample_rate], return_counts=True)
        if len(other):
            _logger.warning('speech_commands/%s: clips not at %d Hz are resampled to %d Hz (%s)', split, sample_rate,
                            sample_rate, ', '.join(f'{n} at {sr} Hz' for sr, n in zip(other, counts)))
        _logger.info('speech_commands/%s: %d clips, %d classes (variant %d), %d skipped', split, len(self),
                     len(self.classes), variant, len(errors))

    # ---- index (main process) -----------------------------------------------------------------------------
    def _index_key(self, words: List[str]) -> str:
        """Changes when a list file or a folder (an added, removed or renamed clip) changes, or an option does."""
        stamps = []
        for rel in [*_SPLIT_LISTS.values(), '.', *words, BACKGROUND]:
            try:
                stamps.append((rel, *file_stamp(self.root / rel)))
            except OSError:
                stamps.append((rel, None))
        return stable_key(_INDEX_VERSION, os.path.realpath(self.root), self.split, self.variant, self.classes,
                          self.silence_fraction, self.sample_rate, self.clip_samples, stamps)

    def _label_of(self, rel: str) -> Optional[int]:
        word = rel.split('/', 1)[0]
        if self.variant == 12:
            return self._class_index.get(word, self._class_index[UNKNOWN])
        return self._class_index.get(word)

    def _split_rels(self, words: List[str]) -> List[Tuple[str, str]]:
        """``(relative path, where it comes from)`` of the split's clips, before any file is opened."""
        if self.split == 'train':
            listed: Set[str] = set()
            for name in _SPLIT_LISTS.values():
                listed.update(rel.replace('\\', '/') for _, rel in read_list_lines(self.root / name))
            rels = []
            for word in words:
                names = sorted(e.name for e in os.scandir(self.root / word)
                               if e.name.lower().endswith(_AUDIO_SUFFIXES) and e.is_file())
                rels.extend((rel, '') for rel in (f'{word}/{n}' for n in names) if rel not in listed)
            return rels
        name = _SPLIT_LISTS[self.split]
        lines = read_list_lines(self.root / name)
        return [(rel.replace('\\', '/'), f'listed in {name} (line {i})') for i, rel in lines]

    def _build_index(self, words: List[str]) -> List[DataError]:
        """One pass over the split's clips (one open + header read each); returns the bad files found."""
        errors: List[DataError] = []
        rels, labels, frames, rates = [], [], [], []
        for rel, source in self._split_rels(words):
            path = self.root / rel
            label = self._label_of(rel)
            if label is None:
                errors.append(DataError(path, f'word {rel.split("/", 1)[0]!r} is not in the class list '
                                              f'{self.classes}', reason='unknown class'))
                continue
            try:
                head = read_audio_header(path)
            except FileNotFoundError:
                errors.append(DataError(path, f'{source or "found"} but does not exist', reason='missing'))
                continue
            except DataError as e:
                errors.append(e)
                continue
            rels.append(rel)
            labels.append(label)
            frames.append(head.frames)
            rates.append(head.sample_rate)
        n = len(rels)
        silence = self._silence_items(max(1, round(self.silence_fraction * n)) if n else 0, errors) \
            if self.variant == 12 else []
        self._rel = StringTable.from_strings(rels + [s[0] for s in silence])
        self._labels = np.array(labels + [self._class_index.get(SILENCE, -1)] * len(silence), dtype=np.int64)
        self._frames = np.array(frames + [s[1] for s in silence], dtype=np.int64)
        self._rates = np.array(rates + [s[2] for s in silence], dtype=np.int64)
        self._silence = np.array([False] * n + [True] * len(silence), dtype=bool)
        self._offsets = np.array([0] * n + [s[3] for s in silence], dtype=np.int64)
        self._gains = np.array([1.0] * n + [s[4] for s in silence], dtype=np.float64)
        return errors

    def _silence_items(self, count: int, errors: List[DataError]) -> List[Tuple[str, int, int, int, float]]:
        """``count`` deterministic 1-s windows ``(rel, frames, rate, offset, gain)`` from this split's part of each
        background-noise file."""
        folder = self.root / BACKGROUND
        noise = []
        if folder.is_dir():
            for name in sorted(e.name for e in os.scandir(folder) if e.is_file()):
                if name.lower().endswith(_AUDIO_SUFFIXES):
                    try:
                        noise.append((f'{BACKGROUND}/{name}', read_audio_header(folder / name)))
                    except DataError as e:
                        errors.append(e)
        if count and not noise:
            raise DataError(folder, f'variant 12 needs background noise files for {SILENCE} clips; {LAYOUT_HELP}')
        rng = np.random.default_rng(_SILENCE_SEED[self.split])
        lo, hi = _SILENCE_PARTS[self.split]
        items = []
        for k in range(count):
            rel, head = noise[k % len(noise)]
            need = int(math.ceil(self.clip_samples * head.sample_rate / self.sample_rate))
            start, stop = int(lo * head.frames), int(hi * head.frames)
            offset = start + int(rng.integers(0, max(1, stop - start - need + 1)))
            gain = float(rng.uniform(0.1, 1.0))
            items.append((rel, head.frames, head.sample_rate, offset, gain))
        return items

    _ARRAYS = ('_labels', '_frames', '_rates', '_silence', '_offsets', '_gains')

    def _save_index(self, path: Path, errors: List[DataError]) -> None:
        bad = json.dumps([[e.path, e.problem, e.reason] for e in errors]).encode()
        save_index(path, {**{k: getattr(self, k) for k in self._ARRAYS},
                          'errors': np.frombuffer(bad, dtype=np.uint8)}, {'rel': self._rel})

    def _load_index(self, path: Path) -> Optional[List[DataError]]:
        loaded = load_index(path)
        if loaded is None:
            return None
        arrays, tables = loaded
        if set(arrays) != {*self._ARRAYS, 'errors'} or 'rel' not in tables:
            return None
        for k in self._ARRAYS:
            setattr(self, k, arrays[k])
        self._rel = tables['rel']
        return [DataError(*e) for e in json.loads(arrays['errors'].tobytes())]

    # ---- loading ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._labels)

    @property
    def targets(self) -> List[int]:
        return self._labels.tolist()

    @property
    def samples(self) -> _Samples:
        return _Samples(self)

    @property
    def soft_targets(self) -> bool:
        """Targets are float class vectors (the reader mixes), not class indices."""
        return self.mixup is not None

    def _frames_read(self, index: int) -> int:
        """Frames a read of clip ``index`` takes from its file (at most ``clip_samples`` after resampling)."""
        frames, rate = int(self._frames[index]), int(self._rates[index])
        return min(frames, frames_needed(self.clip_samples, rate, self.sample_rate))

    def sample_source(self, index: int) -> str:
        """The clip's file (a ``_silence_`` clip: the noise file and the frames cut from it)."""
        path = os.path.join(self._root_s, self._rel[index])
        if not self._silence[index]:
            return path
        start = int(self._offsets[index])
        return f'{path} frames {start}..{start + self._frames_read(index) - 1}'

    def _load(self, index: int) -> torch.Tensor:
        """The clip's real samples (at most ``clip_samples``), not padded."""
        # a str path, not the samples view's Path: a pathlib.Path per sample interns its parts and grows every
        # worker over an epoch
        path = os.path.join(self._root_s, self._rel[index])
        if not self._silence[index]:
            header = AudioHeader(int(self._frames[index]), int(self._rates[index]))
            return load_clip(path, self.sample_rate, self.clip_samples, header)
        data, sr = read_audio(path, start=int(self._offsets[index]), frames=self._frames_read(index))
        wav = torch.from_numpy(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0])
        if sr != self.sample_rate:
            wav = resample(wav, sr, self.sample_rate)
        return (wav * float(self._gains[index]))[:self.clip_samples].contiguous()

    def _item(self, index: int) -> Tuple[Any, Any]:
        """``(input, target)``: mixed when ``mixup`` draws so, zero-padded, with the real length if asked."""
        wav, target = self._load(index), int(self._labels[index])
        if self.mixup is not None:
            wav, target = self._mixed(wav, target)
        return clip_input(wav, self.clip_samples, self.return_length), target

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

    def _partner(self, limit: int = 64) -> Tuple[torch.Tensor, int]:
        for _ in range(limit):
            j = int(np.random.randint(len(self)))
            try:
                return self._load(j), int(self._labels[j])
            except DataError as e:
                if not self.skip_bad:
                    raise
                self.skip_report.add(e)  # an unreadable partner is reported and another one drawn
        raise DataError(str(self.root), f'{limit} mixup partners in a row are unusable')

    def __getitem__(self, index: int) -> Tuple[Any, Any]:
        return load_or_next(self._item, index, len(self), self.skip_bad, self.skip_report, str(self.root))


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
