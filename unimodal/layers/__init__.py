"""Layers of the UniRepLKNet trunk: the Dilated Reparam Block, GRN, SE, and the fast forward path."""
from .dilated_reparam import DRB_BRANCHES, DilatedReparamBlock
from .grn import GRN
from .squeeze_excite import SEBlock

__all__ = ['DRB_BRANCHES', 'DilatedReparamBlock', 'GRN', 'SEBlock']
