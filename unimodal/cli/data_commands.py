"""``unimodal data download`` and ``unimodal data prepare``."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Dict, Optional

from .common import UsageError, _say


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
        _say(f'built-in synthetic {task.name} data set: {root}')
    sets = build_task_datasets(task, data, root, splits=['train', 'val', 'test'])
    from ..data.prepare import prepare_datasets
    rank, world = int(os.environ.get('RANK', '0')), int(os.environ.get('WORLD_SIZE', '1'))
    bars: Dict[str, Any] = {}

    def progress(split: str, done: int, total: int) -> None:
        if args.no_progress or rank != 0:
            return
        if split not in bars:
            from tqdm.auto import tqdm
            bars[split] = tqdm(total=total, desc=f'{task.name} {split}', unit='sample', leave=False, disable=None)
        bars[split].total = total
        bars[split].n = done
        bars[split].refresh()
    try:
        done = prepare_datasets(sets, workers=data.num_workers, rank=rank, world_size=world, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    for split, entry in done.items():
        report = entry['skip_report']
        skipped = f', {report["skipped"]} skipped' if report is not None else ''
        share = f' (rank {rank} of {world})' if world > 1 else ''
        _say(f'{split}: {entry["samples"]} samples read in {entry["seconds"]:.1f}s{share}{skipped}')
    _say(f'prepared {task.name} data at {root}')
    return 0
