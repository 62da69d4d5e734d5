"""Layers that compute exactly what a Haiku or Linen layer does, in ramie's layout.

Two Haiku layers cannot be expressed by ramie's own layers, so a loaded model
would drift from Haiku (BatchNorm, once training continues) or differ from the
first step (GRU). These variants keep ramie's parameter names and shapes, so
:func:`~ramie.bridge.load_haiku` fills them like their ramie parents, and
change only the computation:

* :class:`HaikuBatchNorm` updates its running statistics as
  ``hk.BatchNorm`` does: a zero-debiased exponential moving average
  (``hk.ExponentialMovingAverage``) that keeps a ``hidden`` sum and a step
  ``counter`` besides the ``average``.
* :class:`HaikuGRUCell` applies the reset gate to the hidden state *before*
  the recurrent matmul, as ``hk.GRU`` (and Cho et al., 2014) do; ramie's
  :class:`~ramie.GRUCell` (like Flax's and PyTorch's) applies it after.

Linen's ``nn.GRUCell`` has one parameter more than ramie's (a bias on the
recurrent candidate), so :class:`LinenGRUCell` lives here too.

Haiku is not imported here; the layers are plain ramie Modules.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ramie._src.core.rngs import Rngs
from ramie._src.core.variables import BatchStat, Param
from ramie._src.nn.checks import check_features
from ramie._src.nn.normalization import (
    BatchNorm,
    canonicalize_axes,
    compute_stats,
    normalize,
)
from ramie._src.nn.recurrent import GRUCell


class HaikuBatchNorm(BatchNorm):
    """BatchNorm whose running statistics follow ``hk.BatchNorm`` step by step.

    Normalisation is :class:`~ramie.BatchNorm`'s (batch statistics in
    training, ``mean``/``var`` in evaluation). Only the update of the running
    statistics differs: with decay ``d = momentum`` and step ``t``,

    .. math::
        hidden_t = d \\cdot hidden_{t-1} + (1 - d) \\cdot stat_t, \\qquad
        average_t = hidden_t / (1 - d^t)

    for the mean and the variance, as Haiku's ``ExponentialMovingAverage``
    with ``zero_debias=True``. ``mean``/``var`` hold the averages,
    ``mean_hidden``/``var_hidden`` the hidden sums and ``counter`` the step
    (all :class:`~ramie.BatchStat`). As in Haiku, both averages start at zero.

    :func:`ramie.bridge.load_haiku` fills all five statistics from Haiku's
    ``mean_ema``/``var_ema`` state, so training continues exactly where Haiku
    stopped; a plain :class:`~ramie.BatchNorm` receives the averages only.

    Haiku's other options map as follows: ``data_format="channels_first"``
    is ``axis=1`` (the loader reshapes Haiku's ``(1, C, 1, 1)`` parameters
    and statistics to ``(C,)``); ``create_scale``/``create_offset`` are
    ``use_scale``/``use_bias``; ``cross_replica_axis`` is ``axis_name``; and
    ``bn(x, is_training=False, test_local_stats=True)`` is
    ``bn(x, use_running_average=True, test_local_stats=True)``.

    Args:
        num_features: Size of the feature axis.
        momentum: Haiku's ``decay_rate``.
        epsilon: Haiku's ``eps``.
        rngs: RNG streams.
        **kwargs: Any other :class:`~ramie.BatchNorm` argument.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> bn = ramie.bridge.HaikuBatchNorm(2, momentum=0.9, rngs=ramie.Rngs(0))
        >>> _ = bn(jnp.array([[1.0, 2.0], [3.0, 6.0]]))
        >>> bn.mean.value, int(bn.counter.value)  # debiased: the first batch's mean
        (Array([2., 4.], dtype=float32), 1)
    """

    # filled from Haiku's EMA state by load_haiku, outside the layer's kind
    _load_extras = ("mean_hidden", "var_hidden", "counter")

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.99,
        epsilon: float = 1e-5,
        rngs: Rngs,
        **kwargs: Any,
    ):
        super().__init__(
            num_features, momentum=momentum, epsilon=epsilon, rngs=rngs, **kwargs
        )
        zeros = jnp.zeros((num_features,), jnp.float32)
        self.var.value = zeros
        self.mean_hidden = BatchStat(zeros)
        self.var_hidden = BatchStat(zeros)
        self.counter = BatchStat(jnp.zeros((), jnp.int32))

    def __call__(
        self,
        x: jax.Array,
        use_running_average: bool | None = None,
        *,
        mask: jax.Array | None = None,
        test_local_stats: bool = False,
    ) -> jax.Array:
        """Normalise ``x``; in training also update the statistics as Haiku does.

        Args:
            x: The input.
            use_running_average: Evaluation mode (Haiku's ``not is_training``);
                ``None`` uses the layer's ``use_running_average``.
            mask: Which entries count in the batch statistics.
            test_local_stats: In evaluation, normalise with the statistics of
                this batch instead of the running averages, and update
                nothing (Haiku's ``test_local_stats=True``).
        """
        if use_running_average is None:
            use_running_average = self.use_running_average
        if use_running_average and not test_local_stats:
            return super().__call__(x, True, mask=mask)
        feature_axes = canonicalize_axes(x.ndim, self.axis)
        check_features(self, x, feature_axes, self.num_features)
        reduction_axes = tuple(i for i in range(x.ndim) if i not in feature_axes)
        scale = self.scale._raw if self.scale is not None else None
        bias = self.bias._raw if self.bias is not None else None
        x, scale, bias = self.promote_dtype((x, scale, bias), dtype=self.dtype)
        mean, var = compute_stats(
            x,
            reduction_axes,
            dtype=self.dtype,
            axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups,
            use_fast_variance=self.use_fast_variance,
            mask=mask,
        )
        if not use_running_average:  # training (not test_local_stats): update
            self._update_statistics(mean, var)
        return normalize(
            x,
            mean,
            var,
            scale,
            bias,
            reduction_axes,
            feature_axes,
            self.dtype,
            self.epsilon,
        )

    def _update_statistics(self, mean: jax.Array, var: jax.Array) -> None:
        """One step of Haiku's zero-debiased moving averages."""
        stat_dtype = self.mean_hidden._raw.dtype
        decay = jnp.asarray(self.momentum, stat_dtype)
        one = jnp.ones((), stat_dtype)
        counter = self.counter._raw + 1
        debias = one - jnp.power(decay, counter)
        for stat, hidden, average in (
            (mean, self.mean_hidden, self.mean),
            (var, self.var_hidden, self.var),
        ):
            h = hidden._raw * decay + stat.astype(stat_dtype) * (one - decay)
            hidden.value = h
            average.value = h / debias
        self.counter.value = counter


class HaikuGRUCell(GRUCell):
    r"""A GRU cell with ``hk.GRU``'s candidate: reset applied before the matmul.

    .. math::
        \begin{array}{ll}
        r = \sigma(W_{ir} x + b_{ir} + W_{hr} h) \\
        z = \sigma(W_{iz} x + b_{iz} + W_{hz} h) \\
        n = \tanh(W_{in} x + b_{in} + W_{hn} (r \odot h)) \\
        h' = (1 - z) n + z h
        \end{array}

    Parameters, gate order (r, z, n) and the meaning of ``z`` are those of
    :class:`~ramie.GRUCell` (``dense_i`` with bias, ``dense_h`` without);
    only ``n`` differs: ramie's GRUCell computes ``r * (W_hn h)``, which no
    choice of weights turns into ``W_hn (r * h)``. Haiku's ``z`` is the
    complement of this one (``h' = (1 - z) h + z n``); :func:`~ramie.bridge.
    load_haiku` negates its weights and bias on the way in, since
    ``1 - sigmoid(a) = sigmoid(-a)``.

    Takes the arguments of :class:`~ramie.GRUCell`.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> cell = ramie.bridge.HaikuGRUCell(3, 4, rngs=ramie.Rngs(0))
        >>> x = jnp.ones((2, 3))
        >>> h, y = cell(jnp.zeros((2, 4)), x)
        >>> h.shape, cell.dense_h.kernel.shape
        ((2, 4), (4, 12))
    """

    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[Any, Any]:
        """One GRU step; returns ``(new_h, new_h)``."""
        h = carry
        xr, xz, xn = jnp.split(self.dense_i(inputs), 3, axis=-1)
        hidden = self.hidden_features
        h, kernel = self.promote_dtype((h, self.dense_h.kernel._raw), dtype=self.dtype)
        hr, hz = jnp.split(h @ kernel[:, : 2 * hidden], 2, axis=-1)
        r = self.gate_fn(xr + hr)
        z = self.gate_fn(xz + hz)
        n = self.activation_fn(xn + (r * h) @ kernel[:, 2 * hidden :])
        new_h = (1.0 - z) * n + z * h
        return new_h, new_h


class LinenGRUCell(GRUCell):
    r"""A GRU cell with Linen's recurrent candidate bias ``b_hn``.

    .. math::
        n = \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn}))

    Everything else is :class:`~ramie.GRUCell` (which, like Flax NNX's, has
    no ``b_hn``). Linen's ``nn.GRUCell`` starts ``b_hn`` at zero and trains
    it, so a trained Linen GRU needs this cell: :func:`~ramie.bridge.
    load_linen` puts Linen's ``hn/bias`` into ``bias_hn``.

    Takes the arguments of :class:`~ramie.GRUCell`; ``bias_hn`` starts at
    zero, so a fresh cell computes what a fresh ``GRUCell`` computes.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> cell = ramie.bridge.LinenGRUCell(3, 4, rngs=ramie.Rngs(0))
        >>> cell.bias_hn.shape
        (4,)
        >>> cell(jnp.zeros((2, 4)), jnp.ones((2, 3)))[0].shape
        (2, 4)
    """

    def __init__(self, in_features: int, hidden_features: int, **kwargs: Any):
        super().__init__(in_features, hidden_features, **kwargs)
        self.bias_hn = Param(jnp.zeros((hidden_features,), self.param_dtype))

    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[Any, Any]:
        """One GRU step; returns ``(new_h, new_h)``."""
        h = carry
        xr, xz, xn = jnp.split(self.dense_i(inputs), 3, axis=-1)
        hr, hz, hn = jnp.split(self.dense_h(h), 3, axis=-1)
        (bias_hn,) = self.promote_dtype((self.bias_hn._raw,), dtype=self.dtype)
        r = self.gate_fn(xr + hr)
        z = self.gate_fn(xz + hz)
        n = self.activation_fn(xn + r * (hn + bias_hn))
        new_h = (1.0 - z) * n + z * h
        return new_h, new_h
