"""Reader option values, checked where a reader is entered (before any file is opened).

``data.options`` is free-form in the config schema: each reader declares its options in one table (option name ->
:class:`Option`: type and limits) and wraps its entry point in :func:`checked_options`. Every argument the caller
gives that the table names is checked with :func:`unimodal.config.check_option` under the key
``data.options.<name>`` and passed on in its canonical type, so a bad value is a
:class:`~unimodal.config.ConfigError` naming the key (one line in the CLI, exit 2) and not a library's message from
deep inside, and an unknown keyword is an :class:`UnknownOptionError` that lists the valid options. Values are
checked without walking them (a YAML alias bomb given as an option is refused at its first item, and the message
shows a bounded repr).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

from ..config.errors import ConfigError, short_repr, suggest
from ..config.schema import check_option

__all__ = ['Option', 'UnknownOptionError', 'OPTION_PREFIX', 'check_options', 'checked_options', 'range_pair',
           'SCALE_RANGE', 'RATIO_RANGE', 'OPTIONAL_PATH', 'CLASS_NAMES']

OPTION_PREFIX = 'data.options'
F = TypeVar('F', bound=Callable[..., Any])


class UnknownOptionError(ConfigError, TypeError):
    """A keyword the reader does not take: a config error, and the ``TypeError`` Python raises for an unexpected
    keyword argument (what callers of the reader functions catch)."""


@dataclasses.dataclass(frozen=True)
class Option:
    """One reader option: its type (``int``, ``Optional[str]``, ``List[float]`` ...) and the limits of
    :func:`~unimodal.config.check_option` (``lo``, ``hi``, ``lo_open``, ``hi_open``, ``choices``, ``length``,
    ``expects``).

    ``fields``: the value is a mapping with exactly these keys, each an :class:`Option` (``tp`` is then ignored).
    ``rule``: a further check of the converted value; returns what is wrong (``'must ...'``) or ``None``.
    ``accept``: values it returns true for pass unchecked (library objects a config cannot hold, e.g. timm's
    ``PretrainedCfg``).
    """

    tp: Any = None
    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    choices: Optional[Sequence[Any]] = None
    length: Optional[int] = None
    expects: str = ''
    fields: Optional[Dict[str, 'Option']] = None
    rule: Optional[Callable[[Any], Optional[str]]] = None
    accept: Optional[Callable[[Any], bool]] = None

    def check(self, key: str, value: Any) -> Any:
        """``value`` in its canonical type; :class:`ConfigError` naming ``key`` otherwise."""
        if self.accept is not None and self.accept(value):
            return value
        if self.fields is not None:
            value = self._check_fields(key, value)
        else:
            value = check_option(key, value, self.tp, lo=self.lo, hi=self.hi, lo_open=self.lo_open,
                                 hi_open=self.hi_open, choices=self.choices, length=self.length, expects=self.expects)
        problem = self.rule(value) if self.rule is not None and value is not None else None
        if problem:
            raise ConfigError(f'{key} {problem}, got {short_repr(value)}')
        return value

    def _check_fields(self, key: str, value: Any) -> Optional[Dict[str, Any]]:
        if value is None:
            return None
        names = list(self.fields or {})
        if not isinstance(value, Mapping) or set(value) != set(names):
            raise ConfigError(f'{key} must be {self.expects or "a mapping with the keys " + ", ".join(names)}, '
                              f'got {short_repr(value)}')
        return {name: spec.check(f'{key}.{name}', value[name]) for name, spec in self.fields.items()}


def range_pair(high: Optional[float] = None) -> Option:
    """``[min, max]`` with ``0 < min <= max`` (``<= high``), as the random resized crop's scale and ratio."""
    bounds = f'0 < min <= max{f" <= {high:g}" if high is not None else ""}'

    def rule(pair: List[float]) -> Optional[str]:
        ok = 0 < pair[0] <= pair[1] and (high is None or pair[1] <= high)
        return None if ok else f'must be [min, max] with {bounds}'
    return Option(List[float], length=2, rule=rule, expects=f'[min, max] with {bounds}')


#: The random resized crop's area fraction range and aspect ratio range (images and video clips).
SCALE_RANGE = range_pair(1.0)
RATIO_RANGE = range_pair()
OPTIONAL_PATH = Option(Optional[str], expects='a path')
CLASS_NAMES = Option(Optional[List[str]], expects='a list of class names')


def check_options(table: Mapping[str, Option], values: Mapping[str, Any]) -> Dict[str, Any]:
    """``values`` with every entry the table names checked (``data.options.<name>``) and converted; others as given."""
    return {name: table[name].check(f'{OPTION_PREFIX}.{name}', value) if name in table else value
            for name, value in values.items()}


def checked_options(table: Mapping[str, Option]) -> Callable[[F], F]:
    """Decorate a reader's entry point (a function or ``__init__``): the arguments the caller gives are checked
    against ``table`` (:func:`check_options`) before the body runs; a keyword the function does not take raises
    :class:`UnknownOptionError`. The table must name parameters of the function (checked at import)."""
    def wrap(fn: F) -> F:
        sig = inspect.signature(fn)
        params = sig.parameters
        stray = sorted(set(table) - set(params))
        if stray:
            raise TypeError(f'{fn.__qualname__}: option table names {stray}, which are not parameters')
        valid = sorted(table)

        @functools.wraps(fn)
        def checked(*args: Any, **kwargs: Any) -> Any:
            for key in kwargs:
                if key not in params:
                    raise UnknownOptionError(f'unknown reader option {short_repr(f"{OPTION_PREFIX}.{key}")} '
                                             f'({fn.__qualname__.split(".")[0]}); valid options: {", ".join(valid)}'
                                             f'{suggest(str(key), valid)}')
            bound = sig.bind(*args, **kwargs)
            bound.arguments.update(check_options(table, bound.arguments))
            return fn(*bound.args, **bound.kwargs)
        return checked  # type: ignore[return-value]
    return wrap
