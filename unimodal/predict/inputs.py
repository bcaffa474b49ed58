"""What ``unimodal predict`` does to one input file: each task's reader's own per-file step, with the settings of the
evaluation split.

A task's :class:`InputReader` resolves the reader settings once (:meth:`InputReader.settings`: the run's
``data.options`` over the reader's own defaults, plain JSON so deploy artifacts and ONNX sidecars carry them) and
turns a file into model inputs (:meth:`InputReader.load`) with the code the data set readers use:

* audio: :func:`unimodal.data.audio_io.load_clip` + :func:`~unimodal.data.audio_io.clip_input` (WAV/FLAC);
* point: :func:`unimodal.data.point_files.file_cloud` (OFF/PLY/OBJ meshes, PLY/TXT point sets), PointNet HDF5
  files through :func:`~unimodal.data.point_formats.read_ply_h5` (one input per cloud in the file);
* video: :meth:`unimodal.data.video_clips.ClipViews.load_file` (the test split's clips x crops);
* timeseries: :func:`unimodal.data.timeseries_files.read_csv_series` on a CSV window of the training columns,
  standardised like the training data (the last ``input_len`` rows; the forecast is in the same units);
* image: :func:`unimodal.data.images.load_image` + the evaluation transform of
  :func:`~unimodal.data.images.resolve_eval_config`.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..config.errors import ConfigError
from ..data.errors import DataError
from ..data.images import IMAGE_EXTENSIONS
from ..tasks.spec import TaskSpec

__all__ = ['InputReader', 'get_input_reader', 'expand_inputs']

#: (what it is: a file, or a file and the cloud inside it; the model input; facts for the output, e.g. column names)
Sample = Tuple[str, Any, Dict[str, Any]]

_logger = logging.getLogger(__name__)


def _defaults(fn: Any) -> Dict[str, Any]:
    """A reader's own keyword defaults (the values a run that does not set an option used)."""
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def _pick(options: Mapping[str, Any], defaults: Mapping[str, Any], keys: Sequence[str]) -> Dict[str, Any]:
    return {k: options[k] if options.get(k) is not None else defaults.get(k) for k in keys}


class InputReader:
    """One task's inputs: accepted file suffixes, settings, and one file to model inputs."""

    suffixes: ClassVar[Tuple[str, ...]] = ()
    #: the settings read the run's data folder (a data set's declared reader defaults)
    needs_root: ClassVar[bool] = False

    def settings(self, spec: TaskSpec, options: Mapping[str, Any], root: Optional[Path]) -> Dict[str, Any]:
        """The reader settings of the evaluation split (plain JSON). ``root``: the run's data folder if it exists
        (a data set's declared reader defaults are read from it)."""
        raise NotImplementedError

    def load(self, path: str, settings: Mapping[str, Any]) -> List[Sample]:
        """``[(name, input, facts)]`` of one file; raises :class:`DataError` naming the file."""
        raise NotImplementedError


class AudioInput(InputReader):
    suffixes = ('.wav', '.flac')

    def settings(self, spec, options, root):
        from ..data.speech_commands import SpeechCommands
        return _pick(options, _defaults(SpeechCommands.__init__), ('sample_rate', 'clip_samples', 'return_length'))

    def load(self, path, settings):
        from ..data.audio_io import clip_input, load_clip, read_audio_header
        rate, clip = int(settings['sample_rate']), int(settings['clip_samples'])
        header = read_audio_header(path)
        seconds, clip_s = header[0] / header[1], clip / rate
        if seconds > 1.5 * clip_s:  # e.g. Speech Commands' _background_noise_ recordings inside a data folder
            _logger.warning('%s: %.1f s long; the model classifies its first %.2f s only (the clip length it was '
                            'trained on): cut long recordings into clips first', path, seconds, clip_s)
        wav = load_clip(path, rate, clip, header=header)
        return [(path, clip_input(wav, int(settings['clip_samples']), bool(settings['return_length'])), {})]


class PointInput(InputReader):
    suffixes = ('.off', '.ply', '.obj', '.txt', '.h5')

    def settings(self, spec, options, root):
        from ..data.modelnet import ModelNet40
        s = _pick(options, _defaults(ModelNet40.__init__),
                  ('num_points', 'use_normals', 'sampling', 'surface_samples', 'off_up_axis', 'seed'))
        # the reader's rule for the evaluation splits (no re-drawn clouds: the stored points are the clouds)
        s['surface_samples'] = s['surface_samples'] or max(8192, 8 * int(s['num_points']))
        return s

    def load(self, path, settings):
        from ..data.point_files import file_cloud, reduce_cloud
        from ..data.point_formats import read_ply_h5
        from ..data.point_geometry import normalize_unit_sphere
        n, cols = int(settings['num_points']), 6 if settings['use_normals'] else 3
        if path.lower().endswith('.h5'):
            # the reader's in-memory formats: each cloud normalised over its stored points, then reduced
            data, _ = read_ply_h5(Path(path), with_normals=bool(settings['use_normals']))
            fps = (settings['sampling'] or 'first') == 'fps'
            clouds = [(f'{path}#{i}', reduce_cloud(normalize_unit_sphere(np.asarray(c, np.float32)), n, fps))
                      for i, c in enumerate(data)]
        else:
            clouds = [(path, file_cloud(path, n, surface_samples=int(settings['surface_samples']),
                                        fps=(settings['sampling'] or 'fps') == 'fps', up_axis=settings['off_up_axis'],
                                        seed=int(settings['seed'])))]
        out = []
        for name, pts in clouds:
            if pts.shape[1] < cols:
                raise DataError(path, 'no normals for use_normals=True (the model was trained with normals: give '
                                      'x,y,z,nx,ny,nz points)', reason='no normals')
            out.append((name, torch.from_numpy(np.ascontiguousarray(pts[:, :cols], dtype=np.float32)), {}))
        return out


class VideoInput(InputReader):
    suffixes = ('.mp4', '.avi', '.mkv', '.webm', '.mov')

    def settings(self, spec, options, root):
        from ..data.kinetics import Kinetics
        s = _pick(options, _defaults(Kinetics.__init__), ('num_frames', 'stride', 'image_size', 'num_clips',
                                                           'num_crops'))
        s['split'] = 'test'  # the multi-view protocol of the test split (clips x crops, scores averaged)
        return s

    def load(self, path, settings):
        from ..data.video_clips import ClipViews
        views = ClipViews(settings.get('split', 'test'), num_frames=int(settings['num_frames']),
                          stride=int(settings['stride']), image_size=int(settings['image_size']),
                          num_clips=int(settings['num_clips']), num_crops=int(settings['num_crops']))
        return [(path, views.load_file(path), {})]


class SeriesInput(InputReader):
    suffixes = ('.csv',)

    def settings(self, spec, options, root):
        from ..data.timeseries import build_timeseries_datasets
        kwargs = spec.adapter_kwargs
        if kwargs.get('mark_dim') or kwargs.get('coord_dim'):
            raise ConfigError(f'task {spec.name}: this model also takes calendar marks or station coordinates '
                              f'(data.options.marks / coords); predict reads plain CSV windows only')
        s = _pick(options, _defaults(build_timeseries_datasets), ('time_column', 'columns', 'fill'))
        info = spec.metric_info

        def plain(v: Any) -> Any:
            return torch.as_tensor(v).tolist() if torch.is_tensor(v) or isinstance(v, np.ndarray) else v
        s.update(input_len=int(kwargs['input_len']), horizon=int(spec.head_kwargs['horizon']),
                 num_series=int(kwargs['num_series']), phys_scale=plain(info.get('phys_scale', 1.0)),
                 phys_offset=plain(info.get('phys_offset', 0.0)), units=info.get('units', 'data units'))
        return s

    @staticmethod
    def _scale(settings: Mapping[str, Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        return (torch.as_tensor(settings['phys_scale'], dtype=torch.float64),
                torch.as_tensor(settings['phys_offset'], dtype=torch.float64))

    def load(self, path, settings):
        from ..data.timeseries_files import read_csv_series
        values, names, _ = read_csv_series(path, time_column=settings['time_column'], columns=settings['columns'],
                                           fill=settings['fill'])
        length, n = int(settings['input_len']), int(settings['num_series'])
        if values.shape[1] != n:
            raise DataError(path, f'{values.shape[1]} series columns ({", ".join(names[:6])}...), the model '
                                  f'forecasts {n}', reason='bad shape')
        if values.shape[0] < length:
            raise DataError(path, f'{values.shape[0]} rows, the model reads windows of input_len={length} rows',
                            reason='too short')
        scale, offset = self._scale(settings)
        window = (torch.from_numpy(np.asarray(values[-length:], dtype=np.float64)) - offset) / scale
        return [(path, window.float(), {'columns': list(names)})]

    def to_physical(self, out: torch.Tensor, settings: Mapping[str, Any]) -> torch.Tensor:
        """Model-space forecasts ``(..., H, N)`` in the input CSV's units."""
        scale, offset = self._scale(settings)
        return (out.double() * scale + offset).float()


class ImageInput(InputReader):
    suffixes = IMAGE_EXTENSIONS
    needs_root = True

    def settings(self, spec, options, root):
        from ..data.images import EVAL_OPTIONS, READER_DEFAULTS_FILE, resolve_eval_config
        options = dict(options)
        declared = Path(root) / READER_DEFAULTS_FILE if root is not None else None
        if declared is not None and declared.is_file():  # the data set's declared defaults, as the task reads them
            options = {**json.loads(declared.read_text()), **{k: v for k, v in options.items() if v is not None}}
        cfg = resolve_eval_config(**{k: options.get(k) for k in EVAL_OPTIONS})
        size = int(cfg['input_size'][-1])
        if spec.input_shape and int(spec.input_shape[-1]) != size:
            raise ConfigError(f'task {spec.name}: the model was trained on {spec.input_shape[-1]}-pixel inputs but '
                              f'the reader settings give {size} (is the run\'s data folder {root} still there?)')
        return {'input_size': list(cfg['input_size']), 'interpolation': cfg['interpolation'],
                'crop_pct': float(cfg['crop_pct']), 'crop_mode': cfg['crop_mode']}

    def load(self, path, settings):
        from ..data.images import _eval_transform, load_image
        key = json.dumps(dict(settings), sort_keys=True)
        if getattr(self, '_key', None) != key:
            self._key, self._tf = key, _eval_transform(settings)
        return [(path, self._tf(load_image(path)), {})]


_READERS = {'audio': AudioInput, 'point': PointInput, 'video': VideoInput, 'timeseries': SeriesInput,
            'image': ImageInput}


def get_input_reader(task: str) -> InputReader:
    """The input reader of a built-in task (a :class:`ConfigError` for others, e.g. plug-in tasks)."""
    if task not in _READERS:
        raise ConfigError(f'predict reads the input files of the built-in tasks ({", ".join(_READERS)}); task '
                          f'{task!r} has no file reader (call the model on tensors instead)')
    return _READERS[task]()


def expand_inputs(paths: Sequence[os.PathLike], suffixes: Sequence[str]) -> Tuple[List[str], List[DataError]]:
    """Files to read: each file as given, each folder's files with ``suffixes`` (recursively, sorted); and the
    inputs that do not exist or hold no such file (as :class:`DataError`)."""
    files, missing = [], []
    lower = tuple(s.lower() for s in suffixes)
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(str(f) for f in path.rglob('*') if f.is_file() and f.suffix.lower() in lower)
            if not found:
                missing.append(DataError(path, f'folder holds no {"/".join(s.lstrip(".") for s in suffixes)} '
                                               f'files', reason='empty'))
            files.extend(found)
        elif path.is_file():
            files.append(str(path))
        else:
            missing.append(DataError(path, 'no such file or folder', reason='missing'))
    return files, missing
