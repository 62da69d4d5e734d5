"""ramie.nn.linear: Linear, einsum, convolution and embedding layers.

The same objects as ``ramie.nn`` (and ``ramie``); this module mirrors the
layout of ``flax.nnx.nn`` so that ``nnx.nn.linear.X`` paths keep working.
"""

from ramie._src.nn.conv import Conv as Conv
from ramie._src.nn.conv import canonicalize_padding as canonicalize_padding
from ramie._src.nn.conv_transpose import ConvTranspose as ConvTranspose
from ramie._src.nn.embedding import Embed as Embed
from ramie._src.nn.linear import Einsum as Einsum
from ramie._src.nn.linear import Linear as Linear
from ramie._src.nn.linear import LinearGeneral as LinearGeneral
from ramie._src.nn.linear import default_bias_init as default_bias_init
from ramie._src.nn.linear import default_kernel_init as default_kernel_init
