"""Laws of the structural matcher: key order does not matter where names decide."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import ramie as nnx
from ramie.errors import StateLoadError

SIZES = (2, 3)


def dense_checkpoint(widths, seed):
    rng = np.random.default_rng(seed)
    return {
        f"Dense_{i}": {
            "kernel": rng.standard_normal((a, b)).astype(np.float32),
            "bias": rng.standard_normal((b,)).astype(np.float32),
        }
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))
    }


@settings(max_examples=15, deadline=None)
@given(
    widths=st.lists(st.sampled_from(SIZES), min_size=2, max_size=13),
    order=st.randoms(use_true_random=False),
)
def test_any_key_order_loads_each_dense_into_its_layer(widths, order):
    params = dense_checkpoint(widths, seed=len(widths))
    keys = list(params)
    order.shuffle(keys)
    model = nnx.List(
        [nnx.Linear(a, b, rngs=nnx.Rngs(0)) for a, b in zip(widths[:-1], widths[1:])]
    )
    report = nnx.bridge.load_linen(model, {"params": {k: params[k] for k in keys}})
    assert report.ok
    for i in range(len(widths) - 1):
        np.testing.assert_array_equal(
            model[i].kernel.value, params[f"Dense_{i}"]["kernel"]
        )
        np.testing.assert_array_equal(model[i].bias.value, params[f"Dense_{i}"]["bias"])


@settings(max_examples=15, deadline=None)
@given(
    widths=st.lists(st.sampled_from(SIZES), min_size=3, max_size=8),
    data=st.data(),
)
def test_a_perturbed_entry_is_named_and_nothing_loads(widths, data):
    params = dense_checkpoint(widths, seed=1)
    i = data.draw(st.integers(0, len(widths) - 2))
    name = data.draw(st.sampled_from(["kernel", "bias"]))
    kind = data.draw(st.sampled_from(["drop", "dtype", "shape"]))
    entry = params[f"Dense_{i}"]
    if kind == "drop":
        del entry[name]
    elif kind == "dtype":
        entry[name] = entry[name].astype(np.int32)
    else:
        entry[name] = np.concatenate([entry[name], entry[name]], axis=-1)
    model = nnx.List(
        [nnx.Linear(a, b, rngs=nnx.Rngs(0)) for a, b in zip(widths[:-1], widths[1:])]
    )
    before = [np.array(m.kernel.value) for m in model]
    before += [np.array(m.bias.value) for m in model]
    try:
        nnx.bridge.load_linen(model, {"params": params})
    except StateLoadError as e:
        err, msg = e, str(e)
    else:
        raise AssertionError("a perturbed checkpoint loaded")
    if kind == "drop":
        # the Variable of the missing entry is named, and only it
        assert err.missing == [f"[{i}].{name}"]
        assert err.unexpected == []
    else:
        assert f"params/Dense_{i}/{name} -> [{i}].{name}" in msg
    after = [np.array(m.kernel.value) for m in model]
    after += [np.array(m.bias.value) for m in model]
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)
