"""ramie.nn.stochastic: Dropout.

The same objects as ``ramie.nn`` (and ``ramie``); this module mirrors the
layout of ``flax.nnx.nn`` so that ``nnx.nn.stochastic.X`` paths keep working.
"""

from ramie._src.nn.stochastic import Dropout as Dropout
