"""The ``torchrun`` contract: process group set-up, rank helpers, exact sharding for evaluation."""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

_logger = logging.getLogger(__name__)

__all__ = ['DistInfo', 'init_distributed', 'cleanup_distributed', 'resolve_device', 'ShardSampler',
           'all_reduce_sum', 'all_gather_objects', 'broadcast_object', 'barrier']


@dataclass
class DistInfo:
    """Where this process sits in the job."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available else ``cpu``; ``cuda`` → ``cuda:<local_rank>``."""
    from ..config import ConfigError
    name = str(name or 'auto')
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name.startswith('cuda'):
        if not torch.cuda.is_available():
            raise ConfigError(f'device {name!r} requested but CUDA is not available (use --device cpu)')
        return torch.device(f'cuda:{local_rank}') if name == 'cuda' else torch.device(name)
    if name == 'cpu':
        return torch.device('cpu')
    raise ConfigError(f'unknown device {name!r}; use auto, cpu, cuda or cuda:N')


def init_distributed(device: str = 'auto') -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``): nccl on GPU, gloo on CPU."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not (dist.is_available() and dist.is_initialized()):
        backend = 'nccl' if dev.type == 'cuda' else 'gloo'
        if dev.type == 'cuda':
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        _logger.info('joined process group: rank %d of %d (%s)', rank, world_size, backend)
    elif world_size > 1:
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks (in place on a copy; float64/int64 keep counts exact)."""
    if not _active():
        return t
    out = t.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` without a process group)."""
    if not _active():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: every sample on exactly one rank, none padded or dropped.

    Shards differ in length by at most one; metric sums are reduced over ranks afterwards, so the result
    equals a single-process evaluation.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.length = length
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def get_dist_info(info: Optional[DistInfo] = None) -> DistInfo:
    return info or DistInfo()
