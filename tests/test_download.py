"""Data set download: local HTTP server on 127.0.0.1 serving small archives in the real formats."""
import hashlib
import http.server
import io
import shutil
import struct
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from unimodal.data import download as dl
from unimodal.data.download import (DATASETS, DownloadError, NoDirectDownloadError, UnsafeArchiveError,
                                    download_dataset, extract_archive)


# ------------------------------------------------------------------------------------------------ archives

def _wav_bytes(n: int = 1600, rate: int = 16000) -> bytes:
    """A tiny 16-bit mono PCM WAV."""
    data = struct.pack(f'<{n}h', *[(i * 37) % 2000 - 1000 for i in range(n)])
    return (b'RIFF' + struct.pack('<I', 36 + len(data)) + b'WAVEfmt ' +
            struct.pack('<IHHIIHH', 16, 1, 1, rate, rate * 2, 2, 16) + b'data' + struct.pack('<I', len(data)) + data)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def speech_commands_tgz() -> bytes:
    """Speech Commands V2 layout: word folders, _background_noise_, the split lists, all at the top level."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tar:
        for rel in ('yes/0a7c2a8d_nohash_0.wav', 'yes/0b09edd3_nohash_0.wav', 'no/0a7c2a8d_nohash_0.wav',
                    'no/0c40e715_nohash_1.wav', '_background_noise_/white_noise.wav'):
            _add(tar, './' + rel, _wav_bytes())
        _add(tar, './validation_list.txt', b'yes/0b09edd3_nohash_0.wav\n')
        _add(tar, './testing_list.txt', b'no/0c40e715_nohash_1.wav\n')
        _add(tar, './LICENSE', b'CC BY 4.0\n')
    return buf.getvalue()


OFF_CUBE = (b'OFF\n8 6 0\n' + b''.join(f'{x} {y} {z}\n'.encode() for x in (0, 1) for y in (0, 1) for z in (0, 1)) +
            b'4 0 1 3 2\n4 4 6 7 5\n4 0 4 5 1\n4 2 3 7 6\n4 0 2 6 4\n4 1 5 7 3\n')


def modelnet_zip() -> bytes:
    """Raw ModelNet40 layout: ModelNet40/<class>/{train,test}/<class>_NNNN.off (one glued header as in the set)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED) as zf:
        zf.writestr('ModelNet40/', '')
        for cls in ('airplane', 'chair'):
            zf.writestr(f'ModelNet40/{cls}/train/{cls}_0001.off', OFF_CUBE)
            zf.writestr(f'ModelNet40/{cls}/test/{cls}_0002.off', OFF_CUBE.replace(b'OFF\n', b'OFF', 1))
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ server

class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    log: list = []
    honour_range = True

    def do_GET(self):  # noqa: N802
        data = self.files.get(self.path)
        rng = self.headers.get('Range')
        type(self).log.append((self.path, rng))
        if data is None:
            self.send_error(404)
            return
        if rng and self.honour_range:
            start = int(rng.split('=')[1].split('-')[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header('Content-Range', f'bytes */{len(data)}')
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206)
            self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
        else:
            body = data
            self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture()
def server():
    class Handler(_Handler):
        files = {}
        log = []
        honour_range = True

    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    Handler.base = f'http://127.0.0.1:{httpd.server_address[1]}'
    yield Handler
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------------ tests

def test_catalogue():
    assert DATASETS['speech_commands'].url == 'http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz'
    assert DATASETS['modelnet40'].url == 'http://modelnet.cs.princeton.edu/ModelNet40.zip'
    for name, spec in DATASETS.items():
        if spec.url:
            assert spec.file_name and spec.archive in ('tar.gz', 'zip') and spec.folder
            assert spec.sha256 is None or len(spec.sha256) == 64
        else:
            assert spec.instructions


def test_speech_commands_download_verify_extract(server, tmp_path):
    data = speech_commands_tgz()
    server.files['/sc.tar.gz'] = data
    seen = []
    out = download_dataset('speech_commands', tmp_path, url=server.base + '/sc.tar.gz', sha256=_sha(data),
                           progress=lambda done, total: seen.append((done, total)))
    assert out == tmp_path / 'speech_commands_v0.02'
    assert (out / 'yes' / '0a7c2a8d_nohash_0.wav').read_bytes()[:4] == b'RIFF'
    assert (out / 'validation_list.txt').read_text() == 'yes/0b09edd3_nohash_0.wav\n'
    assert (out / '_background_noise_' / 'white_noise.wav').is_file()
    assert seen[-1] == (len(data), len(data))
    assert (tmp_path / 'speech_commands_v0.02.tar.gz').read_bytes() == data
    assert not list(tmp_path.glob('*.part'))  # no leftovers (the lock file of concurrent downloads stays)
    assert [p.name for p in tmp_path.glob('.speech*')] == ['.speech_commands_v0.02.lock']
    # Idempotent: a second call does nothing (no request).
    n = len(server.log)
    assert download_dataset('speech_commands', tmp_path, url=server.base + '/sc.tar.gz', sha256=_sha(data)) == out
    assert len(server.log) == n


def test_modelnet_zip_unpinned_hash_recorded(server, tmp_path):
    data = modelnet_zip()
    server.files['/ModelNet40.zip'] = data
    assert DATASETS['modelnet40'].sha256 is None
    out = download_dataset('modelnet40', tmp_path, url=server.base + '/ModelNet40.zip')
    assert out == tmp_path / 'ModelNet40'
    assert (out / 'chair' / 'test' / 'chair_0002.off').read_bytes().startswith(b'OFF8 6 0')
    recorded = tmp_path / 'ModelNet40.zip.sha256'
    assert recorded.read_text().split()[0] == _sha(data)
    # A re-run (folder gone, archive kept) verifies the archive against the recorded hash.
    shutil.rmtree(out)
    (tmp_path / 'ModelNet40.zip').write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(DownloadError, match='sha256 mismatch'):
        download_dataset('modelnet40', tmp_path, url=server.base + '/ModelNet40.zip')
    assert not (tmp_path / 'ModelNet40.zip').exists() and not out.exists()


def test_resume_with_range(server, tmp_path):
    data = speech_commands_tgz()
    server.files['/sc.tar.gz'] = data
    cut = len(data) // 3
    (tmp_path / 'speech_commands_v0.02.tar.gz.part').write_bytes(data[:cut])
    download_dataset('speech_commands', tmp_path, url=server.base + '/sc.tar.gz', sha256=_sha(data))
    assert server.log == [('/sc.tar.gz', f'bytes={cut}-')]  # asked only for the remaining bytes
    assert (tmp_path / 'speech_commands_v0.02.tar.gz').read_bytes() == data
    assert (tmp_path / 'speech_commands_v0.02' / 'testing_list.txt').is_file()


def test_resume_when_server_ignores_range(server, tmp_path):
    data = speech_commands_tgz()
    server.files['/sc.tar.gz'] = data
    server.honour_range = False
    part = tmp_path / 'speech_commands_v0.02.tar.gz.part'
    part.write_bytes(b'garbage that must not end up in the file')
    download_dataset('speech_commands', tmp_path, url=server.base + '/sc.tar.gz', sha256=_sha(data))
    assert server.log[0][1] is not None  # it did try to resume
    assert (tmp_path / 'speech_commands_v0.02.tar.gz').read_bytes() == data  # restarted from scratch


def test_resume_of_complete_part(server, tmp_path):
    data = speech_commands_tgz()
    server.files['/sc.tar.gz'] = data
    (tmp_path / 'speech_commands_v0.02.tar.gz.part').write_bytes(data)
    out = download_dataset('speech_commands', tmp_path, url=server.base + '/sc.tar.gz', sha256=_sha(data))
    assert (out / 'LICENSE').is_file()  # 416 from the server: the part was already complete


def test_wrong_sha256_nothing_extracted(server, tmp_path):
    data = speech_commands_tgz()
    server.files['/sc.tar.gz'] = data
    with pytest.raises(DownloadError) as info:
        download_dataset('speech_commands', tmp_path, url=server.base + '/sc.tar.gz', sha256='0' * 64)
    msg = str(info.value)
    assert 'speech_commands_v0.02.tar.gz' in msg and '0' * 64 in msg and _sha(data) in msg
    assert not (tmp_path / 'speech_commands_v0.02').exists()
    assert not (tmp_path / 'speech_commands_v0.02.tar.gz').exists()  # not left as if valid
    assert not (tmp_path / 'speech_commands_v0.02.tar.gz.part').exists()


def test_http_error_is_clear(server, tmp_path):
    with pytest.raises(DownloadError, match='404'):
        download_dataset('speech_commands', tmp_path, url=server.base + '/missing.tar.gz')


def _tar_with(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b'') -> Path:
    path = tmp_path / 'evil.tar.gz'
    with tarfile.open(path, 'w:gz') as tar:
        _add(tar, 'ok/readme.txt', b'fine')
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data) if data else None)
    return path


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def _hardlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize('member, data, what', [
    (tarfile.TarInfo('../evil'), b'x', '../evil'),
    (tarfile.TarInfo('ok/../../evil'), b'x', 'ok/../../evil'),
    (tarfile.TarInfo('/tmp/evil_abs'), b'x', '/tmp/evil_abs'),
    (_symlink('ok/link', '../../outside'), b'', 'ok/link'),
    (_symlink('abs_link', '/etc/passwd'), b'', 'abs_link'),
    (_hardlink('hard', '../outside'), b'', 'hard'),
])
def test_malicious_tar_refused(tmp_path, member, data, what):
    archive = _tar_with(tmp_path, member, data)
    dest = tmp_path / 'out'
    with pytest.raises(UnsafeArchiveError) as info:
        extract_archive(archive, dest, 'tar.gz')
    assert repr(what) in str(info.value)
    assert not (dest / 'ok' / 'readme.txt').exists()  # checked before anything is written
    assert not (tmp_path / 'evil').exists() and not Path('/tmp/evil_abs').exists()


def test_tar_write_through_symlink_refused(tmp_path):
    path = tmp_path / 'chain.tar'
    with tarfile.open(path, 'w') as tar:
        tar.addfile(_symlink('sub', '.'))  # harmless by itself (points inside) ...
        _add(tar, 'sub/../../escape', b'x')  # ... but members must not be written through it
    with pytest.raises(UnsafeArchiveError):
        extract_archive(path, tmp_path / 'out', 'tar')


def test_tar_inside_links_allowed(tmp_path):
    path = tmp_path / 'ok.tar.gz'
    with tarfile.open(path, 'w:gz') as tar:
        _add(tar, 'data/a.txt', b'a')
        tar.addfile(_symlink('data/b.txt', 'a.txt'))
    out = extract_archive(path, tmp_path / 'out', 'tar.gz')
    assert (out / 'data' / 'b.txt').read_text() == 'a'


@pytest.mark.parametrize('name', ['../zipslip.txt', 'ModelNet40/../../zipslip.txt', '/abs_zipslip.txt',
                                  'C:/windows.txt', '..\\backslash.txt'])
def test_zip_slip_refused(server, tmp_path, name):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as zf:
        zf.writestr('ModelNet40/chair/train/chair_0001.off', OFF_CUBE)
        zf.writestr(zipfile.ZipInfo(name), b'pwned')
    data = buf.getvalue()
    server.files['/ModelNet40.zip'] = data
    root = tmp_path / 'root'
    with pytest.raises(UnsafeArchiveError) as info:
        download_dataset('modelnet40', root, url=server.base + '/ModelNet40.zip', sha256=_sha(data))
    assert repr(name) in str(info.value)
    assert not (root / 'ModelNet40').exists()
    assert not list(root.glob('.ModelNet40.extracting-*'))  # temp folder cleaned up
    assert not list(tmp_path.rglob('zipslip.txt'))


@pytest.mark.parametrize('name, words', [
    ('kinetics400', ['youtube', 'csv', 'path label']),
    ('global_temp', ['corrformer', 'temp_global_hourly_', '.npy']),
    ('global_wind', ['corrformer', 'wind_global_hourly_']),
    ('imagenet', ['image-net.org', 'train/<wnid>']),
])
def test_no_direct_download_explains(tmp_path, name, words):
    with pytest.raises(NoDirectDownloadError) as info:
        download_dataset(name, tmp_path)
    msg = str(info.value).lower()
    assert 'no direct download' in msg
    for w in words:
        assert w.lower() in msg
    assert not any(tmp_path.iterdir())


def test_unknown_name(tmp_path):
    with pytest.raises(KeyError, match='speech_commands'):
        download_dataset('speech_command', tmp_path)


class _Short(_Handler):
    def do_GET(self):  # noqa: N802  (claims 1000 bytes, sends 10, closes)
        self.send_response(200)
        self.send_header('Content-Length', '1000')
        self.end_headers()
        self.wfile.write(b'0123456789')


@pytest.fixture()
def short_server():
    """A server whose every answer stops after 10 of the 1000 bytes it announced; yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Short)
    threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


def test_incomplete_download_keeps_part_for_resume(tmp_path, short_server):
    with pytest.raises(DownloadError, match='incomplete'):
        dl.download_file(short_server + '/x', tmp_path / 'x.bin', timeout=5)
    assert (tmp_path / 'x.bin.part').read_bytes() == b'0123456789'
    assert not (tmp_path / 'x.bin').exists()


# ------------------------------------------------------------------------------------------------ CLI: one line


def _tar_bytes(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tar:
        _add(tar, './yes/a.wav', _wav_bytes())
        for m, data in members:
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _zip_bytes(name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as zf:
        zf.writestr('ModelNet40/chair/train/chair_0001.off', OFF_CUBE)
        zf.writestr(zipfile.ZipInfo(name), b'pwned')
    return buf.getvalue()


_FAULTS = {
    'dotdot member': ('speech_commands', lambda: _tar_bytes((tarfile.TarInfo('../evil'), b'x')), "'../evil'"),
    'absolute member': ('speech_commands', lambda: _tar_bytes((tarfile.TarInfo('/tmp/evil_abs2'), b'x')),
                        'absolute path'),
    'symlink out': ('speech_commands', lambda: _tar_bytes((_symlink('yes/l', '../../out'), b'')), 'points outside'),
    'hard link out': ('speech_commands', lambda: _tar_bytes((_hardlink('h', '../out'), b'')), 'points outside'),
    'zip slip': ('modelnet40', lambda: _zip_bytes('ModelNet40/../../slip.txt'), 'escapes'),
    'wrong type (zip as tar.gz)': ('speech_commands', modelnet_zip, 'not a valid tar.gz archive'),
    'wrong type (tar.gz as zip)': ('modelnet40', speech_commands_tgz, 'not a valid zip archive'),
    'garbage bytes': ('speech_commands', lambda: b'<html>mirror error page</html>', 'not a valid tar.gz archive'),
}


@pytest.mark.parametrize('fault', sorted(_FAULTS))
def test_cli_download_faults_are_one_line_errors(server, tmp_path, run_cli, fault):
    name, make, words = _FAULTS[fault]
    data = make()
    server.files['/a'] = data
    code, out, err = run_cli('data', 'download', name, '--root', tmp_path / 'root', '--url', server.base + '/a',
                             '--sha256', _sha(data))
    errors = [line for line in err.splitlines() if line.startswith('unimodal data: error:')]
    assert code == 2 and 'Traceback' not in err and len(errors) == 1, err  # the rest are log lines
    assert words in errors[0] and str(tmp_path / 'root') in errors[0]
    assert not [p for p in (tmp_path / 'root').iterdir() if 'extracting' in p.name]


def test_cli_download_network_faults_name_the_url(server, tmp_path, run_cli, monkeypatch):
    import socket
    data = speech_commands_tgz()
    server.files['/sc.tar.gz'] = data
    root = tmp_path / 'root'
    cases = [(server.base + '/missing.tar.gz', None, 'HTTP error 404'),
             (server.base + '/sc.tar.gz', '0' * 64, 'sha256 mismatch'),
             ('http://127.0.0.1:1/refused', None, 'cannot connect')]
    silent = socket.socket()  # accepts connections (backlog) and never answers
    silent.bind(('127.0.0.1', 0))
    silent.listen(4)
    monkeypatch.setattr(dl, 'DEFAULT_TIMEOUT', 0.5)
    cases.append((f'http://127.0.0.1:{silent.getsockname()[1]}/x', None, 'no answer within 0.5 s'))
    try:
        for url, sha, words in cases:
            args = ['data', 'download', 'speech_commands', '--root', root, '--url', url]
            args += ['--sha256', sha] if sha else []
            code, out, err = run_cli(*args)
            errors = [line for line in err.splitlines() if line.startswith('unimodal data: error:')]
            assert code == 2 and 'Traceback' not in err and len(errors) == 1, err
            assert words in errors[0] and (url in errors[0] or 'speech_commands_v0.02.tar.gz' in errors[0]), err
    finally:
        silent.close()


def test_cli_truncated_transfer_is_one_line(tmp_path, run_cli, short_server):
    code, out, err = run_cli('data', 'download', 'speech_commands', '--root', tmp_path, '--url', short_server + '/x')
    errors = [line for line in err.splitlines() if line.startswith('unimodal data: error:')]
    assert code == 2 and 'Traceback' not in err and len(errors) == 1, err
    assert 'incomplete (10 of 1000 bytes)' in errors[0] and 'speech_commands_v0.02.tar.gz.part' in errors[0]


def test_leftover_of_a_killed_unpack_is_removed(server, tmp_path):
    data = speech_commands_tgz()
    server.files['/sc.tar.gz'] = data
    (tmp_path / '.speech_commands_v0.02.extracting-dead').mkdir(parents=True)
    download_dataset('speech_commands', tmp_path, url=server.base + '/sc.tar.gz', sha256=_sha(data))
    assert not list(tmp_path.glob('.speech_commands_v0.02.extracting-*'))
