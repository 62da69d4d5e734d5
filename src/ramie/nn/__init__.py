"""ramie.nn: layers, initializers and activations (also available as ``ramie.X``)."""

from ramie._src.nn import initializers as initializers
from ramie._src.nn.linear import Linear as Linear
from ramie._src.nn.normalization import BatchNorm as BatchNorm
from ramie._src.nn.stochastic import Dropout as Dropout
# >>> layers-linear-conv
# <<< layers-linear-conv
# >>> layers-norm-attention
# <<< layers-norm-attention
# >>> layers-recurrent
# <<< layers-recurrent
