"""The models an ERF comparison measures: random-init timm networks (``NAME[:kN]``) and trained run checkpoints.

A random-init model is measured in eval mode, so its BatchNorms apply their fresh running statistics (mean 0,
variance 1): the identity, up to the affine weights.

Initialisation matters more than one would think at random init. A network's own initialisation is what training
starts from, and modern residual networks start with their residual branches nearly off (UniRepLKNet: layer
scale 1e-6 and std-0.02 weights; timm's ResNet: the last BatchNorm of each block at zero), so the gradient flows
through the shortcuts and the ERF is that of the stem and downsampling layers, whatever the kernel size.
``init='fan_in'`` (the tool's default) turns every branch on with variance-preserving weights, so the measurement
shows what the architecture's kernels span (random-weight ERFs are also what Luo et al., NeurIPS 2016, analyse).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..config import ConfigError
from .erf import Progress, adapter_grid, erf_map

_logger = logging.getLogger(__name__)

__all__ = ['INITS', 'ErfSubject', 'parse_model_spec', 'fan_in_init_', 'build_random_trunk',
           'load_run_task_model', 'measure_subjects', 'describe_trunk']

#: ``'fan_in'``: variance-preserving weights, every residual branch on (see the module docstring); ``'model'``:
#: the network's own initialisation.
INITS = ('fan_in', 'model')

_SPEC = re.compile(r'^(?P<name>[\w.\-]+?)(?::k(?P<kernel>\d+))?$')


@dataclass
class ErfSubject:
    """One model of a comparison.

    Attributes:
        label: the name shown in the table and figure.
        trunk: a module whose ``forward_features`` gives the ``(B, C, H, W)`` map of the last stage.
        adapter: the adapter that turns raw inputs into the trunk's grid; ``None``: the comparison's shared one.
        source: where the weights come from (``'random init (fan_in, seed 0)'``, a checkpoint path).
        info: facts filled in by the measurement (``'grid'``: the ``[C, H, W]`` the trunk saw).
    """

    label: str
    trunk: nn.Module
    adapter: Optional[nn.Module] = None
    source: str = ''
    info: Dict[str, Any] = field(default_factory=dict)


def parse_model_spec(spec: str) -> Tuple[str, Optional[int]]:
    """``'unireplknet_a'`` -> ``('unireplknet_a', None)``; ``'unireplknet_a:k3'`` -> ``('unireplknet_a', 3)``
    (every block of the UniRepLKNet gets kernel 3). The name must be a timm model."""
    import timm

    from ..models import unireplknet  # noqa: F401  (registers the UniRepLKNet factories)
    m = _SPEC.match(spec.strip())
    if not m:
        raise ConfigError(f'--model {spec!r}: expected a timm model name, optionally with :kN for the kernel size '
                          f'of every UniRepLKNet block (e.g. unireplknet_a, unireplknet_a:k3, resnet50)')
    name, kernel = m.group('name'), m.group('kernel')
    if not timm.is_model(name):
        close = timm.list_models(f'*{name.split("_")[0]}*')[:8]
        raise ConfigError(f'--model {spec!r}: unknown timm model {name!r}'
                          + (f' (similar: {", ".join(close)})' if close else ''))
    if kernel is not None and not name.startswith('unireplknet'):
        raise ConfigError(f'--model {spec!r}: :kN sets UniRepLKNet block kernels; {name} is not a UniRepLKNet')
    return name, int(kernel) if kernel is not None else None


@torch.no_grad()
def fan_in_init_(model: nn.Module) -> nn.Module:
    """Re-initialise in place so every residual branch is on: conv / linear weights ``N(0, 1 / fan_in)`` (LeCun
    normal), biases 0, norm affines (1, 0), layer scales 1. GRN's ``gamma`` stays 0 (GRN is then the identity, as
    at the published init).

    Each layer then preserves the variance of its input, so gradients keep their scale through depth. That
    matters because the published ratio is measured on ``log10(1 + E)``, which is not scale-free: with He's gain
    (``2 / fan_in``) a random ResNet-50's gradients reach ~1e3 and the log flattens its map (r(20 %) 0.15 on the
    log scale vs 0.06 on E, measured at 224 px); with ``1 / fan_in`` both scales agree within ~0.01.
    """
    from timm.layers import LayerScale, LayerScale2d

    from ..models.unireplknet import UniRepLKNetBlock
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode='fan_in', nonlinearity='linear')
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
            if getattr(m, 'weight', None) is not None:
                nn.init.ones_(m.weight)
            if getattr(m, 'bias', None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (LayerScale, LayerScale2d)):
            nn.init.ones_(m.gamma)
        if isinstance(m, UniRepLKNetBlock) and m.gamma is not None:
            nn.init.ones_(m.gamma)
    return model


def build_random_trunk(spec: str, in_chans: int = 3, init: str = 'fan_in', seed: int = 0) -> nn.Module:
    """A random-init timm network without classifier, in eval mode, from a ``NAME[:kN]`` spec.

    The global RNG is left untouched (the weights come from a forked generator seeded with ``seed``), so the
    same spec and seed give the same weights; with ``init='fan_in'`` two UniRepLKNets that differ only in kernel
    sizes also share their stem and downsampling weights.
    """
    import timm
    if init not in INITS:
        raise ConfigError(f'init must be one of {", ".join(INITS)}, got {init!r}')
    name, kernel = parse_model_spec(spec)
    kwargs: Dict[str, Any] = {}
    if kernel is not None:
        kwargs['kernel_sizes'] = (kernel,) * 4  # one size for every block of each of the 4 stages
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=0, **kwargs)
        except ValueError as e:  # e.g. a kernel size the Dilated Reparam Block has no branches for
            raise ConfigError(f'--model {spec!r}: {e}') from None
        if init == 'fan_in':
            torch.manual_seed(seed)  # draws in module order from here: the stem first, whatever the blocks are
            fan_in_init_(model)
    return model.eval()


def load_run_task_model(path: Union[str, Path], task: Optional[str] = None) -> Tuple[nn.Module, str, Any]:
    """The task model (adapter -> trunk -> head) of a unimodal run checkpoint, with its evaluation weights (EMA
    when kept), in eval mode, through the engine's one run-checkpoint loader.

    Args:
        path: ``best.pt`` / ``last.pt`` of a run (loaded with ``weights_only=True``).
        task: the task of a joint checkpoint (may be omitted when it holds one task).

    Returns:
        ``(task_model, task_name, run_config)``: the run's resolved :class:`~unimodal.config.RunConfig`.
    """
    from ..config import resolve_run_config
    from ..engine.checkpoint import load_run_checkpoint
    ckpt = load_run_checkpoint(Path(path))
    name = ckpt.task_name(task)
    model, _ = ckpt.build_model([name])
    return model.task_model(name).eval(), name, resolve_run_config(base=ckpt.config)


def measure_subjects(subjects: Sequence[ErfSubject], inputs: Any, adapter: Optional[nn.Module] = None, *,
                     device: Union[str, torch.device] = 'cpu', batch_size: int = 1, gradient: str = 'positive',
                     progress: Optional[Progress] = None) -> Dict[str, torch.Tensor]:
    """The ERF map of every subject on the same raw ``inputs``.

    Each subject's grid is its own adapter's output on ``inputs`` (a trained checkpoint's adapter), or the shared
    ``adapter``'s (computed once); ``None`` for both feeds ``inputs`` to the trunk as they are.

    Returns:
        label -> ``(H, W)`` map, in the order of ``subjects``.
    """
    device = torch.device(device)
    labels = [s.label for s in subjects]
    if len(set(labels)) != len(labels):
        raise ConfigError(f'model labels must be unique, got {labels}')
    shared = None
    maps: Dict[str, torch.Tensor] = {}
    for subject in subjects:
        if subject.adapter is not None:
            subject.adapter.to(device)
            grid = adapter_grid(subject.adapter, _to(inputs, device))
        else:
            if shared is None:
                shared = adapter_grid(adapter.to(device), _to(inputs, device)) if adapter is not None \
                    else _to(inputs, device)
            grid = shared
        trunk = subject.trunk.to(device).eval()
        _logger.info('ERF of %s (%s) on %d grids of %s', subject.label, subject.source, grid.shape[0],
                     'x'.join(map(str, grid.shape[1:])))
        maps[subject.label] = erf_map(trunk.forward_features, grid, batch_size=batch_size, gradient=gradient,
                                      progress=progress, desc=subject.label)
        subject.info['grid'] = list(grid.shape[1:])
    return maps


def _to(x: Any, device: torch.device) -> Any:
    return x.to(device) if torch.is_tensor(x) else x


def describe_trunk(trunk: nn.Module) -> Dict[str, Any]:
    """Parameter count and, for a UniRepLKNet, its per-stage kernel sizes (for the JSON report)."""
    out: Dict[str, Any] = {'params': sum(p.numel() for p in trunk.parameters())}
    kernels = getattr(trunk, 'kernel_sizes', None)
    if kernels is not None:
        out['kernel_sizes'] = [list(k) for k in kernels]
    return out
