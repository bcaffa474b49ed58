"""``unimodal tasks [NAME] [-v]``: what each task trains, where its data comes from and the layout ``--data`` expects.

Reads the task catalog (:mod:`unimodal.tasks.catalog`) and the shipped recipes only: no torch import, except
``--defaults`` (the resolved default config needs the task class).
"""
from __future__ import annotations

import argparse
import shutil
import textwrap
from typing import Dict, List

from .common import UsageError

CACHE_NOTE = 'written once into the cache folder (data.cache_dir, else $UNIMODAL_CACHE, else ~/.cache/unimodal)'


def _recipes_by_task() -> Dict[str, List[str]]:
    from ..config import find_recipe, list_recipes, safe_load
    from ..tasks.catalog import TASK_INFO
    aliases = {a: info.name for info in TASK_INFO.values() for a in info.aliases}
    out: Dict[str, List[str]] = {}
    for name in list_recipes():
        task = (safe_load(find_recipe(name).read_text()) or {}).get('task')
        for t in ([task] if isinstance(task, str) else task or []):
            out.setdefault(aliases.get(t, t), []).append(name)
    return out


def _field(label: str, text: str, width: int) -> List[str]:
    indent = ' ' * 13
    lines: List[str] = []
    for i, para in enumerate(text.split('\n')):
        lines += textwrap.wrap(para.strip(), width=width, initial_indent=f'  {label:<11}' if i == 0 else indent,
                               subsequent_indent=indent, break_on_hyphens=False)
    return lines


def describe_task(name: str, width: int = 100) -> List[str]:
    """The long form of one task (``unimodal tasks NAME``)."""
    from ..tasks.catalog import TASK_INFO
    info = TASK_INFO[name]
    also = f'; also --task {", ".join(info.aliases)}' if info.aliases else ''
    recipes = _recipes_by_task().get(name, [])
    lines = [f'{name}: {info.description} ({info.kind}, adapter {info.adapter}{also})']
    lines += _field('real data', info.real_data, width)
    lines += _field('built-in', f'{info.builtin}; {CACHE_NOTE}. Used when --data is omitted.', width)
    if recipes:
        lines += _field('recipes', ', '.join(f'--config {r}' for r in recipes), width)
    lines += _field('train', f'unimodal train --task {name} (built-in data) | unimodal train --task {name} --data DIR'
                    f' | unimodal data prepare --task {name} --data DIR (check every file first)', width)
    return lines


def cmd_tasks(args: argparse.Namespace) -> int:
    from ..tasks.catalog import TASK_INFO
    aliases = {a: info.name for info in TASK_INFO.values() for a in info.aliases}
    width = max(60, min(120, shutil.get_terminal_size((100, 24)).columns - 1))
    if args.name:
        name = aliases.get(args.name, args.name)
        if name not in TASK_INFO:
            from ..config.errors import suggest
            raise UsageError(f'unknown task {args.name!r}; known: {", ".join(sorted(TASK_INFO))}'
                             f'{suggest(args.name, [*TASK_INFO, *aliases])}')
        if args.defaults:
            from ..config import dump_config, parse_set_overrides, resolve_run_config
            from ..tasks import get_task
            print(f'# unimodal train --task {name}: the resolved defaults (--set KEY=VALUE overrides any of them).\n'
                  f'# Keys marked "task default" are settings for training from scratch on small data; they differ\n'
                  f'# from the engine defaults, which the published recipes build on. The "why" lines above them say\n'
                  f'# why (the measurements: benchmarks/README.md).')
            engine = resolve_run_config({'defaults': 'engine'}, {'task': name}, parse_set_overrides([]))
            print(dump_config(resolve_run_config({}, {'task': name}, parse_set_overrides([])), comments=True,
                              baseline=engine, reasons=get_task(name).reasons()), end='')
            return 0
        print('\n'.join(describe_task(name, width)))
        return 0
    if args.defaults:
        raise UsageError('--defaults needs a task NAME (e.g. unimodal tasks audio --defaults)')
    if args.long:
        print('\n\n'.join('\n'.join(describe_task(n, width)) for n in sorted(TASK_INFO)))
        return 0
    for name in sorted(TASK_INFO):
        t = TASK_INFO[name]
        also = f' (also --task {", ".join(t.aliases)})' if t.aliases else ''
        print(f'{name:<10} {t.kind:<15} adapter {t.adapter:<10} {t.description}{also}')
    print('\nWhere a task\'s data comes from and the layout --data expects: unimodal tasks NAME '
          '(all: unimodal tasks -v); its default settings: unimodal tasks NAME --defaults')
    print('Train one: unimodal train --task NAME (built-in data) or --data DIR (real data); '
          'several jointly: --task audio,point,timeseries')
    return 0
