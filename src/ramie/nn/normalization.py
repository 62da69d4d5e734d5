"""ramie.nn.normalization: Normalization layers.

The same objects as ``ramie.nn`` (and ``ramie``); this module mirrors the
layout of ``flax.nnx.nn`` so that ``nnx.nn.normalization.X`` paths keep working.
"""

from ramie._src.nn.group_norm import GroupNorm as GroupNorm
from ramie._src.nn.group_norm import InstanceNorm as InstanceNorm
from ramie._src.nn.normalization import BatchNorm as BatchNorm
from ramie._src.nn.normalization import LayerNorm as LayerNorm
from ramie._src.nn.normalization import RMSNorm as RMSNorm
from ramie._src.nn.weight_norms import SpectralNorm as SpectralNorm
from ramie._src.nn.weight_norms import WeightNorm as WeightNorm
