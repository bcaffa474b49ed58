"""``torchrun`` worker: joins an nccl process group (gloo on CPU), trains the trunk a few steps under
DistributedDataParallel with SyncBatchNorm and AMP, and checks that every rank ends with the same weights and
BatchNorm statistics. Rank 0 prints one JSON line.

    torchrun --standalone --nproc_per_node=2 benchmarks/ddp_check.py --device cuda --amp bf16
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _checksums(model: nn.Module) -> torch.Tensor:
    """One float64 per parameter / BN buffer: identical on every rank when the replicas agree."""
    vals = [p.detach().double().sum() for p in model.parameters()]
    vals += [b.detach().double().sum() for n, b in model.named_buffers() if 'running_' in n]
    return torch.stack(vals)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    p.add_argument('--variant', default='a')
    p.add_argument('--amp', default='bf16', choices=['bf16', 'fp16', 'none'])
    p.add_argument('--steps', type=int, default=3)
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--size', type=int, default=128)
    args = p.parse_args(argv)
    import timm
    import unimodal.models.unireplknet  # noqa: F401  (registers the factories)

    cuda = args.device == 'cuda'
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if cuda:
        torch.cuda.set_device(local_rank)
    device = torch.device(f'cuda:{local_rank}' if cuda else 'cpu')
    t0 = time.perf_counter()
    dist.init_process_group('nccl' if cuda else 'gloo', timeout=datetime.timedelta(minutes=2))
    rank, world = dist.get_rank(), dist.get_world_size()
    init_s = time.perf_counter() - t0

    torch.manual_seed(0)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    model = timm.create_model(f'unireplknet_{args.variant}', num_classes=10)
    if cuda:  # SyncBatchNorm runs on GPUs only
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device).train()
    ddp = DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == 'fp16' and cuda)
    amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(args.amp)
    g = torch.Generator(device='cpu').manual_seed(100 + rank)  # different data per rank
    losses = []
    for _ in range(args.steps):
        x = torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device)
        y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None and cuda):
            loss = F.cross_entropy(ddp(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss))

    ones = torch.ones(1, device=device)
    dist.all_reduce(ones)
    sums = _checksums(model).to(device)
    spread = sums.clone()
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    low = sums.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    max_diff = float((spread - low).abs().max())
    ok = int(ones.item()) == world and max_diff == 0.0 and all(l == l for l in losses)  # noqa: E741  (NaN check)
    if rank == 0:
        print(json.dumps(dict(ok=ok, backend=dist.get_backend(), world_size=world, all_reduce=float(ones.item()),
                              replica_checksum_max_diff=max_diff, losses=losses, amp=args.amp,
                              sync_bn=cuda, init_s=round(init_s, 2), wall_s=round(time.perf_counter() - t0, 2))),
              flush=True)
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
