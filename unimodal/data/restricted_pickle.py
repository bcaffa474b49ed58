"""A restricted unpickler for data sets shipped as pickles (Point-BERT's ModelNet ``.dat``): it rebuilds numpy
arrays, dtypes and scalars and pickle's own containers, and refuses every other global before anything runs."""
from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import DataError

__all__ = ['RestrictedUnpickler', 'load_restricted_pickle']


def _latin1_bytes(text: str, encoding: str = 'latin1') -> bytes:
    """Stand-in for ``_codecs.encode`` that protocol-2 pickles use for ``bytes``: latin-1 only."""
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise pickle.UnpicklingError('refused _codecs.encode call (only latin1 str -> bytes is allowed)')
    return text.encode('latin1')


def _numpy_attr(module: str, name: str) -> Any:
    real = module.replace('numpy.core', 'numpy._core') if hasattr(np, '_core') else module
    try:
        return getattr(importlib.import_module(real), name)
    except (ImportError, AttributeError):
        return getattr(importlib.import_module(module), name)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays, dtypes and scalars (plus pickle's own lists, tuples,
    dicts, numbers and strings). Every other global (``os.system``, ``builtins.eval``, any class) is refused with
    ``pickle.UnpicklingError`` before anything runs."""

    _NUMPY = {
        ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
        ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
        ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),
        ('numpy', 'ndarray'), ('numpy', 'dtype'),
    }
    _BUILTINS = {('builtins', 'list'): list, ('builtins', 'tuple'): tuple, ('__builtin__', 'list'): list,
                 ('__builtin__', 'tuple'): tuple, ('_codecs', 'encode'): _latin1_bytes}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._BUILTINS:
            return self._BUILTINS[(module, name)]
        if (module, name) in self._NUMPY:
            return _numpy_attr(module, name)
        raise pickle.UnpicklingError(f'refused to load global {module}.{name} (only numpy arrays are allowed)')


def load_restricted_pickle(path: Union[str, Path]) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; any refusal or corruption is a :class:`DataError`."""
    path = Path(path)
    try:
        with open(path, 'rb') as f:
            return RestrictedUnpickler(f, encoding='latin1').load()
    except pickle.UnpicklingError as e:
        raise DataError(path, f'unsafe or corrupt pickle: {e}') from e
    except (OSError, EOFError, ValueError, TypeError, AttributeError, IndexError, MemoryError) as e:
        raise DataError(path, f'unreadable pickle ({type(e).__name__}: {e})') from e
