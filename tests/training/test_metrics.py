"""Tests for ramie.metrics: equal to flax.nnx.metrics, usable in ramie.jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import ramie
import ramie.metrics as rm


def _batches(seed: int, n: int = 3, shape: tuple = (8,)) -> list[jax.Array]:
    keys = jax.random.split(jax.random.key(seed), n)
    return [jax.random.normal(k, shape) * 3 + 1 for k in keys]


def _close(a, b, rtol=1e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, equal_nan=True)


# ------------------------------------------------------------------ Average
def test_average_matches_flax_over_batches_and_reset():
    ours, ref = rm.Average(), nnx.metrics.Average()
    _close(ours.compute(), ref.compute())  # NaN before any update
    for x in _batches(0):
        ours.update(values=x)
        ref.update(values=x)
        _close(ours.compute(), ref.compute())
    ours.update(values=2.5)
    ref.update(values=2.5)
    _close(ours.compute(), ref.compute())
    ours.reset()
    assert bool(jnp.isnan(ours.compute()))
    assert ours.total.value.dtype == jnp.float32 and ours.count.value.dtype == jnp.int32


def test_average_mask_matches_flax_and_custom_argname():
    ours, ref = rm.Average("loss"), nnx.metrics.Average("loss")
    for i, x in enumerate(_batches(1)):
        mask = jnp.arange(8) % (i + 2) != 0
        ours.update(loss=x, mask=mask)
        ref.update(loss=x, mask=mask)
    _close(ours.compute(), ref.compute())


def test_average_broadcast_mask_counts_broadcast_entries():
    # Flax counts mask.sum() (3) although 9 values are included; ramie counts 9.
    avg = rm.Average()
    avg.update(values=jnp.ones((4, 3)), mask=jnp.array([[1], [0], [1], [1]]))
    assert float(avg.compute()) == 1.0
    assert int(avg.count.value) == 9


def test_average_errors_name_the_argument_and_fix():
    with pytest.raises(
        TypeError, match=r"(?s)'values'.*\['loss'\].*metric.update\(values="
    ):
        rm.Average().update(loss=jnp.ones(2))
    with pytest.raises(ValueError, match="with a mask it should be a jax array"):
        rm.Average().update(values=1.0, mask=jnp.ones(()))


# ----------------------------------------------------------------- Accuracy
def test_accuracy_multiclass_matches_flax():
    ours, ref = rm.Accuracy(), nnx.metrics.Accuracy()
    for seed in range(3):
        logits = jax.random.normal(jax.random.key(seed), (16, 5))
        labels = jax.random.randint(jax.random.key(seed + 10), (16,), 0, 5)
        ours.update(logits=logits, labels=labels)
        ref.update(logits=logits, labels=labels)
        _close(ours.compute(), ref.compute())


def test_accuracy_binary_threshold_and_mask_match_flax():
    ours, ref = rm.Accuracy(threshold=0.5), nnx.metrics.Accuracy(threshold=0.5)
    logits = jax.random.normal(jax.random.key(2), (10,))
    labels = jnp.array([0, 1, 0, 1, 1, 0, 0, 1, 1, 1])
    mask = jnp.arange(10) < 7
    ours.update(logits=logits, labels=labels, mask=mask)
    ref.update(logits=logits, labels=labels, mask=mask)
    _close(ours.compute(), ref.compute())


def test_accuracy_accepts_int_threshold_and_bool_labels():
    acc = rm.Accuracy(threshold=0)
    acc.update(logits=jnp.array([1.0, -1.0]), labels=jnp.array([True, True]))
    assert float(acc.compute()) == 0.5


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (
            lambda: rm.Accuracy(),
            dict(logits=jnp.ones((4, 3)), labels=jnp.ones((4, 3), jnp.int32)),
            r"(?s)For multi-class classification.*one more axis.*\(4, 3\)"
            r".*labels.argmax",
        ),
        (
            lambda: rm.Accuracy(threshold=0.5),
            dict(logits=jnp.ones((4, 2)), labels=jnp.ones(4, jnp.int32)),
            r"For binary classification, logits and labels need the same rank",
        ),
        (
            lambda: rm.Accuracy(),
            dict(logits=jnp.ones((4, 3)), labels=jnp.ones(4)),
            r"(?s)labels must be integers.*float32.*astype",
        ),
    ],
)
def test_accuracy_errors(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make().update(**kwargs)


def test_accuracy_threshold_type_error():
    with pytest.raises(TypeError, match=r"threshold.*str"):
        rm.Accuracy(threshold="0.5")


# ------------------------------------------------------------------ Welford
def test_welford_matches_flax_and_numpy():
    ours, ref = rm.Welford(), nnx.metrics.Welford()
    batches = _batches(3, shape=(4, 5))
    for x in batches:
        ours.update(values=x)
        ref.update(values=x)
        a, b = ours.compute(), ref.compute()
        _close(a.mean, b.mean)
        _close(a.standard_deviation, b.standard_deviation, rtol=1e-5)
        _close(a.standard_error_of_mean, b.standard_error_of_mean, rtol=1e-5)
    allx = np.concatenate([np.ravel(x) for x in batches])
    stats = ours.compute()
    _close(stats.mean, allx.mean(), rtol=1e-5)
    _close(stats.standard_deviation, allx.std(), rtol=1e-5)
    ours.reset()
    assert bool(jnp.isnan(ours.compute().standard_deviation))


def test_welford_python_scalars_match_flax():
    ours, ref = rm.Welford(), nnx.metrics.Welford()
    for v in (1.0, 4.0, 2.0):
        ours.update(values=v)
        ref.update(values=v)
    _close(ours.compute().standard_deviation, ref.compute().standard_deviation)


def test_welford_mask_equals_unmasked_subset():
    x = _batches(4, n=1, shape=(12,))[0]
    mask = jnp.arange(12) % 3 != 0
    w = rm.Welford()
    w.update(values=x, mask=mask)
    w.update(values=x, mask=jnp.zeros(12, bool))  # an all-masked batch changes nothing
    kept = np.asarray(x)[np.asarray(mask)]
    _close(w.compute().mean, kept.mean(), rtol=1e-5)
    _close(w.compute().standard_deviation, kept.std(), rtol=1e-5)


@settings(max_examples=15)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    seed=st.integers(0, 1000),
)
def test_welford_streaming_equals_one_pass(sizes, seed):
    rng = np.random.default_rng(seed)
    data = [rng.normal(5.0, 2.0, size=n).astype(np.float32) for n in sizes]
    w = rm.Welford()
    for d in data:
        w.update(values=jnp.asarray(d))
    allx = np.concatenate(data)
    _close(w.compute().mean, allx.mean(), rtol=1e-4)
    if allx.size > 1:
        np.testing.assert_allclose(
            float(w.compute().standard_deviation), allx.std(), rtol=1e-3, atol=1e-5
        )


def test_statistics_is_a_pytree():
    s = rm.Statistics(jnp.ones(()), jnp.zeros(()), jnp.ones(()))
    assert len(jax.tree.leaves(s)) == 3


# -------------------------------------------------------------- MultiMetric
def test_multimetric_matches_flax_with_mask_dict():
    ours = ramie.MultiMetric(accuracy=rm.Accuracy(), loss=rm.Average("loss"))
    ref = nnx.MultiMetric(
        accuracy=nnx.metrics.Accuracy(), loss=nnx.metrics.Average("loss")
    )
    for seed in range(2):
        logits = jax.random.normal(jax.random.key(seed), (6, 3))
        labels = jnp.array([0, 1, 2, 0, 1, 2])
        loss = jax.random.uniform(jax.random.key(seed + 5), (6,))
        mask = {"accuracy": jnp.arange(6) < 4}
        ours.update(logits=logits, labels=labels, loss=loss, mask=mask)
        ref.update(logits=logits, labels=labels, loss=loss, mask=mask)
    got, want = ours.compute(), ref.compute()
    assert set(got) == {"accuracy", "loss"}
    for k in got:
        _close(got[k], want[k])
    ours.reset()
    assert all(bool(jnp.isnan(v)) for v in ours.compute().values())


def test_multimetric_rejects_reserved_names_and_non_metrics():
    with pytest.raises(ValueError, match="'update' is reserved"):
        ramie.MultiMetric(update=rm.Average())
    with pytest.raises(TypeError, match=r"loss=.*got int"):
        ramie.MultiMetric(loss=3)


def test_metric_base_class_must_be_subclassed():
    with pytest.raises(NotImplementedError, match="MetricState"):
        rm.Metric()


# ------------------------------------------------------ graph state and jit
def test_metric_state_is_a_filterable_variable_type():
    metrics = ramie.MultiMetric(acc=rm.Accuracy(), loss=rm.Average())
    state = ramie.state(metrics, rm.MetricState)
    assert sorted(state.keys()) == ["acc", "loss"]
    assert len(jax.tree.leaves(state)) == 4
    graphdef, metric_state = metrics.split(rm.MetricState)
    assert type(ramie.merge(graphdef, metric_state)) is ramie.MultiMetric


def test_updates_inside_ramie_jit_are_carried_out():
    model = ramie.Linear(4, 3, rngs=ramie.Rngs(0))
    eager = ramie.MultiMetric(
        accuracy=rm.Accuracy(), loss=rm.Average("loss"), stats=rm.Welford("loss")
    )
    jitted = ramie.clone(eager)

    def step(model, metrics, x, y):
        logits = model(x)
        loss = jnp.mean((logits - jax.nn.one_hot(y, 3)) ** 2, axis=-1)
        metrics.update(logits=logits, labels=y, loss=loss)

    jit_step = ramie.jit(step)
    for seed in range(3):
        x = jax.random.normal(jax.random.key(seed), (5, 4))
        y = jax.random.randint(jax.random.key(seed + 1), (5,), 0, 3)
        step(model, eager, x, y)
        jit_step(model, jitted, x, y)
    assert int(jitted.loss.count.value) == 15
    got, want = jitted.compute(), eager.compute()
    _close(got["accuracy"], want["accuracy"])
    _close(got["loss"], want["loss"], rtol=1e-5)
    _close(got["stats"].mean, want["stats"].mean, rtol=1e-5)


def test_compute_and_reset_inside_jit():
    avg = rm.Average()
    avg.update(values=jnp.array([2.0, 4.0]))

    @ramie.jit
    def read_and_reset(m):
        out = m.compute()
        m.reset()
        return out

    assert float(read_and_reset(avg)) == 3.0
    assert int(avg.count.value) == 0
