"""The argument parser of every ``unimodal`` command."""
from __future__ import annotations

import argparse
from typing import List, Optional, Sequence, Tuple

from ..predict.cli import DESCRIPTION as PREDICT_DESCRIPTION, add_predict_arguments
from .common import TASK_CHOICES
from .threads import parse_threads

THREADS_HELP = ('intra-op CPU threads for this command and its worker processes (a positive number or auto; also '
                'before the command: unimodal --threads 2 train ...). Default auto: 1 on machines with up to 2 cores, '
                'else the cores not busy by the load average; an OMP_NUM_THREADS in the environment is kept')


class CommandParser(argparse.ArgumentParser):
    """A (sub)command's parser: an option it does not know is an error shown with its own usage, not the top-level
    one (argparse hands a subcommand's leftovers to the top-level parser)."""

    def parse_known_args(self, args: Optional[Sequence[str]] = None,
                         namespace: Optional[argparse.Namespace] = None) -> Tuple[argparse.Namespace, List[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f'unrecognized arguments: {" ".join(extras)}')
        return ns, extras


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    """``--threads`` on the top-level parser and every (nested) command, so it may stand before or after it."""
    parser.add_argument('--threads', type=parse_threads, default=argparse.SUPPRESS, metavar='N', help=THREADS_HELP)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                _add_global_options(child)


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog='unimodal', description='One UniRepLKNet trunk for audio, point clouds, video, time series and images.')
    p.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    sub = p.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True

    t = sub.add_parser('train', help='train a task (or several jointly) and evaluate it on the test split',
                       description='Train on a task\'s data (built-in synthetic data when --data is omitted) and '
                                   'evaluate on the test split the epoch eval.checkpoint names: the best on the '
                                   'validation split (best.pt; most tasks) or the last (last.pt; the audio task\'s '
                                   'defaults). Settings merge in this order, later winning: the task\'s defaults, '
                                   '--config, the flags (--lr, --epochs, ...), --set.')
    t.add_argument('--task', help=f'task name ({TASK_CHOICES}) or a comma list for joint training, e.g. audio,point')
    t.add_argument('--data', help='data set directory (default: the task\'s built-in synthetic data)')
    t.add_argument('--config', help='YAML recipe: a file or the name of a shipped recipe (e.g. audio_speechcommands35)')
    t.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help='override a config key, e.g. --set train.lr=1e-3 (repeatable; values parsed as YAML)')
    t.add_argument('--model', help='trunk variant (unireplknet_a ... unireplknet_xl, unireplknet_test)')
    t.add_argument('--epochs', type=int, help='train.epochs')
    t.add_argument('--batch-size', type=int, help='train.batch_size: per-process batch size')
    t.add_argument('--lr', type=float, help='train.lr: peak learning rate')
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
    t.add_argument('--print-config', action='store_true',
                   help='print the resolved config (YAML: defaults, --config, flags and --set merged) and exit '
                        'without training')

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
    r.add_argument('out', help='a folder: the deploy artifact (model.safetensors, trunk.safetensors, config.json) '
                               'that predict and timm load; a .pt/.pth file: a deploy-form run checkpoint')

    x = sub.add_parser('export', help='export a task model to ONNX (deploy form)',
                       description='Re-parameterize and export one task model; checked with onnxruntime if installed.')
    x.add_argument('checkpoint')
    x.add_argument('--format', default='onnx', choices=['onnx'])
    x.add_argument('--out', help='output file (default: <checkpoint>.onnx)')
    x.add_argument('--task', help='task of a joint checkpoint')
    x.add_argument('--opset', type=int, default=17)

    pr = sub.add_parser('predict', help='predict on files with a trained model', description=PREDICT_DESCRIPTION)
    add_predict_arguments(pr)

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
    ts = sub.add_parser('tasks', help='list the tasks; tasks NAME: where its data comes from and the layout',
                        description='Tasks and what they train; with a NAME (or -v for all): where the real data '
                                    'comes from, the on-disk layout --data expects, the built-in data and recipes.')
    ts.add_argument('name', nargs='?', help='a task: show its data source, expected layout and recipes')
    ts.add_argument('-v', '--verbose', dest='long', action='store_true', help='the long form of every task')
    ts.add_argument('--defaults', action='store_true',
                    help="with NAME: print the task's resolved default config (YAML), what `train --task NAME` uses")

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
    dp.add_argument('--workers', type=int, help='reader processes (default: the config\'s data.num_workers)')
    dp.add_argument('--no-progress', action='store_true', help='no progress bars')

    from ..analysis.erf_cli import DESCRIPTION as ERF_DESCRIPTION, add_erf_arguments  # argparse only: no torch
    a = sub.add_parser('analyze', help='look inside a model: erf (effective receptive field)',
                       description='Analyses of trained or random-init models.')
    asub = a.add_subparsers(dest='analyze_command', metavar='ANALYSIS')
    asub.required = True
    add_erf_arguments(asub.add_parser('erf', help='effective receptive field: heat map PNG and area ratios',
                                      description=ERF_DESCRIPTION))

    _add_global_options(p)
    return p
