"""Weight re-parametrisations that wrap another layer: SpectralNorm and WeightNorm.

Both wrappers hold the wrapped layer as ``layer_instance`` and, on every call,
rewrite some of its parameters in place before calling it: SpectralNorm divides
each weight matrix by an estimate of its largest singular value (power
iteration, with the iteration vector ``u`` and the estimate ``sigma`` kept as
:class:`~ramie.BatchStat`), WeightNorm rescales each kernel to unit L2 norm per
feature and multiplies it by a learned ``scale``. The rewrite is a function of
the previous value, so gradients flow to the stored weights, and the stored
weights are the normalised ones after a call - the behaviour of Flax NNX, which
keeps checkpoints interchangeable. Per-parameter state lives in dicts keyed by
the parameter's path inside the wrapped layer, e.g. ``batch_stats[('kernel',
'u')]`` and ``scales[('kernel',)]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ramie._src.core.filters import PathContains, to_predicate
from ramie._src.core.graph import api as graph_api
from ramie._src.core.module import Module
from ramie._src.core.paths import format_path
from ramie._src.core.rngs import Rngs
from ramie._src.core.state import to_flat_state
from ramie._src.core.variables import BatchStat, Param
from ramie._src.nn import initializers
from ramie._src.nn.dtypes import canonicalize_dtype
from ramie._src.nn.dtypes import promote_dtype as default_promote_dtype
from ramie._src.nn.normalization import Axes, canonicalize_axes

# Initializers that ignore their key: WeightNorm does not advance the RNG
# stream for them, exactly like Flax, so later layers get Flax's weights.
_KEYLESS_INITS = (initializers.ones, initializers.zeros)
_KERNELS = PathContains("kernel")


def l2_normalize(x: jax.Array, axis: Any = None, eps: float = 1e-12) -> jax.Array:
    """``x / sqrt(sum(x**2, axis) + eps)``; ``axis=None`` uses the whole array.

    Example:
        >>> import jax.numpy as jnp
        >>> l2_normalize(jnp.array([3.0, 4.0]))
        Array([0.6, 0.8], dtype=float32)
    """
    return x * lax.rsqrt(jnp.sum(x * x, axis=axis, keepdims=True) + eps)


def _params(layer: Module) -> list[tuple[tuple, Param]]:
    """``(path, Param)`` of the wrapped layer, sorted by path (Flax's order)."""
    return list(to_flat_state(graph_api.state(layer, Param)))


def _stale(cls: str, kind: str, path: tuple) -> RuntimeError:
    return RuntimeError(
        f"{cls}.__call__: there is no {kind} for the parameter "
        f"layer_instance.{format_path(path)}.\n"
        "  The wrapped layer gained parameters after the wrapper was built; wrap "
        "the finished layer:\n"
        f"      layer = ...; wrapped = ramie.{cls}(layer, rngs=rngs)"
    )


class SpectralNorm(Module):
    """Divide every weight matrix of a layer by its largest singular value.

    Miyato et al., 2018 (https://arxiv.org/abs/1802.05957). Before each call,
    ``n_steps`` of power iteration refine a vector ``u`` per weight; the
    singular-value estimate :math:`\\sigma = v^\\top W u` divides the weight,
    which is written back into ``layer_instance``. Weights with more than two
    axes are viewed as matrices ``(-1, last_axis)``; scalars and vectors (e.g.
    biases) are left alone. In training (``update_stats=True``, set by
    ``train()``) the refined ``u`` and ``sigma`` are stored in
    ``batch_stats``; ``eval()`` freezes them.

    Args:
        layer_instance: The layer to wrap (built already).
        n_steps: Power-iteration steps per call (0 disables normalization).
        epsilon: Added inside the square root of the L2 normalizations.
        dtype: Dtype of the written-back weights (``None``: inferred).
        param_dtype: Dtype of ``u`` and ``sigma``.
        error_on_non_matrix: Raise on weights with more than two axes instead
            of flattening their leading axes.
        update_stats: Store the refined ``u``/``sigma`` on each call.
        rngs: RNG streams; each matrix's ``u`` draws one key from ``params``.

    Raises:
        ValueError: if ``error_on_non_matrix`` and a weight has over two axes.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> rngs = ramie.Rngs(0)
        >>> layer = ramie.SpectralNorm(ramie.Linear(4, 5, rngs=rngs), rngs=rngs)
        >>> sorted(layer.batch_stats)
        [('kernel', 'sigma'), ('kernel', 'u')]
        >>> layer.batch_stats[('kernel', 'u')].shape
        (1, 5)
        >>> layer(jnp.ones((3, 4))).shape
        (3, 5)
    """

    def __init__(
        self,
        layer_instance: Module,
        *,
        n_steps: int = 1,
        epsilon: float = 1e-12,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        error_on_non_matrix: bool = False,
        update_stats: bool = True,
        rngs: Rngs,
    ):
        self.layer_instance = layer_instance
        self.n_steps = n_steps
        self.epsilon = epsilon
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.error_on_non_matrix = error_on_non_matrix
        # train()/eval() flip `use_running_average`; updating is its opposite.
        self.use_running_average = not update_stats
        batch_stats: dict[tuple, BatchStat] = {}
        for path, param in _params(layer_instance):
            matrix = self._as_matrix(path, param._raw)
            if matrix is None:
                continue
            key = rngs.params()
            u0 = initializers.normal()(key, (1, matrix.shape[-1]), param_dtype)
            batch_stats[(*path, "u")] = BatchStat(u0)
            batch_stats[(*path, "sigma")] = BatchStat(
                initializers.ones(key, (), param_dtype)
            )
        self.batch_stats = batch_stats

    def _as_matrix(self, path: tuple, value: jax.Array) -> jax.Array | None:
        if value.ndim <= 1 or self.n_steps < 1:
            return None
        if value.ndim > 2:
            if self.error_on_non_matrix:
                raise ValueError(
                    "SpectralNorm(error_on_non_matrix=True): the parameter "
                    f"layer_instance.{format_path(path)} has shape "
                    f"{tuple(value.shape)} ({value.ndim} axes); spectral "
                    "normalization needs a matrix.\n"
                    "  Flatten its leading axes instead with "
                    "SpectralNorm(layer, error_on_non_matrix=False, rngs=rngs)"
                )
            value = jnp.reshape(value, (-1, value.shape[-1]))
        return value

    def __call__(self, x: Any, update_stats: bool | None = None) -> Any:
        """Normalise the wrapped layer's weights, then call it on ``x``.

        Args:
            x: Input of the wrapped layer.
            update_stats: Store the refined ``u``/``sigma`` (default: ``not
                self.use_running_average``).

        Returns:
            ``layer_instance(x)`` computed with spectrally normalised weights.

        Raises:
            RuntimeError: if the wrapped layer has parameters without state.
        """
        if update_stats is None:
            update_stats = not self.use_running_average
        for path, param in _params(self.layer_instance):
            self._normalize_inplace(path, param, update_stats)
        return self.layer_instance(x)

    def _normalize_inplace(self, path: tuple, param: Param, update_stats: bool) -> None:
        w = self._as_matrix(path, param._raw)
        if w is None:
            return
        path_u, path_sigma = (*path, "u"), (*path, "sigma")
        for p in (path_u, path_sigma):
            if p not in self.batch_stats:
                raise _stale("SpectralNorm", f"batch_stats[{p!r}]", path)
        u = self.batch_stats[path_u]._raw
        v = u
        for _ in range(self.n_steps):
            v = l2_normalize(jnp.matmul(u, w.T), eps=self.epsilon)
            u = l2_normalize(jnp.matmul(v, w), eps=self.epsilon)
        u = lax.stop_gradient(u)
        v = lax.stop_gradient(v)
        sigma = jnp.matmul(jnp.matmul(v, w), u.T)[0, 0]
        w = jnp.reshape(w / jnp.where(sigma != 0, sigma, 1), param.shape)
        if update_stats:
            self.batch_stats[path_u][...] = u
            self.batch_stats[path_sigma][...] = sigma
        dtype = canonicalize_dtype(w, u, v, sigma, dtype=self.dtype)
        param[...] = jnp.asarray(w, dtype)


class WeightNorm(Module):
    """Re-parametrise kernels as a direction of unit L2 norm times a learned scale.

    Salimans & Kingma, 2016 (https://arxiv.org/abs/1602.07868). Before each
    call, every parameter of ``layer_instance`` that ``variable_filter``
    selects is divided by its L2 norm over all axes except ``feature_axes``,
    multiplied by ``scales[path]`` (one value per feature) and written back.

    Args:
        layer_instance: The layer to wrap (built already).
        feature_axes: Axes of a kernel that keep separate norms (``None`` or
            ``()``: one norm for the whole kernel).
        use_scale: Learn a scale per feature (a :class:`~ramie.Param` in
            ``scales``); otherwise kernels keep unit norm.
        scale_init: Initializer of the scales (ones).
        epsilon: Added inside the square root of the norm.
        dtype: Dtype of the written-back weights (``None``: inferred).
        param_dtype: Dtype of the scales.
        variable_filter: Which parameters to normalise (``PathContains('kernel')``).
        promote_dtype: Kept for API compatibility with Flax.
        rngs: RNG streams; a random ``scale_init`` draws from ``params``.

    Example:
        >>> import jax.numpy as jnp, numpy as np, ramie
        >>> rngs = ramie.Rngs(0)
        >>> layer = ramie.WeightNorm(ramie.Linear(8, 4, rngs=rngs), rngs=rngs)
        >>> layer.scales[("kernel",)].shape
        (4,)
        >>> layer(jnp.ones((5, 8))).shape
        (5, 4)
        >>> np.linalg.norm(layer.layer_instance.kernel.value, axis=0).round(4)
        array([1., 1., 1., 1.], dtype=float32)
    """

    def __init__(
        self,
        layer_instance: Module,
        *,
        feature_axes: Axes | None = -1,
        use_scale: bool = True,
        scale_init: Callable[..., Any] = initializers.ones,
        epsilon: float = 1e-12,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        variable_filter: Any = _KERNELS,
        promote_dtype: Callable[..., Any] = default_promote_dtype,
        rngs: Rngs,
    ):
        self.layer_instance = layer_instance
        self.feature_axes = () if feature_axes is None else feature_axes
        self.use_scale = use_scale
        self.scale_init = scale_init
        self.epsilon = epsilon
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.variable_filter = to_predicate(variable_filter)
        self.promote_dtype = promote_dtype
        self.scales: dict[tuple, Param] | None = None
        if use_scale:
            scales: dict[tuple, Param] = {}
            for path, param in _params(layer_instance):
                if not self.variable_filter(path, param):
                    continue
                axes = canonicalize_axes(param.ndim, self.feature_axes)
                shape = tuple(param.shape[a] for a in axes)
                if scale_init in _KEYLESS_INITS:
                    key = jax.random.key(0)  # ignored by the initializer
                else:
                    key = rngs.params()
                scales[path] = Param(scale_init(key, shape, param_dtype))
            self.scales = scales

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """Normalise the selected weights, then call ``layer_instance(x, ...)``.

        Args:
            x: Input of the wrapped layer.
            *args: More positional arguments for the wrapped layer.
            **kwargs: Keyword arguments for the wrapped layer.

        Returns:
            The wrapped layer's output, computed with normalised weights.

        Raises:
            RuntimeError: if a selected parameter has no scale.
        """
        for path, param in _params(self.layer_instance):
            if self.variable_filter(path, param):
                self._normalize_inplace(path, param)
        return self.layer_instance(x, *args, **kwargs)

    def _normalize_inplace(self, path: tuple, param: Param) -> None:
        value = param._raw
        feature_axes = canonicalize_axes(value.ndim, self.feature_axes)
        reduction_axes = tuple(i for i in range(value.ndim) if i not in feature_axes)
        direction = l2_normalize(value, axis=reduction_axes, eps=self.epsilon)
        parts = [value]
        if self.use_scale:
            assert self.scales is not None
            if path not in self.scales:
                raise _stale("WeightNorm", f"scales[{path!r}]", path)
            scale = self.scales[path]._raw
            shape = [
                value.shape[a] if a in feature_axes else 1 for a in range(value.ndim)
            ]
            scale = jnp.reshape(scale, shape)
            direction = direction * scale
            parts.append(scale)
        dtype = canonicalize_dtype(*parts, dtype=self.dtype)
        param.set_value(jnp.asarray(direction, dtype))
