"""Low-rank adaptation (LoRA): train a small update next to frozen weights.

A :class:`LoRA` layer computes ``x @ lora_a @ lora_b`` with ``lora_a`` of shape
``(in, rank)`` and ``lora_b`` of shape ``(rank, out)``; ``lora_b`` starts at
zero, so adding the branch to a pretrained layer changes nothing until it is
trained. Its weights are :class:`LoRAParam`, a subclass of ``Param``, so
``ramie.grad(loss, argnums=ramie.DiffState(0, ramie.LoRAParam))`` or an
``Optimizer(model, tx, wrt=ramie.LoRAParam)`` fine-tunes only the adapters.
:class:`LoRALinear` is a ``Linear`` with a LoRA branch; its ``kernel`` and
``bias`` keep ``Linear``'s names, so a ``Linear`` checkpoint loads into it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import jax
import jax.numpy as jnp

from ramie._src.core.module import Module
from ramie._src.core.rngs import Rngs
from ramie._src.core.variables import Param, Variable
from ramie._src.nn import initializers
from ramie._src.nn.dtypes import promote_dtype as default_promote_dtype
from ramie._src.nn.linear import Linear

A = TypeVar("A")

default_a_initializer = initializers.he_uniform()
default_b_initializer = initializers.zeros


class LoRAParam(Param[A]):
    """The Variable type of LoRA weights: a ``Param``, filterable on its own.

    Example:
        >>> import ramie
        >>> lora = ramie.LoRA(3, 2, 4, rngs=ramie.Rngs(0))
        >>> type(lora.lora_a).__name__, isinstance(lora.lora_a, ramie.Param)
        ('LoRAParam', True)
        >>> sorted(ramie.state(lora, ramie.LoRAParam).keys())
        ['lora_a', 'lora_b']
    """

    __slots__ = ()


class LoRA(Module):
    """A low-rank branch ``x @ lora_a @ lora_b``, optionally added to a base module.

    Args:
        in_features: Size of the inputs' last axis.
        lora_rank: Inner dimension of the low-rank product.
        out_features: Size of the outputs' last axis.
        base_module: A callable Module whose output (on the same inputs) is
            added to the branch; None for the branch alone.
        dtype: Computation dtype (``None``: inferred from inputs and params).
        param_dtype: Dtype of ``lora_a`` and ``lora_b``.
        a_initializer: Initializer of ``lora_a`` (default ``he_uniform()``).
        b_initializer: Initializer of ``lora_b`` (default zeros).
        lora_param_type: Variable type of both weights (default ``LoRAParam``).
        promote_dtype: Function casting ``(x, lora_a, lora_b)`` to one dtype.
        rngs: RNG streams; ``lora_a`` then ``lora_b`` draw from ``params``.
        a_metadata: Extra metadata of ``lora_a``.
        b_metadata: Extra metadata of ``lora_b``.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> base = ramie.Linear(3, 4, rngs=ramie.Rngs(0))
        >>> lora = ramie.LoRA(3, 2, 4, base_module=base, rngs=ramie.Rngs(1))
        >>> lora.lora_a.shape, lora.lora_b.shape
        ((3, 2), (2, 4))
        >>> lora(jnp.ones((16, 3))).shape
        (16, 4)
    """

    def __init__(
        self,
        in_features: int,
        lora_rank: int,
        out_features: int,
        *,
        base_module: Module | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        a_initializer: Callable[..., Any] = default_a_initializer,
        b_initializer: Callable[..., Any] = default_b_initializer,
        lora_param_type: type[Variable] = LoRAParam,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        rngs: Rngs,
        a_metadata: Mapping[str, Any] = MappingProxyType({}),
        b_metadata: Mapping[str, Any] = MappingProxyType({}),
    ):
        self.in_features = in_features
        self.out_features = out_features
        self.lora_rank = lora_rank
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.lora_param_type = lora_param_type
        self.base_module = base_module
        self.promote_dtype = promote_dtype
        self.lora_a = lora_param_type(
            a_initializer(rngs.params(), (in_features, lora_rank), param_dtype),
            **a_metadata,
        )
        self.lora_b = lora_param_type(
            b_initializer(rngs.params(), (lora_rank, out_features), param_dtype),
            **b_metadata,
        )

    def __call__(self, x: jax.Array, **kwargs: Any) -> jax.Array:
        """``x @ lora_a @ lora_b``, plus ``base_module(x, **kwargs)`` if there is one.

        Args:
            x: Array of shape ``(..., in_features)``.
            **kwargs: Passed on to ``base_module``.

        Returns:
            Array of shape ``(..., out_features)``.

        Raises:
            ValueError: if the last axis of ``x`` is not ``in_features``, or
                if ``base_module`` is not callable (as in Flax).
        """
        if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != self.in_features:
            raise ValueError(
                f"ramie.LoRA: inputs of shape {jnp.shape(x)} must end in "
                f"in_features={self.in_features}."
            )
        x, lora_a, lora_b = self.promote_dtype(
            (x, self.lora_a._raw, self.lora_b._raw), dtype=self.dtype
        )
        out = x @ lora_a @ lora_b
        if self.base_module is not None:
            if not callable(self.base_module):
                raise ValueError(
                    f"ramie.LoRA: base_module must be callable, got "
                    f"{type(self.base_module).__name__}.\n  Pass a layer, e.g. "
                    "ramie.LoRA(3, 2, 4, base_module=ramie.Linear(3, 4, rngs=rngs), "
                    "rngs=rngs)"
                )
            out += self.base_module(x, **kwargs)
        return out


class LoRALinear(Linear):
    """A :class:`~ramie.Linear` with a :class:`LoRA` branch added to its output.

    The ``kernel`` and ``bias`` are ``Linear``'s (same names, shapes and RNG
    draws), and the branch lives in ``self.lora``; ``lora_*`` arguments
    configure the branch and every other keyword goes to ``Linear``.

    Args:
        in_features: Size of the inputs' last axis.
        out_features: Size of the outputs' last axis.
        lora_rank: Inner dimension of the low-rank branch.
        lora_dtype: Computation dtype of the branch.
        lora_param_dtype: Dtype of ``lora_a`` and ``lora_b``.
        a_initializer: Initializer of ``lora_a``.
        b_initializer: Initializer of ``lora_b`` (default zeros).
        lora_param_type: Variable type of the branch's weights.
        lora_promote_dtype: ``promote_dtype`` of the branch.
        rngs: RNG streams: ``kernel``, ``bias``, then ``lora_a`` and ``lora_b``.
        a_metadata: Extra metadata of ``lora_a``.
        b_metadata: Extra metadata of ``lora_b``.
        **kwargs: Keyword arguments of ``Linear`` (``use_bias``, ``dtype``...).

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> layer = ramie.LoRALinear(3, 4, lora_rank=2, rngs=ramie.Rngs(0))
        >>> layer.kernel.shape, layer.lora.lora_a.shape
        ((3, 4), (3, 2))
        >>> layer(jnp.ones((16, 3))).shape
        (16, 4)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        lora_rank: int,
        lora_dtype: Any = None,
        lora_param_dtype: Any = jnp.float32,
        a_initializer: Callable[..., Any] = default_a_initializer,
        b_initializer: Callable[..., Any] = default_b_initializer,
        lora_param_type: type[Variable] = LoRAParam,
        lora_promote_dtype: Callable[..., Any] = default_promote_dtype,
        rngs: Rngs,
        a_metadata: Mapping[str, Any] = MappingProxyType({}),
        b_metadata: Mapping[str, Any] = MappingProxyType({}),
        **kwargs: Any,
    ):
        super().__init__(in_features, out_features, rngs=rngs, **kwargs)
        self.lora = LoRA(
            in_features,
            lora_rank,
            out_features,
            dtype=lora_dtype,
            param_dtype=lora_param_dtype,
            a_initializer=a_initializer,
            b_initializer=b_initializer,
            lora_param_type=lora_param_type,
            promote_dtype=lora_promote_dtype,
            rngs=rngs,
            a_metadata=a_metadata,
            b_metadata=b_metadata,
        )

    def __call__(self, x: jax.Array, out_sharding: Any = None) -> jax.Array:
        """``Linear``'s output plus the LoRA branch's.

        Args:
            x: Array of shape ``(..., in_features)``.
            out_sharding: Optional output sharding of the ``Linear`` matmul.

        Returns:
            Array of shape ``(..., out_features)``.
        """
        y = super().__call__(x, out_sharding=out_sharding)
        return y + self.lora(x)
