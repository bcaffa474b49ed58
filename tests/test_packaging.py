"""Packaging: the package list, one version source, the shipped recipes and py.typed in the wheel,
``python -m unimodal``."""
import ast
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip('tomli')

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / 'pyproject.toml').read_text())


def test_every_source_package_is_listed():
    found = {'.'.join(p.parent.relative_to(ROOT).parts) for p in (ROOT / 'unimodal').rglob('__init__.py')}
    listed = set(_pyproject()['tool']['setuptools']['packages'])
    assert listed == found | {'unimodal.configs'}


def test_one_version_source():
    project = _pyproject()
    assert 'version' not in project['project'] and 'version' in project['project']['dynamic']
    assert project['tool']['setuptools']['dynamic']['version'] == {'attr': 'unimodal.__version__'}
    tree = ast.parse((ROOT / 'unimodal' / '__init__.py').read_text())
    literal = [n.value.value for n in tree.body if isinstance(n, ast.Assign)
               and any(getattr(t, 'id', None) == '__version__' for t in n.targets)]
    import unimodal
    assert literal == [unimodal.__version__]  # a literal: setuptools reads it without importing the package


@pytest.mark.skipif(importlib.util.find_spec('setuptools') is None, reason='setuptools is not installed')
def test_wheel_ships_recipes_and_py_typed(tmp_path):
    """A normal (non-editable) install gets the recipes as package data, one copy each."""
    src = tmp_path / 'src'
    src.mkdir()
    for name in ('pyproject.toml', 'README.md'):
        shutil.copy(ROOT / name, src / name)
    for name in ('unimodal', 'configs'):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns('__pycache__'))
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', str(src), '-w', str(tmp_path / 'whl'), '--no-deps',
                           '--no-build-isolation', '-q'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / 'whl').glob('unimodal-*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = sorted(p.name for p in (ROOT / 'configs').glob('*.yaml'))
    assert recipes and {f'unimodal/configs/{r}' for r in recipes} <= names
    assert {'unimodal/py.typed', 'unimodal/__main__.py', 'unimodal/config/schema.py'} <= names
    assert not any(n.startswith('configs/') for n in names)  # not a second top-level copy


def test_python_dash_m_unimodal():
    proc = subprocess.run([sys.executable, '-m', 'unimodal', 'tasks'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'timeseries' in proc.stdout and 'audio' in proc.stdout
