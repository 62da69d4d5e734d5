"""ramie.nn.dtypes: Dtype helpers used by the layers.

The same objects as ``ramie.nn`` (and ``ramie``); this module mirrors the
layout of ``flax.nnx.nn`` so that ``nnx.nn.dtypes.X`` paths keep working.
"""

from ramie._src.nn.dtypes import canonicalize_dtype as canonicalize_dtype
from ramie._src.nn.dtypes import promote_dtype as promote_dtype
