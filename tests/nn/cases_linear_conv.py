"""Cases for dense, convolution, embedding, activation and LoRA layers.

Each configuration that takes a different code path (multi-axis contraction,
batch axes, every padding mode, dilations, feature groups, masks, inputs
without a batch axis, transposed kernels, ``Embed.attend``) is its own case,
so the common suite checks each against Flax NNX.

Weights come from :func:`wave`, a cheap deterministic initializer, and inputs
from NumPy: JAX's random initializers compile anew for every parameter shape
(about 1-2 s of CPU each), which would dominate the suite. That Flax and ramie
draw the *default* initial weights identically is tested per layer in
``test_linear.py``, ``test_conv.py``, ``test_embedding.py`` and ``test_lora.py``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from cases import LayerCase

import ramie

BF16 = {"dtype": jnp.bfloat16, "param_dtype": jnp.bfloat16}


def wave(key, shape, dtype=jnp.float32):
    """A non-zero initializer that depends on ``key`` and needs no compilation."""
    shape = (shape,) if isinstance(shape, int) else shape
    phase = float(np.asarray(jax.random.key_data(key), np.float64).sum())
    values = 0.5 * np.sin(np.arange(math.prod(shape)) * 1.37 + phase)
    return jnp.asarray(values.reshape(shape), dtype)


INIT = {"kernel_init": wave, "bias_init": wave}


def _nnx():
    return __import__("flax").nnx


def _seed(key) -> int:
    return int(np.asarray(jax.random.key_data(key)).sum())


def randn(*shape: int):
    """An ``inputs`` function: one standard-normal float32 array, drawn by NumPy."""
    return lambda key: (
        jnp.asarray(
            np.random.default_rng(_seed(key)).standard_normal(shape), jnp.float32
        ),
    )


def _ids(*shape: int, num: int = 10):
    return lambda key: (
        jnp.asarray(
            np.random.default_rng(_seed(key)).integers(0, num, shape), jnp.int32
        ),
    )


def _with_lora_dtypes(kw):
    """Linear's dtype keywords, repeated for the LoRA branch of LoRALinear."""
    lora = {"lora_" + k: v for k, v in kw.items() if k in ("dtype", "param_dtype")}
    return {**kw, **lora}


def _pair(name, layer, build, inputs, *, bf16=True, **case_kwargs):
    """A case whose ramie and Flax modules come from the same
    ``build(ns, rngs, **kw)``.
    """
    return LayerCase(
        name=name,
        layer=layer,
        make=lambda rngs: build(ramie, rngs),
        make_flax=lambda rngs: build(_nnx(), rngs),
        inputs=inputs,
        make_bf16=(lambda rngs: build(ramie, rngs, **BF16)) if bf16 else None,
        **case_kwargs,
    )


CASES = [
    # ------------------------------------------------------------ LinearGeneral
    _pair(
        "LinearGeneral-multi-axis",
        ramie.LinearGeneral,
        lambda ns, rngs, **kw: ns.LinearGeneral(
            (2, 3), (4, 5), axis=(1, -1), rngs=rngs, **INIT, **kw
        ),
        randn(3, 2, 3),
    ),
    _pair(
        "LinearGeneral-batch-axis",
        ramie.LinearGeneral,
        lambda ns, rngs, **kw: ns.LinearGeneral(
            3, 5, batch_axis={0: 4}, rngs=rngs, **INIT, **kw
        ),
        randn(4, 2, 3),
        bf16=False,
    ),
    # ------------------------------------------------------------------- Einsum
    _pair(
        "Einsum-bias",
        ramie.Einsum,
        lambda ns, rngs, **kw: ns.Einsum(
            "nta,hab->nthb", (5, 3, 4), (5, 4), rngs=rngs, **INIT, **kw
        ),
        randn(2, 6, 3),
    ),
    _pair(
        "Einsum-call-einsum-str",
        ramie.Einsum,
        lambda ns, rngs, **kw: ns.Einsum(
            "nta,ab->ntb", (3, 4), (4,), rngs=rngs, **INIT, **kw
        ),
        randn(2, 6, 3),
        call=lambda m, x: m(x, "nta,ab->nbt"),
        bf16=False,
    ),
    # --------------------------------------------------------------------- Conv
    _pair(
        "Conv-1d",
        ramie.Conv,
        lambda ns, rngs, **kw: ns.Conv(3, 4, 3, rngs=rngs, **INIT, **kw),
        randn(2, 9, 3),
    ),
    _pair(
        "Conv-2d-strided-valid",
        ramie.Conv,
        lambda ns, rngs, **kw: ns.Conv(
            3, 4, (3, 3), strides=2, padding="VALID", rngs=rngs, **INIT, **kw
        ),
        randn(2, 7, 7, 3),
        bf16=False,
    ),
    _pair(
        "Conv-3d",
        ramie.Conv,
        lambda ns, rngs, **kw: ns.Conv(2, 3, (2, 2, 2), rngs=rngs, **INIT, **kw),
        randn(1, 4, 4, 4, 2),
        bf16=False,
    ),
    _pair(
        "Conv-circular-strided",
        ramie.Conv,
        lambda ns, rngs, **kw: ns.Conv(
            3, 4, (3, 3), strides=(2, 1), padding="CIRCULAR", rngs=rngs, **INIT, **kw
        ),
        randn(2, 5, 6, 3),
        bf16=False,
    ),
    _pair(
        "Conv-reflect-kernel-dilation",
        ramie.Conv,
        lambda ns, rngs, **kw: ns.Conv(
            3, 4, (3, 3), padding="REFLECT", kernel_dilation=2, rngs=rngs, **INIT, **kw
        ),
        randn(2, 7, 7, 3),
        bf16=False,
    ),
    _pair(
        "Conv-causal-1d",
        ramie.Conv,
        lambda ns, rngs, **kw: ns.Conv(
            3, 4, 3, padding="CAUSAL", kernel_dilation=2, rngs=rngs, **INIT, **kw
        ),
        randn(2, 9, 3),
        bf16=False,
    ),
    _pair(
        "Conv-explicit-pad-input-dilation",
        ramie.Conv,
        lambda ns, rngs, **kw: ns.Conv(
            3,
            4,
            (3, 3),
            padding=((1, 2), 1),
            input_dilation=(2, 1),
            rngs=rngs,
            **INIT,
            **kw,
        ),
        randn(2, 5, 5, 3),
        bf16=False,
    ),
    _pair(
        "Conv-groups-nobias",
        ramie.Conv,
        lambda ns, rngs, **kw: ns.Conv(
            4, 6, (3,), feature_group_count=2, use_bias=False, rngs=rngs, **INIT, **kw
        ),
        randn(2, 8, 4),
        bf16=False,
    ),
    _pair(
        "Conv-mask-unbatched",
        ramie.Conv,
        lambda ns, rngs, **kw: ns.Conv(
            3,
            4,
            (3,),
            padding=1,
            mask=jnp.asarray(np.tril(np.ones((3, 3, 4), np.float32))),
            rngs=rngs,
            **INIT,
            **kw,
        ),
        randn(9, 3),
        bf16=False,
    ),
    # ------------------------------------------------------------ ConvTranspose
    _pair(
        "ConvTranspose-2d-strided",
        ramie.ConvTranspose,
        lambda ns, rngs, **kw: ns.ConvTranspose(
            3, 4, (3, 3), strides=2, rngs=rngs, **INIT, **kw
        ),
        randn(2, 5, 5, 3),
    ),
    _pair(
        "ConvTranspose-valid-transpose-kernel",
        ramie.ConvTranspose,
        lambda ns, rngs, **kw: ns.ConvTranspose(
            3,
            4,
            (3,),
            strides=2,
            padding="VALID",
            transpose_kernel=True,
            rngs=rngs,
            **INIT,
            **kw,
        ),
        randn(2, 6, 3),
        bf16=False,
    ),
    _pair(
        "ConvTranspose-circular",
        ramie.ConvTranspose,
        lambda ns, rngs, **kw: ns.ConvTranspose(
            3, 4, (4, 4), strides=2, padding="CIRCULAR", rngs=rngs, **INIT, **kw
        ),
        randn(2, 5, 5, 3),
        bf16=False,
    ),
    _pair(
        "ConvTranspose-circular-dilated-transpose-kernel",
        ramie.ConvTranspose,
        lambda ns, rngs, **kw: ns.ConvTranspose(
            3,
            4,
            3,
            strides=3,
            padding="CIRCULAR",
            kernel_dilation=2,
            transpose_kernel=True,
            use_bias=False,
            rngs=rngs,
            **INIT,
            **kw,
        ),
        randn(2, 5, 3),
        bf16=False,
    ),
    _pair(
        "ConvTranspose-explicit-pad-unbatched",
        ramie.ConvTranspose,
        lambda ns, rngs, **kw: ns.ConvTranspose(
            3, 4, (3, 2), strides=(1, 2), padding=((2, 1), 0), rngs=rngs, **INIT, **kw
        ),
        randn(5, 4, 3),
        bf16=False,
    ),
    # -------------------------------------------------------------------- Embed
    _pair(
        "Embed-call",
        ramie.Embed,
        lambda ns, rngs, **kw: ns.Embed(10, 4, embedding_init=wave, rngs=rngs, **kw),
        _ids(2, 5),
    ),
    _pair(
        "Embed-attend",
        ramie.Embed,
        lambda ns, rngs, **kw: ns.Embed(10, 4, embedding_init=wave, rngs=rngs, **kw),
        randn(2, 3, 4),
        call=lambda m, q: m.attend(q),
    ),
    # -------------------------------------------------------------------- PReLU
    _pair(
        "PReLU",
        ramie.PReLU,
        lambda ns, rngs, **kw: ns.PReLU(0.2, **kw),
        randn(3, 4),
    ),
    # --------------------------------------------------------------------- LoRA
    _pair(
        "LoRA",
        ramie.LoRA,
        lambda ns, rngs, **kw: ns.LoRA(
            4, 2, 5, a_initializer=wave, b_initializer=wave, rngs=rngs, **kw
        ),
        randn(3, 4),
    ),
    _pair(
        "LoRALinear",
        ramie.LoRALinear,
        lambda ns, rngs, **kw: ns.LoRALinear(
            4,
            5,
            lora_rank=2,
            a_initializer=wave,
            b_initializer=wave,
            rngs=rngs,
            **INIT,
            **_with_lora_dtypes(kw),
        ),
        randn(3, 4),
    ),
]
