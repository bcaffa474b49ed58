"""CPU deploy inference on PyTorch (this project's fast path) or on onnxruntime (the model's ONNX export), chosen
explicitly or, for ``auto``, by a short timed trial on the user's own input.

* :func:`export_onnx` - the model to ONNX (TorchScript-based exporter, dynamic batch axis; what ``unimodal export``
  writes).
* :class:`OrtModule` - an onnxruntime CPU session called like the module (tensor in, tensor out).
* :func:`fastest_cpu_backend` - ``'torch'`` or ``'onnxruntime'``: both timed on an example batch, interleaved,
  after checking that they agree.
* :func:`inference_backend` - the callable for a backend option (``torch`` | ``onnxruntime`` | ``auto``).

Which is faster depends on the model, the batch and the CPU (measurements: ``benchmarks/README.md``), so ``auto``
measures instead of assuming; it costs a few forward passes of each, so it runs only when asked for.
"""
from __future__ import annotations

import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import nn

__all__ = ['BACKENDS', 'export_onnx', 'OrtModule', 'fastest_cpu_backend', 'inference_backend']

_logger = logging.getLogger(__name__)

BACKENDS = ('torch', 'onnxruntime', 'auto')
# outputs of the two backends must agree this closely (relative L2) before either is timed or chosen
_AGREE = 1e-4


@contextlib.contextmanager
def _exporter_prints_to_debug_log() -> Iterator[None]:
    """Route what the exporter writes to the process's stdout into the debug log. When an export fails, torch's
    TorchScript exporter prints the whole IR graph (hundreds of lines) through C++ ``std::cout``: its log switch is
    always on (``setup_onnx_logging`` tests the function object, not its result), and Python's ``sys.stdout``
    cannot catch a C++ stream, hence the file-descriptor swap. The failure itself is raised and handled as usual."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout to guard (a closed descriptor)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors='replace')
            if text:
                _logger.debug('ONNX exporter output (%d lines): %s', text.count('\n'), text[:4000])


def export_onnx(model: nn.Module, example: Any, path: Union[str, Path], opset: int = 17,
                input_names: Sequence[str] = ('input',)) -> Path:
    """Write ``model`` (traced on ``example``: a tensor, or a tuple of tensors with one name each; batch axis
    dynamic) as ONNX to ``path``; the parent is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {n: {0: 'batch'} for n in input_names}
    dynamic['output'] = {0: 'batch'}
    with warnings.catch_warnings():
        # shape checks in adapters are constant for a given input rank: the tracer's warnings are expected
        warnings.simplefilter('ignore', category=torch.jit.TracerWarning)
        warnings.filterwarnings('ignore', category=DeprecationWarning)
        warnings.filterwarnings('ignore', message='Constant folding', category=UserWarning)  # an optimisation note
        # the TorchScript-based exporter: no onnxscript dependency, and the batch axis stays dynamic
        with _exporter_prints_to_debug_log():
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=list(input_names),
                              output_names=['output'], opset_version=opset, dynamic_axes=dynamic)
    return path


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise RuntimeError('the onnxruntime inference backend needs onnxruntime (pip install onnxruntime)') from err
    return onnxruntime


class OrtModule:
    """An onnxruntime CPU session of an ONNX file, called like the model: ``(B, ...)`` tensor in, tensor out.

    Args:
        path: the ONNX file (one input, one output, as :func:`export_onnx` writes).
        threads: intra-op threads (default: ``torch.get_num_threads()``, the same budget as PyTorch).
    """

    def __init__(self, path: Union[str, Path], threads: Optional[int] = None):
        ort = _onnxruntime()
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), so, providers=['CPUExecutionProvider'])
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f'{path}: expected an ONNX model with one input and one output, got {len(inputs)} '
                             f'and {len(outputs)}')
        self.input = inputs[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != 'cpu':
            raise ValueError(f'the onnxruntime backend runs on CPU tensors, got one on {x.device}')
        out = self.session.run(None, {self.input: x.detach().contiguous().numpy()})[0]
        return torch.from_numpy(out)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def fastest_cpu_backend(model: nn.Module, example: torch.Tensor, *, rounds: int = 3,
                        ort: Optional[OrtModule] = None, onnx_dir: Optional[Union[str, Path]] = None
                        ) -> Tuple[str, Dict[str, Any]]:
    """``('torch' | 'onnxruntime', report)``: the faster backend for ``model`` (in eval mode) on ``example``.

    Both run once to warm up and to check that they agree (relative error below 1e-4, else ``RuntimeError``), then
    ``rounds`` times interleaved; the lower median wins. Timing is process CPU time with one intra-op thread (not
    counting what other processes take from the core), wall time otherwise. The report holds the per-round
    seconds, the medians, the relative error and the ONNX path.

    Args:
        model: the model as it will run (e.g. re-parameterized), on CPU.
        example: a representative input batch (the batch size matters).
        rounds: timed calls of each backend.
        ort: an existing session of the model's export (else the model is exported into ``onnx_dir``).
        onnx_dir: where to write the export (default: a temporary directory).
    """
    if rounds < 1:
        raise ValueError(f'rounds must be >= 1, got {rounds}')
    if example.device.type != 'cpu':
        raise ValueError(f'fastest_cpu_backend compares CPU backends; the example is on {example.device}')
    if ort is None:
        folder = Path(onnx_dir) if onnx_dir is not None else Path(tempfile.mkdtemp(prefix='unimodal_onnx_'))
        ort = OrtModule(export_onnx(model, example[:1], folder / 'model.onnx'))
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    runs: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {'torch': model, 'onnxruntime': ort}
    with torch.inference_mode():
        outs = {k: f(example) for k, f in runs.items()}
        err = _rel_err(outs['onnxruntime'], outs['torch'])
        if not err < _AGREE:
            raise RuntimeError(f'onnxruntime disagrees with PyTorch on the example (relative error {err:.2e}, '
                               f'export {ort.path}): not choosing between them')
        secs: Dict[str, list] = {k: [] for k in runs}
        for _ in range(rounds):
            for k, f in runs.items():
                t = clock()
                f(example)
                secs[k].append(clock() - t)
    med = {k: statistics.median(v) for k, v in secs.items()}
    best = min(med, key=med.get)
    report = dict(seconds=secs, median_s=med, rel_err=err, onnx=str(ort.path), batch=int(example.shape[0]),
                  timer='process CPU time' if clock is time.process_time else 'wall time')
    _logger.info('inference backend trial (batch %d): torch %.1f ms, onnxruntime %.1f ms -> %s', example.shape[0],
                 1e3 * med['torch'], 1e3 * med['onnxruntime'], best)
    return best, report


def inference_backend(option: str, model: nn.Module, example: Optional[torch.Tensor] = None, *,
                      onnx_dir: Optional[Union[str, Path]] = None, rounds: int = 3
                      ) -> Tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """``(backend, callable)`` for a backend option.

    ``'torch'``: the model itself. ``'onnxruntime'``: a session of its export (``example`` gives the input shape).
    ``'auto'``: :func:`fastest_cpu_backend` on ``example``; PyTorch when onnxruntime is not installed (logged).
    Unknown options are errors.
    """
    value = str(option).strip().lower()
    if value not in BACKENDS:
        raise ValueError(f'inference backend: unknown option {option!r}; expected one of {BACKENDS}')
    if value == 'torch':
        return 'torch', model
    if example is None:
        raise ValueError(f'inference backend {value!r} needs an example input (its shape is exported and timed)')
    if value == 'auto':
        try:
            _onnxruntime()
        except RuntimeError:
            _logger.info('inference backend auto: onnxruntime is not installed, using PyTorch')
            return 'torch', model
    folder = Path(onnx_dir) if onnx_dir is not None else Path(tempfile.mkdtemp(prefix='unimodal_onnx_'))
    ort = OrtModule(export_onnx(model, example[:1], folder / 'model.onnx'))
    if value == 'onnxruntime':
        return 'onnxruntime', ort
    best, _ = fastest_cpu_backend(model, example, rounds=rounds, ort=ort)
    return best, model if best == 'torch' else ort
