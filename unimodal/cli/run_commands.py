"""``unimodal train`` and ``unimodal eval``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from .common import UsageError, _is_main, _metrics_table, _progress

_logger = logging.getLogger('unimodal.cli')


def _train_overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """The explicit flags of ``train`` as a config layer."""
    from ..config import task_names
    cli: Dict[str, Any] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            cli.setdefault(section, {})[key] = value

    if args.task:
        names = task_names(args.task)
        cli['task'] = names if len(names) > 1 else names[0]
    put('data', 'root', args.data)
    put('data', 'num_workers', args.workers)
    if args.skip_bad:
        put('data', 'skip_bad', True)
    put('model', 'variant', args.model)
    put('model', 'adapter_class', args.adapter)
    if args.pretrained is not None:
        flag = {'true': True, 'false': False, 'none': False}.get(args.pretrained.lower(), args.pretrained)
        put('model', 'pretrained', flag)
    if args.freeze_trunk:
        put('model', 'freeze_trunk', True)
    put('model', 'init_from', args.init_from)
    put('train', 'epochs', args.epochs)
    put('train', 'batch_size', args.batch_size)
    put('train', 'lr', args.lr)
    put('train', 'device', args.device)
    return cli


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_config_file, parse_set_overrides, resolve_run_config, task_names
    from ..engine.checkpoint import load_run_checkpoint
    from ..engine.trainer import find_resume_checkpoint, train
    from ..tasks import canonical_task_name

    file_cfg = load_config_file(args.config) if args.config else {}
    cli = _train_overrides(args)
    sets = parse_set_overrides(args.set)
    out = Path(args.out) if args.out else None

    resume_path: Optional[Path] = None
    base = None
    if args.resume:
        if args.resume == 'auto':
            given = task_names(sets.get('task') or cli.get('task') or file_cfg.get('task'))
            names = [canonical_task_name(n) for n in given]
            resume_path = find_resume_checkpoint(out, '+'.join(names) if names else '*')
            if resume_path is None and given != names:  # a run directory named after the old task name
                resume_path = find_resume_checkpoint(out, '+'.join(given))
            if resume_path is None:
                _logger.info('--resume auto: no last.pt found%s; starting a new run',
                             f' in {out}' if out else ' under runs/')
        else:
            resume_path = Path(args.resume)
            if resume_path.is_dir():
                resume_path = resume_path / 'last.pt'
            if not resume_path.is_file():
                raise UsageError(f'--resume {args.resume}: no such checkpoint')
        if resume_path is not None:
            ckpt = load_run_checkpoint(resume_path)
            ckpt.check_tasks(task_names(sets.get('task') or cli.get('task') or file_cfg.get('task')))
            base = ckpt.config
            out = out or resume_path.parent
    cfg = resolve_run_config(file_cfg, cli, sets, base=base, file_origin=str(args.config or 'config file'))
    if args.print_config:
        from ..config import dump_config
        print('# the resolved config of this train command (save it and pass it back with --config FILE)')
        print(dump_config(cfg, comments=True), end='')
        return 0
    results = train(cfg, out_dir=out, resume=resume_path, progress=_progress(not args.no_progress),
                    overwrite=args.overwrite)
    if _is_main():
        run_dir = Path(results['run_dir'])
        gap = '\n' if sys.stdout.isatty() else ''  # apart from the progress bars on a terminal; none in a file
        print(f'{gap}run directory: {run_dir}')
        for name, entry in results['tasks'].items():
            print(f'{name} ({entry["dataset"]}), {entry["split"]} split, {entry["num_samples"]} samples'
                  + (f'; {entry["eval_protocol"]}' if entry.get('eval_protocol') else ''))
            for line in _metrics_table({k: v for k, v in entry['metrics'].items() if not k.endswith('_per_step')}):
                print(line)
        if results.get('tested_checkpoint') == 'last':  # eval.checkpoint: last (e.g. the audio task's defaults)
            print(f'tested the last epoch, {results.get("tested_epoch")} (checkpoint {results["checkpoint"]}); best '
                  f'validation epoch {results["best_epoch"]} (best.pt)')
        else:
            print(f'best epoch {results["best_epoch"]} (checkpoint {results["checkpoint"]})')
        print(f'results: {run_dir / "results.json"}   metrics log: {run_dir / "metrics.jsonl"}')
        if results.get('plots'):
            print('plots: ' + ', '.join(results['plots']))
        label = results['task']
        first = next(iter(results['tasks']))
        print(f'evaluate again: unimodal eval --task {first} --checkpoint {results["checkpoint"]}'
              + (f'  (joint run {label}: any of its tasks)' if len(results['tasks']) > 1 else ''))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..config import parse_set_overrides, resolve_run_config
    from ..engine.checkpoint import RunCheckpoint, is_engine_checkpoint, load_checkpoint
    from ..engine.distributed import cleanup_distributed, init_distributed
    from ..engine.evaluate import evaluate_checkpoint, evaluate_released_image
    from ..tasks import canonical_task_name

    sets = parse_set_overrides(args.set)
    flags: Dict[str, Any] = {}
    for section, key, value in (('eval', 'batch_size', args.batch_size), ('train', 'device', args.device),
                                ('data', 'num_workers', args.workers), ('data', 'skip_bad', args.skip_bad or None),
                                ('data', 'root', args.data)):
        if value is not None:
            flags.setdefault(section, {})[key] = value
    raw = load_checkpoint(Path(args.checkpoint))
    released = not is_engine_checkpoint(raw)
    if released and (args.task is None or canonical_task_name(args.task) != 'image'):
        raise UsageError(f'{args.checkpoint} is not a unimodal run checkpoint (no "format: unimodal-run" entry); '
                         f'released ImageNet .pth files are evaluated with --task image')
    if released:
        cfg = resolve_run_config(None, {**flags, 'task': 'image'}, sets)
    else:
        ckpt = RunCheckpoint.from_raw(raw, args.checkpoint)
        if args.model and args.model != ckpt.meta.get('variant'):
            raise UsageError(f'--model {args.model}: {args.checkpoint} is a run checkpoint with a '
                             f'{ckpt.meta.get("variant")} trunk (--model names the variant of released files only)')
        cfg = resolve_run_config(None, flags, sets, base=ckpt.config)
    dist_info = init_distributed(args.device or (sets.get('train') or {}).get('device') or 'auto')
    progress = _progress(not args.no_progress)
    try:
        if released:
            result = evaluate_released_image(Path(args.checkpoint), raw, cfg, split=args.split, dist_info=dist_info,
                                             progress=progress, variant=args.model)
        else:
            result = evaluate_checkpoint(ckpt, cfg, args.task, split=args.split, dist_info=dist_info,
                                         progress=progress, adapter_class=args.adapter)
    finally:
        cleanup_distributed()
    if _is_main():
        print(f'{result["task"]} | {result["dataset"]} | split {result["split"]} | {result["num_samples"]} samples')
        if result.get('eval_protocol'):
            print(f'  protocol: {result["eval_protocol"]}')
        for line in _metrics_table({k: v for k, v in result['metrics'].items() if not k.endswith('_per_step')}):
            print(line)
        if args.json:
            from ..engine.checkpoint import to_plain, write_text_atomic
            write_text_atomic(args.json, json.dumps(to_plain(result), indent=2))
            print(f'wrote {args.json}')
    return 0
