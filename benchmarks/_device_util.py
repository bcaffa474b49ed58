"""Shared by the device benchmarks (bench_cuda, bench_dwconv, device_runs): timing on CUDA or CPU, a time budget,
machine facts, and a JSON file that several section processes merge their results into."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results'


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], Any], device: torch.device, warmup: int = 3, iters: int = 10) -> List[float]:
    """Milliseconds of each of ``iters`` calls of ``fn`` after ``warmup`` calls: CUDA events on the current stream
    (the GPU's own time, no host-side launch gaps counted twice) or ``perf_counter`` on CPU."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(iters):
        if device.type == 'cuda':
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            out.append(1e3 * (time.perf_counter() - t))
    return out


def summary(ms: List[float]) -> Dict[str, float]:
    return dict(median_ms=statistics.median(ms), min_ms=min(ms), all_ms=[round(v, 4) for v in ms])


class Budget:
    """A section's time budget: rows are run in priority order and the rest recorded as skipped, so a section
    ends (with its JSON written) before the shell's hard ``timeout`` kills it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()


def machine(device: torch.device) -> Dict[str, Any]:
    import timm
    info: Dict[str, Any] = dict(
        python=platform.python_version(), torch=torch.__version__, timm=timm.__version__, cpu_count=os.cpu_count(),
        date=time.strftime('%Y-%m-%d %H:%M %Z'), device=str(device),
    )
    try:
        import triton
        info['triton'] = triton.__version__
    except ImportError:
        info['triton'] = None
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_count=torch.cuda.device_count(), sms=props.multi_processor_count,
                    gpu_mem_gib=round(props.total_memory / 2 ** 30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(),
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32,
                    cudnn_benchmark=torch.backends.cudnn.benchmark)
    return info


def merge_json(path: Path, key: str, value: Any) -> None:
    """Set ``key`` in the JSON object at ``path`` (created if absent), written atomically: section processes run
    one after another and each may be killed, so a file is never left half-written."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + '.tmp')
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def log(*args: Any) -> None:
    print(*args, flush=True, file=sys.stdout)


def resolve_device(name: str) -> torch.device:
    if name == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA GPU visible (use --device cpu --tiny for a dry run)')
    return torch.device(name)
