"""``unimodal reparam``, ``export``, ``bench`` and ``models``: commands about the model."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import UsageError, _rel_diff


def cmd_reparam(args: argparse.Namespace) -> int:
    """Training form -> deploy form, checked on each task's example batch; OUT a folder: the deploy artifact
    (model.safetensors, trunk.safetensors, config.json: what predict and timm load); OUT a .pt/.pth: a deploy-form
    run checkpoint (what eval loads)."""
    import torch
    from ..engine.checkpoint import load_run_checkpoint, save_checkpoint, to_plain
    ckpt = load_run_checkpoint(args.checkpoint)
    if ckpt.deploy:
        raise UsageError(f'{args.checkpoint} is already in deploy form')
    model, which = ckpt.build_model()
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
    n_before = sum(v.numel() for k, v in ckpt.raw['model'].items() if not k.endswith('num_batches_tracked'))
    n_after = sum(p.numel() for p in model.parameters())
    sizes = f'{n_after / 1e6:.3f}M parameters, training form {n_before / 1e6:.3f}M state entries'
    out_path = Path(args.out)
    if out_path.suffix in ('.pt', '.pth'):
        out = {k: v for k, v in ckpt.raw.items() if k not in ('optimizer', 'scheduler', 'scaler', 'model_ema')}
        out.update({'model': model.state_dict(), 'model_ema': None, 'optimizer': None, 'scheduler': None,
                    'scaler': None, 'model_meta': {**ckpt.meta, 'deploy': True},
                    'tasks': {n: to_plain(s.to_dict()) for n, s in ckpt.specs.items()}})
        save_checkpoint(out, out_path)
        print(f'wrote {out_path} (deploy-form run checkpoint; {sizes})')
        return 0
    from ..config import ConfigError
    from ..predict.artifact import write_artifact
    from ..predict.sources import checkpoint_inputs
    readers = {}
    for n in ckpt.specs:
        try:
            readers[n] = checkpoint_inputs(ckpt, n)
        except ConfigError as e:  # a plug-in task: the artifact holds the model, predict cannot read its files
            print(f'{n}: no input reader for predict ({e})')
            readers[n] = None
    write_artifact(out_path, model, ckpt.meta, ckpt.specs, readers,
                   {'checkpoint': str(ckpt.path), 'epoch': ckpt.raw.get('epoch'), 'weights': which})
    print(f'wrote {out_path}/ (deploy artifact: model.safetensors, trunk.safetensors, config.json; {sizes})')
    print(f'predict: unimodal predict --checkpoint {out_path} INPUT ...')
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..engine.checkpoint import load_run_checkpoint
    from ..predict.onnx_export import export_onnx, sidecar_path
    from ..predict.sources import checkpoint_inputs
    ckpt = load_run_checkpoint(args.checkpoint)
    name = ckpt.task_name(args.task)
    model, _ = ckpt.build_model([name])
    if not ckpt.deploy:
        model.reparameterize()
    out_path = Path(args.out or Path(args.checkpoint).with_suffix(f'.{name}.onnx'))
    from ..config import ConfigError
    try:
        inputs = checkpoint_inputs(ckpt, name)
    except ConfigError as e:  # a plug-in task: exported, but predict cannot read its files
        print(f'{name}: no input reader for predict ({e})')
        inputs = None
    sidecar, d = export_onnx(model.task_model(name), ckpt.specs[name], inputs, ckpt.meta, out_path, args.opset)
    print(f'wrote {out_path} and {sidecar_path(out_path)}')
    graph = sidecar['graph']['inputs'][0]
    print(f'graph input {graph["name"]} {graph["shape"]} {graph["dtype"]}; adapter in the graph: '
          f'{sidecar["adapter"]["in_graph"]}')
    if sidecar['adapter']['in_graph'] != 'whole':
        print(f'before the graph (unimodal predict applies it): {sidecar["adapter"]["before_graph"]}')
    if d is None:
        print('onnxruntime not installed: export not checked (pip install onnxruntime)')
        return 0
    print(f'onnxruntime vs PyTorch: max relative difference {d:.3e}')
    if d > 1e-3:
        raise UsageError(f'the ONNX model disagrees with PyTorch (max relative difference {d:.3e})')
    return 0


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
    from ..engine.distributed import resolve_device
    device = resolve_device(args.device)
    if args.task:
        from ..config import resolve_run_config
        from ..engine.build import build_model, build_task_datasets, cache_dir
        from ..tasks import make_task_spec, resolve_task
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
        from ..models.task_model import create_trunk
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

    from ..models import unireplknet  # noqa: F401  (registers the variants)
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

