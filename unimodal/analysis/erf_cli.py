"""``unimodal analyze erf``: compare the effective receptive fields of models (command-line handler).

Register with ``add_erf_arguments(subparser)`` and dispatch to ``run_erf(args)``; errors are raised as the CLI's
usual exceptions (``ConfigError``, ``DataError``, ``FileNotFoundError``, ``CheckpointError``) for its handler.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

DESCRIPTION = (
    'Effective receptive field (RepLKNet / UniRepLKNet papers): the gradient of the central point of the last '
    'stage\'s output with respect to the input the trunk sees, aggregated over N inputs; writes a log-scaled heat '
    'map PNG (models side by side) and the high-contribution area ratios r(t): the smallest centred square '
    'holding t of the contribution, over the input area, for t = 20, 30, 50, 99 %. Random-init models are '
    'measured in eval mode (fresh BatchNorm statistics: the identity).')

__all__ = ['DESCRIPTION', 'add_erf_arguments', 'run_erf']


def add_erf_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``unimodal analyze erf`` to ``parser``."""
    parser.add_argument('--model', action='append', default=[], metavar='NAME[:kN]',
                        help='a random-init timm model (repeatable): unireplknet_a; unireplknet_a:k3 (the same '
                             'network with kernel 3 in every block); resnet50 (its forward_features map)')
    parser.add_argument('--checkpoint', action='append', default=[], metavar='RUN/best.pt',
                        help='a trained run checkpoint (repeatable); its own adapter makes its grid')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--images', metavar='DIR', help='a folder of images (searched recursively)')
    source.add_argument('--task', help='a task\'s test data through its adapter (audio, point, video, timeseries, '
                                       'image); with a joint checkpoint it also picks the task')
    source.add_argument('--noise', action='store_true',
                        help='uniform-noise images (the default when neither --images nor --task is given and no '
                             'checkpoint names a task)')
    parser.add_argument('--data', help='data directory for --task (default: the task\'s built-in synthetic data)')
    parser.add_argument('--num', type=int, default=16, help='number of inputs (default 16)')
    parser.add_argument('--size', type=int, help='image side for --images / --noise (default 224)')
    parser.add_argument('--init', choices=('fan_in', 'model'), default='fan_in',
                        help='random-init weights: fan_in = N(0, 1/fan_in) with every residual branch on (shows what '
                             'the kernels span; default); model = the network\'s own init (the timm model\'s layer '
                             'scale 1e-6, ResNet zero-init last BN: branches nearly off, so the ERF is the stem\'s)')
    parser.add_argument('--seed', type=int, default=0, help='seed of random weights and noise (default 0)')
    parser.add_argument('--gradient', choices=('positive', 'abs'), default='positive',
                        help='keep the positive part of the gradient (published) or its magnitude')
    parser.add_argument('--device', default='auto', help='auto | cpu | cuda | cuda:N')
    parser.add_argument('--out', required=True, help='heat map PNG (several models: side by side)')
    parser.add_argument('--json', help='write the ratios and settings as JSON here')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser


def _progress(enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    def wrap(iterable, desc: str = '', total: Optional[int] = None):
        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, disable=None)
    return wrap


def _table(rows: List[Dict[str, Any]], thresholds) -> List[str]:
    width = max([len('model')] + [len(r['label']) for r in rows])
    head = f'{"model":<{width}}  ' + '  '.join(f'{f"r({t * 100:g}%)":>8}' for t in thresholds) + '  source'
    lines = [head]
    for r in rows:
        lines.append(f'{r["label"]:<{width}}  ' + '  '.join(f'{r["ratios"][t]:8.4f}' for t in thresholds)
                     + f'  {r["source"]}')
    return lines


def run_erf(args: argparse.Namespace) -> int:
    """Run ``unimodal analyze erf`` with parsed options; returns the exit code (0)."""
    from ..config import ConfigError
    from ..engine.distributed import resolve_device
    from .erf import THRESHOLDS, area_ratios
    from .erf_inputs import image_folder_inputs, noise_inputs, task_inputs
    from .erf_models import (ErfSubject, build_random_trunk, describe_trunk, load_run_task_model, measure_subjects,
                             parse_model_spec)
    from .erf_plot import save_comparison, save_heatmap

    if not args.model and not args.checkpoint:
        raise ConfigError('give at least one --model NAME[:kN] or --checkpoint RUN/best.pt')
    if args.num < 1:
        raise ConfigError(f'--num must be >= 1, got {args.num}')
    if Path(args.out).suffix.lower() != '.png':
        raise ConfigError(f'--out {args.out}: the heat map is a PNG; give a file name ending in .png')
    if args.size is not None and (args.task or (args.checkpoint and not args.images and not args.noise)):
        raise ConfigError('--size applies to --images and --noise; a task\'s adapter sets its grid size')
    if args.data and (args.images or args.noise or not (args.task or args.checkpoint)):
        raise ConfigError('--data applies to task data (--task, or a checkpoint\'s task); '
                          'for pictures use --images DIR')
    if args.size is not None and args.size < 32:
        raise ConfigError(f'--size must be >= 32 (the trunks downsample by 32), got {args.size}')
    for spec in args.model:  # before any data is read
        parse_model_spec(spec)
    device = resolve_device(args.device)
    size = args.size or 224

    # trained models first: they decide the task and its data settings
    trained = []
    task = args.task or ('image' if args.images or args.noise else None)
    for path in args.checkpoint:
        model, name, cfg = load_run_task_model(path, task)
        task = task or name
        trained.append((path, model, name, cfg))
    if args.images:
        source = image_folder_inputs(args.images, args.num, size)
    elif args.noise or task is None:
        source = noise_inputs(args.num, size, seed=args.seed)
    else:
        source = task_inputs(task, args.num, data=args.data, run_config=trained[0][3] if trained else None,
                             seed=args.seed)

    in_chans = source.adapter.out_chans
    subjects = [ErfSubject(spec, build_random_trunk(spec, in_chans, init=args.init, seed=args.seed),
                           source=f'random init ({args.init}, seed {args.seed})') for spec in args.model]
    for path, model, name, _ in trained:
        where = '/'.join(p for p in (Path(path).parent.name, Path(path).name) if p)
        subjects.append(ErfSubject(f'{where} ({name})', model.trunk, adapter=model.adapter, source=str(path)))
    maps = measure_subjects(subjects, source.inputs, source.adapter, device=device, gradient=args.gradient,
                            progress=_progress(not args.no_progress))

    rows = []
    for s in subjects:
        erf = maps[s.label]
        rows.append({'label': s.label, 'source': s.source, 'ratios': area_ratios(erf, THRESHOLDS),
                     'ratios_linear': area_ratios(erf, THRESHOLDS, log=False), 'peak': float(erf.max()),
                     'grid': s.info['grid'], **describe_trunk(s.trunk)})
    title = f'ERF: {source.description}'
    ratios = {r['label']: r['ratios'] for r in rows}
    if len(maps) == 1:
        label = next(iter(maps))
        save_heatmap(maps[label], args.out, title=label, ratios=ratios[label])
    else:
        save_comparison(maps, args.out, ratios=ratios, title=title)

    print(f'{title}; central point of the last stage, {args.gradient} gradient, eval mode')
    print('r(t): area of the smallest centred square holding t of the log10(1 + contribution), over the input area')
    for line in _table(rows, THRESHOLDS):
        print(line)
    print(f'wrote {args.out}')
    if args.json:
        report = {'inputs': source.description, 'num': args.num, 'task': source.task, 'init': args.init,
                  'seed': args.seed, 'gradient': args.gradient, 'thresholds': list(THRESHOLDS),
                  'models': [{**r, **{k: {f'{t:g}': v for t, v in r[k].items()} for k in ('ratios', 'ratios_linear')}}
                             for r in rows],
                  'heatmap': str(args.out)}
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f'.{out.name}.tmp')
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, out)
        print(f'wrote {args.json}')
    return 0
