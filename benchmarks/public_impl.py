"""Load the public UniRepLKNet code (AILab-CVC/UniRepLKNet ``unireplknet.py``, not part of this repository) from a
local file for side-by-side rows, build a variant and give it our weights.

The file is executed as a module with its optional imports made unavailable (the trial import of the iGEMM
large-kernel package and the mmdet / mmseg / mmcv registries, so the plain PyTorch path runs whatever is
installed), with timm's ``register_model`` replaced by a no-op while it runs (its factories would otherwise replace
ours in timm's registry under the same names) and with its construction-time prints captured. Works for any module
exposing ``UniRepLKNet`` and ``unireplknet_<variant>`` factories with the training-form state-dict keys.

    mod = load_public_module('/path/to/unireplknet.py')
    public = build_public(mod, 'a', num_classes=1000)
    copy_weights(ours, public)            # ours: the same variant in training form
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import inspect
import io
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, Optional

import torch
from torch import nn

__all__ = ['BLOCKED_IMPORTS', 'load_public_module', 'build_public', 'copy_weights', 'to_deploy', 'rel_err']

# optional imports of the public file that would change what runs (a CUDA extension) or need other frameworks
BLOCKED_IMPORTS = ('depthwise_conv2d_implicit_gemm', 'mmseg', 'mmdet', 'mmcv', 'mmengine')
_PRETRAINED_FLAGS = ('pretrained', 'in_1k_pretrained', 'in_22k_pretrained', 'in_22k_to_1k')


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED_IMPORTS:
            raise ModuleNotFoundError(f'{name} is blocked while loading the public UniRepLKNet file', name=name)
        return None


@contextlib.contextmanager
def _isolated_imports(module_name: str) -> Iterator[None]:
    """Blocked optional packages (also when already imported) and a ``register_model`` that skips the functions of
    module ``module_name`` (others, e.g. ours imported on the way, register as usual); restored after."""
    import timm.models
    import timm.models._registry as registry
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # timm's deprecated import paths (timm.models.layers / .registry)
        import timm.models.registry as old_registry
    hidden = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split('.')[0] in BLOCKED_IMPORTS}
    patched = [(m, m.register_model) for m in (timm.models, registry, old_registry)]
    blocker = _Blocker()
    sys.meta_path.insert(0, blocker)
    def register(fn, orig=registry.register_model):
        return fn if getattr(fn, '__module__', None) == module_name else orig(fn)

    for m, _ in patched:
        m.register_model = register
    try:
        yield
    finally:
        sys.meta_path.remove(blocker)
        for m, fn in patched:
            m.register_model = fn
        sys.modules.update(hidden)


def load_public_module(path: str, package: Optional[str] = None) -> ModuleType:
    """Execute the file at ``path`` as a fresh module.

    Args:
        path: the public ``unireplknet.py``.
        package: parent package for a file with relative imports (e.g. ``'unimodal.models'`` to load this
            project's own file as a stand-in).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f'--public {path}: no such file (a local copy of the public unireplknet.py)')
    name = f'{package}._public_unireplknet' if package else '_public_unireplknet'
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)
    if package:
        module.__package__ = package
    out = io.StringIO()
    with _isolated_imports(name), warnings.catch_warnings(), contextlib.redirect_stdout(out):
        warnings.simplefilter('ignore')
        spec.loader.exec_module(module)
    if not hasattr(module, 'UniRepLKNet'):
        raise AttributeError(f'{path}: defines no UniRepLKNet class; is it the public unireplknet.py?')
    module._load_stdout = out.getvalue()
    return module


def build_public(module: ModuleType, variant: str, **kwargs: Any) -> nn.Module:
    """``module.unireplknet_<variant>(**kwargs)`` without pretrained weights and without the iGEMM kernel.

    Pretrained flags the factory knows are passed as ``False``; ``attempt_use_lk_impl=False`` is passed when the
    class takes it. What the constructor prints is kept in ``model._build_stdout``.
    """
    name = f'unireplknet_{variant}'
    factory = getattr(module, name, None)
    if factory is None:
        have = sorted(k for k in dir(module) if k.startswith('unireplknet_'))
        raise AttributeError(f'{module.__file__}: no factory {name!r} (has {have})')
    params = inspect.signature(factory).parameters
    args: Dict[str, Any] = {k: False for k in _PRETRAINED_FLAGS if k in params}
    if 'attempt_use_lk_impl' in inspect.signature(module.UniRepLKNet.__init__).parameters:
        args['attempt_use_lk_impl'] = False
    args.update(kwargs)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        model = factory(**args)
    model._build_stdout = out.getvalue()
    return model


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Load ``src``'s state dict into ``dst`` strictly (same training-form keys and shapes)."""
    sd = src.state_dict()
    dst_sd = dst.state_dict()
    missing = sorted(set(dst_sd) - set(sd))
    unexpected = sorted(set(sd) - set(dst_sd))
    shapes = [k for k in set(sd) & set(dst_sd) if sd[k].shape != dst_sd[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f'state dicts differ: {len(missing)} keys only in the public model {missing[:5]}, '
                         f'{len(unexpected)} only in ours {unexpected[:5]}, shape mismatches {sorted(shapes)[:5]}')
    dst.load_state_dict(sd, strict=True)


def to_deploy(model: nn.Module) -> nn.Module:
    """Structural re-parameterization in place (``reparameterize_unireplknet`` in the public code)."""
    fn = getattr(model, 'reparameterize_unireplknet', None) or getattr(model, 'reparameterize')
    with contextlib.redirect_stdout(io.StringIO()):
        fn()
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))
