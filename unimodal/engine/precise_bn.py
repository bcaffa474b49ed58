"""Precise BatchNorm statistics: recompute the running mean and variance of every BatchNorm on training batches
before a validation (``train.precise_bn``; as ``pycls`` / ``fvcore``'s ``update_bn_stats``).

Why: the running statistics are an exponential average (momentum 0.1) over the last ~10-20 steps, taken while the
weights changed under them. On a small set early in training the weights move fast, so the stored statistics
describe older weights and validation with them can sit at chance while the training accuracy climbs (measured on
the built-in sets: ``benchmarks/README.md``). Recomputed for the current weights, validation reflects them.

How: every BatchNorm the model trains (one left in eval mode, e.g. a frozen trunk's, is not touched) restarts its
statistics and averages them over the given batches with equal weight (``momentum=None``: PyTorch's cumulative
average), with the rest of the model in eval mode (no drop-path or dropout: the statistics of the network that is
evaluated) and without autograd. Weights are not changed; momentum and every module's mode are restored. A
BatchNorm that none of the batches reaches keeps its statistics. The variance is the mean of the per-batch
variances (as in pycls: it leaves out the spread of the batch means, negligible for batches of 16 or more).

Distributed: each rank averages its own batches, then the ranks' averages are averaged (all-reduce), so every rank
evaluates the same statistics.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .distributed import all_reduce_sum

__all__ = ['trained_batchnorms', 'recompute_bn_stats', 'round_robin_batches']


def trained_batchnorms(model: nn.Module) -> List[_BatchNorm]:
    """The BatchNorms with running statistics that ``model`` updates in training mode (its ``train()`` decides:
    a frozen trunk's stay in eval mode). Leaves the model's modes as they were."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.train()
        return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
                and m.running_mean is not None and m.running_var is not None]
    finally:
        for m, mode in modes.items():
            m.training = mode


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable[Any], forward: Callable[[Any], Any],
                       world_size: int = 1) -> Dict[str, int]:
    """Replace the running statistics of ``model``'s trained BatchNorms by their average over ``batches``.

    Args:
        model: the module whose BatchNorms are updated (e.g. the whole multi-task model, or its EMA copy).
        batches: the inputs; each is passed to ``forward`` (which runs (part of) ``model`` on it).
        forward: runs the model on one item of ``batches``; its output is discarded.
        world_size: the number of processes: > 1 averages the statistics over the ranks (every rank must call).

    Returns ``{'batches': n, 'updated': BatchNorms recomputed, 'kept': BatchNorms no batch reached}``.
    """
    bns = trained_batchnorms(model)
    if not bns:
        return {'batches': 0, 'updated': 0, 'kept': 0}
    saved = [(bn.momentum, bn.running_mean.clone(), bn.running_var.clone(),
              None if bn.num_batches_tracked is None else bn.num_batches_tracked.clone()) for bn in bns]
    modes = {m: m.training for m in model.modules()}
    n = 0
    try:
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: every batch counts the same
            bn.train()
        for item in batches:
            forward(item)
            n += 1
    except BaseException:
        for bn, (_, mean, var, count) in zip(bns, saved):
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            if count is not None:
                bn.num_batches_tracked.copy_(count)
        raise
    finally:
        for bn, (momentum, *_) in zip(bns, saved):
            bn.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    kept = 0
    for bn, (_, mean, var, count) in zip(bns, saved):
        reached = bn.num_batches_tracked is None or int(bn.num_batches_tracked) > 0
        if not reached:  # no batch went through it: its old statistics beat the reset ones
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            kept += 1
        if count is not None:
            bn.num_batches_tracked.copy_(count)  # the count of training steps, as before
    if world_size > 1:
        flat = torch.cat([torch.cat([bn.running_mean.flatten(), bn.running_var.flatten()]) for bn in bns])
        flat = all_reduce_sum(flat.double()) / world_size
        offset = 0
        for bn in bns:
            for buf in (bn.running_mean, bn.running_var):
                buf.copy_(flat[offset:offset + buf.numel()].view_as(buf).to(buf.dtype))
                offset += buf.numel()
    return {'batches': n, 'updated': len(bns) - kept, 'kept': kept}


def round_robin_batches(loaders: Dict[str, Any], num_batches: Dict[str, int],
                        set_epoch: int) -> Iterable[Tuple[str, Any]]:
    """``(task, inputs)`` pairs: up to ``num_batches[task]`` training batches of each task (at most one pass over
    its loader: more would repeat samples), the tasks taken in turn. ``set_epoch`` seeds the samplers' shuffle (the
    same on every rank). Targets are dropped."""
    iters = {}
    for name, loader in loaders.items():
        sampler = getattr(loader, 'sampler', None)
        if hasattr(sampler, 'set_epoch'):
            sampler.set_epoch(set_epoch)
        iters[name] = (iter(loader), min(num_batches[name], len(loader)))
    for i in range(max((n for _, n in iters.values()), default=0)):
        for name, (it, n) in iters.items():
            if i < n:
                x, _ = next(it)
                yield name, x
