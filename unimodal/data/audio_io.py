"""Audio file I/O of the readers: header checks in one read, decoding with a finiteness check, bounded resampling.

* :func:`read_audio_header`: frames and sample rate of a clip from one open and one read of its header. For
  RIFF/WAVE files the chunks are parsed here, because libsndfile silently reads a truncated WAV as a shorter clip
  (the data chunk's declared size is compared with the bytes present); other formats (FLAC) go through
  ``soundfile.info``.
* :func:`read_audio`: decode with soundfile; NaN/inf samples (possible in float WAVs) are a :class:`DataError`.
* :func:`resample`: torchaudio's band-limited sinc resampling at a ratio rounded to a fraction with a bounded
  denominator, so a header that says 16001 Hz costs what 16000 Hz costs (torchaudio's kernel grows with the
  ratio's reduced terms: 16001 -> 16000 Hz needs a 16000 x 16013 kernel, about 1 GB).
"""
from __future__ import annotations

import math
import os
import struct
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple, Optional, Tuple, Union

import numpy as np
import soundfile as sf
import torch

from .errors import DataError

__all__ = ['AudioHeader', 'read_audio_header', 'read_audio', 'resample', 'frames_needed', 'load_clip', 'clip_input',
           'MAX_RATIO_TERM']

PathLike = Union[str, Path]

#: The largest numerator/denominator of the resampling ratio (a pitch error below 1e-6 for any real rate pair).
MAX_RATIO_TERM = 1000
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


class AudioHeader(NamedTuple):
    frames: int
    sample_rate: int


def _riff_chunks(f, size: int) -> Optional[Tuple[Optional[tuple], Optional[int], Optional[int]]]:
    """``(fmt fields, declared data bytes, available data bytes)`` of a RIFF/WAVE file, or ``None`` if not one."""
    head = f.read(12)
    if len(head) < 12 or head[:4] != b'RIFF' or head[8:12] != b'WAVE':
        return None
    fmt, pos = None, 12
    while pos + 8 <= size:
        f.seek(pos)
        chunk = f.read(8)
        if len(chunk) < 8:
            break
        cid, csize = chunk[:4], struct.unpack('<I', chunk[4:])[0]
        if cid == b'fmt ':
            body = f.read(min(csize, 40))
            if len(body) >= 16:
                tag, channels, rate, _, block_align, bits = struct.unpack('<HHIIHH', body[:16])
                if tag == _EXTENSIBLE and len(body) >= 26:
                    tag = struct.unpack('<H', body[24:26])[0]  # the sub-format GUID starts with the format tag
                fmt = (tag, channels, rate, block_align, bits)
        elif cid == b'data':
            available = size - pos - 8
            declared = available if csize in (0, 0xFFFFFFFF) else csize  # 0 / ~0: size unknown (streamed)
            return fmt, declared, available
        pos += 8 + csize + (csize & 1)
    return fmt, None, None


def read_audio_header(path: PathLike) -> AudioHeader:
    """Frames and sample rate of a clip (one open; RIFF chunks parsed here, other formats by soundfile).

    Raises:
        FileNotFoundError: no such file (the caller says where it was listed).
        DataError: empty, unreadable, truncated WAV, or a header declaring no audio.
    """
    path = Path(path)
    try:
        with open(path, 'rb') as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise DataError(path, 'zero-length file (0 bytes), expected a WAV/FLAC clip', reason='empty')
            riff = _riff_chunks(f, size)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise DataError(path, f'unreadable file ({e.strerror or e})', reason='unreadable') from None
    fmt, declared, available = riff if riff is not None else (None, None, None)
    if fmt is not None and declared is not None and fmt[0] in (_PCM, _FLOAT) and fmt[3] > 0:
        frames, rate = declared // fmt[3], fmt[2]
    else:  # not RIFF (FLAC, ...), or a compressed WAV: libsndfile knows the frame count
        try:
            info = sf.info(str(path))
        except (RuntimeError, sf.SoundFileError) as e:
            raise DataError(path, f'unreadable audio file ({e}); expected a WAV/FLAC clip',
                            reason='unreadable') from None
        frames, rate = info.frames, info.samplerate
    if frames <= 0:
        raise DataError(path, 'zero-length audio (the header declares 0 frames)', reason='empty')
    if rate <= 0:
        raise DataError(path, f'bad header: sample rate {rate} Hz', reason='bad header')
    if declared is not None and declared > available:
        raise DataError(path, f'truncated WAV: the header declares {declared} data bytes, the file holds '
                              f'{available}', reason='truncated')
    return AudioHeader(int(frames), int(rate))


def read_audio(path: PathLike, start: int = 0, frames: int = -1) -> Tuple[np.ndarray, int]:
    """``(samples (frames, channels) float32, sample rate)``; NaN/inf samples raise :class:`DataError`."""
    try:
        data, sr = sf.read(str(path), start=start, frames=frames, dtype='float32', always_2d=True)
    except (RuntimeError, sf.SoundFileError) as e:
        raise DataError(path, f'unreadable audio file ({e})', reason='unreadable') from None
    if not np.isfinite(data).all():
        bad = ~np.isfinite(data).all(axis=1)
        raise DataError(path, f'{int(bad.sum())} of {len(data)} samples are NaN or inf (first at frame '
                              f'{start + int(bad.argmax())}); expected finite audio', reason='non-finite')
    return data, sr


def resample(wav: torch.Tensor, orig: int, new: int, max_term: int = MAX_RATIO_TERM) -> torch.Tensor:
    """Resample a 1-D waveform from ``orig`` to ``new`` Hz at ``new / orig`` rounded to a fraction whose terms are
    at most about ``max_term`` (torchaudio's band-limited sinc; cost bounded whatever the rates' factors)."""
    ratio = Fraction(new, orig).limit_denominator(max_term)
    if ratio == 1:
        return wav
    import torchaudio.functional as AF
    return AF.resample(wav, ratio.denominator, ratio.numerator)


def frames_needed(out_samples: int, orig: int, new: int) -> int:
    """Input frames at ``orig`` Hz that yield ``out_samples`` at ``new`` Hz (plus the resampling filter's reach)."""
    if orig == new:
        return out_samples
    return int(math.ceil(out_samples * orig / new)) + 64


def load_clip(path: PathLike, sample_rate: int, clip_samples: int,
              header: Optional[AudioHeader] = None) -> torch.Tensor:
    """A clip's real samples at ``sample_rate`` (mono, at most ``clip_samples``, not padded): the readers' one way to
    load a clip (a data set's indexed clip, or one file given to ``unimodal predict``).

    Args:
        header: the clip's frames and rate if known (an index); read from the file otherwise.

    Raises:
        DataError: unreadable, truncated, non-finite audio (naming the file).
    """
    frames, rate = header if header is not None else read_audio_header(path)
    want = min(frames, frames_needed(clip_samples, rate, sample_rate))
    data, sr = read_audio(path, frames=want)
    if data.shape[0] < want:
        raise DataError(path, f'truncated audio: the header declares {frames} frames, '
                              f'{data.shape[0]} could be decoded', reason='truncated')
    wav = torch.from_numpy(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0])
    if sr != sample_rate:
        wav = resample(wav, sr, sample_rate)
    return wav[:clip_samples].contiguous()


def clip_input(wav: torch.Tensor, clip_samples: int, return_length: bool = False):
    """A clip's model input: zero-padded to ``clip_samples``, with its real length when ``return_length``."""
    x = torch.nn.functional.pad(wav, (0, clip_samples - wav.shape[0]))
    return (x, torch.tensor(wav.shape[0], dtype=torch.int64)) if return_length else x
