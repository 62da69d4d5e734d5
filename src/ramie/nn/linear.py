"""Flax's ``nnx.nn.linear`` module path: the linear layers and their defaults."""

from ramie._src.nn.linear import Einsum as Einsum
from ramie._src.nn.linear import Linear as Linear
from ramie._src.nn.linear import LinearGeneral as LinearGeneral
from ramie._src.nn.linear import default_bias_init as default_bias_init
from ramie._src.nn.linear import default_kernel_init as default_kernel_init
