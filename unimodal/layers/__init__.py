"""Layers of the UniRepLKNet trunk (the Dilated Reparam Block, GRN, SE, layout permutes) and its fast forward path
(``fast_path``)."""
from .dilated_reparam import DRB_BRANCHES, DilatedReparamBlock
from .grn import GRN
from .permute import NCHWtoNHWC, NHWCtoNCHW
from .squeeze_excite import SEBlock

__all__ = ['DRB_BRANCHES', 'DilatedReparamBlock', 'GRN', 'NCHWtoNHWC', 'NHWCtoNCHW', 'SEBlock']
