"""The config error and the two helpers every config message uses: a bounded value repr and a key suggestion."""
from __future__ import annotations

import difflib
import reprlib
from typing import Any, Iterable, Sequence

__all__ = ['ConfigError', 'short_repr', 'suggest', 'unknown_key']


class ConfigError(ValueError):
    """A config file, ``--set`` override or CLI flag is invalid (unknown key, wrong type or value)."""


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 6, 6, 6, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40
_MAX_CHARS = 120


def short_repr(value: Any) -> str:
    """``repr(value)`` bounded in depth, items and characters (``reprlib`` never walks the whole value, so a YAML
    alias bomb given as a value costs microseconds and a line, not megabytes)."""
    text = _REPR.repr(value)
    return text if len(text) <= _MAX_CHARS else text[:_MAX_CHARS - 3] + '...'


def suggest(key: str, valid: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest valid name, or ``''``."""
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f'; did you mean {close[0]!r}?' if close else ''


def unknown_key(path: Sequence[str], key: str, valid: Iterable[str], origin: str) -> ConfigError:
    """The error for ``key`` under ``path``: it names the key and its origin, lists the valid keys there and
    suggests the closest."""
    where = '.'.join(path) if path else 'the top level'
    valid = sorted(valid)
    src = f' (in {origin})' if origin else ''
    return ConfigError(f'unknown config key {short_repr(".".join([*path, key]))}{src}; valid keys at {where}: '
                       f'{", ".join(valid)}{suggest(key, valid)}')
