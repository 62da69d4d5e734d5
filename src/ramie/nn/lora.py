"""ramie.nn.lora: Low-rank adaptation layers.

The same objects as ``ramie.nn`` (and ``ramie``); this module mirrors the
layout of ``flax.nnx.nn`` so that ``nnx.nn.lora.X`` paths keep working.
"""

from ramie._src.nn.lora import LoRA as LoRA
from ramie._src.nn.lora import LoRALinear as LoRALinear
from ramie._src.nn.lora import LoRAParam as LoRAParam
