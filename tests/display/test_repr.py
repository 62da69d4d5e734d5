"""Tests for the text reprs of modules, graph objects and States."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ramie
from ramie._src.display.layer_formats import register_formatter
from ramie._src.display.repr import repr_options, value_text


class Block(ramie.Module):
    def __init__(self, d: int, rngs: ramie.Rngs):
        self.linear = ramie.Linear(d, d, rngs=rngs)
        self.bn = ramie.BatchNorm(d, rngs=rngs)
        self.dropout = ramie.Dropout(0.1, rngs=rngs)


class Model(ramie.Module):
    def __init__(self, n_blocks: int, rngs: ramie.Rngs):
        self.embed = ramie.Linear(16, 8, rngs=rngs)
        self.blocks = [Block(8, rngs) for _ in range(n_blocks)]
        self.head = ramie.Linear(8, 2, rngs=rngs)
        self.activation = jax.nn.gelu
        self.name = "classifier"
        self.unused = None


def _check_width(text: str, width: int = 80) -> None:
    assert max(len(line) for line in text.splitlines()) <= width, text


def test_linear_is_one_shape_summary_line():
    assert repr(ramie.Linear(784, 256, rngs=ramie.Rngs(0))) == (
        "Linear(784 -> 256, kernel=f32[784,256], bias=f32[256])"
    )
    layer = ramie.Linear(4, 6, use_bias=False, dtype=jnp.bfloat16, rngs=ramie.Rngs(0))
    assert repr(layer) == "Linear(4 -> 6, use_bias=False, dtype=bf16, kernel=f32[4,6])"


def test_nested_model_is_an_indented_tree_that_fits_80_columns():
    text = repr(Model(2, ramie.Rngs(0)))
    _check_width(text)
    lines = text.splitlines()
    assert lines[0].startswith("Model(  # Param: ")
    assert "  embed=Linear(16 -> 8, kernel=f32[16,8], bias=f32[8])," in lines
    assert "  blocks=[" in lines
    assert "      bn=BatchNorm(8," in lines
    assert "        mean=BatchStat(f32[8])," in lines
    assert "      dropout=Dropout(0.1, rngs=RngStream('dropout'))," in lines
    # data attributes first, then short static ones; None is left out
    assert lines[-3:] == ["  activation=gelu,", "  name='classifier',", ")"]
    assert "unused" not in text


def test_runs_of_identical_layers_collapse():
    text = repr(Model(12, ramie.Rngs(0)))
    _check_width(text)
    assert "    12 x Block(" in text.splitlines()
    assert text.count("Block(") == 1


class Tiny(ramie.Module):
    def __init__(self, i: int):
        self.w = ramie.Param(np.zeros(i + 1, np.float32))


def test_long_lists_are_capped():
    layers = ramie.List([Tiny(i) for i in range(40)])
    with repr_options(max_items=5):
        text = repr(layers)
    assert text.splitlines()[-2] == "  ... 36 more,"
    assert text.count("Tiny(") == 4


def test_shared_modules_and_variables_are_marked():
    model = Model(1, ramie.Rngs(0))
    model.tied = model.embed
    model.tied_bias = model.head.bias
    text = repr(model)
    assert "tied=Linear(<shared with embed>)" in text
    assert "tied_bias=Param(<shared with head.bias>)" in text


def test_cycles_are_safe():
    a = Block(2, ramie.Rngs(0))
    a.parent = a
    a.linear.owner = a
    text = repr(a)
    assert "parent=Block(<cycle: <root>>)" in text
    assert "owner=Block(<cycle: <root>>)" in text


def test_plain_container_cycles_are_safe():
    m = ramie.Module()
    loop: list = []
    loop.append(loop)
    m.__dict__["loop"] = loop  # bypass tracking: a genuinely cyclic list
    assert "Module(" in repr(m)


def test_depth_limit():
    model = Model(1, ramie.Rngs(0))
    with repr_options(max_depth=2):
        text = repr(model)
    assert "Block(...)" in text
    with repr_options(max_depth=0):
        assert repr(model) == "Model(...)"


def test_sequential_lists_its_layers_positionally():
    model = ramie.Sequential(
        ramie.Linear(2, 4, rngs=ramie.Rngs(0)),
        jax.nn.relu,
        ramie.Linear(4, 1, rngs=ramie.Rngs(1)),
    )
    assert repr(model).splitlines() == [
        "Sequential(  # Param: 17 (68 B)",
        "  Linear(2 -> 4, kernel=f32[2,4], bias=f32[4]),",
        "  relu,",
        "  Linear(4 -> 1, kernel=f32[4,1], bias=f32[1]),",
        ")",
    ]


def test_graph_objects_that_are_not_modules():
    assert repr(ramie.Rngs(0, params=1)) == "Rngs(default, params)"
    assert repr(ramie.metrics.Average()).splitlines() == [
        "Average(  # MetricState: 2 (8 B)",
        "  total=MetricState(f32[] 0),",
        "  count=MetricState(i32[] 0),",
        "  argname='values',",
        ")",
    ]


@pytest.mark.parametrize("width", [40, 60, 80, 100])
def test_every_line_fits_any_width(width):
    class VeryLongNamedModule(ramie.Module):
        def __init__(self):
            self.an_extremely_long_attribute_name_for_a_layer = ramie.Linear(
                3, 2, rngs=ramie.Rngs(0)
            )
            self.description = "x" * 200
            self.nested = {
                "a_long_dictionary_key": [
                    Block(3, ramie.Rngs(1)),
                    Block(4, ramie.Rngs(2)),
                ]
            }

    with repr_options(width=width):
        text = repr(VeryLongNamedModule())
    _check_width(text, width)
    assert "VeryLongNamedModule(" in text


def test_registered_formatter_and_fallback_when_it_fails():
    class Scale(ramie.Module):
        def __init__(self, n: int):
            self.n = n
            self.w = ramie.Param(jnp.ones((n,)))

    register_formatter(Scale, lambda m: [f"{m.n} features", ("w", m.w)])
    assert repr(Scale(3)) == "Scale(3 features, w=f32[3])"

    class Broken(Scale):
        pass

    register_formatter(Broken, lambda m: [m.missing_attribute])
    assert repr(Broken(2)) == "Broken(w=f32[2], n=2)"  # generic: data, then static


def test_unknown_module_generic_format():
    class Custom(ramie.Module):
        def __init__(self):
            self.count = ramie.Variable(jnp.array(3))
            self.table = np.zeros((5, 2), np.int8)
            self.sown = ramie.Intermediate((np.ones((2, 3), np.float32),))
            self.fn = lambda x: x
            self.rate = 0.5
            self.promote_dtype = promote_dtype  # `name=name` is noise: hidden
            self._private = 1

    assert repr(Custom()).splitlines() == [
        "Custom(  # Intermediate: 6 (24 B), Variable: 1 (4 B), Total: 7 (28 B)",
        "  count=Variable(i32[] 3),",
        "  table=i8[5,2],",
        "  sown=Intermediate((f32[2,3],)),",
        "  fn=<lambda>,",
        "  rate=0.5,",
        ")",
    ]


def promote_dtype(x):
    return x


def test_abstract_and_traced_models():
    model = ramie.Linear(3, 4, rngs=ramie.Rngs(0))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), model)
    assert isinstance(abstract.kernel.value, jax.ShapeDtypeStruct)
    assert repr(abstract) == "Linear(3 -> 4, kernel=f32[3,4], bias=f32[4])"
    seen = []
    ramie.jit(lambda m: seen.append(repr(m)))(ramie.BatchNorm(2, rngs=ramie.Rngs(0)))
    assert "mean=BatchStat(f32[2])" in seen[0]


def test_value_text():
    assert value_text(jnp.zeros((2, 3), jnp.bfloat16)) == "bf16[2,3]"
    assert value_text(jnp.array(2.5)) == "f32[] 2.5"
    assert value_text(jax.random.key(0)) == "key<fry>[]"
    assert value_text([1, 2, 3, 4, 5]) == "[1, 2, 3, 4, ...]"
    assert value_text({"a": jnp.ones(2)}) == "{'a': f32[2]}"


def test_state_repr_keeps_the_seed_style():
    state = ramie.state(ramie.Linear(784, 256, rngs=ramie.Rngs(0)))
    assert repr(state).splitlines() == [
        "State({",
        "  'bias': Param(value=f32[256]),",
        "  'kernel': Param(value=f32[784,256]),",
        "})",
    ]
    shapes = jax.tree.map(jnp.shape, state)
    assert "'kernel': Param(value=(784, 256))," in repr(shapes)
    assert repr(ramie.State({})) == "State({})"


def test_first_line_totals_cover_every_type_and_the_total():
    # Counts from the model's own state, as Flax's repr reports them.
    model = Model(2, ramie.Rngs(0))
    leaves = ramie.to_flat_state(ramie.state(model)).leaves
    by_type: dict[str, int] = {}
    for v in leaves:
        name = "RngState" if isinstance(v, ramie.RngState) else type(v).__name__
        by_type[name] = by_type.get(name, 0) + int(np.prod(np.shape(v.value)))
    first = repr(model).splitlines()[0]
    assert len(by_type) > 1
    for name, n in by_type.items():
        assert f"{name}: {n:,}" in first
    assert f"Total: {sum(by_type.values()):,} (" in first
    with repr_options(width=200):
        wide = repr(model).splitlines()[0]
    assert wide.count(" B)") + wide.count("KB)") == len(by_type) + 1  # with bytes
