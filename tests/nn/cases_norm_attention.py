"""Cases for the normalization layers, the weight-norm wrappers and attention.

Each configuration is its own case so that a failure names it: GroupNorm by
groups or by group size (with a mask), SpectralNorm around Linear and a
3-D-kernel LinearGeneral, WeightNorm, MultiHeadAttention for self-attention,
cross-attention with QK normalization, grouped-query attention with a padding
mask (boolean inputs), dropout in training and a whole decode loop over the
cache. The suite costs seconds per case, so variants that only change axes or
flags are compared with Flax in the per-file tests (test_normalization.py,
test_weight_norms.py, test_attention.py) instead.
"""

import jax
import jax.numpy as jnp
import numpy as np
from cases import LayerCase

import ramie

BF16 = {"dtype": jnp.bfloat16, "param_dtype": jnp.bfloat16}
# Variants of a configuration already fully checked: skip the costly extras.
LIGHT = {"bf16": False, "grad_check": False}


def _nnx():
    return __import__("flax").nnx


def _lib(rngs):
    """The library a case builds with: ramie or flax.nnx (by the Rngs given)."""
    return ramie if isinstance(rngs, ramie.Rngs) else _nnx()


def _rng(key: jax.Array) -> np.random.Generator:
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist())


def _randn(*shapes):
    """Like ``cases.normal`` but from NumPy: jax.random compiles a kernel per
    shape, which costs seconds for arrays of rank 3 and more on CPU."""

    def inputs(key):
        rng = _rng(key)
        return tuple(jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes)

    return inputs


# ---------------------------------------------------------------- normalization
def _norm_case(name, cls, args, kwargs, shape, **extra):
    return LayerCase(
        name=name,
        layer=getattr(ramie, cls),
        make=lambda rngs: getattr(ramie, cls)(*args, **kwargs, rngs=rngs),
        make_flax=lambda rngs: getattr(_nnx(), cls)(*args, **kwargs, rngs=rngs),
        inputs=_randn(shape),
        make_bf16=lambda rngs: getattr(ramie, cls)(*args, **kwargs, **BF16, rngs=rngs),
        **extra,
    )


def _x_and_mask(*shape):
    def inputs(key):
        rng = _rng(key)
        x = rng.standard_normal(shape)
        return jnp.asarray(x, jnp.float32), jnp.asarray(rng.uniform(size=shape) > 0.3)

    return inputs


NORM_CASES = [
    _norm_case("LayerNorm", "LayerNorm", (6,), {}, (2, 3, 6)),
    _norm_case(
        "RMSNorm-two-axes", "RMSNorm", (6,), {"reduction_axes": (-2, -1)}, (2, 3, 6)
    ),
    _norm_case("GroupNorm-num-groups", "GroupNorm", (6,), {"num_groups": 3}, (2, 3, 6)),
    LayerCase(
        name="GroupNorm-group-size-no-bias-mask",
        layer=ramie.GroupNorm,
        make=lambda rngs: ramie.GroupNorm(6, None, 3, use_bias=False, rngs=rngs),
        make_flax=lambda rngs: _nnx().GroupNorm(6, None, 3, use_bias=False, rngs=rngs),
        inputs=_x_and_mask(2, 3, 6),
        call=lambda m, x, mask: m(x, mask=mask),
        **LIGHT,
    ),
    _norm_case("InstanceNorm", "InstanceNorm", (6,), {}, (2, 3, 6), **LIGHT),
]


# ------------------------------------------------------------- weight wrappers
def _spectral(n_steps, general=False, **kwargs):
    def make(rngs):
        lib = _lib(rngs)
        if general:
            inner = lib.LinearGeneral((2, 3), 4, axis=(-2, -1), rngs=rngs)
        else:
            inner = lib.Linear(4, 5, rngs=rngs)
        return lib.SpectralNorm(inner, n_steps=n_steps, rngs=rngs, **kwargs)

    return make


def _weight_norm(general=False, **kwargs):
    def make(rngs):
        lib = _lib(rngs)
        if general:
            inner = lib.LinearGeneral(3, (2, 4), rngs=rngs)
        else:
            inner = lib.Linear(4, 5, rngs=rngs)
        return lib.WeightNorm(inner, rngs=rngs, **kwargs)

    return make


WRAPPER_CASES = [
    LayerCase(
        name="SpectralNorm-Linear-eval-converged",
        layer=ramie.SpectralNorm,
        make=_spectral(10),
        make_flax=_spectral(10),
        inputs=_randn(
            (
                3,
                4,
            )
        ),
        rtol=1e-4,
        atol=1e-4,
    ),
    LayerCase(
        name="SpectralNorm-3d-kernel-train",
        layer=ramie.SpectralNorm,
        make=_spectral(2, general=True),
        make_flax=_spectral(2, general=True),
        inputs=_randn(
            (
                3,
                2,
                3,
            )
        ),
        train=True,
        vmap=False,
        bf16=False,
        # u and v are stop_gradient'ed, so finite differences (which see them
        # move) only agree with the gradient once the power iteration converged
        grad_check=False,
    ),
    LayerCase(
        name="WeightNorm-Linear",
        layer=ramie.WeightNorm,
        make=_weight_norm(),
        make_flax=_weight_norm(),
        inputs=_randn(
            (
                3,
                4,
            )
        ),
    ),
]


# ------------------------------------------------------------------- attention
def _mha(*args, cache=None, **kwargs):
    def make(rngs):
        layer = _lib(rngs).MultiHeadAttention(*args, decode=False, rngs=rngs, **kwargs)
        if cache is not None:
            layer.init_cache(cache)
        return layer

    return make


def _mha_bf16(*args, **kwargs):
    return _mha(*args, **kwargs, **BF16)


def _q_and_kv(key):
    return _randn((2, 4, 8), (2, 5, 6))(key)


def _x_and_padding_mask(key):
    (x,) = _randn((2, 4, 8))(key)
    real = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    return x, ramie.make_attention_mask(real, real, dtype=jnp.bool_)


def _decode_loop(m, x):
    return jnp.concatenate(
        [m(x[:, i : i + 1], decode=True) for i in range(x.shape[1])], axis=1
    )


ATTENTION_CASES = [
    LayerCase(
        name="MultiHeadAttention-self",
        layer=ramie.MultiHeadAttention,
        make=_mha(2, 8),
        make_flax=_mha(2, 8),
        inputs=_randn(
            (
                2,
                4,
                8,
            )
        ),
        make_bf16=_mha_bf16(2, 8),
    ),
    LayerCase(
        name="MultiHeadAttention-cross-normalize-qk",
        layer=ramie.MultiHeadAttention,
        make=_mha(2, 8, out_features=4, in_kv_features=6, normalize_qk=True),
        make_flax=_mha(2, 8, out_features=4, in_kv_features=6, normalize_qk=True),
        inputs=_q_and_kv,
        **LIGHT,
    ),
    LayerCase(
        name="MultiHeadAttention-gqa-padding-mask",
        layer=ramie.MultiHeadAttention,
        make=_mha(4, 8, num_kv_heads=2),
        make_flax=_mha(4, 8, num_kv_heads=2),
        inputs=_x_and_padding_mask,
        call=lambda m, x, mask: m(x, mask=mask),
        bf16=False,
    ),
    LayerCase(
        name="MultiHeadAttention-gqa-dropout-no-broadcast-mask",
        layer=ramie.MultiHeadAttention,
        make=_mha(4, 8, num_kv_heads=2, dropout_rate=0.3, broadcast_dropout=False),
        make_flax=_mha(4, 8, num_kv_heads=2, dropout_rate=0.3, broadcast_dropout=False),
        inputs=_x_and_padding_mask,
        call=lambda m, x, mask: m(x, mask=mask),
        train=True,
        vmap=False,
        grad_check=False,
        bf16=False,
    ),
    LayerCase(
        name="MultiHeadAttention-decode-loop",
        layer=ramie.MultiHeadAttention,
        make=_mha(2, 8, num_kv_heads=1, cache=(2, 4, 8)),
        make_flax=_mha(2, 8, num_kv_heads=1, cache=(2, 4, 8)),
        inputs=_randn(
            (
                2,
                4,
                8,
            )
        ),
        call=_decode_loop,
        vmap=False,
        **LIGHT,
    ),
]

CASES = NORM_CASES + WRAPPER_CASES + ATTENTION_CASES
