"""The Adapter contract: how a modality becomes a 2D grid-like input for the shared trunk.

A user adds a modality by subclassing :class:`Adapter` and registering it with
:func:`register_adapter`, by exposing it through the ``unimodal.adapters`` entry-point group of an
installed package, or by naming a file (``path/to/file.py:ClassName``) on the command line.
"""
from __future__ import annotations

import abc
import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
import math
import sys
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterable, Mapping, Optional, Tuple, Type

import torch
from torch import nn

_logger = logging.getLogger(__name__)

__all__ = [
    'Adapter', 'InputShapeError', 'register_adapter', 'get_adapter_class', 'list_adapters',
    'load_adapter_from_file', 'ENTRY_POINT_GROUP',
]

ENTRY_POINT_GROUP = 'unimodal.adapters'

_ADAPTERS: Dict[str, Type['Adapter']] = {}


class InputShapeError(ValueError):
    """A batch does not have the shape (or dtype) an adapter consumes."""


class Adapter(nn.Module, metaclass=abc.ABCMeta):
    """Base class of modality adapters (tokenizers) feeding the shared UniRepLKNet trunk.

    Subclasses set the class attributes and implement :meth:`encode`; everything else has a default.

    Class attributes:
        name: registry name (e.g. ``'audio'``).
        head_kind: ``'classification'`` or ``'forecast'``: which shared head the task model attaches.
        input_desc: human-readable description of the batch :meth:`encode` consumes, used in errors,
            e.g. ``'(B, samples) float waveform at 16 kHz'``.

    Instance attributes (set in ``__init__``):
        out_chans: channels of the trunk input (the trunk is built with ``in_chans=out_chans``).
        num_views: images per sample the trunk sees: :meth:`encode` returns ``(B * num_views, C, H, W)``
            ordered sample-major (all views of sample 0, then sample 1, ...). The head pools over views
            (classification) or maps each view to its own outputs (forecast).
        view_pool: how a classification head combines views: ``'concat'`` (features of all views
            concatenated, as in the published P2P head), ``'mean'`` or ``'max'``.
        series_per_view: forecast only: how many series each view's features must forecast
            (``num_views * series_per_view`` = number of series N of the output ``(B, H, N)``).
    """

    name: ClassVar[str] = ''
    head_kind: ClassVar[str] = 'classification'
    input_desc: ClassVar[str] = '(B, ...) tensor'

    def __init__(self) -> None:
        super().__init__()
        self.out_chans: int = 3
        self.num_views: int = 1
        self.view_pool: str = 'mean'
        self.series_per_view: int = 1
        self.progress: Optional[float] = None

    def set_progress(self, epoch: float) -> None:
        """Tell the adapter how far training is: ``epoch`` epochs done, fractional (2.5 = halfway through the
        third). The engine calls it before every training step; a training loop of your own must call it too when
        an option depends on it (the audio adapter's ``eq_warmup_epochs``). ``progress`` is ``None`` until then."""
        value = float(epoch)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f'{self.name or type(self).__name__} adapter: set_progress expects the epochs done so '
                             f'far, a finite number >= 0; got {epoch!r}')
        self.progress = value

    def option(self, name: str, value: Any, tp: Any, **limits: Any) -> Any:
        """Constructor option ``name`` checked against its type ``tp`` (``int``, ``float``, ``bool``, ``str``,
        ``Optional[...]``, ``List[float]`` ...) and ``limits`` (``lo``, ``hi``, ``lo_open``, ``choices``, ``length``,
        ``expects``; floats must be finite), and returned in that type; a :class:`~unimodal.config.ConfigError`
        (a ``ValueError``) naming the option otherwise. Adapters call it first thing in ``__init__``, so a bad
        option fails there and not deep inside a layer with a library's message."""
        from ..config.schema import check_option
        return check_option(f'{self.name or type(self).__name__} adapter option {name}', value, tp, **limits)

    @classmethod
    def check_option_names(cls, options: Iterable[str], where: str) -> None:
        """Raise a :class:`~unimodal.config.ConfigError` naming ``where`` (e.g. ``model.adapter``) for a key of
        ``options`` that ``__init__`` does not take, with the valid names and the closest one. Run when a config is
        resolved, so a typo fails before any data is read; an ``__init__`` with ``**kwargs`` takes any name."""
        import inspect

        from ..config.errors import ConfigError, suggest
        params = inspect.signature(cls.__init__).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return
        valid = sorted(n for n, p in params.items() if n != 'self' and p.kind is not p.VAR_POSITIONAL)
        for key in options:
            if key not in valid:
                raise ConfigError(f'unknown {where} option {key!r} for the {cls.name or cls.__name__} adapter; '
                                  f'valid: {", ".join(valid)}{suggest(str(key), valid)}')

    @classmethod
    def check_option_values(cls, options: Mapping[str, Any], where: str) -> None:
        """Raise the :class:`~unimodal.config.ConfigError` of a bad value among ``options`` (e.g.
        ``num_mel_bins: 2``) when a config is resolved, before any data is read: the adapter is built from
        ``options`` alone on the meta device, so its own :meth:`option` checks run. An adapter that needs facts of
        the data (a forecaster's horizon) cannot be built without them; it is checked when the model is built."""
        from ..config.errors import ConfigError
        if not options:
            return
        try:
            with torch.device('meta'):
                cls(**options)
        except ConfigError as e:
            if any(f'adapter option {key} ' in f'{e} ' for key in options):
                raise ConfigError(f'{where}: {e}') from None
        except Exception:  # noqa: BLE001  (needs data-derived arguments: checked with the data)
            return

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputShapeError` if ``x`` is not a batch this adapter consumes.

        Subclasses override to check rank, sizes and dtype, and call :meth:`shape_error` to build the
        message so every adapter reports the expected and the received shape the same way.
        """
        if not torch.is_tensor(x):
            raise InputShapeError(f'{self.name} adapter expects a torch.Tensor {self.input_desc}, '
                                  f'got {type(x).__name__}')

    def shape_error(self, x: torch.Tensor, problem: str = '') -> InputShapeError:
        """Build the error for a batch of the wrong shape (expected vs received)."""
        extra = f': {problem}' if problem else ''
        return InputShapeError(
            f'{self.name} adapter expects {self.input_desc}, got shape {tuple(x.shape)} ({x.dtype}){extra}')

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Train-time augmentation of the raw batch (called by the task model only in training mode)."""
        return x

    @abc.abstractmethod
    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        """Turn a raw batch into the trunk input ``(B * num_views, out_chans, H, W)``.

        Returns:
            The trunk input and a state object handed back to :meth:`decode` (``None`` if unused).
        """

    def decode(self, y: torch.Tensor, state: Any) -> torch.Tensor:
        """Map head outputs back to the task's scale (e.g. undo per-series normalisation)."""
        return y

    def create_head(self, in_features: int, **head_kwargs: Any) -> Optional[nn.Module]:
        """A head of this adapter's own in place of its kind's shared head (``None``: the shared head).

        ``head_kwargs`` are what the shared head would get (``num_classes`` or ``horizon``, ``drop_rate``). A head
        whose class sets ``takes_state = True`` is called as ``head(features, state)`` with :meth:`encode`'s state.
        """
        return None

    def match_trunk_channels(self, trunk_chans: int) -> None:
        """Make this adapter emit ``trunk_chans`` channels through a learned 1×1 projection.

        Used when one trunk is shared by adapters of different natural channel counts (joint training):
        the adapter reconciles the channels, the trunk keeps one stem.
        """
        if trunk_chans == self.out_chans:
            return
        self.channel_proj = nn.Conv2d(self.out_chans, trunk_chans, kernel_size=1)
        self.out_chans = trunk_chans

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        grid, state = self.encode(x)
        proj = getattr(self, 'channel_proj', None)
        if proj is not None:
            grid = proj(grid)
        return grid, state

    def reparameterize(self) -> None:
        """Convert learnable parts to an inference form with the same function (default: nothing to do)."""


def register_adapter(name: Optional[str] = None):
    """Class decorator registering an :class:`Adapter` subclass under ``name`` (default: ``cls.name``)."""

    def _register(cls: Type[Adapter]) -> Type[Adapter]:
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise TypeError(f'register_adapter expects an Adapter subclass, got {cls!r}')
        key = name or cls.name
        if not key:
            raise ValueError(f'{cls.__name__} has no name: set the class attribute `name` or pass one')
        if key in _ADAPTERS and _ADAPTERS[key] is not cls:
            _logger.warning('adapter %r re-registered: %s replaces %s', key, cls.__qualname__,
                            _ADAPTERS[key].__qualname__)
        cls.name = key
        _ADAPTERS[key] = cls
        return cls

    return _register


def _entry_points() -> Iterable[importlib.metadata.EntryPoint]:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def _load_builtin() -> None:
    """The built-in adapters register when their package is imported (``import unimodal`` no longer does it)."""
    importlib.import_module('unimodal.modalities')


def list_adapters() -> list:
    """Names of the registered adapters plus those offered by installed entry points."""
    _load_builtin()
    names = set(_ADAPTERS)
    names.update(ep.name for ep in _entry_points())
    return sorted(names)


def load_adapter_from_file(spec: str) -> Type[Adapter]:
    """Load ``path/to/file.py:ClassName`` and return the Adapter class (registering it)."""
    path_str, sep, cls_name = spec.rpartition(':')
    if not sep or not path_str or not cls_name:
        raise ValueError(f'adapter file spec must be "path/to/file.py:ClassName", got {spec!r}')
    path = Path(path_str)
    if not path.is_file():
        raise FileNotFoundError(f'adapter file {path} does not exist (from --adapter {spec!r})')
    resolved = str(path.resolve())
    module_name = f'unimodal_user_adapter_{path.stem}_{hashlib.sha1(resolved.encode()).hexdigest()[:10]}'
    module = sys.modules.get(module_name)
    if module is None:  # a file is executed once per process, so its classes keep one identity
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f'cannot import adapter file {path}')
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise AttributeError(f'adapter file {path} defines no {cls_name!r}')
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise TypeError(f'{path}:{cls_name} is not a unimodal.Adapter subclass')
    if _ADAPTERS.get(cls.name) is not cls:
        register_adapter(cls.name or cls_name.lower())(cls)
    return cls


def get_adapter_class(name_or_spec: str) -> Type[Adapter]:
    """Find an adapter by registry name, entry point, or ``file.py:ClassName`` spec."""
    if name_or_spec not in _ADAPTERS:
        _load_builtin()
    if name_or_spec in _ADAPTERS:
        return _ADAPTERS[name_or_spec]
    for ep in _entry_points():
        if ep.name == name_or_spec:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Adapter)):
                raise TypeError(f'entry point {ep.value!r} ({ENTRY_POINT_GROUP}) is not a unimodal.Adapter subclass')
            return register_adapter(ep.name)(cls)
    if ':' in name_or_spec and name_or_spec.rpartition(':')[0].endswith('.py'):
        return load_adapter_from_file(name_or_spec)
    raise KeyError(f'unknown adapter {name_or_spec!r}; known: {", ".join(list_adapters())} '
                   f'(or give path/to/file.py:ClassName)')
