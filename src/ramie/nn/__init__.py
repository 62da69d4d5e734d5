"""ramie.nn: layers, initializers and activations (also available as ``ramie.X``)."""

from ramie._src.nn import initializers as initializers
from ramie._src.nn.linear import Linear as Linear
from ramie._src.nn.normalization import BatchNorm as BatchNorm
from ramie._src.nn.stochastic import Dropout as Dropout
# >>> layers-linear-conv
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
from ramie._src.nn.conv import Conv as Conv
from ramie._src.nn.conv_transpose import ConvTranspose as ConvTranspose
from ramie._src.nn.embedding import Embed as Embed
from ramie._src.nn.linear import Einsum as Einsum
from ramie._src.nn.linear import LinearGeneral as LinearGeneral
from ramie._src.nn.lora import LoRA as LoRA
from ramie._src.nn.lora import LoRALinear as LoRALinear
from ramie._src.nn.lora import LoRAParam as LoRAParam
from ramie._src.nn.pooling import avg_pool as avg_pool
from ramie._src.nn.pooling import max_pool as max_pool
from ramie._src.nn.pooling import min_pool as min_pool
from ramie._src.nn.pooling import pool as pool
# <<< layers-linear-conv
# >>> layers-norm-attention
from ramie._src.nn.attention import combine_masks as combine_masks
from ramie._src.nn.attention import dot_product_attention as dot_product_attention
from ramie._src.nn.attention import dot_product_attention_weights as dot_product_attention_weights
from ramie._src.nn.attention import make_attention_mask as make_attention_mask
from ramie._src.nn.attention import make_causal_mask as make_causal_mask
from ramie._src.nn.group_norm import GroupNorm as GroupNorm
from ramie._src.nn.group_norm import InstanceNorm as InstanceNorm
from ramie._src.nn.multi_head_attention import MultiHeadAttention as MultiHeadAttention
from ramie._src.nn.normalization import LayerNorm as LayerNorm
from ramie._src.nn.normalization import RMSNorm as RMSNorm
from ramie._src.nn.weight_norms import SpectralNorm as SpectralNorm
from ramie._src.nn.weight_norms import WeightNorm as WeightNorm
# <<< layers-norm-attention
# >>> layers-recurrent
from ramie._src.nn.recurrent import GRUCell as GRUCell
from ramie._src.nn.recurrent import LSTMCell as LSTMCell
from ramie._src.nn.recurrent import OptimizedLSTMCell as OptimizedLSTMCell
from ramie._src.nn.recurrent import RNNCellBase as RNNCellBase
from ramie._src.nn.recurrent import SimpleCell as SimpleCell
from ramie._src.nn.rnn import RNN as RNN
from ramie._src.nn.rnn import Bidirectional as Bidirectional
# <<< layers-recurrent
