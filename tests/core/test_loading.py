"""The shared loading policy: canonicalize, check_load, load_error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie
from ramie._src.core.loading import (
    POLICY_URL,
    SKIPPED,
    LoadReport,
    canonicalize,
    check_load,
    is_lossless,
)
from ramie.errors import StateLoadError


def sds(shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype)


# ------------------------------------------------------------ canonicalize
@pytest.mark.parametrize(
    "value, dtype",
    [
        (np.zeros(3, np.float64), np.float32),
        (np.zeros(3, np.int64), np.int32),
        (np.zeros(3, np.float16), np.float16),
        (np.float64(1.5), np.float32),
        ([1.0, 2.0], np.float32),
        ([[1, 2], [3, 4]], np.int32),
    ],
)
def test_canonicalize_matches_jax(value, dtype):
    out = canonicalize(value)
    assert isinstance(out, jax.Array)
    assert out.dtype == jnp.asarray(value).dtype == dtype
    np.testing.assert_array_equal(np.asarray(out), np.asarray(value, dtype))


def test_canonicalize_keeps_jax_and_abstract_values():
    x = jnp.ones(2)
    a = sds((2,))
    assert canonicalize(x) is x
    assert canonicalize(a) is a
    assert canonicalize(ramie.Param(x)) is x


@pytest.mark.parametrize("bad", [["a", "b"], [[1, 2], [3]], object(), "text"])
def test_canonicalize_rejects_non_arrays_naming_path(bad):
    with pytest.raises(
        StateLoadError, match=r"ramie\.update\(\): the value at head\.w"
    ):
        canonicalize(bad, path=("head", "w"), api="ramie.update()")


# ----------------------------------------------------------------- casts
@pytest.mark.parametrize(
    "src, dst, ok",
    [
        (jnp.int8, jnp.int32, True),
        (jnp.float16, jnp.float32, True),
        (jnp.bfloat16, jnp.float32, True),
        (jnp.bool_, jnp.float32, True),
        (jnp.float32, jnp.bfloat16, False),
        (jnp.float32, jnp.int32, False),
        (jnp.int32, jnp.float32, False),  # 2**24 + 1 is not a float32
        (jnp.uint8, jnp.int8, False),
    ],
)
def test_is_lossless(src, dst, ok):
    assert is_lossless(src, dst) is ok
    if ok:  # the extreme values survive a round trip
        info = jnp.iinfo(src) if jnp.issubdtype(src, jnp.integer) else None
        if info is not None:
            x = jnp.array([info.min, info.max], src)
            np.testing.assert_array_equal(x.astype(dst).astype(src), x)


def test_lossless_cast_is_applied():
    out = check_load(
        [(("a",), sds((2,)), jnp.array([1, 2], jnp.int8).astype(jnp.bfloat16))],
        api="t()",
    )
    assert out[0].dtype == jnp.float32
    np.testing.assert_array_equal(out[0], [1.0, 2.0])


def test_python_values_take_the_target_dtype():
    out = check_load(
        [
            (("a",), sds((3,)), [1, 2, 3]),
            (("b",), sds((), jnp.int32), 7),
            (("c",), sds((), jnp.bfloat16), 0.5),
        ],
        api="t()",
    )
    assert [v.dtype for v in out] == [jnp.float32, jnp.int32, jnp.bfloat16]
    assert not any(v.weak_type for v in out)


def test_lossy_cast_needs_allow_cast():
    pair = [(("head", "kernel"), sds((2,), jnp.bfloat16), jnp.ones(2))]
    with pytest.raises(StateLoadError) as e:
        check_load(pair, api="ramie.update()")
    msg = str(e.value)
    assert "head.kernel: dtype bfloat16 vs float32" in msg
    assert "expected vs found" in msg
    assert "ramie.update(..., allow_cast=True)" in msg
    out = check_load(pair, api="ramie.update()", allow_cast=True)
    assert out[0].dtype == jnp.bfloat16


def test_float_to_int_even_python_float_is_an_error():
    with pytest.raises(StateLoadError, match=r"n: dtype int32 vs float32"):
        check_load([(("n",), sds((), jnp.int32), 2.5)], api="t()")


# ------------------------------------------------------------- reporting
def test_every_problem_in_one_error():
    pairs = [
        (("head", "kernel"), sds((4, 2)), jnp.ones((4, 13))),
        (("head", "bias"), sds((2,)), jnp.ones(2, jnp.int32)),
        (("body", "w"), sds((3,)), np.ones(3)),  # fits after canonicalising
        (("body", "v"), sds((3,)), ["x", "y", "z"]),
    ]
    with pytest.raises(StateLoadError) as e:
        check_load(
            pairs, api="ramie.update()", missing=[("body", "b")], unexpected=[("z",)]
        )
    err = e.value
    msg = str(err)
    assert "head.kernel: shape (4, 2) vs (4, 13)" in msg
    assert "head.bias: dtype float32 vs int32" in msg
    assert "body.w" not in msg
    assert "body.v: an array vs list" in msg
    assert err.missing == [("body", "b")]
    assert err.unexpected == [("z",)]
    assert [m[0] for m in err.mismatched] == [
        ("head", "kernel"),
        ("head", "bias"),
        ("body", "v"),
    ]
    assert POLICY_URL in msg
    assert POLICY_URL.endswith("docs/guides/state_safety.md#loading-policy")


def test_long_lists_are_cut_with_a_count():
    pairs = [((f"w{i}",), sds((1,)), jnp.ones(2)) for i in range(13)]
    with pytest.raises(StateLoadError, match=r"\.\.\. and 3 more") as e:
        check_load(pairs, api="t()")
    assert len(e.value.mismatched) == 13


def test_non_strict_returns_what_fits():
    pairs = [
        (("a",), sds((2,)), jnp.ones(2)),
        (("b",), sds((2,)), jnp.ones(3)),
    ]
    report = check_load(pairs, api="t()", strict=False, missing=[("c",)])
    assert isinstance(report, LoadReport)
    assert report.values[1] is SKIPPED
    np.testing.assert_array_equal(report.values[0], jnp.ones(2))
    assert report.missing == [("c",)]
    assert report.mismatched == [(("b",), "shape (2,)", "shape (3,)")]


def test_targets_of_every_kind():
    var = ramie.Param(jnp.zeros((2,), jnp.float32))
    obj = ramie.Variable("not an array")
    out = check_load(
        [
            (("v",), var, np.arange(2.0)),
            (("a",), jnp.zeros(2, jnp.int32), np.arange(2)),
            (("o",), obj, "anything"),
            (("k",), jax.random.key(0), jax.random.key(1)),
        ],
        api="t()",
    )
    assert out[0].dtype == jnp.float32
    assert out[1].dtype == jnp.int32
    assert out[2] == "anything"
    assert out[3].dtype == jax.random.key(0).dtype


def test_prng_key_into_float_is_an_error():
    with pytest.raises(StateLoadError, match=r"k: dtype float32 vs key<fry>"):
        check_load([(("k",), sds(()), jax.random.key(0))], api="t()")


def test_abstract_values_are_checked_not_converted():
    out = check_load([(("a",), sds((2,)), sds((2,), jnp.float16))], api="t()")
    assert isinstance(out[0], jax.ShapeDtypeStruct) and out[0].dtype == jnp.float32
    with pytest.raises(StateLoadError, match=r"a: shape \(2,\) vs \(3,\)"):
        check_load([(("a",), sds((2,)), sds((3,)))], api="t()")


def test_inside_jit_tracers_are_checked():
    @jax.jit
    def f(x):
        return check_load([(("a",), sds((2,)), x)], api="t()")[0] * 2

    np.testing.assert_array_equal(f(jnp.ones(2, jnp.float16)), [2.0, 2.0])
    with pytest.raises(StateLoadError, match=r"a: shape \(2,\) vs \(3,\)"):
        f(jnp.ones(3))
