"""``unimodal data download`` and ``unimodal data prepare``."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Dict, Optional

from .common import UsageError


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == 'download':
        from ..data import download as dl
        if not args.name:
            for name, desc in dl.list_datasets().items():
                print(f'{name:<24} {desc}')
            return 0
        if not args.root:
            raise UsageError('unimodal data download NAME needs --root DIR')
        bar = {}

        def progress(done: int, total: Optional[int]) -> None:
            if 'bar' not in bar:
                from tqdm.auto import tqdm
                bar['bar'] = tqdm(total=total, unit='B', unit_scale=True, desc=args.name, disable=None)
            bar['bar'].n = done
            bar['bar'].refresh()
        try:
            path = dl.download_dataset(args.name, Path(args.root), url=args.url, sha256=args.sha256, progress=progress)
        except KeyError as e:
            raise UsageError(str(e).strip('"\'')) from None
        except dl.NoDirectDownloadError as e:
            raise UsageError(str(e)) from None
        finally:
            if 'bar' in bar:
                bar['bar'].close()
        print(f'{args.name} is at {path}; train with --data {path}')
        return 0
    # prepare
    from ..config import load_config_file, parse_set_overrides, resolve_run_config
    from ..engine.build import build_task_datasets, data_root
    from ..tasks import resolve_task
    cli: Dict[str, Any] = {'task': args.task}
    if args.data:
        cli['data'] = {'root': args.data}
    if args.skip_bad:
        cli.setdefault('data', {})['skip_bad'] = True
    if args.workers is not None:
        cli.setdefault('data', {})['num_workers'] = args.workers
    cfg = resolve_run_config(load_config_file(args.config) if args.config else {}, cli, parse_set_overrides(args.set))
    task = resolve_task(args.task)
    data = cfg.task_settings(task.name).data
    root, builtin = data_root(task, data)
    if builtin:
        print(f'built-in synthetic {task.name} data set: {root}')
    sets = build_task_datasets(task, data, root, splits=['train', 'val', 'test'])
    from torch.utils.data import DataLoader
    for split, ds in sets.items():
        loader = DataLoader(ds, batch_size=None, num_workers=data.num_workers)
        n = 0
        t = time.perf_counter()
        for _ in loader:
            n += 1
        report = getattr(ds, 'skip_report', None)
        skipped = f', {report.count} skipped' if report is not None else ''
        print(f'{split}: {n} samples read in {time.perf_counter() - t:.1f}s{skipped}')
    print(f'prepared {task.name} data at {root}')
    return 0
