"""``unimodal predict``: the argparse wiring (:func:`add_predict_arguments`) and the command (:func:`run_predict`)."""
from __future__ import annotations

import argparse
import logging
import sys

_logger = logging.getLogger('unimodal.cli')

__all__ = ['add_predict_arguments', 'run_predict']

DESCRIPTION = ('Predict with a trained model on files: WAV/FLAC (audio), OFF/PLY/OBJ/TXT/H5 (point), MP4/AVI '
               '(video), a CSV window (timeseries: forecasts the next horizon), images (image). Folders are '
               'searched for the task\'s formats. Inputs are read as evaluation reads them (the reader\'s settings '
               'of the run). Prints a table; --json / --csv write machine-readable results.')


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``unimodal predict``."""
    p.add_argument('inputs', nargs='+', metavar='INPUT', help='files or folders')
    p.add_argument('--checkpoint', required=True, metavar='PATH',
                   help='run checkpoint (best.pt), deploy artifact folder (or its config.json / model.safetensors) '
                        'from unimodal reparam, or an .onnx export (with its .onnx.json sidecar)')
    p.add_argument('--task', help='task of a joint model')
    p.add_argument('--top-k', type=int, default=5, help='classes per input (default 5)')
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--device', default='cpu', help='cpu | cuda | cuda:N | auto (ONNX: CPU)')
    p.add_argument('--json', metavar='FILE', help='write the results as JSON (- for stdout)')
    p.add_argument('--csv', metavar='FILE', help='write the results as CSV (- for stdout)')
    p.add_argument('--skip-bad', action='store_true', help='skip unreadable files and list them (else: an error)')
    p.add_argument('--votes', type=int, default=1, help='point: rotation voting over N rotations (default 1: off)')
    p.add_argument('--clips', type=int, help='video: temporal clips per video (default: the run\'s test protocol)')
    p.add_argument('--crops', type=int, help='video: spatial crops per clip (default: the run\'s test protocol)')
    p.add_argument('--backend', choices=['torch', 'onnxruntime', 'auto'],
                   help='CPU backend of a checkpoint or artifact: torch (default), onnxruntime (its export), or auto '
                        '(the faster on the first batch, measured)')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')


def _progress(enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    def wrap(iterable, total):
        # only for long inputs, on a terminal: a short run prints its table and nothing else
        return tqdm(iterable, total=total, desc='predict', leave=False, dynamic_ncols=True, disable=None,
                    delay=1.0) if total > 1 else iterable
    return wrap


def run_predict(args: argparse.Namespace) -> int:
    from ..cli.common import UsageError
    from .predictor import Predictor
    if args.json == '-' and args.csv == '-':
        raise UsageError('--json - and --csv - both write to stdout: send one of them to a file')
    predictor = Predictor(args.checkpoint, args.task, device=args.device, batch_size=args.batch_size,
                          votes=args.votes, clips=args.clips, crops=args.crops, backend=args.backend)
    result = predictor.predict(args.inputs, top_k=args.top_k, skip_bad=args.skip_bad,
                               progress=_progress(not args.no_progress))
    to_stdout = '-' in (args.json, args.csv)
    if not to_stdout:
        print(result.table())
    elif result.skipped:
        print(f'skipped {len(result.skipped)} input(s): '
              + '; '.join(f'{s["input"]}: {s["problem"]}' for s in result.skipped), file=sys.stderr)
    if args.json:
        result.write_json(args.json)
        if args.json != '-':
            print(f'wrote {args.json}')
    if args.csv:
        result.write_csv(args.csv)
        if args.csv != '-':
            print(f'wrote {args.csv}')
    if not result.rows:
        print('unimodal predict: no input could be read', file=sys.stderr)
        return 2
    return 0
