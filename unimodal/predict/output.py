"""What ``predict`` returns: one row per input (top-k classes with probabilities, or the forecast), the skipped
files, and the three ways to show them: a readable table, JSON and CSV (both written atomically)."""
from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch

__all__ = ['Predictions']


@dataclass
class Predictions:
    """Rows of a prediction run.

    Attributes:
        rows: classification ``{'input', 'top': [{'label', 'index', 'probability'}, ...]}`` (most probable first);
            forecasting ``{'input', 'columns', 'forecast': H x N values}`` (in ``units``: the input CSV's).
        skipped: ``{'input', 'problem'}`` of each input that could not be read (``skip_bad``).
    """
    task: str
    kind: str
    classes: Optional[List[str]]
    source: str = ''
    form: str = ''
    units: Optional[str] = None
    rows: List[Dict[str, Any]] = field(default_factory=list)
    skipped: List[Dict[str, str]] = field(default_factory=list)

    def add(self, name: str, out: torch.Tensor, facts: Dict[str, Any], top_k: int) -> None:
        if self.kind == 'classification':
            k = min(top_k, out.shape[-1])
            probs, idx = out.topk(k)
            self.rows.append({'input': name, 'top': [
                {'label': self.classes[i] if self.classes else str(i), 'index': int(i), 'probability': float(p)}
                for p, i in zip(probs.tolist(), idx.tolist())]})
        else:
            columns = facts.get('columns') or [f'series_{j}' for j in range(out.shape[-1])]
            self.rows.append({'input': name, 'columns': list(columns), 'forecast': out.tolist()})

    def to_dict(self) -> Dict[str, Any]:
        out = {'task': self.task, 'kind': self.kind, 'model': self.source, 'model_form': self.form,
               'predictions': self.rows, 'skipped': self.skipped}
        if self.kind == 'forecast':
            out['units'] = self.units
        return out

    # -------------------------------------------------------------------------------------------- table
    def table(self, max_series: int = 6) -> str:
        """A readable table: per input its top-k ``label probability``, or its forecast (steps x series, the
        first ``max_series`` series)."""
        lines: List[str] = []
        if self.kind == 'classification':
            width = max([len(r['input']) for r in self.rows] + [5])
            k = max([len(r['top']) for r in self.rows] + [1])
            cells = [[f'{t["label"]} {t["probability"]:.3f}' for t in r['top']] for r in self.rows]
            heads = [f'top-{i + 1}' for i in range(k)]
            # each column as wide as its longest cell: long class names must not push later columns out of line
            widths = [max([len(h)] + [len(c[i]) for c in cells if i < len(c)]) for i, h in enumerate(heads)]
            lines.append(f'{"input":<{width}}  ' + '  '.join(f'{h:<{w}}' for h, w in zip(heads, widths)).rstrip())
            for r, row in zip(self.rows, cells):
                lines.append(f'{r["input"]:<{width}}  ' + '  '.join(f'{c:<{w}}' for c, w in zip(row, widths)).rstrip())
        else:
            for r in self.rows:
                cols = r['columns'][:max_series]
                more = len(r['columns']) - len(cols)
                units = self.units or 'data units'
                lines.append(f'{r["input"]}: forecast of the next {len(r["forecast"])} steps ({units})'
                             + (f'; first {len(cols)} of {len(r["columns"])} series' if more else ''))
                lines.append('  step ' + ''.join(f'{c[:11]:>12}' for c in cols))
                for h, values in enumerate(r['forecast'], 1):
                    lines.append(f'  {h:>4} ' + ''.join(f'{v:>12.4g}' for v in values[:max_series]))
        if self.skipped:
            lines.append(f'skipped {len(self.skipped)} input(s) that could not be read:')
            lines.extend(f'  {s["input"]}: {s["problem"]}' for s in self.skipped)
        return '\n'.join(lines)

    # -------------------------------------------------------------------------------------------- files
    def to_csv(self) -> str:
        """Classification: ``input, label_1, probability_1, ...``; forecasting: ``input, step, <series>...``."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator='\n')
        if self.kind == 'classification':
            k = max([len(r['top']) for r in self.rows] + [1])
            w.writerow(['input'] + [f'{c}_{i + 1}' for i in range(k) for c in ('label', 'probability')])
            for r in self.rows:
                w.writerow([r['input']] + [v for t in r['top'] for v in (t['label'], f'{t["probability"]:.6g}')])
        else:
            columns = self.rows[0]['columns'] if self.rows else []
            w.writerow(['input', 'step', *columns])
            for r in self.rows:
                for h, values in enumerate(r['forecast'], 1):
                    w.writerow([r['input'], h, *(f'{v:.6g}' for v in values)])
        return buf.getvalue()

    def write_json(self, path: Union[str, Path]) -> None:
        """JSON to ``path`` (atomically), or to stdout for ``'-'``."""
        text = json.dumps(self.to_dict(), indent=1) + '\n'
        if str(path) == '-':
            sys.stdout.write(text)
            return
        from ..engine.checkpoint import write_text_atomic
        write_text_atomic(path, text)

    def write_csv(self, path: Union[str, Path]) -> None:
        """CSV to ``path`` (atomically), or to stdout for ``'-'``."""
        if str(path) == '-':
            sys.stdout.write(self.to_csv())
            return
        from ..engine.checkpoint import write_text_atomic
        write_text_atomic(path, self.to_csv())
