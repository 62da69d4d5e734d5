"""ramie.nn.activations: activation functions (``jax.nn``) and :class:`PReLU`.

The same objects as ``ramie.nn`` (and ``ramie``); this module mirrors the
layout of ``flax.nnx.nn`` so that ``nnx.nn.activations.X`` paths keep working.
"""

from ramie._src.nn.activations import PReLU as PReLU
from ramie._src.nn.activations import celu as celu
from ramie._src.nn.activations import elu as elu
from ramie._src.nn.activations import gelu as gelu
from ramie._src.nn.activations import glu as glu
from ramie._src.nn.activations import hard_sigmoid as hard_sigmoid
from ramie._src.nn.activations import hard_silu as hard_silu
from ramie._src.nn.activations import hard_swish as hard_swish
from ramie._src.nn.activations import hard_tanh as hard_tanh
from ramie._src.nn.activations import identity as identity
from ramie._src.nn.activations import leaky_relu as leaky_relu
from ramie._src.nn.activations import log_sigmoid as log_sigmoid
from ramie._src.nn.activations import log_softmax as log_softmax
from ramie._src.nn.activations import logsumexp as logsumexp
from ramie._src.nn.activations import one_hot as one_hot
from ramie._src.nn.activations import relu as relu
from ramie._src.nn.activations import relu6 as relu6
from ramie._src.nn.activations import selu as selu
from ramie._src.nn.activations import sigmoid as sigmoid
from ramie._src.nn.activations import silu as silu
from ramie._src.nn.activations import soft_sign as soft_sign
from ramie._src.nn.activations import softmax as softmax
from ramie._src.nn.activations import softplus as softplus
from ramie._src.nn.activations import standardize as standardize
from ramie._src.nn.activations import swish as swish
from ramie._src.nn.activations import tanh as tanh
