"""Point-cloud classification task: ModelNet40 (any of its four on-disk formats) or the built-in synthetic set."""
from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from torch.utils.data import Dataset

from ..data.modelnet import ModelNet40, make_builtin_modelnet
from .base import Task, register_task

if TYPE_CHECKING:  # pragma: no cover
    from ..config.schema import TaskSettings

_logger = logging.getLogger(__name__)

__all__ = ['PointTask']

_SPLITS = ('train', 'val', 'test')
# Reader options accepted under data.options: ModelNet40's keyword arguments except the ones the task sets.
_READER_OPTIONS = tuple(n for n in inspect.signature(ModelNet40.__init__).parameters
                        if n not in ('self', 'root', 'split', 'skip_bad'))


@register_task
class PointTask(Task):
    """Point-cloud classification (ModelNet40; reports overall accuracy and mean per-class accuracy)."""

    name = 'point'
    adapter = 'point'
    kind = 'classification'
    description = ('point-cloud classification: ModelNet40 (raw OFF, normal_resampled text, PointNet HDF5, '
                   'Point-BERT .dat)')
    real_data = (
        'ModelNet40 (40 classes, 9843 train / 2468 test shapes). Raw meshes: '
        'http://modelnet.cs.princeton.edu/ModelNet40.zip (`unimodal data download modelnet40 --root DIR`, then --data DIR/ModelNet40), layout '
        'DIR/<class>/{train,test}/<class>_NNNN.off; sampled point clouds are cached as .npz on first use. '
        'Also read: modelnet40_normal_resampled (`unimodal data download modelnet40_normal_resampled --root DIR`; '
        'modelnet40_shape_names.txt, modelnet40_{train,test}.txt, <class>/<class>_NNNN.txt with x,y,z,nx,ny,nz lines), '
        'PointNet HDF5 modelnet40_ply_hdf5_2048/ply_data_{train,test}N.h5 (needs h5py), and the Point-BERT '
        'modelnet40_{train,test}_8192pts_fps.dat (loaded with a restricted unpickler that accepts numpy arrays only). '
        'The format is detected from the folder (data.options.format overrides). ModelNet40 has no validation split: '
        'val is a held-out 10% of train (data.options.val_from=test uses the test set, as most papers do).')

    def default_config(self) -> Dict[str, Any]:
        # Built-in set (8 parametric shape classes, 232 train / 24 val / 80 test clouds): depth mode at 64 px with
        # unireplknet_test reaches ~90% accuracy (chance 1/8) in about 2-3 minutes on a 2-core CPU (~7 steps of
        # batch 32 per epoch); the first run also samples the meshes into the npz cache (once, ~10-20 s).
        return {
            'data': {'options': {'num_points': 1024}},
            'model': {'adapter': {'mode': 'depth', 'image_size': 64}},
            'train': {'epochs': 10, 'batch_size': 32, 'lr': 2e-3, 'weight_decay': 0.05, 'warmup_epochs': 1,
                      'label_smoothing': 0.1},
        }

    def make_builtin(self, cache_dir: Path) -> Path:
        return make_builtin_modelnet(Path(cache_dir) / 'modelnet_builtin')

    def build_datasets(self, root: Path, options: Dict[str, Any], skip_bad: bool = False,
                       splits: Optional[List[str]] = None) -> Dict[str, Dataset]:
        options = dict(options or {})
        unknown = sorted(set(options) - set(_READER_OPTIONS))
        if unknown:
            raise TypeError(f'unknown point data option(s) {unknown}; known: {", ".join(_READER_OPTIONS)}')
        out: Dict[str, Dataset] = {}
        for split in (splits or _SPLITS):
            if split not in _SPLITS:
                raise ValueError(f'unknown split {split!r}; expected train, val or test')
            out[split] = ModelNet40(Path(root), split, skip_bad=skip_bad, **options)
        return out

    def model_kwargs(self, settings: 'TaskSettings', train_set: Dataset) -> Dict[str, Any]:
        return {'num_classes': len(train_set.classes)}

    def eval_views(self, dataset: Dataset) -> Optional[str]:
        return ('single pass, no test-time voting (unimodal.modalities.point.vote_predict averages softmax over '
                'fixed rotations about the up axis)')
