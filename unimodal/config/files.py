"""Config text in and out: YAML recipe files (by path or by shipped name), ``--set`` overrides, the YAML dump.

The recipes in the repository's ``configs/`` folder are installed as package data (``unimodal/configs``), so
``--config audio_speechcommands35`` names one without a path after a normal install.
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

import yaml

from .errors import ConfigError, short_repr

__all__ = ['safe_load', 'load_config_file', 'parse_set_overrides', 'dump_config', 'recipes_dir', 'list_recipes',
           'find_recipe']


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` (no dot) as a float, as people write learning rates, and
    refuses a key given twice in one mapping (YAML would silently keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f'duplicate key {short_repr(key)} (line {key_node.start_mark.line + 1})',
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    'tag:yaml.org,2002:float',
    re.compile(r'''^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$''', re.X),
    list('-+0123456789.'))


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with ``1e-3``-style floats and duplicate keys refused."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)


def recipes_dir() -> Optional[Path]:
    """The shipped recipes: ``unimodal/configs`` in an installed package, ``configs/`` in a source checkout."""
    package = Path(__file__).resolve().parents[1]
    for folder in (package / 'configs', package.parent / 'configs'):
        if folder.is_dir():
            return folder
    return None


def list_recipes() -> List[str]:
    """Names of the shipped recipes (``--config NAME``)."""
    folder = recipes_dir()
    return sorted(p.stem for p in folder.glob('*.yaml')) if folder else []


def find_recipe(name: str) -> Optional[Path]:
    """The shipped recipe ``name`` (with or without ``.yaml``), or ``None``."""
    folder = recipes_dir()
    if folder is None or not name or '/' in name or '\\' in name:
        return None
    path = folder / (name if name.endswith(('.yaml', '.yml')) else f'{name}.yaml')
    return path if path.is_file() else None


def load_config_file(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a YAML recipe: a file path, or the name of a shipped recipe (see :func:`list_recipes`).

    Keys are checked when the file is merged (:func:`unimodal.config.resolve_run_config`).
    """
    given = Path(path)
    if not given.is_file():
        recipe = find_recipe(str(path))
        if recipe is None:
            if given.exists():
                raise ConfigError(f'config file {given} is not a file')
            names = list_recipes()
            listing = f' (shipped recipes: {", ".join(names)})' if names else ''
            raise ConfigError(f'config file {given} does not exist and is not a shipped recipe name{listing}')
        given = recipe
    raw = given.read_bytes()
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as e:
        raise ConfigError(f'config file {given} is not UTF-8 text (undecodable byte at offset {e.start}); '
                          f'expected a YAML recipe') from None
    if '\x00' in text:
        raise ConfigError(f'config file {given} is binary (it holds NUL bytes); expected a YAML recipe')
    try:
        data = safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f'config file {given} is not valid YAML: {e}') from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'config file {given} must hold a mapping at the top level, got {type(data).__name__}')
    return data


def parse_set_overrides(items: Iterable[str]) -> Dict[str, Any]:
    """Turn ``['train.lr=1e-3', 'data.options.n=4']`` into a nested dict (values parsed as YAML scalars)."""
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition('=')
        key = key.strip()
        if not sep or not key or any(not p for p in key.split('.')):
            raise ConfigError(f'--set expects key.path=value, got {short_repr(item)}')
        try:
            value = safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f'--set {short_repr(item)}: value is not valid YAML: {e}') from None
        node = out
        parts = key.split('.')
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f'--set {short_repr(item)} conflicts with another --set of {part!r}')
        node[parts[-1]] = value
    return out


def dump_config(cfg: Any, *, comments: bool = False, baseline: Any = None,
                reasons: Optional[Mapping[str, str]] = None) -> str:
    """YAML text of a :class:`~unimodal.config.RunConfig` or a config mapping (keys in definition order).
    ``comments``: each key of a schema section preceded by its one-line doc as a YAML comment; with a ``baseline``
    config (e.g. the engine defaults the published recipes build on), a key whose value differs from it is marked
    with the baseline's value, and preceded by the ``reasons`` (dotted key -> why) at or under its key."""
    if callable(getattr(cfg, 'to_dict', None)):
        cfg = cfg.to_dict()
    cfg = _plain(cfg)
    if not comments:
        return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)
    if callable(getattr(baseline, 'to_dict', None)):
        baseline = baseline.to_dict()
    base = _plain(baseline) if isinstance(baseline, Mapping) else None
    from .schema import SECTIONS, key_doc
    lines: List[str] = []
    for top, value in cfg.items():
        if top not in SECTIONS or not isinstance(value, Mapping) or not value:
            lines.append(_dump_entry(top, value))
            continue
        lines.append(f'{top}:')
        base_section = (base or {}).get(top) if base is not None else None
        for key, sub in value.items():
            doc = key_doc(top, key)
            if doc:
                lines.append(f'  # {doc}')
            entry = _dump_entry(key, sub).split('\n')
            if isinstance(base_section, Mapping) and base_section.get(key) != sub:
                # on the key's line for a block mapping, else after the value's last line (inside a wrapped flow
                # mapping it would read as marking part of the mapping)
                at = 0 if entry[0].endswith(':') else len(entry) - 1
                entry[at] += f'  # task default; engine default: {_inline(base_section.get(key))}'
                lines += _reason_lines(f'{top}.{key}', reasons or {})
            lines += ['  ' + line for line in entry]
    return '\n'.join(lines) + '\n'


def _reason_lines(path: str, reasons: Mapping[str, str], width: int = 116) -> List[str]:
    """``  # why ...`` comment lines for the reasons at ``path`` or under it (sub-keys named)."""
    out: List[str] = []
    for key, text in reasons.items():
        if key == path or key.startswith(path + '.'):
            label = 'why' if key == path else f'why {key[len(path) + 1:]}'
            out += textwrap.wrap(f'{label}: {text}', width, initial_indent='  # ', subsequent_indent='  #   ')
    return out


def _inline(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10 ** 6).strip()
    text = text[:-4].strip() if text.endswith('...') else text  # a bare scalar ends the document with "..."
    return text if len(text) <= 100 else text[:97] + '...'


def _dump_entry(key: str, value: Any) -> str:
    # flow style only inside containers: a one-entry mapping of a scalar would otherwise come out as `{key: value}`
    flow = None if isinstance(value, (Mapping, list)) else False
    return yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=flow).rstrip('\n')


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
