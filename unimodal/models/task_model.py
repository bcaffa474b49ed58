"""One task model: modality adapter → shared UniRepLKNet trunk → shared head."""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple, Union

import timm
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..modalities.base import Adapter, get_adapter_class

_logger = logging.getLogger(__name__)

__all__ = ['TaskModel', 'create_model', 'create_trunk']


def create_trunk(variant: str = 'unireplknet_a', in_chans: int = 3, pretrained: Union[bool, str] = False,
                 **trunk_kwargs: Any) -> nn.Module:
    """Build a UniRepLKNet trunk without a classifier (``num_classes=0``).

    Args:
        variant: a registered model name (``unireplknet_a`` … ``unireplknet_xl``, ``unireplknet_test``).
        in_chans: input channels of the stem.
        pretrained: ``False``; ``True`` or a pretrained tag (``'in1k'``, ``'in22k'``) for the released weights
            (downloaded by timm); or a path to a checkpoint file in the released layout. Input channels are
            adapted and the classifier dropped as the checkpoint loader describes.
        **trunk_kwargs: passed to the model constructor (unknown names raise ``TypeError``).
    """
    from . import unireplknet  # noqa: F401  (registers the timm factories)
    if isinstance(pretrained, str) and pretrained not in ('in1k', 'in22k', 'in22k_ft_in1k_384'):
        trunk = timm.create_model(variant, in_chans=in_chans, num_classes=0, **trunk_kwargs)
        unireplknet.load_checkpoint(trunk, pretrained)
        return trunk
    if isinstance(pretrained, str):
        return timm.create_model(f'{variant}.{pretrained}', pretrained=True, in_chans=in_chans, num_classes=0,
                                 **trunk_kwargs)
    return timm.create_model(variant, pretrained=bool(pretrained), in_chans=in_chans, num_classes=0,
                             **trunk_kwargs)


class TaskModel(nn.Module):
    """Adapter → trunk → head as one module.

    Args:
        adapter: the modality adapter.
        trunk: a UniRepLKNet built with ``in_chans=adapter.out_chans`` and ``num_classes=0``.
        head: a head from :func:`unimodal.models.heads.create_head`.
        trunk_chunk: if set, the trunk processes at most this many images at once (bounded memory for
            adapters that emit many views, e.g. thousands of stations); in training each chunk is
            gradient-checkpointed so activation memory stays bounded too. In training, BatchNorm then sees
            per-chunk batch statistics (as in the published per-group processing), so chunked training is not
            bit-identical to unchunked training; evaluation is.
    """

    def __init__(self, adapter: Adapter, trunk: nn.Module, head: nn.Module, trunk_chunk: Optional[int] = None) -> None:
        super().__init__()
        self.adapter = adapter
        self.trunk = trunk
        self.head = head
        self.trunk_chunk = trunk_chunk

    def _trunk_features(self, x: torch.Tensor) -> torch.Tensor:
        def run(t: torch.Tensor) -> torch.Tensor:
            return self.trunk.forward_head(self.trunk.forward_features(t), pre_logits=True)

        if not self.trunk_chunk or x.shape[0] <= self.trunk_chunk:
            return run(x)
        outs = []
        # near-equal chunks: a lone trailing image would make training-mode BatchNorm see one value per channel
        for part in x.tensor_split(-(-x.shape[0] // self.trunk_chunk)):
            if self.training and torch.is_grad_enabled():
                outs.append(checkpoint(run, part, use_reentrant=False))
            else:
                outs.append(run(part))
        return torch.cat(outs)

    def _encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        self.adapter.check_input(x)
        if self.training:
            x = self.adapter.augment(x)
        return self.adapter(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, normed trunk features ``(B * V, F)`` of a raw batch."""
        return self._trunk_features(self._encode(x)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid, state = self._encode(x)
        features = self._trunk_features(grid)
        # a head that reads the adapter's state (the Corrformer decoder starts from the normalised window)
        out = self.head(features, state) if getattr(self.head, 'takes_state', False) else self.head(features)
        return self.adapter.decode(out, state)

    @torch.no_grad()
    def reparameterize(self) -> 'TaskModel':
        """Convert adapter and trunk to their deploy forms in place (same function)."""
        self.adapter.reparameterize()
        self.trunk.reparameterize()
        return self


def create_model(task_or_adapter: Union[str, Adapter], variant: str = 'unireplknet_a', *,
                 num_classes: Optional[int] = None, horizon: Optional[int] = None,
                 pretrained: Union[bool, str] = False, drop_path_rate: float = 0., drop_rate: float = 0.,
                 trunk_kwargs: Optional[Dict[str, Any]] = None, trunk_chunk: Optional[int] = None,
                 **adapter_kwargs: Any) -> TaskModel:
    """Build adapter → trunk → head for a modality.

    Args:
        task_or_adapter: a registered adapter/task name (``'audio'``, ``'point'``, ``'video'``, ``'timeseries'``,
            ``'image'``), an entry-point name, ``'path/file.py:ClassName'``, or an Adapter instance.
        variant: trunk model name (``unireplknet_a`` … ``unireplknet_xl``, ``unireplknet_test``).
        num_classes: classes of a classification head.
        horizon: forecast steps of a forecast head.
        pretrained: trunk initialisation (see :func:`create_trunk`).
        drop_path_rate: stochastic depth of the trunk.
        drop_rate: dropout before the head's Linear.
        trunk_kwargs: further trunk constructor options (kernel sizes, layer scale, ...).
        trunk_chunk: see :class:`TaskModel`.
        **adapter_kwargs: the adapter's own options (e.g. ``mode='mosaic'``, ``input_len=48``, ``num_series=3850``).

    Examples:
        >>> create_model('audio', variant='unireplknet_a', num_classes=35)
        >>> create_model('timeseries', input_len=48, horizon=24, num_series=3850)
    """
    if isinstance(task_or_adapter, Adapter):
        if adapter_kwargs:
            raise TypeError(f'adapter options {sorted(adapter_kwargs)} given with an already built adapter')
        adapter = task_or_adapter
    else:
        from .. import modalities  # noqa: F401  (registers the built-in adapters)
        adapter = get_adapter_class(task_or_adapter)(**adapter_kwargs)
    trunk = create_trunk(variant, in_chans=adapter.out_chans, pretrained=pretrained,
                         drop_path_rate=drop_path_rate, **(trunk_kwargs or {}))
    from ..tasks.kinds import get_kind
    head = adapter.create_head(trunk.num_features, num_classes=num_classes, horizon=horizon, drop_rate=drop_rate)
    if head is None:
        head = get_kind(adapter.head_kind).create_head(
            trunk.num_features, num_classes=num_classes, horizon=horizon, num_views=adapter.num_views,
            view_pool=adapter.view_pool, series_per_view=adapter.series_per_view, drop_rate=drop_rate,
            owner=adapter.name)
    return TaskModel(adapter, trunk, head, trunk_chunk=trunk_chunk)
