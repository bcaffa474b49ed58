"""Samples whose input is a tuple of tensors (a signal and its real length): train, eval, reparam and the
example inputs of the spec, through a plug-in adapter written as a user would."""
import json
import textwrap

import torch

from unimodal.data.inputs import batch_size, describe, primary, take, to_device

ADAPTER = textwrap.dedent('''
    import torch
    from torch import nn
    from torch.utils.data import Dataset
    import unimodal


    class Padded(Dataset):
        classes = ['short', 'long']

        def __init__(self, n, seed):
            g = torch.Generator().manual_seed(seed)
            self.items = []
            for i in range(n):
                length = 8 + 24 * (i % 2)  # class = the real length; what follows it is padding
                x = torch.zeros(32)
                x[:length] = torch.randn(length, generator=g)
                self.items.append(((x, torch.tensor(length)), i % 2))

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]


    class LengthAdapter(unimodal.Adapter):
        """A signal with its real length -> a 1-channel 32x32 grid (the length as a band)."""
        name = 'length_demo'
        head_kind = 'classification'
        num_classes = 2

        def __init__(self):
            super().__init__()
            self.out_chans = 1
            self.scale = nn.Parameter(torch.ones(()))

        def check_input(self, x):
            if not isinstance(x, tuple) or len(x) != 2:
                raise unimodal.InputShapeError(f'expected (signal, length), got {type(x).__name__}')

        def encode(self, x):
            signal, length = x
            mask = torch.arange(signal.shape[-1], device=signal.device)[None] < length[:, None]
            grid = (signal * mask)[:, None, None, :].expand(-1, 1, 32, -1) * self.scale
            return grid + mask[:, None, None, :].float(), None

        @classmethod
        def make_datasets(cls, root=None):
            return {'train': Padded(16, 0), 'val': Padded(8, 1), 'test': Padded(8, 2)}
''')


def test_input_helpers():
    x = (torch.zeros(3, 5), torch.ones(3, dtype=torch.int64))
    assert batch_size(x) == 3 and primary(x) is x[0] and [t.shape[0] for t in take(x, 2)] == [2, 2]
    assert describe((torch.zeros(5), torch.tensor(2))) == ([[5], []], ['float32', 'int64'])
    assert describe(torch.zeros(4, 2)) == ([4, 2], 'float32')
    assert to_device(x, torch.device('cpu'))[1].dtype == torch.int64


def test_spec_example_input_is_a_valid_tuple():
    from unimodal.tasks.spec import TaskSpec
    spec = TaskSpec(name='t', kind='classification', adapter='a', input_shape=[[32], []],
                    input_dtype=['float32', 'int64'])
    ex = spec.example_input(batch=3)
    assert spec.structured and isinstance(ex, tuple) and ex[0].shape == (3, 32) and ex[1].tolist() == [1, 1, 1]


def test_train_eval_and_reparam_with_structured_inputs(tmp_path, run_cli):
    path = tmp_path / 'length_adapter.py'
    path.write_text(ADAPTER)
    out = tmp_path / 'run'
    code, _, err = run_cli('train', '--adapter', f'{path}:LengthAdapter', '--epochs', '2', '--batch-size', '4',
                           '--out', out, '--no-progress')
    assert code == 0, err
    results = json.loads((out / 'results.json').read_text())
    assert results['tasks']['length_demo']['num_samples'] == 8
    ckpt = torch.load(out / 'best.pt', weights_only=True)
    assert ckpt['tasks']['length_demo']['input_shape'] == [[32], []]
    code, _, err = run_cli('eval', '--checkpoint', out / 'best.pt', '--json', tmp_path / 'e.json')
    assert code == 0, err
    code, outp, err = run_cli('reparam', out / 'best.pt', tmp_path / 'deploy.pt')
    assert code == 0, err


def test_batch_mixup_refuses_structured_inputs(tmp_path, run_cli):
    path = tmp_path / 'length_adapter.py'
    path.write_text(ADAPTER)
    code, _, err = run_cli('train', '--adapter', f'{path}:LengthAdapter', '--epochs', '1', '--batch-size', '4',
                           '--out', tmp_path / 'r', '--no-progress', '--set', 'train.mixup=0.8')
    assert code == 2 and 'structured' in err and 'train.mixup' in err
