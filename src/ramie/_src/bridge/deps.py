"""Lazy access to the optional libraries the bridges wrap.

``import ramie`` and ``import ramie.bridge`` never import Flax: the first call
that needs Linen goes through :func:`linen`, which imports it then, or raises
:class:`~ramie.errors.MissingExtraError` naming the extra to install.
"""

from __future__ import annotations

from types import ModuleType

from ramie.errors import MissingExtraError


def linen(api: str) -> ModuleType:
    """``flax.linen``, imported on first use.

    Args:
        api: The ramie API that needs Linen, named in the error.

    Raises:
        MissingExtraError: Flax is not installed.
    """
    try:
        import flax.linen as nn
    except ImportError as e:
        raise MissingExtraError(
            f"{api} wraps Flax Linen modules, but Flax is not installed.\n"
            "  Install the Linen extra:\n"
            "      pip install ramie[linen]"
        ) from e
    return nn


def flax_meta(api: str) -> ModuleType:
    """``flax.core.meta`` (Linen's variable metadata boxes), imported on first use."""
    linen(api)
    import flax.core.meta as meta

    return meta
