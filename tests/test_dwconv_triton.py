"""The Triton depthwise conv on CPU, under Triton's interpreter, against ``F.conv2d`` (outputs and gradients).

The interpreter is switched on by ``TRITON_INTERPRET=1`` before Triton is first imported, so the cases run in a
child process (this test session may already have imported Triton, e.g. through ``torch.compile``).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('triton', reason='Triton is not installed')

from _dwconv_cases import CASES  # noqa: E402  (pure data: does not import Triton)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def interpreted_results():
    env = dict(os.environ, TRITON_INTERPRET='1', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, str(ROOT / 'tests' / '_dwconv_cases.py')], capture_output=True,
                          text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith('{'):
            r = json.loads(line)
            results[r['name']] = r
    return results


@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_triton_dwconv_matches_conv2d_interpreted(case, interpreted_results):
    name, dtype = case[0], case[8]
    assert name in interpreted_results, f'case {name} did not run'
    r = interpreted_results[name]
    for key in ('y', 'dx', 'dw', 'db'):
        assert r[key] < r['tol'], f'{name}: {key} relative error {r[key]:.3g} >= {r["tol"]}'
    assert r['dtypes'] == [f'torch.{dtype}'] * 4  # outputs in the input's dtype, grads in the weight's / bias's
    assert r['same_layout'], f'{name}: output memory format differs from the input\'s'
