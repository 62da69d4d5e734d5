"""ramie.bridge: interoperate with Flax Linen and Haiku, and load their weights.

Importing this package imports neither Flax nor Haiku; the wrappers import
them on first use. The weight loaders work on plain dicts of arrays.
"""

# --- Haiku bridge and weight loaders -------------------------------------
from ramie._src.bridge.loaders import LoadReport as LoadReport
from ramie._src.bridge.loaders import load_haiku as load_haiku
from ramie._src.bridge.loaders import load_linen as load_linen
from ramie._src.bridge.haiku import HaikuToNNX as HaikuToNNX
from ramie._src.bridge.haiku import ToHaiku as ToHaiku
