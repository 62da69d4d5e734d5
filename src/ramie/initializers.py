"""Parameter initializers: ``ramie.initializers`` (also ``ramie.nn.initializers``).

The JAX initializers (``lecun_normal``, ``zeros_init``, ...) under the names Flax NNX
uses, plus :func:`initialize`, which compiles repeated eager calls of one initializer.
"""

from ramie._src.nn.initializers import *  # noqa: F403
from ramie._src.nn.initializers import __all__ as __all__
