"""Plain ramie modules and Linen modules as submodules of a ``bridge.Module``.

Inside a bridge Module's ``setup`` or ``@compact`` method,
:func:`nnx_in_bridge_mdl` builds a ramie module with the bridge's Rngs and
:func:`linen_in_bridge_mdl` wraps a Linen module with :class:`ToNNX`; in
``compact`` they become attributes with Linen's automatic names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ramie._src.bridge import module as bm
from ramie._src.bridge import wrappers
from ramie._src.core.module import Module
from ramie._src.core.rngs import Rngs
from ramie.errors import BridgeError


def _parent(api_name: str) -> tuple[bm.ModuleStackEntry, bm.Module]:
    ctx = bm.current_context()
    if ctx is None or ctx.module.__dict__.get("scope") is None:
        raise BridgeError(
            f"ramie.bridge.{api_name}(): call it inside a bridge.Module's setup() or "
            "@bridge.compact method, during init/apply:\n"
            "      class Block(ramie.bridge.Module):\n"
            "          @ramie.bridge.compact\n"
            "          def __call__(self, x):\n"
            f"              return ramie.bridge.{api_name}(...)(x)"
        )
    return ctx, ctx.module


def _attach(ctx: bm.ModuleStackEntry, parent: bm.Module, module: Any,
            cls: type, name: str | None) -> None:  # fmt: skip
    if ctx.in_compact:
        setattr(parent, name or bm._auto_name(ctx, cls), module)


def nnx_in_bridge_mdl(
    factory: Callable[[Rngs], Module], name: str | None = None
) -> Module:
    """Build a ramie module inside a bridge Module, with the bridge's Rngs.

    The module is built with the bridge's Rngs; during ``apply`` the given
    variables then replace its initial values (RNG state stays fresh, as
    Linen hands out new keys every call).

    Args:
        factory: ``rngs -> Module``.
        name: Attribute name in ``@compact`` (default ``ClassName_<i>``).

    Returns:
        The module (an attribute of the bridge module in ``compact``; in
        ``setup``, assign it yourself).

    Raises:
        BridgeError: called outside a bridge Module's ``setup``/``compact``.

    Example:
        >>> import jax, jax.numpy as jnp, ramie
        >>> class Block(ramie.bridge.Module):
        ...     @ramie.bridge.compact
        ...     def __call__(self, x):
        ...         make = lambda rngs: ramie.Linear(2, 3, rngs=rngs)
        ...         return ramie.bridge.nnx_in_bridge_mdl(make)(x)
        >>> v = Block().init(jax.random.key(0), jnp.ones((1, 2)))
        >>> v["params"]["Linear_0"]["kernel"].shape
        (2, 3)
    """
    ctx, parent = _parent("nnx_in_bridge_mdl")
    rngs = parent.scope.rngs  # type: ignore[union-attr]
    module = factory(rngs if rngs else Rngs(7))
    _attach(ctx, parent, module, type(module), name)
    return module


def linen_in_bridge_mdl(linen_module: Any, name: str | None = None) -> Module:
    """Wrap a Linen module with ``ToNNX`` as a submodule of a bridge Module.

    Args:
        linen_module: The Linen module instance.
        name: Attribute name in ``@compact`` (default ``ClassName_<i>``).

    Returns:
        The ``ToNNX`` wrapper (initialised during ``init``).

    Raises:
        BridgeError: called outside a bridge Module's ``setup``/``compact``.

    Example:
        >>> import flax.linen as nn, jax, jax.numpy as jnp, ramie
        >>> class Block(ramie.bridge.Module):
        ...     @ramie.bridge.compact
        ...     def __call__(self, x):
        ...         return ramie.bridge.linen_in_bridge_mdl(nn.Dense(3), "dense")(x)
        >>> v = Block().init(jax.random.key(0), jnp.ones((1, 2)))
        >>> v["params"]["dense"]["kernel"].shape
        (2, 3)
    """
    ctx, parent = _parent("linen_in_bridge_mdl")
    module = wrappers.ToNNX(linen_module, parent.scope.rngs)  # type: ignore[union-attr]
    module.__dict__[wrappers.INIT_FLAG] = parent.is_initializing()
    _attach(ctx, parent, module, type(linen_module), name)
    return module
