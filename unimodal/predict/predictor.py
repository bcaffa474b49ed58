"""``unimodal.Predictor``: a trained model asked about new files (or tensors), batched, bad files named or skipped.

Example::

    from unimodal import Predictor
    p = Predictor('runs/audio/best.pt')                  # or a deploy artifact folder, or an .onnx export
    result = p.predict(['clip.wav', 'more_clips/'], top_k=3)
    print(result.table())
    result.rows[0]['top']                                # [{'label': 'yes', 'probability': 0.91}, ...]
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch
from torch.utils.data import default_collate

from ..config.errors import ConfigError
from ..data.errors import DataError
from ..data.inputs import batch_size as count_inputs
from ..data.inputs import to_device
from .inputs import get_input_reader, expand_inputs
from .output import Predictions
from .sources import load_model

_logger = logging.getLogger(__name__)

__all__ = ['Predictor']

#: ``progress(iterable, total) -> iterable``: a progress bar around the files (the CLI passes tqdm's)
Progress = Callable[[Iterable, int], Iterable]


class Predictor:
    """Predict with a trained model on files of the task's formats.

    Args:
        checkpoint: a run checkpoint (``best.pt``, ``last.pt``, joint or single-task, or a ``reparam`` ``.pt``), a
            deploy artifact (folder, its ``config.json`` or ``model.safetensors``) or an ONNX export (``.onnx``
            with its ``.onnx.json`` sidecar: run by onnxruntime).
        task: the task of a joint model (the error lists them when it is needed).
        device: ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'auto'`` (PyTorch models; ONNX runs on the CPU).
        batch_size: inputs per forward pass.
        votes: point task: test-time voting over this many rotations about the up axis (mean softmax,
            :func:`unimodal.modalities.point.vote_predict`); 1: a single pass (the standard evaluation).
        clips, crops: video task: temporal clips x spatial crops per video (default: the run's test protocol).

    A run evaluated with a named protocol (``eval.protocol``, e.g. the point task's ``published_8pose``) is asked the
    same way: each input's answer is the mean softmax of the protocol's predictions for it.

    Attributes:
        task, kind, classes, spec: the task, ``'classification'`` or ``'forecast'``, class names, its spec.
        settings: the input-reader settings in use (plain values).
        form: ``'checkpoint'``, ``'artifact'`` or ``'onnx'``.
    """

    def __init__(self, checkpoint: Union[str, Path], task: Optional[str] = None, *, device: str = 'cpu',
                 batch_size: int = 16, votes: int = 1, clips: Optional[int] = None,
                 crops: Optional[int] = None, backend: Optional[str] = None) -> None:
        from ..engine.distributed import resolve_device
        if batch_size < 1:
            raise ConfigError(f'batch_size must be >= 1, got {batch_size}')
        loaded = load_model(checkpoint, task)
        self.task, self.spec, self.form, self.source = loaded.task, loaded.spec, loaded.form, loaded.source
        self.kind = self.spec.kind
        self.classes: Optional[List[str]] = list(self.spec.classes) if self.spec.classes is not None else None
        self.reader = get_input_reader(self.task)
        self.settings: Dict[str, Any] = dict(loaded.inputs)
        self.batch_size = batch_size
        if votes < 1:
            raise ConfigError(f'votes must be >= 1, got {votes}')
        if votes > 1 and self.task != 'point':
            raise ConfigError(f'votes (rotation voting) applies to the point task, not {self.task}')
        self.votes = votes
        if clips is not None or crops is not None:
            if self.task != 'video':
                raise ConfigError(f'clips / crops (the multi-view protocol) apply to the video task, not {self.task}')
            for key, value in (('num_clips', clips), ('num_crops', crops)):
                if value is not None:
                    if value < 1:
                        raise ConfigError(f'{key} must be >= 1, got {value}')
                    self.settings[key] = int(value)
        self.protocol = self.settings.get('eval_protocol')
        self._protocol_fn = None
        if self.protocol is not None:  # the run's named evaluation protocol, as `unimodal eval` scores it
            if votes > 1:
                raise ConfigError(f'{checkpoint} is evaluated with eval.protocol={self.protocol}; rotation voting '
                                  f'(votes) is another protocol')
            from ..tasks import resolve_task
            self._protocol_fn = resolve_task(self.task).eval_predictor(self.protocol)
        if self.form == 'onnx':
            self.device = torch.device('cpu')
            if self.task == 'video' and loaded.model.input_rank == 5:  # exported for one view per video
                if clips is not None or crops is not None:
                    raise ConfigError(f'{checkpoint}: this ONNX export takes one view per video; clips / crops '
                                      f'need a PyTorch model (checkpoint or deploy artifact)')
                self.settings['split'] = 'val'
                _logger.info('%s: this ONNX export takes one view per video: each prediction scores the centre '
                             'clip and crop, not the %s clip(s) x %s crop(s) the run is evaluated with (a checkpoint '
                             'or deploy artifact scores them all)', checkpoint, self.settings.get('num_clips', '?'),
                             self.settings.get('num_crops', '?'))
        else:
            self.device = resolve_device(device)
        self.model = loaded.model.to(self.device).eval()
        self.backend = self._check_backend(backend, checkpoint)
        self._run = None  # the chosen backend's callable, made on the first batch (it needs an example input)

    def _check_backend(self, backend: Optional[str], checkpoint: Any) -> str:
        """The backend of the plain forward pass: the source's own unless asked (``torch|onnxruntime|auto``)."""
        from ..models.backend_select import BACKENDS
        own = 'onnxruntime' if self.form == 'onnx' else 'torch'
        if backend is None or backend == own:
            return own
        if backend not in BACKENDS:
            raise ConfigError(f'backend: unknown option {backend!r}; expected one of {", ".join(BACKENDS)}')
        if self.form == 'onnx':
            raise ConfigError(f'{checkpoint} is an ONNX export: it runs on onnxruntime only (backend {backend!r})')
        if self.device.type != 'cpu':
            raise ConfigError(f'backend {backend!r} runs on the CPU; the device is {self.device}')
        if self._protocol_fn is not None or self.votes > 1:
            raise ConfigError(f'backend {backend!r} runs one forward pass per input; the protocol '
                              f'{self.protocol or "rotation voting"} needs the PyTorch model')
        return backend

    # -------------------------------------------------------------------------------------------- tensors
    @torch.no_grad()
    def predict_tensor(self, x: Any) -> torch.Tensor:
        """Class probabilities ``(B, C)`` or forecasts ``(B, H, N)`` in the input's units, of a batch of model
        inputs (what the task's reader yields, collated)."""
        x = to_device(x, self.device)
        if self.kind == 'classification':
            if self._protocol_fn is not None:
                # several predictions per input (e.g. one per test pose), each row with its input's index: the
                # input's answer is their mean softmax
                idx = torch.arange(count_inputs(x), device=self.device)
                out, rows = self._protocol_fn(self.model, x, idx)
                probs = out.float().softmax(dim=-1).cpu()
                rows = rows.long().cpu()
                total = torch.zeros(len(idx), probs.shape[-1]).index_add_(0, rows, probs)
                return total / torch.bincount(rows, minlength=len(idx)).clamp_min(1).unsqueeze(1)
            if self.votes > 1:
                from ..modalities.point import vote_predict
                return vote_predict(self.model, x, num_votes=self.votes).float().cpu()
            return self._forward(x).float().softmax(dim=-1).cpu()
        out = self._forward(x).float().cpu()
        return self.reader.to_physical(out, self.settings) if hasattr(self.reader, 'to_physical') else out

    def _forward(self, x: Any) -> torch.Tensor:
        if self.backend == 'torch' or self.form == 'onnx':  # the source's own model
            return self.model(x)
        if self._run is None:
            from ..models.backend_select import inference_backend
            if not isinstance(x, torch.Tensor):
                raise ConfigError(f'backend {self.backend!r}: the {self.task} model takes structured inputs; '
                                  f'use backend torch, or unimodal export and predict on the .onnx file')
            self.model.reparameterize()  # the backends are compared on the deploy form
            try:
                name, self._run = inference_backend(self.backend, self.model, x)
            except (RuntimeError, ValueError) as e:
                raise ConfigError(f'backend {self.backend!r}: the {self.task} model could not run on onnxruntime '
                                  f'({" ".join(str(e).split())[:200]}); use backend torch, or unimodal export '
                                  f'and predict on the .onnx file') from None
            _logger.info('predict: backend %s (asked: %s)', name, self.backend)
            self.backend = name
        return self._run(x)

    # -------------------------------------------------------------------------------------------- files
    def load(self, path: Union[str, Path]) -> List[Any]:
        """``[(name, model input, facts)]`` of one file, read as evaluation reads it (:class:`DataError` naming the
        file when it cannot be read)."""
        path = str(path)
        try:
            return self.reader.load(path, self.settings)
        except FileNotFoundError as e:
            raise DataError(path, f'no such file ({e.strerror or e})', reason='missing') from None
        except DataError as e:
            if str(Path(e.path)) != str(Path(path)):  # a reader's error about a part: say which input it was
                raise DataError(path, f'{e.path}: {e.problem}', reason=e.reason) from None
            raise

    def predict(self, inputs: Union[str, Path, Sequence[Union[str, Path]]], *, top_k: int = 5,
                skip_bad: bool = False, progress: Optional[Progress] = None) -> Predictions:
        """Predict every file of ``inputs`` (files, or folders searched for the task's file suffixes).

        Args:
            top_k: classes per input in the result (classification).
            skip_bad: skip files that cannot be read and list them in the result's ``skipped``; without it the
                first such file raises :class:`~unimodal.data.errors.DataError` naming it.
            progress: a progress-bar wrapper around the files (``progress(iterable, total)``).
        """
        if isinstance(inputs, (str, Path)):
            inputs = [inputs]
        if top_k < 1:
            raise ConfigError(f'top_k must be >= 1, got {top_k}')
        files, missing = expand_inputs(inputs, self.reader.suffixes)
        skipped: List[Dict[str, str]] = []
        for err in missing:
            if not skip_bad:
                raise err
            skipped.append({'input': str(err.path), 'problem': err.problem})
        result = Predictions(self.task, self.kind, self.classes, source=self.source, form=self.form,
                             units=self.settings.get('units'))
        pending: List[Any] = []

        def flush() -> None:
            if pending:
                out = self.predict_tensor(default_collate([x for _, x, _ in pending]))
                for (name, _, facts), row in zip(pending, out):
                    result.add(name, row, facts, top_k)
                pending.clear()

        iterable: Iterable = files if progress is None else progress(files, len(files))
        for path in iterable:
            try:
                samples = self.load(path)
            except DataError as e:
                if not skip_bad:
                    raise
                _logger.debug('skipped %s: %s', e.path, e.problem)  # listed in the result
                skipped.append({'input': str(e.path), 'problem': e.problem})
                continue
            for sample in samples:
                pending.append(sample)
                if len(pending) >= self.batch_size:
                    flush()
        flush()
        result.skipped = skipped
        return result
