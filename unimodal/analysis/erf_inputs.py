"""Inputs for an ERF measurement: images from a folder, noise images, or a task's data through its adapter.

Each source returns :class:`ErfInputs`: the raw batch and the adapter that turns it into the trunk's grid (the
image adapter's ImageNet normalisation for pictures; the task's own adapter, randomly initialised, for task data).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from ..config import ConfigError

_logger = logging.getLogger(__name__)

__all__ = ['ErfInputs', 'image_folder_inputs', 'noise_inputs', 'task_inputs']


@dataclass
class ErfInputs:
    """A raw batch, the adapter that makes the trunk's grid of it, and a description for reports."""

    inputs: Any
    adapter: nn.Module
    description: str
    task: Optional[str] = None


def _image_adapter() -> nn.Module:
    from ..modalities.image import ImageAdapter
    return ImageAdapter().eval()


def _check_num(num: int) -> None:
    if num < 1:
        raise ConfigError(f'the number of inputs must be >= 1, got {num}')


def image_folder_inputs(root: Union[str, Path], num: int, size: int = 224) -> ErfInputs:
    """``num`` images of a folder (searched recursively, e.g. an ImageFolder), evenly spaced over the sorted file
    list so every class folder contributes, each resized to ``size`` x ``size`` (bicubic, no crop, as published).

    Raises:
        NotADirectoryError / FileNotFoundError: ``root`` is not a folder.
        ConfigError: fewer than ``num`` images.
        DataError: an unreadable image (named).
    """
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    from ..data.images import IMAGE_EXTENSIONS, load_image
    _check_num(num)
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f'image folder {root} does not exist')
    if not root.is_dir():
        raise NotADirectoryError(f'{root} is not a folder of images')
    files = sorted(p for p in root.rglob('*') if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if len(files) < num:
        raise ConfigError(f'{root} holds {len(files)} image(s) ({", ".join(IMAGE_EXTENSIONS)}), fewer than the '
                          f'{num} requested: pass a smaller --num')
    chosen = [files[i * len(files) // num] for i in range(num)]
    batch = []
    for path in chosen:
        img = load_image(path).resize((size, size), resample=Image.Resampling.BICUBIC)
        batch.append(TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True))
    return ErfInputs(torch.stack(batch), _image_adapter(), f'{num} images of {root} at {size}x{size}')


def noise_inputs(num: int, size: int = 224, seed: int = 0) -> ErfInputs:
    """``num`` images of uniform noise in [0, 1] (``size`` x ``size``), normalised like pictures."""
    _check_num(num)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(num, 3, size, size, generator=g)
    return ErfInputs(x, _image_adapter(), f'{num} uniform-noise images at {size}x{size}')


def task_inputs(task_name: str, num: int, data: Optional[Union[str, Path]] = None,
                run_config: Optional[Any] = None, seed: int = 0) -> ErfInputs:
    """``num`` test-split samples of a task (evenly spaced, so classes are balanced) and the task's adapter.

    The data and adapter are built by the engine's own code, with the task's default settings, or with a run's
    settings (``run_config``, the config stored in its checkpoint) so the inputs match what that run's adapter
    consumes. The adapter is randomly initialised (seeded); a checkpoint's trained adapter is applied separately.

    Args:
        task_name: a built-in task (``audio``, ``point``, ``video``, ``weather``, ``image``).
        num: samples to take.
        data: the data directory (default: the task's built-in synthetic data set).
        run_config: a run's resolved :class:`~unimodal.config.RunConfig`, or ``None`` for the task defaults.
        seed: seed of the adapter's random initialisation.
    """
    from torch.utils.data import default_collate

    from ..config import resolve_run_config
    from ..engine.build import EvenSubset, build_task_datasets, data_root
    from ..modalities.base import get_adapter_class
    from ..tasks import make_task_spec, resolve_task
    _check_num(num)
    task = resolve_task(task_name)
    override = {'data': {'root': str(data) if data is not None else None}}
    if run_config is None:
        cfg = resolve_run_config({'task': task.name}, override)
    else:
        cfg = resolve_run_config(None, override, base=run_config.to_dict())
    settings = cfg.task_settings(task.name)
    root, builtin = data_root(task, settings.data)
    sets = build_task_datasets(task, settings.data, root, splits=['train', 'test'])
    spec = make_task_spec(task, settings, sets)
    test = sets['test']
    if len(test) < num:
        raise ConfigError(f'the test split of task {task_name} ({root}) has {len(test)} samples, fewer than the '
                          f'{num} requested: pass a smaller --num')
    subset = EvenSubset(test, num)
    x = default_collate([subset[i][0] for i in range(num)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter = get_adapter_class(spec.adapter)(**spec.adapter_kwargs)
    where = f'built-in {task_name} data' if builtin else str(root)
    _logger.info('ERF inputs: %d test samples of %s; adapter %s', num, where, type(adapter).__name__)
    return ErfInputs(x, adapter.eval(), f'{num} {task_name} test samples ({where}) through the {spec.adapter} '
                                        f'adapter', task=task_name)
