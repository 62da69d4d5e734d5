"""Transposed convolutions and every LSTM layout load and match their source."""

from __future__ import annotations

import flax.linen as nn
import haiku as hk
import jax
import jax.numpy as jnp
import pytest

import ramie as nnx
from bridge_helpers import KEY, TOL, close, normal, randomize  # noqa: F401

# ------------------------------------------------------ transposed convs


class UpNet(nnx.Module):
    """One transposed conv per dimensionality, plus a square one (in == out)."""

    def __init__(self, rngs):
        self.up1 = nnx.ConvTranspose(3, 4, (3,), strides=2, rngs=rngs)
        self.up2 = nnx.ConvTranspose(3, 5, (3, 2), strides=(2, 1), rngs=rngs)
        self.up3 = nnx.ConvTranspose(3, 2, (2, 2, 2), strides=2, rngs=rngs)
        self.square = nnx.ConvTranspose(3, 3, (3, 3), padding="VALID", rngs=rngs)

    def __call__(self, seq, img, vol):
        return self.up1(seq), self.up2(img), self.up3(vol), self.square(img)


def up_inputs():
    return normal(2, 6, 3), normal(2, 5, 4, 3), normal(1, 3, 4, 3, 3)


def test_haiku_conv_transpose_every_dimensionality():
    zeros = jnp.zeros  # randomized below; truncated normal compiles slowly

    def fwd(seq, img, vol):
        return (
            hk.Conv1DTranspose(4, 3, stride=2, w_init=zeros)(seq),
            hk.Conv2DTranspose(5, (3, 2), stride=(2, 1), w_init=zeros)(img),
            hk.Conv3DTranspose(2, 2, stride=2, w_init=zeros)(vol),
            hk.Conv2DTranspose(3, 3, padding="VALID", w_init=zeros)(img),
        )

    f = hk.transform(fwd)
    inputs = up_inputs()
    params = randomize(jax.jit(f.init)(KEY, *inputs))
    assert params["conv2_d_transpose"]["w"].shape == (3, 2, 5, 3)  # (..., out, in)
    model = UpNet(nnx.Rngs(0))
    report = nnx.bridge.load_haiku(model, params)
    assert report.ok
    for ours, ref in zip(model(*inputs), jax.jit(f.apply)(params, None, *inputs)):
        close(ours, ref)
    loaded = {x.target: x for x in report.loaded}
    assert loaded["up2.kernel"].sources == ("params/conv2_d_transpose/w",)
    assert loaded["square.kernel"].transform.startswith("swap the last two axes")
    assert loaded["up1.bias"].transform == ""


def test_linen_conv_transpose_every_dimensionality():
    z = nn.initializers.zeros_init()  # randomized below; skips a slow compile

    class LUp(nn.Module):
        @nn.compact
        def __call__(self, seq, img, vol):
            return (
                nn.ConvTranspose(4, (3,), strides=(2,), kernel_init=z)(seq),
                nn.ConvTranspose(5, (3, 2), strides=(2, 1), kernel_init=z)(img),
                nn.ConvTranspose(2, (2, 2, 2), strides=(2,) * 3, kernel_init=z)(vol),
                nn.ConvTranspose(3, (3, 3), padding="VALID", kernel_init=z)(img),
            )

    inputs = up_inputs()
    variables = randomize(jax.jit(LUp().init)(KEY, *inputs))
    model = UpNet(nnx.Rngs(0))
    report = nnx.bridge.load_linen(model, variables)
    assert report.ok
    for ours, ref in zip(model(*inputs), jax.jit(LUp().apply)(variables, *inputs)):
        close(ours, ref)
    assert all(x.transform == "" for x in report.loaded)


# ------------------------------------------------------------------- LSTMs


class LLSTM(nn.Module):
    cell: type

    @nn.compact
    def __call__(self, carry, x):
        return self.cell(6, name="cell")(carry, x)


def carry_in(batch=3):
    return normal(batch, 6, seed=1), normal(batch, 6, seed=2)


@pytest.mark.parametrize("source", [nn.OptimizedLSTMCell, nn.LSTMCell])
@pytest.mark.parametrize("target", [nnx.OptimizedLSTMCell, nnx.LSTMCell])
def test_linen_lstm_cells_into_both_ramie_lstm_cells(source, target):
    x, carry = normal(3, 4), carry_in()
    variables = randomize(LLSTM(source).init(KEY, carry, x))
    assert set(variables["params"]["cell"]) == {
        "ii", "if", "ig", "io", "hi", "hf", "hg", "ho"
    }  # fmt: skip
    cell = target(4, 6, rngs=nnx.Rngs(0))
    report = nnx.bridge.load_linen(cell, variables)
    assert report.ok
    (c, h), y = cell(carry, x)
    (c_ref, h_ref), y_ref = LLSTM(source).apply(variables, carry, x)
    close(c, c_ref)
    close(h, h_ref)
    close(y, y_ref)
    if target is nnx.OptimizedLSTMCell:
        loaded = {x.target: x for x in report.loaded}
        assert loaded["dense_h.bias"].sources == tuple(
            f"params/cell/h{g}/bias" for g in "ifgo"
        )


def test_haiku_lstm_into_optimized_lstm_cell():
    def fwd(xs):
        core = hk.LSTM(6)
        ys, state = hk.dynamic_unroll(core, xs, core.initial_state(xs.shape[1]))
        return ys, state.cell

    f = hk.transform(fwd)
    xs = normal(5, 3, 4)  # time-major
    params = randomize(f.init(KEY, xs))
    cell = nnx.OptimizedLSTMCell(4, 6, rngs=nnx.Rngs(0))
    report = nnx.bridge.load_haiku(cell, params)
    assert report.ok
    assert "+ 1" in {x.target: x.transform for x in report.loaded}["dense_h.bias"]
    carry = (jnp.zeros((3, 6)), jnp.zeros((3, 6)))
    ys = []
    for x in xs:
        carry, y = cell(carry, x)
        ys.append(y)
    ys_ref, c_ref = f.apply(params, None, xs)
    close(jnp.stack(ys), ys_ref)
    close(carry[0], c_ref)
