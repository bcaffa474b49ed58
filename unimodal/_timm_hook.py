"""Register the UniRepLKNet variants with timm whenever timm is imported, without importing it ourselves.

``import unimodal`` stays light (no torch, no timm): when timm is already imported the variants are registered at
once; otherwise a one-shot import hook registers them right after timm's own module has run, so
``import unimodal; import timm; timm.create_model('unireplknet_a')`` works in either order. Python has no public
post-import hook (PEP 369 was withdrawn), hence this small meta-path finder.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import Optional, Sequence

_REGISTRY_MODULE = 'unimodal.models.unireplknet'


def _register() -> None:
    importlib.import_module(_REGISTRY_MODULE)


class _RegisterAfterTimm(importlib.abc.Loader):
    """Runs timm's own loader, puts it back on the module, then registers our variants."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader  # importlib.resources and reloads see timm's real loader
        self.loader.exec_module(module)
        uninstall()  # here, not in find_spec: a bare find_spec('timm') (an "is it installed?" check) imports nothing
        _register()


class _TimmFinder(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self._looking = False

    def find_spec(self, fullname: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None):
        if fullname != 'timm' or self._looking:
            return None
        self._looking = True  # the look-up below walks sys.meta_path again
        try:
            spec = importlib.util.find_spec('timm')
        finally:
            self._looking = False
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfterTimm(spec.loader)
        return spec


_FINDER = _TimmFinder()


def install() -> None:
    """Register now if timm is imported (or being imported), else when it is."""
    if _REGISTRY_MODULE in sys.modules:
        return
    if 'timm' in sys.modules:
        _register()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
