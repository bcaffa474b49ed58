"""Download and unpack the benchmark data sets that have a public URL.

``download_dataset(name, root)`` streams the archive to ``<root>/<file>.part`` (resuming an interrupted
download with an HTTP ``Range`` request), checks its sha256, and unpacks it into a temporary folder that is
renamed to ``<root>/<folder>`` only once everything is in place, so a folder that exists is complete.
Archive members that would land outside that folder (absolute paths, ``..``, links pointing outside) are
refused before anything is written.

Every failure (network, HTTP status, timeout, short transfer, checksum, unsafe or damaged archive, a full disk) is a
:class:`DownloadError`, a :class:`~unimodal.data.errors.DataError` naming the URL or file: one line on the CLI.

Data sets without a direct download (Kinetics-400, Global Temp/Wind, ImageNet) have entries too: asking for
them raises :class:`NoDirectDownloadError` saying where the data comes from and which layout is expected.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import http.client
import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Dict, Optional, Union

from filelock import FileLock

from .errors import DataError

_logger = logging.getLogger(__name__)

__all__ = [
    'DatasetSpec', 'DATASETS', 'DownloadError', 'NoDirectDownloadError', 'UnsafeArchiveError',
    'download_dataset', 'download_file', 'extract_archive', 'list_datasets', 'sha256_file',
]

ProgressFn = Callable[[int, Optional[int]], None]

_CHUNK = 1 << 20
#: Seconds without data after which a download is abandoned (and can be resumed).
DEFAULT_TIMEOUT = 60.
_USER_AGENT = 'unimodal-data-download/1.0 (+python urllib)'


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How one data set is obtained.

    Attributes:
        name: key in :data:`DATASETS` (the name on ``unimodal data download NAME``).
        description: one line for listings.
        folder: the folder under ``root`` that holds the data set once unpacked.
        url: direct download URL; ``None`` for data sets without a direct download.
        file_name: archive file name under ``root``.
        sha256: published sha256 of the archive, or ``None`` when no published value is known (the computed
            hash is then logged and written to ``<file>.sha256`` beside the archive, so a re-run verifies it).
        archive: ``'tar.gz'`` or ``'zip'``.
        archive_root: the single top-level folder inside the archive (renamed to ``folder``), or ``None``
            when the archive holds the data set's files directly (they are unpacked into ``folder``).
        size: archive size in bytes when known (shown before a long download).
        instructions: for data sets without a direct download: where the data comes from and the layout.
    """

    name: str
    description: str
    folder: str
    url: Optional[str] = None
    file_name: Optional[str] = None
    sha256: Optional[str] = None
    archive: Optional[str] = None
    archive_root: Optional[str] = None
    size: Optional[int] = None
    instructions: str = ''


DATASETS: Dict[str, DatasetSpec] = {spec.name: spec for spec in [
    DatasetSpec(
        name='speech_commands',
        description='Speech Commands V2 (35 words, 16 kHz WAV, official validation/testing lists), 2.4 GB',
        folder='speech_commands_v0.02',
        url='http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz',
        file_name='speech_commands_v0.02.tar.gz',
        # The value torchaudio (datasets/speechcommands.py) and TensorFlow Datasets pin for this URL.
        sha256='af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58',
        archive='tar.gz',
        archive_root=None,  # the tarball holds ./yes/, ./no/, ..., validation_list.txt at its top level
        size=2_428_923_189,
    ),
    DatasetSpec(
        name='modelnet40',
        description='ModelNet40 raw OFF meshes (ModelNet40/<class>/{train,test}/*.off), about 2 GB',
        folder='ModelNet40',
        url='http://modelnet.cs.princeton.edu/ModelNet40.zip',
        file_name='ModelNet40.zip',
        sha256=None,  # no published checksum found: the computed one is recorded on first download
        archive='zip',
        archive_root='ModelNet40',
    ),
    DatasetSpec(
        name='modelnet40_normal_resampled',
        description='ModelNet40 resampled to 10,000 points with normals (x,y,z,nx,ny,nz text files), 1.6 GB',
        folder='modelnet40_normal_resampled',
        url='https://shapenet.cs.stanford.edu/media/modelnet40_normal_resampled.zip',
        file_name='modelnet40_normal_resampled.zip',
        sha256=None,  # no published checksum found: the computed one is recorded on first download
        archive='zip',
        archive_root='modelnet40_normal_resampled',
    ),
    DatasetSpec(
        name='kinetics400',
        description='Kinetics-400 action recognition videos (no direct download)',
        folder='kinetics400',
        instructions=(
            'Kinetics-400 is distributed as lists of YouTube clips (the official CSV files '
            '`label,youtube_id,time_start,time_end,split`); about 6-8% of the videos have vanished. '
            'Complete tarballs of the clips are mirrored by the CVDF '
            '(https://github.com/cvdfoundation/kinetics-dataset). '
            'Expected layout under DIR: video files `<youtube_id>_<start:06d>_<end:06d>.mp4` in per-split folders '
            '(e.g. `train/`, `val/`), plus either the official CSVs (`train.csv`, `val.csv`, `test.csv`) or '
            '`path label` lists (`train.txt`, `val.txt`, `test.txt`: one `relative/path.mp4 label` per line, '
            'paths relative to DIR, label a class index or name).'),
    ),
    DatasetSpec(
        name='global_temp',
        description='Global Temp hourly station temperatures (Corrformer, no direct download)',
        folder='global_temp',
        instructions=(
            'Global Temp comes with Corrformer (Wu et al., Nature Machine Intelligence 2023; '
            'https://github.com/thuml/Corrformer, whose README links the data); it is built from NCEI hourly '
            'records of 3,850 stations over 2019-2020. Expected layout under DIR: '
            '`temp_global_hourly_{train,val,test}.npy` (shape (T, 3850, 1), values stored x10), optionally '
            '`data_time_{train,val,test}.npy`; select it with data.options.variable=temp.'),
    ),
    DatasetSpec(
        name='global_wind',
        description='Global Wind hourly station wind speeds (Corrformer, no direct download)',
        folder='global_wind',
        instructions=(
            'Global Wind comes with Corrformer (Wu et al., Nature Machine Intelligence 2023; '
            'https://github.com/thuml/Corrformer, whose README links the data); it is built from NCEI hourly '
            'records of 3,850 stations over 2019-2020. Expected layout under DIR: '
            '`wind_global_hourly_{train,val,test}.npy` (shape (T, 3850, 1), values stored x10), optionally '
            '`data_time_{train,val,test}.npy`; select it with data.options.variable=wind.'),
    ),
    DatasetSpec(
        name='imagenet',
        description='ImageNet-1K (ILSVRC 2012, registration required, no direct download)',
        folder='imagenet',
        instructions=(
            'ImageNet-1K (ILSVRC 2012) is available after registration at https://image-net.org/ '
            '(terms of access apply). Expected layout under DIR (torchvision/timm ImageFolder): '
            '`train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG`, i.e. the validation images sorted into one '
            'folder per class (the official val tarball is flat and must be sorted with the devkit labels).'),
    ),
]}


class DownloadError(DataError):
    """A download or unpacking step failed: ``DownloadError(url or file, problem)``."""


class NoDirectDownloadError(DownloadError):
    """The data set has no public direct download; the message says where it comes from and its layout."""


class UnsafeArchiveError(DownloadError):
    """An archive member would be written outside the extraction folder (or is a device/fifo)."""


def list_datasets() -> Dict[str, str]:
    """``{name: description}`` of every known data set."""
    return {name: spec.description for name, spec in DATASETS.items()}


def sha256_file(path: Union[str, Path]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ download

def _parse_content_range(value: Optional[str]):
    """``'bytes 100-199/200'`` → ``(100, 200)``; ``'bytes */200'`` → ``(None, 200)``; total may be ``None``."""
    if not value:
        return None, None
    m = re.match(r'\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)', value)
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != '*' else None
    return start, total


def download_file(url: str, dest: Union[str, Path], *, sha256: Optional[str] = None,
                  progress: Optional[ProgressFn] = None, timeout: Optional[float] = None) -> str:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming an existing ``.part``.

    Args:
        url: the source URL (http, https or file).
        dest: the final file path; it appears only once the download is complete and verified.
        sha256: expected hex digest; on a mismatch the partial file is removed and :class:`DownloadError`
            names the file, the expected and the received hash.
        progress: optional ``callback(bytes_done, total_or_None)``.
        timeout: socket timeout in seconds (default :data:`DEFAULT_TIMEOUT`).

    Returns:
        The sha256 of the downloaded file.
    """
    dest = Path(dest)
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + '.part')
    have = part.stat().st_size if part.exists() else 0

    headers = {'User-Agent': _USER_AGENT}
    if have:
        headers['Range'] = f'bytes={have}-'
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            # Range not satisfiable: the .part is already complete, or it is longer than the file (stale).
            _, total = _parse_content_range(e.headers.get('Content-Range'))
            e.close()
            if total == have:
                _logger.info('%s: partial download already complete (%d bytes)', part, have)
                return _finish_download(part, dest, sha256, _hash_existing(part))
            _logger.warning('%s: stale partial download (%d bytes, server has %s); starting over', part, have, total)
            part.unlink()
            return download_file(url, dest, sha256=sha256, progress=progress, timeout=timeout)
        raise DownloadError(url, f'HTTP error {e.code} {e.reason}', reason='http') from None
    except urllib.error.URLError as e:
        raise DownloadError(url, f'cannot connect ({e.reason})', reason='network') from None
    except (OSError, http.client.HTTPException) as e:  # a server that accepts but never answers, a reset, ...
        raise DownloadError(url, f'no answer within {timeout:g} s or connection failed ({type(e).__name__}: {e})',
                            reason='network') from None

    with response:
        status = getattr(response, 'status', None) or response.getcode()
        length = response.headers.get('Content-Length')
        length = int(length) if length is not None and length.isdigit() else None
        if have and status == 206:
            start, total = _parse_content_range(response.headers.get('Content-Range'))
            if start != have:
                raise DownloadError(url, f'server resumed at byte {start}, expected {have} '
                                         f'(Content-Range {response.headers.get("Content-Range")!r})', reason='http')
            if total is None and length is not None:
                total = have + length
            _logger.info('resuming %s at byte %d', dest.name, have)
            digest = _hash_existing(part)
            mode = 'ab'
        else:
            if have:
                # The server ignored the Range header and sends the whole file: start over.
                _logger.info('%s: server does not support resuming (HTTP %s); restarting the download', url, status)
            have = 0
            total = length
            digest = hashlib.sha256()
            mode = 'wb'
        done = have
        if progress is not None:
            progress(done, total)
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as e:  # timeout, reset, short body
                        raise DownloadError(url, f'transfer stopped after {done} bytes ({type(e).__name__}: {e}); '
                                                 f'run again to resume from {part}', reason='network') from None
                    if not chunk:
                        break
                    f.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except OSError as e:  # writing: a full disk, a read-only folder
            raise DownloadError(part, f'cannot write the download ({e.strerror or e})', reason='disk') from None
    if total is not None and done != total:
        raise DownloadError(part, f'download incomplete ({done} of {total} bytes); run again to resume',
                            reason='incomplete')
    return _finish_download(part, dest, sha256, digest)


def _hash_existing(path: Path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            digest.update(chunk)
    return digest


def _finish_download(part: Path, dest: Path, sha256: Optional[str], digest) -> str:
    got = digest.hexdigest()
    if sha256 is not None and got.lower() != sha256.lower():
        part.unlink(missing_ok=True)
        raise DownloadError(dest, f'sha256 mismatch: expected {sha256.lower()}, got {got} '
                                  f'(the corrupt download was removed; run again to re-download)', reason='checksum')
    os.replace(part, dest)
    return got


# ------------------------------------------------------------------------------------------------ extraction

def _safe_member_path(name: str, archive: Path) -> str:
    """Normalised relative path of an archive member, or :class:`UnsafeArchiveError` if it escapes."""
    unified = name.replace('\\', '/')
    if unified.startswith('/') or re.match(r'^[A-Za-z]:', unified):
        raise UnsafeArchiveError(archive, f'refusing member {name!r}: absolute path', reason='unsafe archive')
    norm = posixpath.normpath(unified)
    if norm == '..' or norm.startswith('../'):
        raise UnsafeArchiveError(archive, f'refusing member {name!r}: path escapes the extraction folder',
                                 reason='unsafe archive')
    return '' if norm == '.' else norm


def _check_link_target(member: str, target: str, relative_to_member: bool, archive: Path) -> None:
    unified = target.replace('\\', '/')
    if unified.startswith('/') or re.match(r'^[A-Za-z]:', unified):
        raise UnsafeArchiveError(archive, f'refusing member {member!r}: link to absolute path {target!r}',
                                 reason='unsafe archive')
    base = posixpath.dirname(member) if relative_to_member else ''
    resolved = posixpath.normpath(posixpath.join(base, unified))
    if resolved == '..' or resolved.startswith('../'):
        raise UnsafeArchiveError(archive, f'refusing member {member!r}: link {target!r} points outside the '
                                          f'extraction folder', reason='unsafe archive')


def _check_not_through_link(path: str, links: set, member: str, archive: Path) -> None:
    # A member written below a symlink declared earlier could escape through it (e.g. `a -> b/c`, `a/../../x`).
    parts = path.split('/')
    for i in range(1, len(parts)):
        if '/'.join(parts[:i]) in links:
            raise UnsafeArchiveError(archive, f'refusing member {member!r}: path goes through the link '
                                              f'{"/".join(parts[:i])!r}', reason='unsafe archive')


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, 'r:*') as tar:
        members = tar.getmembers()
        links: set = set()
        for m in members:
            path = _safe_member_path(m.name, archive)
            _check_not_through_link(path, links, m.name, archive)
            if m.issym():
                _check_link_target(path, m.linkname, True, archive)
                links.add(path)
            elif m.islnk():
                _check_link_target(path, m.linkname, False, archive)
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(archive, f'refusing member {m.name!r}: device or fifo entry',
                                         reason='unsafe archive')
        # Every member is checked above; the 'data' filter is a second line of defence (and drops odd modes).
        tar.extractall(dest, members=members, filter='data')


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            path = _safe_member_path(info.filename, archive)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                # zipfile writes links as small files holding the target; still refuse ones pointing out.
                _check_link_target(path, zf.read(info).decode('utf-8', 'replace'), True, archive)
        for info in infos:
            zf.extract(info, dest)


def extract_archive(archive: Union[str, Path], dest: Union[str, Path], kind: Optional[str] = None) -> Path:
    """Unpack a ``tar(.gz)`` or ``zip`` archive into ``dest`` after checking every member stays inside it.

    Raises:
        UnsafeArchiveError: naming the first member with an absolute path, a ``..`` escape, a link pointing
            outside ``dest`` or a device entry; nothing is extracted in that case.
    """
    archive, dest = Path(archive), Path(dest)
    if kind is None:
        kind = 'zip' if archive.suffix.lower() == '.zip' else 'tar.gz'
    if kind not in ('zip', 'tar', 'tar.gz', 'tgz'):
        raise ValueError(f'unknown archive kind {kind!r} for {archive}; expected tar.gz or zip')
    try:
        dest.mkdir(parents=True, exist_ok=True)
        if kind == 'zip':
            _extract_zip(archive, dest)
        else:
            _extract_tar(archive, dest)
    except tarfile.FilterError as e:  # tarfile's own 'data' filter refused a member the checks let through
        raise UnsafeArchiveError(archive, f'refusing member: {e}', reason='unsafe archive') from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise DownloadError(archive, f'not a valid {kind} archive or damaged ({type(e).__name__}: {e})',
                            reason='bad archive') from None
    except OSError as e:
        raise DownloadError(e.filename or dest, f'cannot unpack {archive.name} ({e.strerror or e})',
                            reason='disk') from None
    return dest


# ------------------------------------------------------------------------------------------------ data sets

def _fetch_and_unpack(spec: DatasetSpec, root: Path, target: Path, url: Optional[str], sha256: Optional[str],
                      progress: Optional[ProgressFn], keep_archive: bool) -> None:
    name = spec.name
    archive = root / spec.file_name
    recorded = archive.with_name(archive.name + '.sha256')
    expected = sha256 or spec.sha256
    if expected is None and recorded.is_file():
        expected = (recorded.read_text(errors='replace').split() or [None])[0]
        _logger.info('%s: verifying against the sha256 recorded at first download (%s)', archive.name, recorded)

    if archive.is_file():
        got = sha256_file(archive)
        if expected is not None and got != expected.lower():
            # Wrong bytes are removed, not left in place as if valid.
            archive.unlink()
            raise DownloadError(archive, f'sha256 mismatch: expected {expected.lower()}, got {got} '
                                         f'(the file was removed; run again to re-download)', reason='checksum')
        _logger.info('%s: using the existing archive %s', name, archive)
    else:
        source = url or spec.url
        size = f' ({spec.size / 1e9:.1f} GB)' if spec.size else ''
        _logger.info('downloading %s from %s to %s%s', name, source, archive, size)
        got = download_file(source, archive, sha256=expected, progress=progress)
    if expected is None:
        recorded.write_text(f'{got}  {archive.name}\n')
        _logger.warning('%s: no published sha256 is pinned for this archive; computed %s and recorded it in %s '
                        '(later runs verify against it)', archive.name, got, recorded)
    else:
        _logger.info('%s: sha256 verified (%s)', archive.name, got)

    tmp = Path(tempfile.mkdtemp(prefix=f'.{spec.folder}.extracting-', dir=root))
    try:
        _logger.info('unpacking %s into %s', archive.name, target)
        extract_archive(archive, tmp, spec.archive)
        produced = tmp
        if spec.archive_root is not None:
            produced = tmp / spec.archive_root
            if not produced.is_dir():
                top = [p for p in tmp.iterdir() if p.name != '__MACOSX']
                if len(top) == 1 and top[0].is_dir():
                    _logger.warning('%s: expected top-level folder %r, found %r; using it', archive.name,
                                    spec.archive_root, top[0].name)
                    produced = top[0]
                else:
                    raise DownloadError(archive, f'expected a top-level folder {spec.archive_root!r} in the '
                                                 f'archive, found {sorted(p.name for p in top)[:10]}',
                                        reason='bad archive')
        os.replace(produced, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not keep_archive:
        archive.unlink()


def download_dataset(name: str, root: Union[str, Path], *, url: Optional[str] = None, sha256: Optional[str] = None,
                     progress: Optional[ProgressFn] = None, keep_archive: bool = True) -> Path:
    """Download, verify and unpack data set ``name`` under ``root``; return the data set folder.

    Idempotent: if ``<root>/<folder>`` exists (it is only created by an atomic rename once complete) nothing is
    done. An interrupted download resumes from ``<file>.part``.

    Args:
        name: a key of :data:`DATASETS`.
        root: the folder that receives the archive and the unpacked data set.
        url: override of the URL (a mirror, or a local server in tests).
        sha256: override of the expected sha256.
        progress: optional ``callback(bytes_done, total_or_None)`` (the CLI draws a progress bar with it).
        keep_archive: keep the archive after unpacking (a re-run then needs no download).

    Raises:
        KeyError: unknown name.
        NoDirectDownloadError: the data set has no direct download (the message says where it comes from).
        DownloadError: network failure, sha256 mismatch, incomplete download.
        UnsafeArchiveError: an archive member would escape the extraction folder.
    """
    if name not in DATASETS:
        raise KeyError(f'unknown data set {name!r}; known: {", ".join(sorted(DATASETS))}')
    spec = DATASETS[name]
    root = Path(root)
    target = root / spec.folder
    if spec.url is None and url is None:
        raise NoDirectDownloadError(name, f'has no direct download. {spec.instructions} '
                                          f'Then point --data at {target} (or wherever it lives).')
    if target.is_dir():
        _logger.info('%s already present at %s; nothing to do', name, target)
        return target
    if spec.file_name is None or spec.archive is None:
        raise NoDirectDownloadError(name, f'no archive format known; {spec.instructions}')

    try:
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / f'.{spec.folder}.lock')):  # two downloads into one root: the second waits
            for stale in root.glob(f'.{glob.escape(spec.folder)}.extracting-*'):  # left by a killed run
                _logger.info('removing %s (left by an interrupted run)', stale)
                shutil.rmtree(stale, ignore_errors=True)
            if target.is_dir():
                _logger.info('%s already present at %s; nothing to do', name, target)
                return target
            _fetch_and_unpack(spec, root, target, url, sha256, progress, keep_archive)
    except OSError as e:  # a full disk, a folder that cannot be written
        raise DownloadError(e.filename or root, f'cannot write while downloading {name} ({e.strerror or e})',
                            reason='disk') from None
    _logger.info('%s ready at %s', name, target)
    return target
