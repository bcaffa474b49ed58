"""Image classification task: ImageNet-style ImageFolder data, or the built-in synthetic pattern set.

Also :func:`load_released_classifier`, which loads a released ImageNet ``.pth`` (classifier included) into an
image :class:`~unimodal.models.task_model.TaskModel` so it reproduces the released model's logits.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Union

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.images import READER_DEFAULTS_FILE, ImageFolderDataset, make_builtin_images
from .base import Task, register_task, with_from_scratch_defaults
from .catalog import TASK_INFO

if TYPE_CHECKING:  # pragma: no cover
    from ..config.schema import TaskSettings

_logger = logging.getLogger(__name__)

__all__ = ['ImageTask', 'load_released_classifier']

# Reader options accepted under data.options (anything else is an error).
_READER_OPTIONS = ('image_size', 'crop_pct', 'interpolation', 'crop_mode', 'pretrained_cfg', 'train_scale',
                   'train_ratio', 'verify', 'seed')


@register_task
class ImageTask(Task):
    """Image classification (ImageNet ImageFolder layout; evaluates the released checkpoints)."""

    name = 'image'
    adapter = 'image'
    kind = 'classification'
    description = TASK_INFO['image'].description
    real_data = TASK_INFO['image'].real_data

    # No reader sizes here: this config also evaluates released checkpoints on ImageNet (reader defaults 224 /
    # crop_pct 0.875); the built-in set carries its own reader defaults (reader_defaults.json: small images, no
    # centre crop). Measured on the built-in textures (benchmarks/README.md).
    default_reasons = {
        'model.adapter.hflip': 'random horizontal flips in training: the textures have no handedness',
        'model.trunk.weight_init': 'fan-in: with the published std .02 the tiny trunk\'s branches start near zero and '
                                   'nearly linear, and it sat at chance for 2-3+ epochs',
        'model.trunk.stem_stride': 'stride 2: the small images\' detail reaches the blocks (test 57.8 -> 71.4 %, '
                                   '3 seeds, twice the time); dropped when trunk weights are loaded',
        'train.label_smoothing': '0.1 on the 6 small classes (the published ImageNet recipes use 0.1 too)',
        'train.epochs': 'a short demo budget; 12 / 20 epochs test 80.0 / 81.9 % (3 seeds) where 6 test 71.4 %',
        'train.lr': 'a tiny set takes few steps an epoch; 2e-3 with one warm-up epoch leaves chance by epoch 1-2',
        'train.warmup_epochs': 'see lr',
    }

    def default_config(self) -> Dict[str, Any]:
        return with_from_scratch_defaults({
            'model': {'adapter': {'hflip': 0.5}, 'trunk': {'weight_init': 'fan_in', 'stem_stride': 2}},
            'train': {'epochs': 6, 'batch_size': 32, 'lr': 2e-3, 'weight_decay': 0.05, 'warmup_epochs': 1,
                      'label_smoothing': 0.1},
        })

    def make_builtin(self, cache_dir: Path) -> Path:
        return make_builtin_images(Path(cache_dir) / 'image_builtin')

    def build_datasets(self, root: Path, options: Dict[str, Any], skip_bad: bool = False,
                       splits: Optional[List[str]] = None) -> Dict[str, Dataset]:
        options = dict(options or {})
        unknown = sorted(set(options) - set(_READER_OPTIONS))
        if unknown:
            raise TypeError(f'unknown image data option(s) {unknown}; known: {", ".join(_READER_OPTIONS)}')
        root = Path(root)
        defaults_file = root / READER_DEFAULTS_FILE
        if defaults_file.is_file():
            # A data set that declares its reader defaults (the built-in set); explicit options win.
            declared = json.loads(defaults_file.read_text())
            options = {**{k: v for k, v in declared.items() if k in _READER_OPTIONS}, **options}
        splits = list(splits or ('train', 'val', 'test'))
        train_dir = root / 'train'
        eval_dir = root / 'val'
        if not train_dir.is_dir() and not eval_dir.is_dir():
            raise FileNotFoundError(f'{root}: not an ImageFolder data set (no train/ or val/ folder). '
                                    f'Expected layout: {self.real_data}')
        # Labels follow the training split's class list so every split agrees (ImageNet: sorted wnids).
        classes = None
        if train_dir.is_dir():
            classes = sorted(d.name for d in os.scandir(train_dir) if d.is_dir() and not d.name.startswith('.'))
        folders = {'train': train_dir, 'val': eval_dir,
                   'test': root / 'test' if (root / 'test').is_dir() else eval_dir}
        out: Dict[str, Dataset] = {}
        for split in splits:
            if split not in folders:
                raise ValueError(f'unknown split {split!r}; expected train, val or test')
            if split == 'test' and folders['test'] == eval_dir:
                _logger.info('%s has no test/ folder: the test split is val/ (as usual for ImageNet)', root)
            out[split] = ImageFolderDataset(folders[split], train=(split == 'train'), classes=classes,
                                            skip_bad=skip_bad, **options)
        return out

    def model_kwargs(self, settings: 'TaskSettings', train_set: Dataset) -> Dict[str, Any]:
        return {'num_classes': len(train_set.classes)}

    def eval_views(self, dataset: Dataset) -> Optional[str]:
        size = getattr(dataset, 'image_size', None)
        crop = getattr(dataset, 'crop_pct', None)
        if getattr(dataset, 'crop_mode', 'center') == 'squash':
            return f'single view warped to {size}x{size} (crop_pct {crop})' if size else None
        return f'single centre crop {size} (crop_pct {crop})' if size else None


def load_released_classifier(task_model: nn.Module, path: Union[str, os.PathLike, Mapping[str, Any]],
                             use_ema: bool = False, source: Optional[str] = None) -> Dict[str, Any]:
    """Load a released ImageNet checkpoint (trunk + classifier) into an image task model.

    The released classifier is ``pool → norm → head``; the task model computes
    ``trunk.forward_head(pre_logits=True)`` (= ``pool → norm``, loaded with the trunk) and then its shared
    :class:`~unimodal.models.heads.ClassificationHead` (``LayerNorm → dropout → fc``). To reproduce the released
    logits exactly, the head's extra LayerNorm is replaced by ``nn.Identity`` (the released model has no
    second norm) and the released ``head.{weight,bias}`` become ``head.fc``.

    Args:
        task_model: from ``create_model('image', variant=..., num_classes=N)`` with ``N`` the checkpoint's
            classes (1000 for ImageNet-1K); training or deploy (re-parameterized) form.
        path: a ``.pth``/``.pt``/``.safetensors`` file in the released layout (training or deploy form,
            optionally wrapped under ``model``), or such a state dict.
        use_ema: prefer EMA weights when the file has them.
        source: the file a given state dict was read from (for messages).

    Returns:
        The trunk loader's report (see :func:`unimodal.models.unireplknet.load_checkpoint`).

    Raises:
        CheckpointError: the file cannot be read; it has no ``head.weight``/``head.bias`` (a headless or
            22K-pretrain-only file should be loaded with ``create_model(..., pretrained=path)`` instead); the
            classifier size differs from ``task_model``'s; or the weights do not fit the trunk.
    """
    from ..models.unireplknet_checkpoint import CheckpointError, load_checkpoint, read_checkpoint, unwrap_state_dict
    if isinstance(path, (str, os.PathLike)):
        state_dict = read_checkpoint(path, use_ema=use_ema)
        where = os.fspath(path)
    else:
        where = source or 'state dict'
        try:
            state_dict = unwrap_state_dict(path, use_ema=use_ema)
        except TypeError as e:
            raise CheckpointError(f'{where}: {e}') from None
    head = getattr(task_model, 'head', None)
    fc = getattr(head, 'fc', None)
    if not isinstance(fc, nn.Linear):
        raise TypeError('load_released_classifier expects a classification TaskModel (head.fc a Linear)')
    missing = [k for k in ('head.weight', 'head.bias') if k not in state_dict]
    if missing:
        raise CheckpointError(f'{where}: no classifier ({", ".join(missing)} missing), so it is not a released '
                              f'ImageNet classifier; load the trunk only with create_model(..., pretrained=<file>) '
                              f'or train with --pretrained <file>')
    weight, bias = state_dict['head.weight'], state_dict['head.bias']
    if weight.dim() == 2 and weight.shape[0] == fc.out_features and weight.shape[1] != fc.in_features:
        raise CheckpointError(f'{where}: the classifier takes {weight.shape[1]} features, this model\'s trunk gives '
                              f'{fc.in_features}: a checkpoint of another variant (or other trunk options)?')
    if tuple(weight.shape) != tuple(fc.weight.shape):
        raise CheckpointError(f'{where}: classifier head.weight has shape {tuple(weight.shape)}, the model\'s '
                              f'head.fc {tuple(fc.weight.shape)}; build the model with num_classes={weight.shape[0]}')
    if getattr(head, 'num_views', 1) != 1:
        raise ValueError('released image classifiers are single-view; the model\'s head pools several views')
    try:
        report = load_checkpoint(task_model.trunk, state_dict)
    except CheckpointError as e:
        raise CheckpointError(f'{where}: {e}') from None
    if 'norm.weight' in report.get('kept_from_model', []):
        raise CheckpointError(f'{where}: no final norm (norm.weight) in the checkpoint, so the released classifier '
                         f'cannot be reproduced')
    with torch.no_grad():
        fc.weight.copy_(weight.to(fc.weight.dtype))
        fc.bias.copy_(bias.to(fc.bias.dtype))
    # The released model normalises once (trunk.norm); the shared head would normalise a second time.
    head.norm = nn.Identity()
    _logger.info('loaded the released classifier from %s (%d classes); head LayerNorm bypassed', where,
                 weight.shape[0])
    return report
