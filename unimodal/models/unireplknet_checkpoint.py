"""UniRepLKNet checkpoints: safe reading, unwrapping, and adaptation of the released layouts to a model.

Reading is timm's (:func:`timm.models.load_state_dict`: ``torch.load(weights_only=True)`` or safetensors, EMA /
``state_dict`` / ``model`` keys, ``module.`` / ``_orig_mod.`` prefixes via :func:`timm.models.clean_state_dict`).
Written here is only what timm cannot know: deeper wrappers and detection ``backbone.`` prefixes, the older deploy
layout, training -> deploy conversion, input-channel adaptation and the head / norm keys a model may lack.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from timm.models import clean_state_dict, load_state_dict
from timm.models._manipulate import adapt_input_conv

if TYPE_CHECKING:
    from .unireplknet import UniRepLKNet

__all__ = ['CheckpointError', 'read_checkpoint', 'unwrap_state_dict', 'adapt_state_dict', 'load_checkpoint',
           'log_report', 'load_failure_reason', 'state_dict_mismatch']

_logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ('state_dict', 'model', 'module')
_EMA_KEYS = ('model_ema', 'state_dict_ema')
_HEAD_KEYS = re.compile(r'^(head|norm\d?)\.')
_DEPLOY_KEY = re.compile(r'^stages\.\d+\.\d+\.pwconv2\.0\.bias$')
_TRAIN_KEY = re.compile(r'^stages\.\d+\.\d+\.(pwconv2\.2\.|gamma$|act\.1\.beta$)')
_OLD_DEPLOY_DWCONV = re.compile(r'^(stages\.\d+\.\d+\.dwconv)\.(weight|bias)$')
_STEM_KEY = 'downsample_layers.0.0.weight'
_LIST = 3  # keys named in a mismatch message (a full list runs to thousands of lines)


class CheckpointError(ValueError):
    """A checkpoint file cannot be read (corrupt, not a torch/safetensors file, holding disallowed objects) or its
    weights do not fit the model; the message names the file and what is wrong in one line."""


def load_failure_reason(err: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` / safetensors refused a file, in one line.

    PyTorch's own message for a file holding Python objects advises ``weights_only=False``, i.e. executing the
    file: that advice is never passed on.
    """
    text = str(err)
    if 'weights_only' in text or isinstance(err, pickle.UnpicklingError) or isinstance(
            err.__cause__, pickle.UnpicklingError):
        found = re.search(r'GLOBAL ([\w.]+)', f'{text} {err.__cause__ or ""}')
        if found:
            return (f'it holds a Python object ({found.group(1)}) besides tensors and plain containers: refused, '
                    f'nothing in it was run (only weights_only loading is allowed)')
        return ('corrupt, not a PyTorch checkpoint, or holding objects other than tensors and plain containers '
                '(refused: only weights_only loading is allowed)')
    first = text.strip().splitlines()[0] if text.strip() else ''
    return f'{type(err).__name__}: {first}' if first else type(err).__name__


def state_dict_mismatch(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                        strict: bool = True) -> Optional[str]:
    """What keeps ``state_dict`` from loading into a module whose state dict is ``expected``, in one line (the first
    few keys of each kind and the counts), or ``None`` when it fits (``strict=False``: shapes only)."""
    missing = [k for k in expected if k not in state_dict] if strict else []
    unexpected = [k for k in state_dict if k not in expected] if strict else []
    shapes = [k for k in state_dict if k in expected and hasattr(state_dict[k], 'shape')
              and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return None

    def listing(keys: Sequence[str], fmt: Any = str) -> str:
        more = f', ... ({len(keys)} in all)' if len(keys) > _LIST else ''
        return ', '.join(fmt(k) for k in keys[:_LIST]) + more

    parts = []
    if shapes:
        parts.append('shapes differ: ' + listing(shapes, lambda k: f'{k} {tuple(state_dict[k].shape)} in the file, '
                                                                   f'{tuple(expected[k].shape)} in the model'))
    if missing:
        parts.append(f'missing: {listing(missing)}')
    if unexpected:
        parts.append(f'unexpected: {listing(unexpected)}')
    return '; '.join(parts)


def _descend(obj: Any, use_ema: bool) -> Mapping[str, Any]:
    """Through ``model`` / ``state_dict`` / ``module`` (or EMA) wrappers, at any depth, to the flat state dict
    (timm's reader unwraps one level and knows no ``module`` key)."""
    while isinstance(obj, Mapping):
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        key = None
        if use_ema:
            key = next((k for k in _EMA_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            key = next((k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            key = next((k for k in _EMA_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise TypeError(f'checkpoint is not a state dict (got {type(obj).__name__})')
    return obj


def unwrap_state_dict(obj: Any, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """The flat state dict inside a checkpoint object: wrappers removed, ``module.``-style prefixes (and a
    detection ``backbone.`` prefix) stripped, every value checked to be a tensor.

    Args:
        obj: a state dict, possibly wrapped (``{'model': ...}``, ``{'state_dict': {'module': ...}}``, ...).
        use_ema: prefer ``model_ema`` / ``state_dict_ema`` when present.

    Raises:
        TypeError: ``obj`` is not a mapping, or holds values that are not tensors.
    """
    out = clean_state_dict(dict(_descend(obj, use_ema)))
    if not any(k.startswith('downsample_layers.') for k in out) and any(
            k.startswith('backbone.downsample_layers.') for k in out):
        out = {k[len('backbone.'):]: v for k, v in out.items() if k.startswith('backbone.')}
    bad = [k for k, v in out.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f'state dict entries are not tensors: {bad[:5]}{" ..." if len(bad) > 5 else ""}')
    return out


def read_checkpoint(path: Union[str, os.PathLike], use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """Read a state dict from ``.pth``/``.pt`` (``torch.load(weights_only=True)``) or ``.safetensors``.

    Args:
        path: file path.
        use_ema: prefer ``model_ema``/``state_dict_ema`` when the file has them.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is corrupt, not a checkpoint, holds Python objects other than tensors and
            containers (refused, never unpickled), or holds no state dict of tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path!r}')
    try:
        obj = load_state_dict(path, use_ema=use_ema, weights_only=True)
    except Exception as err:  # noqa: BLE001  (any reader failure: name the file, one line)
        raise CheckpointError(f'refusing to load {path}: not a loadable checkpoint ({load_failure_reason(err)})') \
            from None
    try:
        return unwrap_state_dict(obj, use_ema=use_ema)
    except TypeError as err:
        raise CheckpointError(f'{path}: {err}') from None


def _state_dict_form(state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """``'deploy'``, ``'train'``, or ``None`` when it cannot tell (no blocks)."""
    if any(_TRAIN_KEY.match(k) for k in state_dict):
        return 'train'
    if any(_DEPLOY_KEY.match(k) for k in state_dict):
        return 'deploy'
    return None


def _train_to_deploy(sd: Dict[str, torch.Tensor], model: 'UniRepLKNet',
                     strict: bool) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Load a training-form state dict into a training-form twin of ``model``, re-parameterize the twin and take
    its weights. The twin is built on ``meta`` (no random init) when every tensor comes from the file."""
    model_sd = model.state_dict()
    twin = type(model)(**model._arch_args, device='meta' if strict else None)
    twin_sd, report = adapt_state_dict(sd, twin, adapt_in_chans=True, strict=strict)
    _check_fits(twin_sd, twin, strict)
    twin.load_state_dict(twin_sd, strict=strict, assign=strict)
    twin.eval()
    twin.reparameterize()
    out = twin.state_dict()
    for k in list(out):
        if k in report['kept_from_model'] or out[k].is_meta:
            if k in model_sd:
                out[k] = model_sd[k]
            else:
                del out[k]
    report['converted'] = 'train->deploy'
    return out, report


def adapt_state_dict(
        state_dict: Mapping[str, torch.Tensor],
        model: 'UniRepLKNet',
        adapt_in_chans: bool = True,
        strict: bool = True,
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Bring a released-layout state dict to ``model``'s exact key set.

    Handles the older deploy layout, input-channel adaptation, head/norm size or presence differences,
    missing ``num_batches_tracked`` and training -> deploy conversion. Returns the new dict and a report
    (see :func:`load_checkpoint`).

    Raises:
        CheckpointError: a deploy-form state dict for a training-form model.
    """
    sd = unwrap_state_dict(state_dict)
    model_sd = model.state_dict()
    report: Dict[str, Any] = dict(adapted_in_chans=None, dropped=[], kept_from_model=[], renamed=[], converted=None)

    file_form = _state_dict_form(sd)
    model_form = 'deploy' if model.deploy else 'train'
    if file_form == 'deploy' and model_form == 'train':
        raise CheckpointError(
            'the checkpoint is in deploy (re-parameterized) form but the model is in training form; '
            'build the model with deploy=True to load it')
    if file_form == 'train' and model_form == 'deploy':
        return _train_to_deploy(sd, model, strict)

    if file_form == 'deploy':  # older deploy layout: dwconv.{weight,bias} for every kernel size
        for k in list(sd):
            m = _OLD_DEPLOY_DWCONV.match(k)
            if m and k not in model_sd and f'{m.group(1)}.lk_origin.{m.group(2)}' in model_sd:
                new_k = f'{m.group(1)}.lk_origin.{m.group(2)}'
                sd[new_k] = sd.pop(k)
                report['renamed'].append((k, new_k))

    if _STEM_KEY in sd and _STEM_KEY in model_sd:
        w, target = sd[_STEM_KEY], model_sd[_STEM_KEY]
        if adapt_in_chans and w.ndim == 4 and w.shape[1] != target.shape[1]:
            sd[_STEM_KEY] = adapt_input_conv(target.shape[1], w, base_chans=w.shape[1])
            report['adapted_in_chans'] = (int(w.shape[1]), int(target.shape[1]))

    # classifier / final norm / dense norms: drop what the model lacks or sizes differently, keep the model's own
    for k in list(sd):
        if _HEAD_KEYS.match(k) and (k not in model_sd or sd[k].shape != model_sd[k].shape):
            del sd[k]
            report['dropped'].append(k)
    for k in model_sd:
        if _HEAD_KEYS.match(k) and k not in sd:
            sd[k] = model_sd[k]
            report['kept_from_model'].append(k)

    # num_batches_tracked is optional in the files
    for k in model_sd:
        if k.endswith('num_batches_tracked') and k not in sd:
            sd[k] = model_sd[k]
    for k in list(sd):
        if k.endswith('num_batches_tracked') and k not in model_sd:
            del sd[k]
    return sd, report


def _check_fits(state_dict: Mapping[str, torch.Tensor], model: nn.Module, strict: bool) -> None:
    problem = state_dict_mismatch(state_dict, model.state_dict(), strict)
    if problem:
        arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture') or type(model).__name__
        raise CheckpointError(f'the weights do not fit the {arch} model (a checkpoint of another variant or '
                              f'other trunk options?): {problem}')


def log_report(report: Mapping[str, Any]) -> None:
    """Log what :func:`adapt_state_dict` changed."""
    if report.get('converted'):
        _logger.info('Converted the checkpoint %s', report['converted'])
    if report.get('renamed'):
        _logger.info('Mapped %d keys of the older deploy layout (dwconv.* -> dwconv.lk_origin.*)',
                     len(report['renamed']))
    if report.get('adapted_in_chans'):
        _logger.info('Adapted the stem conv from %d to %d input channels', *report['adapted_in_chans'])
    if report.get('dropped'):
        _logger.info('Dropped checkpoint entries the model lacks or sizes differently: %s', report['dropped'])
    if report.get('kept_from_model'):
        _logger.info('Kept the model\'s own (initial) values for entries absent from the checkpoint: %s',
                     report['kept_from_model'])


def load_checkpoint(
        model: 'UniRepLKNet',
        path_or_state_dict: Union[str, os.PathLike, Mapping[str, Any]],
        strict: bool = True,
        use_ema: bool = False,
) -> Dict[str, Any]:
    """Load a checkpoint in the released layout into ``model``.

    Accepts training or deploy form (a training-form file is re-parameterized for a deploy-form model; a
    deploy-form file needs ``deploy=True``), the older deploy layout, ``model``/``state_dict`` wrappers,
    ``module.`` prefixes and files without ``num_batches_tracked``. Adapts the stem to ``model.in_chans`` and
    drops a classifier (or final norm) the model lacks or sizes differently, keeping the model's own.

    Args:
        model: the target model.
        path_or_state_dict: ``.pth``/``.pt``/``.safetensors`` path, or a (possibly wrapped) state dict.
        strict: strict ``load_state_dict`` after adaptation.
        use_ema: prefer EMA weights when the file has them.

    Returns:
        A report: ``adapted_in_chans`` ((file, model) or None), ``dropped``, ``kept_from_model``, ``renamed``,
        ``converted`` (``'train->deploy'`` or None), ``missing_keys``, ``unexpected_keys``.

    Raises:
        CheckpointError: the file cannot be read, or its weights do not fit ``model`` (the message names the file,
            the model and the first differing keys).
    """
    source = None
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        sd = read_checkpoint(path_or_state_dict, use_ema=use_ema)
        source = os.fspath(path_or_state_dict)
        _logger.info('Loading checkpoint %s', source)
    else:
        sd = unwrap_state_dict(path_or_state_dict, use_ema=use_ema)
    try:
        sd, report = adapt_state_dict(sd, model, adapt_in_chans=True, strict=strict)
        _check_fits(sd, model, strict)
    except CheckpointError as err:
        if source is None:
            raise
        raise CheckpointError(f'{source}: {err}') from None
    result = model.load_state_dict(sd, strict=strict)
    report['missing_keys'] = list(result.missing_keys)
    report['unexpected_keys'] = list(result.unexpected_keys)
    log_report(report)
    return report
