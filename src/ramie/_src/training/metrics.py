"""Metrics: running averages, accuracy and Welford statistics as graph objects.

A metric accumulates over batches with ``update(**kwargs)``, reports with
``compute()`` and starts over with ``reset()``. Its running totals live in
:class:`MetricState` Variables, so a metric is model-like state: pass it to
``ramie.jit`` next to the model and the updates made inside are carried out,
split it, checkpoint it, or filter it out with ``ramie.MetricState``.

:class:`MultiMetric` bundles named metrics and routes one ``update(**kw)`` call
to all of them, so a training step updates loss and accuracy together. The
arithmetic follows ``flax.nnx.metrics`` (same dtypes, same NaN before the first
update), so numbers match Flax exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from ramie._src.core.graph import api
from ramie._src.core.pytree import Pytree
from ramie._src.core.variables import Variable

_RESERVED = frozenset({"reset", "update", "compute", "split"})


class MetricState(Variable):
    """The Variable type of a metric's running totals.

    Filter with it to separate metric state from model state, e.g.
    ``ramie.state(metrics, ramie.metrics.MetricState)``.

    Example:
        >>> import ramie
        >>> avg = ramie.metrics.Average()
        >>> sorted(ramie.state(avg, ramie.metrics.MetricState))
        ['count', 'total']
    """

    __slots__ = ()


class Metric(Pytree):
    """Base class of metrics: subclasses implement ``update``, ``compute``, ``reset``.

    Keep running totals in :class:`MetricState` Variables and update them in
    place (``self.total[...] += x``); then the metric works eagerly and inside
    ``ramie.jit``.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> class Max(ramie.metrics.Metric):
        ...     def __init__(self):
        ...         self.best = ramie.metrics.MetricState(jnp.array(-jnp.inf))
        ...     def update(self, *, values, **_):
        ...         self.best[...] = jnp.maximum(self.best[...], values.max())
        ...     def compute(self):
        ...         return self.best[...]
        ...     def reset(self):
        ...         self.best[...] = -jnp.inf
        >>> m = Max()
        >>> m.update(values=jnp.array([1.0, 3.0]))
        >>> float(m.compute())
        3.0
    """

    def __init__(self) -> None:
        raise NotImplementedError(
            f"{type(self).__name__}.__init__(): subclasses of ramie.metrics.Metric "
            "define their own __init__ that creates MetricState Variables, e.g.\n"
            "      self.total = ramie.metrics.MetricState(jnp.array(0.0))"
        )

    def reset(self) -> None:
        """Reset the running totals in place."""
        raise NotImplementedError(f"{type(self).__name__} does not implement reset()")

    def update(self, **kwargs: Any) -> None:
        """Fold a batch into the running totals in place."""
        raise NotImplementedError(f"{type(self).__name__} does not implement update()")

    def compute(self) -> Any:
        """The metric's current value."""
        raise NotImplementedError(f"{type(self).__name__} does not implement compute()")

    def split(self, *filters: Any) -> tuple[Any, ...]:
        """``ramie.split(self, *filters)``: a GraphDef and State(s) of the metric.

        Example:
            >>> import ramie
            >>> graphdef, state = ramie.metrics.Average().split()
            >>> sorted(state)
            ['count', 'total']
        """
        return api.split(self, *filters)


def _get_arg(metric: Metric, argname: str, kwargs: dict[str, Any]) -> Any:
    if argname not in kwargs:
        name = type(metric).__name__
        raise TypeError(
            f"{name}.update(): expected the keyword argument {argname!r} (the "
            f"argname given to {name}(argname=...)); got {sorted(kwargs)}.\n"
            f"  Fix: metric.update({argname}=batch_values)"
        )
    return kwargs[argname]


def _is_python_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class Average(Metric):
    """The mean of every value passed to ``update`` so far.

    Args:
        argname: The keyword of ``update`` that carries the values (default
            ``'values'``): ``Average('loss')`` is updated with ``update(loss=x)``.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> avg = ramie.metrics.Average()
        >>> avg.update(values=jnp.array([1, 2, 3, 4]))
        >>> avg.update(values=jnp.array([3, 2, 1, 0]))
        >>> avg.compute()
        Array(2., dtype=float32)
        >>> avg.reset()
        >>> bool(jnp.isnan(avg.compute()))
        True
    """

    def __init__(self, argname: str = "values") -> None:
        self.argname = argname
        self.total = MetricState(jnp.array(0, dtype=jnp.float32))
        self.count = MetricState(jnp.array(0, dtype=jnp.int32))

    def reset(self) -> None:
        """Set the running total and count back to zero."""
        self.total[...] = jnp.array(0, dtype=jnp.float32)
        self.count[...] = jnp.array(0, dtype=jnp.int32)

    def update(self, mask: jax.Array | None = None, **kwargs: Any) -> None:
        """Add a batch of values (an array or a Python number).

        Args:
            mask: Optional array broadcastable to the values; entries where it
                is zero/False are left out. A mask that broadcasts (e.g.
                ``(batch, 1)`` for ``(batch, k)`` values) counts every value it
                keeps; Flax counts ``mask.sum()`` there instead.
            **kwargs: Must hold ``kwargs[argname]``; other keys are ignored, so
                one ``MultiMetric.update`` call can feed several metrics.

        Raises:
            TypeError: the ``argname`` keyword is missing.
            ValueError: a mask was given with a Python number.
        """
        values = _get_arg(self, self.argname, kwargs)
        if isinstance(values, Variable):
            values = values[...]
        if _is_python_number(values):
            if mask is not None:
                raise ValueError(
                    f"{type(self).__name__}.update(mask=...): {self.argname!r} is a "
                    f"Python {type(values).__name__}; with a mask it should be a jax "
                    "array of values.\n"
                    f"  Fix: metric.update({self.argname}=jnp.asarray(values), "
                    "mask=mask)"
                )
            self.total[...] += values
            self.count[...] += 1
            return
        values = jnp.asarray(values)
        if mask is None:
            self.total[...] += values.sum()
            self.count[...] += values.size
        else:
            mask = jnp.asarray(mask)
            self.total[...] += (values * mask.astype(values.dtype)).sum()
            self.count[...] += (
                jnp.broadcast_to(mask, values.shape).sum().astype(jnp.int32)
            )

    def compute(self) -> jax.Array:
        """``total / count`` (NaN before the first update)."""
        return self.total[...] / self.count[...]


@dataclasses.dataclass(frozen=True)
class Statistics:
    """What :class:`Welford` computes: mean, its standard error, standard deviation.

    A JAX pytree, so it can be returned from ``ramie.jit``.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> s = ramie.metrics.Statistics(jnp.array(1.0), jnp.array(0.0), jnp.array(0.0))
        >>> float(s.mean)
        1.0
    """

    mean: Any
    standard_error_of_mean: Any
    standard_deviation: Any


jax.tree_util.register_dataclass(
    Statistics,
    data_fields=["mean", "standard_error_of_mean", "standard_deviation"],
    meta_fields=[],
)


class Welford(Metric):
    r"""Streaming mean and standard deviation (Welford's / Chan's algorithm).

    Each batch is merged into the running count :math:`n`, mean :math:`\mu`
    and sum of squared deviations :math:`M_2` with Chan et al.'s pairwise
    update, which stays accurate where ``E[x^2] - E[x]^2`` would cancel.

    Args:
        argname: The keyword of ``update`` that carries the values.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> w = ramie.metrics.Welford()
        >>> w.update(values=jnp.array([1.0, 2.0, 3.0, 4.0]))
        >>> w.update(values=jnp.array([3.0, 2.0, 1.0, 0.0]))
        >>> stats = w.compute()
        >>> float(stats.mean), round(float(stats.standard_deviation), 4)
        (2.0, 1.2247)
    """

    def __init__(self, argname: str = "values") -> None:
        self.argname = argname
        self.count = MetricState(jnp.array(0, dtype=jnp.int32))
        self.mean = MetricState(jnp.array(0, dtype=jnp.float32))
        self.m2 = MetricState(jnp.array(0, dtype=jnp.float32))

    def reset(self) -> None:
        """Forget every value seen so far."""
        self.count[...] = jnp.array(0, dtype=jnp.int32)
        self.mean[...] = jnp.array(0, dtype=jnp.float32)
        self.m2[...] = jnp.array(0, dtype=jnp.float32)

    def update(self, mask: jax.Array | None = None, **kwargs: Any) -> None:
        """Merge a batch of values (an array or a Python number).

        Args:
            mask: Optional array broadcastable to the values; entries where it
                is zero/False are left out (an extension over Flax, which has
                no mask here).
            **kwargs: Must hold ``kwargs[argname]``; other keys are ignored.

        Raises:
            TypeError: the ``argname`` keyword is missing.
        """
        values = _get_arg(self, self.argname, kwargs)
        if isinstance(values, Variable):
            values = values[...]
        if _is_python_number(values):
            batch_count: Any = 1
            batch_mean: Any = values
            batch_m2: Any = 0.0
        else:
            values = jnp.asarray(values)
            if mask is None:
                batch_count = values.size
                batch_mean = values.mean()
                batch_m2 = values.var() * batch_count
            else:
                w = jnp.broadcast_to(jnp.asarray(mask), values.shape).astype(
                    jnp.float32
                )
                batch_count = w.sum().astype(jnp.int32)
                safe = jnp.maximum(w.sum(), 1.0)
                batch_mean = (values * w).sum() / safe
                batch_m2 = (w * (values - batch_mean) ** 2).sum()
        old_count = self.count[...]
        self.count[...] += batch_count
        new_count = self.count[...]
        delta = batch_mean - self.mean[...]
        # Chan, Golub & LeVeque (1979): combine two (count, mean, M2) summaries.
        safe_count = jnp.maximum(new_count, 1)
        self.mean[...] += delta * batch_count / safe_count
        self.m2[...] += batch_m2 + delta * delta * batch_count * old_count / safe_count

    def compute(self) -> Statistics:
        """Mean, standard error of the mean and standard deviation so far.

        Returns:
            A :class:`Statistics`; the deviations are NaN before any update.
        """
        count = self.count[...]
        variance = self.m2[...] / count
        std = variance**0.5
        return Statistics(
            mean=self.mean[...],
            standard_error_of_mean=std / count**0.5,
            standard_deviation=std,
        )


class Accuracy(Average):
    """The fraction of correct predictions so far.

    With ``threshold=None`` (multi-class), ``logits`` has one more axis than
    ``labels`` and a prediction is ``logits.argmax(-1)``. With a threshold
    (binary), ``logits`` and ``labels`` have the same shape and a prediction is
    positive when ``logits >= threshold``; a label is positive when ``> 0``.

    Args:
        threshold: Decision threshold for binary classification, or None.
        *args: Passed on to :class:`Average` (``argname``).
        **kwargs: Passed on to :class:`Average`.

    Raises:
        TypeError: ``threshold`` is not a number.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> acc = ramie.metrics.Accuracy()
        >>> logits = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
        >>> acc.update(logits=logits, labels=jnp.array([0, 1, 1]))
        >>> round(float(acc.compute()), 4)
        0.6667
        >>> binary = ramie.metrics.Accuracy(threshold=0.5)
        >>> binary.update(logits=jnp.array([0.7, 0.2]), labels=jnp.array([1, 1]))
        >>> float(binary.compute())
        0.5
    """

    def __init__(
        self, threshold: float | None = None, *args: Any, **kwargs: Any
    ) -> None:
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, (int, float))
        ):
            raise TypeError(
                "ramie.metrics.Accuracy(threshold=...): expected a float (binary "
                "classification) or None (multi-class), got "
                f"{type(threshold).__name__}.\n"
                "  Fix: Accuracy(threshold=0.5)"
            )
        self.threshold = None if threshold is None else float(threshold)
        super().__init__(*args, **kwargs)

    def update(  # type: ignore[override]
        self,
        *,
        logits: jax.Array,
        labels: jax.Array,
        mask: jax.Array | None = None,
        **_: Any,
    ) -> None:
        """Count the correct predictions of a batch.

        Args:
            logits: Predicted scores: ``(..., classes)`` for multi-class,
                the same shape as ``labels`` for binary.
            labels: Integer (or bool) ground-truth labels.
            mask: Optional array broadcastable to ``labels``; masked-out
                examples are not counted.
            **_: Other keywords are ignored (for ``MultiMetric``).

        Raises:
            ValueError: the shapes or the labels' dtype do not fit.
        """
        logits = jnp.asarray(logits)
        labels = jnp.asarray(labels)
        if self.threshold is not None:
            if logits.ndim != labels.ndim:
                raise ValueError(
                    f"Accuracy(threshold={self.threshold}).update(): For binary "
                    "classification, logits and labels need the same rank; got "
                    f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)}.\n"
                    "  Fix: squeeze the class axis, e.g. logits[..., 0], or use "
                    "Accuracy() for multi-class logits."
                )
        elif logits.ndim != labels.ndim + 1:
            raise ValueError(
                "Accuracy().update(): For multi-class classification, logits need "
                "one more axis than labels (the classes); got logits "
                f"{tuple(logits.shape)} and labels {tuple(labels.shape)}.\n"
                "  Fix: pass integer class labels, not one-hot (labels.argmax(-1)), or "
                "use Accuracy(threshold=0.5) for binary scores."
            )
        if labels.dtype == jnp.bool_ or jnp.issubdtype(labels.dtype, jnp.integer):
            labels = labels.astype(jnp.int32)
        else:
            raise ValueError(
                "Accuracy.update(): labels must be integers, got dtype "
                f"{labels.dtype}.\n"
                "  Fix: labels.astype(jnp.int32)"
            )
        if self.threshold is not None:
            correct = (logits >= self.threshold) == (labels > 0)
        else:
            correct = logits.argmax(axis=-1) == labels
        super().update(values=correct, mask=mask)


class MultiMetric(Metric):
    """Several named metrics updated, computed and reset together.

    ``update(**updates)`` passes every keyword to every metric (each takes what
    it needs). ``mask=`` goes to all of them, or give a dict
    ``{metric_name: mask}`` to mask them separately.

    Args:
        **metrics: The metrics, by name; each is also an attribute.

    Raises:
        ValueError: a name collides with a method (``update``, ``compute``,
            ``reset``, ``split``).
        TypeError: a value is not a :class:`Metric`.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> metrics = ramie.MultiMetric(
        ...     accuracy=ramie.metrics.Accuracy(), loss=ramie.metrics.Average("loss"))
        >>> metrics.update(logits=jnp.array([[0.1, 0.9]]), labels=jnp.array([1]),
        ...                loss=jnp.array(0.5))
        >>> {k: float(v) for k, v in metrics.compute().items()}
        {'accuracy': 1.0, 'loss': 0.5}
    """

    def __init__(self, **metrics: Metric) -> None:
        for name, metric in metrics.items():
            if name in _RESERVED or name.startswith("_"):
                raise ValueError(
                    f"ramie.MultiMetric({name}=...): {name!r} is reserved (it would "
                    "hide a method or internal attribute); rename it, e.g. "
                    f"MultiMetric({name}_metric=...)"
                )
            if not isinstance(metric, Metric):
                raise TypeError(
                    f"ramie.MultiMetric({name}=...): expected a ramie.metrics.Metric, "
                    f"got {type(metric).__name__}.\n"
                    f"  Fix: MultiMetric({name}=ramie.metrics.Average())"
                )
        self._metric_names = tuple(metrics)
        for name, metric in metrics.items():
            setattr(self, name, metric)

    def reset(self) -> None:
        """Reset every metric."""
        for name in self._metric_names:
            getattr(self, name).reset()

    def update(self, **updates: Any) -> None:
        """Update every metric with the same keywords.

        Args:
            **updates: Keywords for the metrics' ``update``; ``mask`` may be an
                array (for all metrics) or a dict from metric name to mask.
        """
        mask = updates.pop("mask", None)
        for name in self._metric_names:
            m = mask.get(name) if isinstance(mask, dict) else mask
            extra = {} if m is None else {"mask": m}
            getattr(self, name).update(**updates, **extra)

    def compute(self) -> dict[str, Any]:
        """``{name: metric.compute()}`` for every metric."""
        return {name: getattr(self, name).compute() for name in self._metric_names}
