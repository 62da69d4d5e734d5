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


WIDE = {"width": 10_000}


def _table(net, *args, **kwargs):
    kwargs.setdefault("console_kwargs", WIDE)
    return ramie.tabulate(net, *args, **kwargs)


def test_rows_paths_types_inputs_and_outputs(net):
    lines = _table(net, jnp.ones((4, 6))).splitlines()
    body = "\n".join(lines)
    header = ln_cells(next(ln for ln in lines if "path" in ln).replace("┃", "│"))
    assert header == ["path", "type", "inputs", "outputs", "BatchStat", "Param",
                      "RngState", "Variable"]  # fmt: skip
    for path, typ, inp, out in [
        ("block1", "Block", "float32[4,6]", "float32[4,8]"),
        ("block1/linear", "Linear", "float32[4,6]", "float32[4,8]"),
        ("block2/bn", "BatchNorm", "float32[4,3]", "float32[4,3]"),
        ("block2/dropout", "Dropout", "float32[4,3]", "float32[4,3]"),
    ]:
        row = next(ln for ln in lines if ln_cells(ln)[:1] == [path])
        assert ln_cells(row)[:4] == [path, typ, inp, out], body
    root = next(ln for ln in lines if ln_cells(ln)[1:2] == ["Net"])
    assert ln_cells(root)[:4] == ["", "Net", "float32[4,6]", "float32[4,3]"]
    # pre-order: parents before their children
    assert body.index("block1 ") < body.index("block1/linear") < body.index("block2 ")


def test_each_variable_type_has_a_column_with_own_variables_and_totals(net):
    lines = _table(net, jnp.ones((4, 6))).splitlines()
    start = next(i for i, ln in enumerate(lines) if ln_cells(ln)[:1] == ["block1/bn"])
    cells = [ln_cells(ln) for ln in lines[start : start + 4]]
    # BatchNorm(8): scale/bias Params and mean/var BatchStats, listed then counted
    assert [c[4] for c in cells] == ["mean: float32[8]", "var: float32[8]", "",
                                     "16 (64 B)"]  # fmt: skip
    assert [c[5] for c in cells] == ["bias: float32[8]", "scale: float32[8]", "",
                                     "16 (64 B)"]  # fmt: skip
    dropout = ln_cells(next(ln for ln in lines if "block1/dropout" in ln))
    assert dropout[5] == "" and dropout[6] == "2 (12 B)"  # RNG state, no Params


def test_totals_match_the_state_per_type(net):
    text = _table(net, jnp.ones((4, 6)))
    total = ln_cells(next(ln for ln in text.splitlines() if "Total │" in ln))
    for col, filt in [(5, ramie.Param), (4, ramie.BatchStat)]:
        n = sum(x.size for x in jax.tree.leaves(ramie.state(net, filt)))
        assert total[col].startswith(f"{n:,} (")
    n_all = sum(
        np.size(v.value)
        for v in jax.tree.leaves(
            ramie.state(net), is_leaf=lambda x: isinstance(x, ramie.Variable)
        )
    )
    assert f"Total Parameters: {n_all:,} (" in text


def test_custom_variable_types_and_metadata_are_shown():
    class Stat(ramie.Variable):
        pass

    class Custom(ramie.Module):
        def __init__(self):
            self.s = Stat(jnp.ones(3))
            self.w = ramie.Param(jnp.ones((2, 2)), note=object.__new__(Marker))

        def __call__(self, x):
            return x @ self.w[...]

    lines = _table(Custom(), jnp.ones((1, 2))).splitlines()
    header = ln_cells(next(ln for ln in lines if "path" in ln).replace("┃", "│"))
    assert header[4:] == ["Param", "Stat"]
    text = "\n".join(lines)
    assert "note: <marker>" in text and "value: float32[2,2]" in text
    assert "s: float32[3]" in text


class Marker:
    def __repr__(self):
        return "<marker>"


@pytest.mark.parametrize(
    "call, expected",
    [
        (lambda m, x: m.sub({}, x), "- {}"),
        (lambda m, x: m.sub(x, {}), "- {}"),
        (lambda m, x: m.sub(x, foo=None), "foo: None"),
    ],
)
def test_inputs_show_empty_containers_and_keywords(call, expected):
    class M(ramie.Module):
        def sub(self, a, b=None, *, foo=1):
            return a

        def __call__(self, x):
            return call(self, x)

    text = _table(M(), jnp.ones((1, 2)), depth=1)
    assert expected in text and "float32[1,2]" in text


def test_a_forwarding_call_is_one_row_with_its_flops():
    class Fwd(ramie.Module):
        def g(self, x):
            return x**2

        def __call__(self, x):
            return self.g(x)

    lines = ramie.tabulate(Fwd(), jnp.ones(4), compute_flops=True).splitlines()
    rows = [ln_cells(ln) for ln in lines if ln_cells(ln)[1:2] == ["Fwd"]]
    assert [r[0] for r in rows] == ["g"] and rows[0][4] == "4"


def test_depth_method_kwargs_and_abstract_inputs(net):
    x = jax.ShapeDtypeStruct((2, 6), jnp.float32)
    shallow = _table(net, x, depth=1, scale=2.0)
    assert "block1/linear" not in shallow and "block1 " in shallow
    assert "scale: 2.0" in shallow
    feats = _table(net, x, method="features")
    assert "features" in feats and "float32[2,8]" in feats
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
    assert "vjp_flops" in header
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
    assert "Linear Summary" in out and "8 (32 B)" in out and "Total Parameters" in out


def test_call_info_row_filter_compat():
    row = CallInfo(0, 1, ramie.Linear, ("a",), "", "f32[1]", None, None)
    from ramie._src.display.summary import filter_rng_streams

    assert filter_rng_streams(row)


def test_flops_trace_each_call_once_and_match_xla(net):
    CALLS.clear()
    before = _snapshot(net)
    text = ramie.tabulate(net, jnp.ones((4, 6)), compute_flops=True)
    assert CALLS == {"Net": 1, "Block": 2}  # no re-run of the Python code to cost it
    jax.tree.map(np.testing.assert_array_equal, _snapshot(net), before)
    row = next(ln_cells(ln) for ln in text.splitlines() if "block1/linear" in ln)
    lin = net.block1.linear
    lowered = jax.jit(lambda x, w, b: x @ w + b).lower(
        jnp.ones((4, 6)), lin.kernel.value, lin.bias.value
    )
    cost = lowered.cost_analysis() or lowered.compile().cost_analysis()
    assert row[4] == f"{int(cost['flops']):,}"
