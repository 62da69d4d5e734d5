"""ramie.nn.attention: Dot-product attention, masks and :class:`MultiHeadAttention`.

The same objects as ``ramie.nn`` (and ``ramie``); this module mirrors the
layout of ``flax.nnx.nn`` so that ``nnx.nn.attention.X`` paths keep working.
"""

from ramie._src.nn.attention import combine_masks as combine_masks
from ramie._src.nn.attention import dot_product_attention as dot_product_attention
from ramie._src.nn.attention import (
    dot_product_attention_weights as dot_product_attention_weights,
)
from ramie._src.nn.attention import make_attention_mask as make_attention_mask
from ramie._src.nn.attention import make_causal_mask as make_causal_mask
from ramie._src.nn.multi_head_attention import MultiHeadAttention as MultiHeadAttention
