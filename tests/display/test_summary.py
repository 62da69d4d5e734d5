"""Tests for ramie.tabulate / ramie.summary: one abstract trace, honest counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie
from ramie._src.display.summary import CallInfo

CALLS: dict[str, int] = {}


class Block(ramie.Module):
    def __init__(self, din: int, dout: int, rngs: ramie.Rngs):
        self.linear = ramie.Linear(din, dout, rngs=rngs)
        self.bn = ramie.BatchNorm(dout, rngs=rngs)
        self.dropout = ramie.Dropout(0.2, rngs=rngs)

    def __call__(self, x):
        CALLS["Block"] = CALLS.get("Block", 0) + 1
        return jax.nn.relu(self.dropout(self.bn(self.linear(x))))


class Net(ramie.Module):
    def __init__(self, rngs: ramie.Rngs):
        self.block1 = Block(6, 8, rngs)
        self.block2 = Block(8, 3, rngs)
        self.counter = ramie.Variable(jnp.array(0))
        self.python_calls = 0

    def __call__(self, x, *, scale: float = 1.0):
        CALLS["Net"] = CALLS.get("Net", 0) + 1
        self.counter[...] += 1
        self.python_calls += 1
        return self.block2(self.block1(x)) * scale

    def features(self, x):
        return self.block1(x)


@pytest.fixture(scope="module")
def net() -> Net:
    net = Net(ramie.Rngs(0))
    net.train()
    return net


def ln_cells(line: str) -> list[str]:
    return [c.strip() for c in line.split("│")[1:-1]]


def _snapshot(model):
    def as_np(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return jax.tree.map(as_np, ramie.to_pure_dict(ramie.state(model)))


def test_traces_the_model_once_and_leaves_it_untouched(net):
    CALLS.clear()
    before = _snapshot(net)
    linear_call = ramie.Linear.__call__
    text = ramie.tabulate(net, jnp.ones((4, 6)))
    assert CALLS == {"Net": 1, "Block": 2}
    after = _snapshot(net)
    jax.tree.map(
        np.testing.assert_array_equal, after, before
    )  # batch stats, RNG counts, counter
    assert net.python_calls == 0
    assert ramie.Linear.__call__ is linear_call  # class patches are undone
    assert "Net Summary" in text


def test_rows_paths_types_outputs_and_width(net):
    text = ramie.tabulate(net, jnp.ones((4, 6)))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    body = "\n".join(lines)
    for path, typ, out in [
        ("block1", "Block", "f32[4,8]"),
        ("block1.linear", "Linear", "f32[4,8]"),
        ("block2.bn", "BatchNorm", "f32[4,3]"),
        ("block2.dropout", "Dropout", "f32[4,3]"),
    ]:
        assert any(path in ln and typ in ln and out in ln for ln in lines), (path, body)
    root = next(
        ln for ln in lines if ln.count("│") > 2 and ln.split("│")[2].strip() == "Net"
    )
    assert ln_cells(root)[:3] == ["", "Net", "f32[4,3]"]
    # pre-order: parents before their children
    assert body.index("block1 ") < body.index("block1.linear") < body.index("block2 ")


def test_parameter_totals_match_the_state(net):
    n_params = sum(x.size for x in jax.tree.leaves(ramie.state(net, ramie.Param)))
    text = ramie.tabulate(net, jnp.ones((4, 6)))
    assert f"Total: {n_params:,} trainable params" in text
    total_row = next(ln for ln in text.splitlines() if "Total │" in ln)
    assert f"{n_params:,} (" in total_row


def test_non_trainable_state_is_not_counted_as_parameters(net):
    text = ramie.tabulate(net, jnp.ones((4, 6)))
    lines = text.splitlines()
    bn_row = next(ln for ln in lines if "block1.bn" in ln)
    # BatchNorm(8): 16 Params (scale, bias) and 16 BatchStats (mean, var)
    assert "16 (64 B)" in bn_row and "16 BatchStat" in bn_row
    dropout_row = next(ln for ln in lines if "block1.dropout" in ln)
    assert "2 RngState" in dropout_row
    assert "(" not in dropout_row.split("│")[4]  # no Param count for Dropout
    other = sum(
        x.size for x in jax.tree.leaves(ramie.state(net, ramie.Not(ramie.Param)))
    )
    assert f"non-trainable: {other:,} (" in text


def test_depth_method_kwargs_and_abstract_inputs(net):
    x = jax.ShapeDtypeStruct((2, 6), jnp.float32)
    shallow = ramie.tabulate(net, x, depth=1, scale=2.0)
    assert "block1.linear" not in shallow and "block1 " in shallow
    feats = ramie.tabulate(net, x, method="features")
    assert "features()" in feats and "f32[2,8]" in feats
    assert "block2" not in feats


def test_row_filter_and_table_options(net):
    text = ramie.tabulate(
        net,
        jnp.ones((1, 6)),
        row_filter=lambda row: row.type is not ramie.Dropout,
        table_kwargs={"title": "My table"},
        console_kwargs={"width": 120},
    )
    assert "Dropout" not in text and "My table" in text


def test_compute_flops_adds_columns(net):
    text = ramie.tabulate(
        net, jnp.ones((4, 6)), depth=1, compute_flops=True, compute_vjp_flops=True
    )
    header = next(ln for ln in text.splitlines() if "path" in ln)
    assert "flops" in header and "vjp_flops" in header
    row = next(ln for ln in text.splitlines() if "block1 " in ln)
    assert any(
        c.strip().replace(",", "").isdigit() and int(c.strip().replace(",", "")) > 0
        for c in row.split("│")
    )


def test_shared_module_called_twice_gives_one_row_with_shapes():
    class Twice(ramie.Module):
        def __init__(self):
            self.layer = ramie.Linear(3, 3, rngs=ramie.Rngs(0))

        def __call__(self, x):
            return self.layer(self.layer(x))

    text = ramie.tabulate(Twice(), jnp.ones((2, 3)))
    assert sum("│ layer " in ln for ln in text.splitlines()) == 1


def test_patches_are_restored_after_an_error():
    class Fails(ramie.Module):
        def __init__(self):
            self.layer = ramie.Linear(3, 3, rngs=ramie.Rngs(0))

        def __call__(self, x):
            raise RuntimeError("boom")

    original = Fails.__call__
    with pytest.raises(RuntimeError, match="boom"):
        ramie.tabulate(Fails(), jnp.ones((2, 3)))
    assert Fails.__call__ is original


def test_missing_method_error():
    with pytest.raises(
        AttributeError, match=r"(?s)method='encode'.*Linear has no method"
    ):
        ramie.tabulate(
            ramie.Linear(2, 2, rngs=ramie.Rngs(0)), jnp.ones((1, 2)), method="encode"
        )


def test_summary_prints(capsys):
    ramie.summary(ramie.Linear(3, 2, rngs=ramie.Rngs(0)), jnp.ones((5, 3)))
    out = capsys.readouterr().out
    assert "Linear Summary" in out and "8 (32 B)" in out


def test_call_info_row_filter_compat():
    row = CallInfo(0, 1, ramie.Linear, ("a",), "", "f32[1]", None, None)
    from ramie._src.display.summary import filter_rng_streams

    assert filter_rng_streams(row)
