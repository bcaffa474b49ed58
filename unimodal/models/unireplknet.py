""" UniRepLKNet

A large-kernel ConvNet for universal perception, written from the published description:

* `UniRepLKNet: A Universal Perception Large-Kernel ConvNet for Audio, Video, Point Cloud, Time-Series and Image
  Recognition` - https://arxiv.org/abs/2311.15599 (CVPR 2024)
* `Scaling Up Your Kernels: Large Kernel Design in ConvNets towards Universal Representations`
  - https://arxiv.org/abs/2410.08049 (TPAMI 2025)

The module layout (and so every state-dict key) matches the public release (AILab-CVC/UniRepLKNet, Apache-2.0), so
its checkpoints load strictly, in training form or in the structurally re-parameterized deploy form.

Layout: a 2-conv stem and three conv downsamplers (``downsample_layers``), four stages of blocks (``stages``),
global average pool -> ``norm`` (LayerNorm) -> ``head``. A training-form block is::

    out = x + drop_path(gamma * BN2(Linear2(GRN(GELU(Linear1(SE(BN1(DW(x)))))))))

where ``DW`` is a Dilated Reparam Block (kernel >= 7) or a plain depthwise conv (kernel 3 / 5).
``reparameterize()`` folds every BatchNorm, the dilated branches, GRN beta and the layer scale away.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq, named_apply

from ..layers import fast_path as fast
from ..layers.dilated_reparam import DRB_BRANCHES, DilatedReparamBlock, conv_like, get_bn
from ..layers.grn import GRN
from ..layers.permute import NCHWtoNHWC, NHWCtoNCHW
from ..layers.squeeze_excite import SEBlock
from .reparam import fold_bias_through_linear, fuse_conv_bn, fuse_linear_bn, scale_linear
from .unireplknet_layout import _LAYER_DECAY_GROUPS, _MIN_DRB_KERNEL, _POOLS, DEFAULT_KERNEL_SIZES, check_arch_args
from .unireplknet_checkpoint import adapt_state_dict, load_checkpoint, log_report, read_checkpoint

__all__ = [
    'UniRepLKNet', 'UniRepLKNetBlock', 'DilatedReparamBlock', 'GRN', 'SEBlock', 'checkpoint_filter_fn',
    'load_checkpoint', 'read_checkpoint', 'DRB_BRANCHES', 'DEFAULT_KERNEL_SIZES',
]

class UniRepLKNetBlock(nn.Module):
    """One UniRepLKNet block.

    Args:
        dim: channels.
        kernel_size: depthwise kernel size: >= 7 a Dilated Reparam Block, 1/3/5 a plain depthwise conv, 0 none.
        drop_path: stochastic depth rate.
        layer_scale_init_value: initial layer scale ``gamma``; ``None`` or <= 0 disables it.
        deploy: build the deploy (re-parameterized) form.
        use_sync_bn: use SyncBatchNorm.
        ffn_factor: FFN expansion.
    """

    def __init__(
            self,
            dim: int,
            kernel_size: int,
            drop_path: float = 0.,
            layer_scale_init_value: Optional[float] = 1e-6,
            deploy: bool = False,
            use_sync_bn: bool = False,
            ffn_factor: int = 4,
    ):
        super().__init__()
        self.dim = dim
        self.kernel_size = kernel_size
        self.deploy = deploy
        if kernel_size == 0:
            self.dwconv = nn.Identity()
            self.norm = nn.Identity()
        elif kernel_size >= _MIN_DRB_KERNEL:
            self.dwconv = DilatedReparamBlock(dim, kernel_size, deploy=deploy, use_sync_bn=use_sync_bn)
            self.norm = nn.Identity() if deploy else get_bn(dim, use_sync_bn)
        elif kernel_size % 2 == 1:
            self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=deploy)
            self.norm = nn.Identity() if deploy else get_bn(dim, use_sync_bn)
        else:
            raise ValueError(f'block kernel size must be 0 or odd, got {kernel_size}')
        self.se = SEBlock(dim, dim // 4)
        ffn_dim = int(ffn_factor * dim)
        self.pwconv1 = nn.Sequential(NCHWtoNHWC(), nn.Linear(dim, ffn_dim))
        self.act = nn.Sequential(nn.GELU(), GRN(ffn_dim, use_bias=not deploy))
        if deploy:
            self.pwconv2 = nn.Sequential(nn.Linear(ffn_dim, dim), NHWCtoNCHW())
        else:
            self.pwconv2 = nn.Sequential(nn.Linear(ffn_dim, dim, bias=False), NHWCtoNCHW(), get_bn(dim, use_sync_bn))
        use_ls = (not deploy) and layer_scale_init_value is not None and layer_scale_init_value > 0
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim)) if use_ls else None
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        # not part of the state: the plain math stays available as _reference_forward (see set_fast_path); the
        # device options of the fast path are set by the trunk (UniRepLKNet(dw_backend=..., channels_last=...))
        self.fast_path = True
        self.dw_backend: Optional[str] = None
        self.channels_last: Optional[bool] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast_path:
            return fast.block_forward(self, x)
        return self._reference_forward(x)

    def _reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The plain module-by-module math (the published layout); the fast path is tested against it."""
        y = self.se(self.norm(self.dwconv(x)))
        y = self.pwconv2(self.act(self.pwconv1(y)))
        if self.gamma is not None:
            y = y * self.gamma.reshape(1, -1, 1, 1)
        return x + self.drop_path(y)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Convert this block in place to the deploy form (same function in eval mode; idempotent)."""
        if self.deploy:
            return
        # 1-2. merge the dilated branches, then fold BN1 into the depthwise conv
        if isinstance(self.dwconv, DilatedReparamBlock):
            self.dwconv.reparameterize()
            conv = self.dwconv.lk_origin
        elif isinstance(self.dwconv, nn.Conv2d):
            conv = self.dwconv
        else:
            conv = None
        if conv is not None and isinstance(self.norm, _BatchNorm):
            kernel, bias = fuse_conv_bn(conv.weight, self.norm, conv.bias)
            new_conv = conv_like(conv, kernel, bias)
            if isinstance(self.dwconv, DilatedReparamBlock):
                self.dwconv.lk_origin = new_conv
            else:
                self.dwconv = new_conv
            self.norm = nn.Identity()
        # 3. GRN beta through Linear2; 4. BN2 and layer scale into Linear2
        grn = self.act[1]
        linear = self.pwconv2[0]
        bias = linear.bias
        if grn.beta is not None:
            bias = fold_bias_through_linear(linear.weight, bias, grn.beta)
        weight, bias = fuse_linear_bn(linear.weight, bias, self.pwconv2[2])
        if self.gamma is not None:
            weight, bias = scale_linear(weight, bias, self.gamma)
        new_linear = nn.Linear(linear.in_features, linear.out_features, device=weight.device, dtype=weight.dtype)
        new_linear.weight.copy_(weight)
        new_linear.bias.copy_(bias)
        grn.beta = None
        self.pwconv2 = nn.Sequential(new_linear, NHWCtoNCHW())
        self.gamma = None
        self.deploy = True


class UniRepLKNet(nn.Module):
    """UniRepLKNet trunk.

    Args:
        in_chans: input channels.
        num_classes: classifier size; 0 leaves ``head`` an Identity (``norm`` stays).
        depths: blocks per stage.
        dims: channels per stage.
        kernel_sizes: per-block kernel sizes (a sequence or one int per stage); ``None``: published for the depths.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        layer_scale_init_value: initial layer scale (``None``/0 disables it).
        head_init_scale: scale of the initial classifier weights.
        weight_init: ``'trunc_normal'`` (published: conv / linear weights ~ truncated N(0, .02²); it leaves a narrow
            trunk's branches near zero and linear) or ``'fan_in'`` (std ``1/sqrt(fan_in)``: each layer keeps its scale).
        global_pool: ``'avg'``, ``'max'`` or ``'avgmax'``.
        stem_stride: 4 (published) or 2 (the first stem conv at stride 1: stages at twice the resolution, ~4x compute).
        deploy: build the re-parameterized (inference) form directly.
        use_sync_bn: SyncBatchNorm instead of BatchNorm2d.
        dense_norms: add ``norm0`` .. ``norm3`` (LayerNorms on the stage outputs of ``forward_intermediates`` /
            ``features_only``), the layout of the dense-task checkpoints.
        dw_backend: the fast path's depthwise conv kernel on CUDA: ``'cudnn'``, ``'triton'`` or ``'auto'`` (the
            measured per-shape table, see :mod:`unimodal.layers.dwconv`); ``None`` reads ``$UNIMODAL_DWCONV`` at
            run time (default auto). Other devices always use ``F.conv2d``.
        channels_last: the fast path's memory layout; ``None`` decides per device (CPU channels-last, CUDA what
            the recorded table measured faster, else NCHW; see :func:`unimodal.layers.fast_path.channels_last`).
        device: device to build on (e.g. ``'meta'``).
        dtype: parameter dtype.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            depths: Sequence[int] = (3, 3, 27, 3),
            dims: Sequence[int] = (96, 192, 384, 768),
            kernel_sizes: Optional[Sequence[Union[int, Sequence[int]]]] = None,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            layer_scale_init_value: Optional[float] = 1e-6,
            head_init_scale: float = 1.,
            global_pool: str = 'avg',
            deploy: bool = False,
            use_sync_bn: bool = False,
            dense_norms: bool = False,
            dw_backend: Optional[str] = None,
            channels_last: Optional[bool] = None,
            device: Optional[Union[str, torch.device]] = None,
            dtype: Optional[torch.dtype] = None,
            weight_init: str = 'trunc_normal',
            stem_stride: int = 4,
            **kwargs: Any,
    ):
        super().__init__()
        depths, dims, kernel_sizes = check_arch_args(
            kwargs, depths=depths, dims=dims, kernel_sizes=kernel_sizes, drop_rate=drop_rate,
            drop_path_rate=drop_path_rate, layer_scale_init_value=layer_scale_init_value,
            head_init_scale=head_init_scale, global_pool=global_pool, weight_init=weight_init, stem_stride=stem_stride)

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.dims = dims
        self.depths = depths
        self.kernel_sizes = kernel_sizes
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = dims[-1]
        self.grad_checkpointing = False
        self.fast_path = True
        # what a fresh copy of this architecture needs (checkpoint conversion builds a training-form twin)
        self._arch_args = dict(
            in_chans=in_chans, num_classes=num_classes, depths=depths, dims=dims, kernel_sizes=kernel_sizes,
            layer_scale_init_value=layer_scale_init_value, global_pool=global_pool, use_sync_bn=use_sync_bn,
            dense_norms=dense_norms, stem_stride=stem_stride,
        )

        ctx = torch.device(device) if device is not None else contextlib.nullcontext()
        with ctx:
            self.downsample_layers = nn.ModuleList()
            self.downsample_layers.append(nn.Sequential(
                nn.Conv2d(in_chans, dims[0] // 2, kernel_size=3, stride=stem_stride // 2, padding=1),
                LayerNorm2d(dims[0] // 2, eps=1e-6),
                nn.GELU(),
                nn.Conv2d(dims[0] // 2, dims[0], kernel_size=3, stride=2, padding=1),
                LayerNorm2d(dims[0], eps=1e-6),
            ))
            for i in range(3):
                self.downsample_layers.append(nn.Sequential(
                    nn.Conv2d(dims[i], dims[i + 1], kernel_size=3, stride=2, padding=1),
                    LayerNorm2d(dims[i + 1], eps=1e-6),
                ))

            dp_rates = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
            self.stages = nn.ModuleList()
            self.feature_info = []
            cur = 0
            for i in range(4):
                self.stages.append(nn.Sequential(*[
                    UniRepLKNetBlock(
                        dims[i], kernel_sizes[i][j], drop_path=dp_rates[cur + j],
                        layer_scale_init_value=layer_scale_init_value, deploy=deploy, use_sync_bn=use_sync_bn)
                    for j in range(depths[i])
                ]))
                cur += depths[i]
                self.feature_info.append(dict(num_chs=dims[i], reduction=stem_stride * 2 ** i, module=f'stages.{i}'))

            self.dense_norms = dense_norms
            if dense_norms:
                for i in range(4):
                    self.add_module(f'norm{i}', LayerNorm2d(dims[i], eps=1e-6))

            self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
            self.head_drop = nn.Dropout(drop_rate)
            self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()

            if torch.device(device or 'cpu').type != 'meta':  # nothing to initialise on meta
                named_apply(lambda module, name='': _init_weights(module, name, head_init_scale, weight_init), self)
        self.set_device_options(dw_backend, channels_last)
        if dtype is not None:
            self.to(dtype=dtype)

    @property
    def deploy(self) -> bool:
        """True when every block is in the re-parameterized form."""
        return all(b.deploy for s in self.stages for b in s)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise lr decay (timm's ``create_optimizer_v2(..., layer_decay=d)`` and the
        engine's). Fine: the 14 groups of the published fine-tuning code (``get_num_layer_for_convnext``, written
        for depths (3, 3, 27, 3); see ``_LAYER_DECAY_GROUPS``), final norms and head on top. timm counts only the
        groups that hold parameters, so a shallower stage 2 gives fewer groups. Coarse: the stem, then stages."""
        if coarse:
            return dict(stem=r'^downsample_layers\.0\.', blocks=r'^(?:downsample_layers|stages)\.(\d+)')
        return dict(stem=r'^downsample_layers\.0\.', blocks=_LAYER_DECAY_GROUPS)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """GRN gamma/beta (4-D shaped, so not caught by timm's ndim <= 1 rule) and layer scales."""
        return {n for n, _ in self.named_parameters() if n.endswith(('act.1.gamma', 'act.1.beta', '.gamma'))}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Enable or disable activation checkpointing of the blocks."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The classifier module."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0``: Identity; ``norm`` is kept)."""
        if global_pool is not None:
            if global_pool not in _POOLS:
                raise ValueError(f'global_pool must be one of {", ".join(_POOLS)}, got {global_pool!r}')
            self.global_pool = global_pool
        self.num_classes = num_classes
        self._arch_args['num_classes'] = num_classes
        ref = next(self.parameters())
        if num_classes > 0:
            self.head = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            _init_weights(self.head, 'head')
        else:
            self.head = nn.Identity()

    def set_fast_path(self, enable: bool = True) -> None:
        """Use the fast implementation (default) or the plain module-by-module reference math: the same function
        (tests hold them within fp32 rounding, outputs and gradients), both returning contiguous NCHW maps."""
        self.fast_path = enable
        for stage in self.stages:
            for block in stage:
                block.fast_path = enable

    def set_device_options(self, dw_backend: Optional[str] = None, channels_last: Optional[bool] = None) -> None:
        """Set the fast path's ``dw_backend`` and ``channels_last`` (see the class arguments) on the trunk and
        every block."""
        dw_backend = fast.check_options(dw_backend, channels_last)
        self.dw_backend, self.channels_last = dw_backend, channels_last
        for stage in self.stages:
            for block in stage:
                block.dw_backend, block.channels_last = dw_backend, channels_last

    def reparameterize(self) -> None:
        """Convert the whole model in place to the deploy form (identical function in eval mode)."""
        for stage in self.stages:
            for block in stage:
                block.reparameterize()

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool == 'avg':
            return x.mean((2, 3))
        if self.global_pool == 'max':
            return x.amax((2, 3))
        return 0.5 * (x.mean((2, 3)) + x.amax((2, 3)))  # avgmax

    def _stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.fast_path:  # one layout throughout (CPU: channels-last, oneDNN's depthwise conv is far faster on it)
            cl = fast.channels_last(self.channels_last, x)
            x = x.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
        if i == 0 and self.fast_path and fast.chunked_stem_applies(self.downsample_layers[0], x):
            x = fast.chunked_stem(self.downsample_layers[0], x)
        else:
            x = self.downsample_layers[i](x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages[i], x)
        return self.stages[i](x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward returning stage outputs (strides 4, 8, 16, 32; half those with ``stem_stride=2``).

        Args:
            x: input ``(B, C, H, W)``.
            indices: last n stages if int, all if None, else the stage indices to return.
            norm: without ``dense_norms``, apply the final ``norm`` (channel-wise) to the last stage's map.
            stop_early: stop after the last requested stage.
            output_fmt: only ``'NCHW'``.
            intermediates_only: return only the list of maps.

        Returns:
            The maps (each through ``norm{i}`` when the model has ``dense_norms``), or ``(final map, maps)``.
        """
        if output_fmt != 'NCHW':
            raise ValueError('output_fmt must be NCHW')
        n = len(self.stages)
        take_indices, max_index = feature_take_indices(n, indices)
        last = max_index if stop_early else n - 1
        intermediates = []
        for i in range(last + 1):
            x = self._stage(i, x)
            if i in take_indices:
                if self.dense_norms:
                    intermediates.append(getattr(self, f'norm{i}')(x).contiguous())
                elif norm and i == n - 1 and isinstance(self.norm, nn.LayerNorm):
                    intermediates.append(self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous())
                else:
                    intermediates.append(x.contiguous())
        if intermediates_only:
            return intermediates
        return x.contiguous(), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop stages (and norm/head) not needed for the requested intermediates."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        self.downsample_layers = self.downsample_layers[:max_index + 1]
        if self.dense_norms:
            for i in range(max_index + 1, 4):
                if hasattr(self, f'norm{i}'):
                    delattr(self, f'norm{i}')
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_end:
            self.num_features = self.head_hidden_size = self.dims[max_index]
        if prune_head or prune_end:
            self.reset_classifier(0)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Un-pooled last-stage map ``(B, C3, H/32, W/32)``."""
        for i in range(len(self.stages)):
            x = self._stage(i, x)
        return x.contiguous()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool -> ``norm`` -> (unless ``pre_logits``) dropout -> ``head``."""
        x = self.norm(self._pool(x))
        if pre_logits:
            return x
        return self.head(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module, name: str = '', head_init_scale: float = 1.,
                  weight_init: str = 'trunc_normal') -> None:
    """Truncated normal Conv2d/Linear weights (timm's cut at ±2; std .02, or ``1/sqrt(fan_in)`` with
    ``weight_init='fan_in'``), zero biases; the classifier scaled by head_init_scale."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        std = module.weight[0].numel() ** -0.5 if weight_init == 'fan_in' else .02
        trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
        if name == 'head' and head_init_scale != 1.:
            with torch.no_grad():
                module.weight.mul_(head_init_scale)
                module.bias.mul_(head_init_scale)


# ----- checkpoint filter (reading and layout adaptation: unireplknet_checkpoint.py) -----

def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: UniRepLKNet) -> Dict[str, torch.Tensor]:
    """timm ``pretrained_filter_fn`` / ``load_checkpoint(filter_fn=...)``: released-layout state dict ->
    ``model``'s keys (see :func:`unimodal.models.unireplknet_checkpoint.adapt_state_dict`).

    Input-channel adaptation is left to timm's ``load_pretrained`` (it knows the source channels from the
    pretrained cfg), except when converting a training-form file for a deploy-form model.
    """
    sd, report = adapt_state_dict(state_dict, model, adapt_in_chans=False)
    log_report(report)
    return sd


# ----- factories and pretrained cfgs -----

def _create_unireplknet(variant: str, pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    out_indices = kwargs.pop('out_indices', (0, 1, 2, 3))
    return build_model_with_cfg(
        UniRepLKNet, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
        **kwargs,
    )


_HF_HUB_ID = 'DingXiaoH/UniRepLKNet'


def _cfg(file: Optional[str] = None, **kwargs: Any) -> Dict[str, Any]:
    return {
        'url': '',
        'hf_hub_id': _HF_HUB_ID if file else None,
        'hf_hub_filename': file,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'downsample_layers.0.0', 'classifier': 'head',
        'license': 'apache-2.0', 'paper_ids': 'arXiv:2311.15599',
        **kwargs,
    }


def _cfg_384(file: str) -> Dict[str, Any]:
    return _cfg(file, input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0, crop_mode='squash')


def _cfg_22k(file: str, size: int = 224) -> Dict[str, Any]:
    return _cfg(file, num_classes=21841, input_size=(3, size, size), pool_size=(size // 32, size // 32))


default_cfgs = generate_default_cfgs({
    'unireplknet_a.in1k': _cfg('unireplknet_a_in1k_224_acc77.03.pth'),
    'unireplknet_f.in1k': _cfg('unireplknet_f_in1k_224_acc78.58.pth'),
    'unireplknet_p.in1k': _cfg('unireplknet_p_in1k_224_acc80.23.pth'),
    'unireplknet_n.in1k': _cfg('unireplknet_n_in1k_224_acc81.64.pth'),
    'unireplknet_t.in1k': _cfg('unireplknet_t_in1k_224_acc83.21.pth'),
    'unireplknet_s.in1k': _cfg('unireplknet_s_in1k_224_acc83.91.pth'),
    'unireplknet_s.in22k_ft_in1k_384': _cfg_384('unireplknet_s_in22k_to_in1k_384_acc86.44.pth'),
    'unireplknet_s.in22k': _cfg_22k('unireplknet_s_in22k_pretrain.pth'),
    'unireplknet_b.in22k_ft_in1k_384': _cfg_384('unireplknet_b_in22k_to_in1k_384_acc87.40.pth'),
    'unireplknet_b.in22k': _cfg_22k('unireplknet_b_in22k_pretrain.pth'),
    'unireplknet_l.in22k_ft_in1k_384': _cfg_384('unireplknet_l_in22k_to_in1k_384_acc87.88.pth'),
    'unireplknet_l.in22k': _cfg_22k('unireplknet_l_in22k_pretrain.pth', size=192),
    'unireplknet_xl.in22k_ft_in1k_384': _cfg_384('unireplknet_xl_in22k_to_in1k_384_acc87.96.pth'),
    'unireplknet_xl.in22k': _cfg_22k('unireplknet_xl_in22k_pretrain.pth', size=192),
    'unireplknet_test': _cfg(input_size=(3, 64, 64), pool_size=(2, 2)),
    'unireplknet_test_k17': _cfg(input_size=(3, 64, 64), pool_size=(2, 2)),
})


def _variant(variant: str, pretrained: bool, depths, dims, kwargs: Dict[str, Any]) -> UniRepLKNet:
    return _create_unireplknet(variant, pretrained=pretrained, **dict(dict(depths=depths, dims=dims), **kwargs))


@register_model
def unireplknet_a(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-A (4.4M deploy params)."""
    return _variant('unireplknet_a', pretrained, (2, 2, 6, 2), (40, 80, 160, 320), kwargs)


@register_model
def unireplknet_f(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-F (6.2M)."""
    return _variant('unireplknet_f', pretrained, (2, 2, 6, 2), (48, 96, 192, 384), kwargs)


@register_model
def unireplknet_p(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-P (10.7M)."""
    return _variant('unireplknet_p', pretrained, (2, 2, 6, 2), (64, 128, 256, 512), kwargs)


@register_model
def unireplknet_n(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-N (18.3M)."""
    return _variant('unireplknet_n', pretrained, (2, 2, 8, 2), (80, 160, 320, 640), kwargs)


@register_model
def unireplknet_t(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-T (31.0M)."""
    return _variant('unireplknet_t', pretrained, (3, 3, 18, 3), (80, 160, 320, 640), kwargs)


@register_model
def unireplknet_s(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-S (55.6M)."""
    return _variant('unireplknet_s', pretrained, (3, 3, 27, 3), (96, 192, 384, 768), kwargs)


@register_model
def unireplknet_b(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-B (98.0M)."""
    return _variant('unireplknet_b', pretrained, (3, 3, 27, 3), (128, 256, 512, 1024), kwargs)


@register_model
def unireplknet_l(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-L (218.5M)."""
    return _variant('unireplknet_l', pretrained, (3, 3, 27, 3), (192, 384, 768, 1536), kwargs)


@register_model
def unireplknet_xl(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-XL (386.5M)."""
    return _variant('unireplknet_xl', pretrained, (3, 3, 27, 3), (256, 512, 1024, 2048), kwargs)


@register_model
def unireplknet_test(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """Tiny test variant: depths (1, 1, 2, 1), dims (16, 32, 64, 128), kernels 3 / 13 / (7, 3) / 9."""
    kwargs.setdefault('kernel_sizes', ((3,), (13,), (7, 3), (9,)))
    return _variant('unireplknet_test', pretrained, (1, 1, 2, 1), (16, 32, 64, 128), kwargs)


@register_model
def unireplknet_test_k17(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """Tiny test variant with the larger reparam kernels: 5 / 17 / (15, 11) / 13 (plus a kernel-3 block)."""
    kwargs.setdefault('kernel_sizes', ((5,), (17,), (15, 11), (13, 3)))
    return _variant('unireplknet_test_k17', pretrained, (1, 1, 2, 2), (16, 32, 64, 128), kwargs)
