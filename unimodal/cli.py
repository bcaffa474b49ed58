"""The ``unimodal`` command line: train, eval, reparam, export, bench, models, tasks, data.

Exit codes: 0 success; 2 usage, config, data, checkpoint or run-directory errors, a failed write (disk full) and
NaN/inf losses or outputs (one line naming the problem, no traceback); 1 anything unexpected (with the traceback).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

__all__ = ['main', 'build_parser']

_logger = logging.getLogger('unimodal.cli')

TASK_CHOICES = 'audio, point, video, timeseries, image'


class UsageError(Exception):
    """A command-line problem reported with exit code 2."""


# ------------------------------------------------------------------------------------------------ helpers

def _setup_logging(verbose: bool = False) -> None:
    rank = int(os.environ.get('RANK', '0'))
    level = logging.DEBUG if verbose else logging.INFO
    if rank != 0:
        level = logging.WARNING
    root = logging.getLogger()
    for h in root.handlers:
        if getattr(h, '_unimodal_cli', False):
            h.stream = sys.stderr  # follow a replaced sys.stderr (repeated in-process calls)
    if not any(getattr(h, '_unimodal_cli', False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter('%(asctime)s %(levelname).1s %(name)s: %(message)s', '%H:%M:%S'))
        handler._unimodal_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger('unimodal').setLevel(level)


def _progress(enabled: bool):
    """A tqdm wrapper for the engine's progress hook (rank 0, interactive terminals only)."""
    if not enabled or int(os.environ.get('RANK', '0')) != 0:
        return None
    from tqdm.auto import tqdm

    def wrap(iterable: Iterable, desc: str = '', total: Optional[int] = None) -> Iterable:
        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, disable=None)
    return wrap


def _is_main() -> bool:
    return int(os.environ.get('RANK', '0')) == 0


def _say(*args: Any) -> None:
    if _is_main():
        print(*args)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f'{v:.4f}' if abs(v) < 1e4 else f'{v:.4g}'
    return str(v)


def _metrics_table(metrics: Dict[str, Any]) -> List[str]:
    lines = []
    for k, v in metrics.items():
        if isinstance(v, (list, dict)):
            if k == 'baselines':
                for name, m in v.items():
                    if isinstance(m, dict):
                        lines.append(f'  {"baseline " + name:<24} ' + '  '.join(f'{kk} {_fmt(vv)}' for kk, vv in m.items()))
            continue
        lines.append(f'  {k:<24} {_fmt(v)}')
    return lines


# ------------------------------------------------------------------------------------------------ parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='unimodal', description='One UniRepLKNet trunk for audio, point clouds, video, time series and images.')
    p.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    sub = p.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True

    t = sub.add_parser('train', help='train a task (or several jointly) and evaluate the best checkpoint',
                       description='Train on a task\'s data (built-in synthetic data when --data is omitted), '
                                   'select the best epoch on the validation split and evaluate it on the test split.')
    t.add_argument('--task', help=f'task name ({TASK_CHOICES}) or a comma list for joint training, e.g. audio,point')
    t.add_argument('--data', help='data set directory (default: the task\'s built-in synthetic data)')
    t.add_argument('--config', help='YAML recipe: a file, or the name of a shipped recipe (e.g. audio_speechcommands35)')
    t.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help='override a config key, e.g. --set train.lr=1e-3 (repeatable; values parsed as YAML)')
    t.add_argument('--model', help='trunk variant (unireplknet_a ... unireplknet_xl, unireplknet_test)')
    t.add_argument('--epochs', type=int)
    t.add_argument('--batch-size', type=int, help='per-process batch size')
    t.add_argument('--lr', type=float)
    t.add_argument('--device', help='auto | cpu | cuda | cuda:N')
    t.add_argument('--out', help='run directory (default runs/<task>-<timestamp>)')
    t.add_argument('--overwrite', action='store_true', help='replace the run already in --out (else refused)')
    t.add_argument('--adapter', help='adapter replacing the task\'s: registry name or path/file.py:ClassName '
                                     '(without --task the adapter class brings its own data: make_datasets(root))')
    t.add_argument('--resume', help='"auto" (the last run in --out, or the newest runs/<task>-*) or a checkpoint path')
    t.add_argument('--skip-bad', action='store_true', help='skip unreadable samples and report them in the results')
    t.add_argument('--pretrained', help='initialise the trunk: in1k | in22k | path to a released .pth')
    t.add_argument('--freeze-trunk', action='store_true', help='train adapters and heads only (trunk frozen)')
    t.add_argument('--init-from', metavar='CKPT', help='initialise the trunk from another run\'s checkpoint')
    t.add_argument('--workers', type=int, help='DataLoader worker processes')
    t.add_argument('--no-progress', action='store_true', help='no progress bars')

    e = sub.add_parser('eval', help='evaluate a checkpoint on a split',
                       description='Evaluate one task of a run checkpoint (or a released ImageNet .pth with '
                                   '--task image and an ImageFolder).')
    e.add_argument('--task', help='task to evaluate (required for joint checkpoints and released files)')
    e.add_argument('--data', help='data set directory (default: the data the run used)')
    e.add_argument('--checkpoint', required=True, help='best.pt / last.pt / reparam output / released .pth')
    e.add_argument('--split', help='split to evaluate (default: the run\'s eval.split, usually test)')
    e.add_argument('--json', help='write the results JSON here')
    e.add_argument('--batch-size', type=int)
    e.add_argument('--device', help='auto | cpu | cuda | cuda:N')
    e.add_argument('--workers', type=int)
    e.add_argument('--skip-bad', action='store_true')
    e.add_argument('--adapter', help='location of the plug-in adapter file if it moved (path/file.py:ClassName)')
    e.add_argument('--model', help='trunk variant of a released file whose name does not say it')
    e.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='config override')
    e.add_argument('--no-progress', action='store_true')

    r = sub.add_parser('reparam', help='convert a checkpoint to the deploy (re-parameterized) form',
                       description='Training form -> deploy form (same function), verified on a batch.')
    r.add_argument('checkpoint', help='run checkpoint (training form)')
    r.add_argument('out', help='output checkpoint')

    x = sub.add_parser('export', help='export a task model to ONNX (deploy form)',
                       description='Re-parameterize and export one task model; checked with onnxruntime if installed.')
    x.add_argument('checkpoint')
    x.add_argument('--format', default='onnx', choices=['onnx'])
    x.add_argument('--out', help='output file (default: <checkpoint>.onnx)')
    x.add_argument('--task', help='task of a joint checkpoint')
    x.add_argument('--opset', type=int, default=17)

    b = sub.add_parser('bench', help='speed of the trunk or a task model, training form vs deploy form',
                       description='Inference throughput (samples/s) in training form and deploy form.')
    g = b.add_mutually_exclusive_group()
    g.add_argument('--task', help='benchmark a task model on its built-in data\'s input shape')
    g.add_argument('--model', help='benchmark a bare trunk (default unireplknet_a)')
    b.add_argument('--variant', help='trunk variant for --task (default: the task\'s config)')
    b.add_argument('--device', default='auto')
    b.add_argument('--batch-size', type=int, default=8)
    b.add_argument('--input-size', type=int, default=224, help='image size for --model')
    b.add_argument('--steps', type=int, default=10)
    b.add_argument('--warmup', type=int, default=2)

    sub.add_parser('models', help='list the registered trunk variants with their parameter counts',
                   description='Registered UniRepLKNet variants (timm names) with parameter counts.')
    sub.add_parser('tasks', help='list the tasks', description='Tasks and what they train.')

    d = sub.add_parser('data', help='download or prepare data sets', description='Data set utilities.')
    dsub = d.add_subparsers(dest='data_command', metavar='ACTION')
    dsub.required = True
    dd = dsub.add_parser('download', help='download and unpack a data set with a public URL',
                         description='Download (resumable, sha256-checked) and unpack a data set.')
    dd.add_argument('name', nargs='?', help='data set name (omit to list them)')
    dd.add_argument('--root', help='destination folder')
    dd.add_argument('--url', help='mirror URL')
    dd.add_argument('--sha256', help='expected sha256 of the archive')
    dp = dsub.add_parser('prepare', help='build a task\'s data caches (or the built-in data set)',
                         description='Read every split once so caches (e.g. sampled point clouds) are written; '
                                     'without --data, write the built-in synthetic data set.')
    dp.add_argument('--task', required=True)
    dp.add_argument('--data')
    dp.add_argument('--config', help='YAML recipe: a file or a shipped recipe name')
    dp.add_argument('--set', action='append', default=[], metavar='KEY=VALUE')
    dp.add_argument('--skip-bad', action='store_true')
    dp.add_argument('--workers', type=int)
    return p


# ------------------------------------------------------------------------------------------------ commands

def _train_overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """The explicit flags of ``train`` as a config layer."""
    from .config import task_names
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
    from .config import load_config_file, parse_set_overrides, resolve_run_config, task_names
    from .engine.checkpoint import load_run_checkpoint
    from .engine.trainer import find_resume_checkpoint, train
    from .tasks import canonical_task_name

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
    builtin = [n for n in cfg.task_names if cfg.task_settings(n).data.root is None]
    if _is_main() and builtin:
        print(f'unimodal: no --data given: training {", ".join(builtin)} on the BUILT-IN SYNTHETIC data set '
              f'(pass --data DIR for the real data; `unimodal tasks` and the log say what layout is expected)',
              file=sys.stderr)
    results = train(cfg, out_dir=out, resume=resume_path, progress=_progress(not args.no_progress),
                    overwrite=args.overwrite)
    if _is_main():
        run_dir = Path(results['run_dir'])
        print(f'\nrun directory: {run_dir}')
        for name, entry in results['tasks'].items():
            print(f'{name} ({entry["dataset"]}), {entry["split"]} split, {entry["num_samples"]} samples'
                  + (f'; {entry["eval_protocol"]}' if entry.get('eval_protocol') else ''))
            for line in _metrics_table({k: v for k, v in entry['metrics'].items() if not k.endswith('_per_step')}):
                print(line)
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
    from .config import parse_set_overrides, resolve_run_config
    from .engine.checkpoint import RunCheckpoint, is_engine_checkpoint, load_checkpoint
    from .engine.distributed import cleanup_distributed, init_distributed
    from .engine.evaluate import evaluate_checkpoint, evaluate_released_image
    from .tasks import canonical_task_name

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
            from .engine.checkpoint import to_plain, write_text_atomic
            write_text_atomic(args.json, json.dumps(to_plain(result), indent=2))
            print(f'wrote {args.json}')
    return 0


def _rel_diff(a, b) -> float:
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))


def cmd_reparam(args: argparse.Namespace) -> int:
    import torch
    from .engine.checkpoint import load_run_checkpoint, save_checkpoint, to_plain
    ckpt = load_run_checkpoint(args.checkpoint)
    if ckpt.deploy:
        raise UsageError(f'{args.checkpoint} is already in deploy form')
    model, _ = ckpt.build_model()
    inputs = {n: s.example_input() for n, s in ckpt.specs.items()}
    with torch.no_grad():
        before = {n: model.task_model(n)(x) for n, x in inputs.items()}
        model.reparameterize()
        after = {n: model.task_model(n)(x) for n, x in inputs.items()}
    worst = 0.0
    for n in inputs:
        d = _rel_diff(before[n], after[n])
        worst = max(worst, d)
        print(f'{n}: max relative difference train form vs deploy form {d:.3e}')
    if worst > 1e-3:
        raise UsageError(f're-parameterization changed the outputs (max relative difference {worst:.3e}); not saved')
    out = {k: v for k, v in ckpt.raw.items() if k not in ('optimizer', 'scheduler', 'scaler', 'model_ema')}
    out.update({'model': model.state_dict(), 'model_ema': None, 'optimizer': None, 'scheduler': None,
                'scaler': None, 'model_meta': {**ckpt.meta, 'deploy': True},
                'tasks': {n: to_plain(s.to_dict()) for n, s in ckpt.specs.items()}})
    save_checkpoint(out, Path(args.out))
    n_before = sum(v.numel() for k, v in ckpt.raw['model'].items() if not k.endswith('num_batches_tracked'))
    n_after = sum(p.numel() for p in model.parameters())
    print(f'wrote {args.out} (deploy form; {n_after / 1e6:.3f}M parameters, training form {n_before / 1e6:.3f}M '
          f'state entries)')
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch
    from .engine.checkpoint import load_run_checkpoint
    ckpt = load_run_checkpoint(args.checkpoint)
    name = ckpt.task_name(args.task)
    model, _ = ckpt.build_model([name])
    if not ckpt.deploy:
        model.reparameterize()
    task_model = model.task_model(name).eval()
    x = ckpt.specs[name].example_input()
    out_path = Path(args.out or Path(args.checkpoint).with_suffix(f'.{name}.onnx'))
    with torch.no_grad():
        ref = task_model(x)
    _onnx_export(task_model, x, out_path, args.opset)
    print(f'wrote {out_path}')
    try:
        import onnxruntime as ort
    except ImportError:
        print('onnxruntime not installed: export not checked (pip install onnxruntime)')
        return 0
    sess = ort.InferenceSession(str(out_path), providers=['CPUExecutionProvider'])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    d = _rel_diff(ref, torch.from_numpy(got))
    print(f'onnxruntime vs PyTorch: max relative difference {d:.3e}')
    if d > 1e-3:
        raise UsageError(f'the ONNX model disagrees with PyTorch (max relative difference {d:.3e})')
    return 0


def _onnx_export(model, x, path: Path, opset: int) -> None:
    import torch
    kwargs = dict(input_names=['input'], output_names=['output'], opset_version=opset,
                  dynamic_axes={'input': {0: 'batch'}, 'output': {0: 'batch'}})
    path.parent.mkdir(parents=True, exist_ok=True)
    import warnings
    with warnings.catch_warnings():
        # shape checks in the adapters are constant for a given input rank: the tracer's warnings are expected
        warnings.simplefilter('ignore', category=torch.jit.TracerWarning)
        warnings.filterwarnings('ignore', category=DeprecationWarning)
        # the TorchScript-based exporter: no onnxscript dependency, and the batch axis stays dynamic
        torch.onnx.export(model, (x,), str(path), dynamo=False, **kwargs)


def _bench_loop(fn, x, steps: int, warmup: int, device) -> float:
    import torch
    with torch.no_grad():
        for _ in range(warmup):
            fn(x)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(steps):
            fn(x)
        if device.type == 'cuda':
            torch.cuda.synchronize()
    return steps * x.shape[0] / (time.perf_counter() - t)


def cmd_bench(args: argparse.Namespace) -> int:
    import torch
    from .engine.distributed import resolve_device
    device = resolve_device(args.device)
    if args.task:
        from .config import resolve_run_config
        from .engine.build import build_model, build_task_datasets, cache_dir
        from .tasks import make_task_spec, resolve_task
        task = resolve_task(args.task)
        cfg = resolve_run_config(None, {'task': task.name, **({'model': {'variant': args.variant}} if args.variant
                                                               else {})})
        settings = cfg.task_settings(task.name)
        root = task.make_builtin(cache_dir(settings.data))
        sets = build_task_datasets(task, settings.data, Path(root), splits=['train', 'val', 'test'])
        spec = make_task_spec(task, settings, sets)
        model = build_model({task.name: spec}, cfg.model).task_model(task.name)
        x = spec.example_input(args.batch_size)
        label = f'task {task.name} ({cfg.model.variant}, input {tuple(x.shape)})'
    else:
        from .models.task_model import create_trunk
        variant = args.model or 'unireplknet_a'
        model = create_trunk(variant)
        x = torch.randn(args.batch_size, 3, args.input_size, args.input_size)
        label = f'trunk {variant} (input {tuple(x.shape)})'
    model = model.to(device).eval()
    x = x.to(device)
    train_form = _bench_loop(model, x, args.steps, args.warmup, device)
    with torch.no_grad():
        ref = model(x)
        model.reparameterize()
        d = _rel_diff(ref.float(), model(x).float())
    deploy = _bench_loop(model, x, args.steps, args.warmup, device)
    print(f'{label} on {device}, batch {args.batch_size}:')
    print(f'  training form  {train_form:10.1f} samples/s')
    print(f'  deploy form    {deploy:10.1f} samples/s   (x{deploy / train_form:.2f}; max relative output '
          f'difference {d:.1e})')
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    import timm

    from .models import unireplknet  # noqa: F401  (registers the variants)
    print(f'{"model":<22} {"params (train form)":>20} {"deploy form":>12}')
    for name in timm.list_models('unireplknet*'):
        # on the meta device: shapes only, no memory and no initialisation
        n = sum(p.numel() for p in timm.create_model(name, device='meta').parameters())
        try:
            d = sum(p.numel() for p in timm.create_model(name, device='meta', deploy=True).parameters())
            dep = f'{d / 1e6:10.2f}M'
        except TypeError:
            dep = ''
        print(f'{name:<22} {n / 1e6:19.2f}M {dep:>12}')
    print('(parameters with a 1000-class head; the task models drop it and add a task head)')
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from .tasks.base import get_task, list_tasks
    for name in list_tasks():
        t = get_task(name)
        also = f' (also --task {", ".join(t.aliases)})' if t.aliases else ''
        print(f'{name:<10} {t.kind:<15} adapter {t.adapter:<10} {t.description}{also}')
    print('\nTrain one: unimodal train --task NAME (built-in data) or --data DIR (real data); '
          'several jointly: --task audio,point,timeseries')
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == 'download':
        from .data import download as dl
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
    from .config import load_config_file, parse_set_overrides, resolve_run_config
    from .engine.build import build_task_datasets, data_root
    from .tasks import resolve_task
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


_COMMANDS = {'train': cmd_train, 'eval': cmd_eval, 'reparam': cmd_reparam, 'export': cmd_export,
             'bench': cmd_bench, 'models': cmd_models, 'tasks': cmd_tasks, 'data': cmd_data}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``unimodal`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    from .config import ConfigError
    from .data.errors import DataError
    from .engine.checkpoint import CheckpointError, WriteError
    from .engine.finite import NonFiniteError
    from .modalities.base import InputShapeError
    try:
        return _COMMANDS[args.command](args) or 0
    except (UsageError, ConfigError, DataError, InputShapeError, CheckpointError, WriteError, NonFiniteError,
            FileNotFoundError, NotADirectoryError) as e:
        msg = ' '.join(str(e).split())  # one line
        if isinstance(e, FileNotFoundError) and e.filename and str(e.filename) not in msg:
            msg = f'{e.filename}: {msg}'
        print(f'unimodal {args.command}: error: {msg}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
