"""Interop with Linen and Haiku: old modules in ramie, ramie in old models, weights.

``import ramie.bridge`` does not import Flax; the first Linen-facing call does
(``pip install ramie[linen]`` provides it). ``ToLinen`` and ``NNXMeta``
subclass Flax classes, so they are created when first looked up here. The
Haiku wrappers import Haiku on first use (``ramie[haiku]``); the weight
loaders ``load_linen``/``load_haiku`` work on plain dicts of arrays.
"""

import sys as _sys
from typing import Any as _Any

from ramie import initializers as initializers
from ramie._src.bridge import interop as interop
from ramie._src.bridge import module as module
from ramie._src.bridge import variables as variables
from ramie._src.bridge import wrappers as wrappers
from ramie._src.bridge.haiku import HaikuToNNX as HaikuToNNX
from ramie._src.bridge.haiku import ToHaiku as ToHaiku
from ramie._src.bridge.haiku_layers import HaikuBatchNorm as HaikuBatchNorm
from ramie._src.bridge.haiku_layers import HaikuGRUCell as HaikuGRUCell
from ramie._src.bridge.haiku_layers import LinenGRUCell as LinenGRUCell
from ramie._src.bridge.interop import linen_in_bridge_mdl as linen_in_bridge_mdl
from ramie._src.bridge.interop import nnx_in_bridge_mdl as nnx_in_bridge_mdl
from ramie._src.bridge.loaders import LoadReport as LoadReport
from ramie._src.bridge.loaders import load_haiku as load_haiku
from ramie._src.bridge.loaders import load_linen as load_linen
from ramie._src.bridge.module import AttrPriority as AttrPriority
from ramie._src.bridge.module import Module as Module
from ramie._src.bridge.module import Scope as Scope
from ramie._src.bridge.module import compact as compact
from ramie._src.bridge.module import current_context as current_context
from ramie._src.bridge.module import current_module as current_module
from ramie._src.bridge.variables import with_partitioning as with_partitioning
from ramie._src.bridge.wrappers import Functional as Functional
from ramie._src.bridge.wrappers import ToNNX as ToNNX
from ramie._src.bridge.wrappers import functional as functional
from ramie._src.bridge.wrappers import lazy_init as lazy_init
from ramie._src.bridge.wrappers import to_linen as to_linen
from ramie._src.bridge.wrappers import to_linen_class as to_linen_class

_LAZY = {
    "ToLinen": "ramie._src.bridge.wrappers:to_linen_class_base",
    "NNXMeta": "ramie._src.bridge.variables:nnx_meta_class",
}


# `import ramie.bridge.wrappers` / `from ramie.bridge.module import ...` (Flax's
# layout) reach the same module objects.
for _sub in (interop, module, variables, wrappers):
    _sys.modules[f"{__name__}.{_sub.__name__.rsplit('.', 1)[1]}"] = _sub


def __getattr__(name: str) -> _Any:
    if name in _LAZY:
        import importlib

        mod, fn = _LAZY[name].split(":")
        return getattr(importlib.import_module(mod), fn)()
    raise AttributeError(f"module 'ramie.bridge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
