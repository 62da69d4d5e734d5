"""Checks every registered layer case passes (see ``cases.py``)."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import LayerCase, collect

import ramie
from ramie.testing import assert_trees_close

CASES = collect()
IDS = [c.name for c in CASES]


def _prepare(case: LayerCase, module):
    if case.train:
        module.train()
    else:
        module.eval()
    return module


def _evaluated(module):
    module.eval()
    return module


def _build(case: LayerCase, seed: int = 0):
    return _prepare(case, case.make(ramie.Rngs(seed)))


def _inputs(case: LayerCase, seed: int = 1) -> tuple:
    return case.inputs(jax.random.key(seed))


def test_every_exported_layer_has_a_case():
    from ramie._src import nn as nn_pkg

    exported = {
        obj
        for name, obj in vars(ramie).items()
        if inspect.isclass(obj)
        and issubclass(obj, ramie.Module)
        and obj.__module__.startswith(nn_pkg.__name__)
        and not name.startswith("_")
    }
    covered = {c.layer for c in CASES}
    missing = sorted(cls.__name__ for cls in exported - covered)
    assert not missing, f"layers without a case in tests/nn/cases_*.py: {missing}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jit_matches_eager(case: LayerCase):
    args = _inputs(case)
    eager_model = _build(case)
    jit_model = ramie.clone(eager_model)
    expected = case.run(eager_model, *args)
    got = ramie.jit(lambda m, *a: case.run(m, *a))(jit_model, *args)
    assert_trees_close(got, expected, rtol=1e-5, atol=1e-5)
    # state updates (batch statistics, RNG counters, caches) match too
    assert_trees_close(
        ramie.state(jit_model), ramie.state(eager_model), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grad_is_finite_and_shaped_like_params(case: LayerCase):
    model = _build(case)
    args = _inputs(case)
    params = ramie.state(model, ramie.Param)

    def loss(m):
        out = case.run(m, *args)
        return sum(
            jnp.sum(jnp.asarray(o, jnp.float32) ** 2) for o in jax.tree.leaves(out)
        )

    grads = ramie.grad(loss)(model)
    if not params:  # a parameter-free layer (pooling, Dropout): an empty gradient
        assert not jax.tree.leaves(grads)
        return
    assert jax.tree.map(jnp.shape, grads.to_pure_dict()) == jax.tree.map(
        jnp.shape, params.to_pure_dict()
    )
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.vmap], ids=[c.name for c in CASES if c.vmap]
)
def test_vmap_over_inputs_matches_loop(case: LayerCase):
    model = _evaluated(_build(case))
    batches = [_inputs(case, seed) for seed in (1, 2, 3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    out = ramie.vmap(
        lambda m, *a: case.run(m, *a), in_axes=(None,) + (0,) * len(stacked)
    )(model, *stacked)
    expected = jax.tree.map(
        lambda *xs: jnp.stack(xs), *[case.run(model, *b) for b in batches]
    )
    assert_trees_close(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.bf16 and c.make_bf16],
    ids=[c.name for c in CASES if c.bf16 and c.make_bf16],
)
def test_bfloat16(case: LayerCase):
    model = _prepare(case, case.make_bf16(ramie.Rngs(0)))
    args = jax.tree.map(
        lambda x: (
            x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x
        ),
        _inputs(case),
    )
    out = case.run(model, *args)
    leaves = jax.tree.leaves(out)
    assert leaves and all(
        x.dtype == jnp.bfloat16 for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)
    )
    assert all(
        bool(jnp.isfinite(x.astype(jnp.float32)).all())
        for x in leaves
        if jnp.issubdtype(x.dtype, jnp.floating)
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_split_merge_round_trip(case: LayerCase):
    model = _evaluated(_build(case))
    args = _inputs(case)
    graphdef, state = ramie.split(model)
    rebuilt = ramie.merge(graphdef, ramie.clone(state) if False else state, copy=True)
    assert_trees_close(case.run(rebuilt, *args), case.run(model, *args))
    # pure-dict round trip (what checkpoints do)
    pure = ramie.to_pure_dict(ramie.state(model))
    fresh = _evaluated(_build(case, seed=7))
    target = ramie.state(fresh)
    ramie.replace_by_pure_dict(target, pure)
    assert_trees_close(case.run(fresh, *args), case.run(model, *args))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_repr_names_the_layer_and_fits(case: LayerCase):
    model = _build(case)
    text = repr(model)
    assert type(model).__name__ in text
    assert max(len(line) for line in text.splitlines()) <= 100, text


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.grad_check],
    ids=[c.name for c in CASES if c.grad_check],
)
def test_check_grads(case: LayerCase):
    from jax.test_util import check_grads

    model = _evaluated(_build(case))
    args = _inputs(case)
    graphdef, params, rest = ramie.split(model, ramie.Param, ...)

    def f(params, *a):
        m = ramie.merge(
            graphdef, params, ramie.clone(rest) if False else rest, copy=True
        )
        return jax.tree.leaves(case.run(m, *a))[0]

    float_args = tuple(a for a in args if jnp.issubdtype(a.dtype, jnp.floating))
    if len(float_args) != len(args):
        check_grads(
            lambda p: f(p, *args),
            (params,),
            order=1,
            modes=["rev"],
            atol=5e-2,
            rtol=5e-2,
        )
    else:
        check_grads(f, (params, *args), order=1, modes=["rev"], atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.make_flax],
    ids=[c.name for c in CASES if c.make_flax],
)
def test_matches_flax_nnx(case: LayerCase):
    from flax import nnx

    ours = _build(case)
    theirs = case.make_flax(nnx.Rngs(0))
    if case.train:  # Flax's train()/eval() return None
        theirs.train()
    else:
        theirs.eval()
    our_pure = ramie.to_pure_dict(ramie.state(ours))
    their_state = nnx.state(theirs)
    their_pure = nnx.to_pure_dict(their_state)
    # same parameter names and shapes, so checkpoints map 1:1
    assert jax.tree.map(jnp.shape, our_pure) == jax.tree.map(jnp.shape, their_pure)
    if case.copy_weights:
        nnx.replace_by_pure_dict(their_state, our_pure)
        nnx.update(theirs, their_state)
    args = _inputs(case)
    out_ours = case.run(ours, *args)
    out_theirs = case.run(theirs, *args)
    assert_trees_close(out_ours, out_theirs, rtol=case.rtol, atol=case.atol)
    # state after the call (e.g. batch statistics) matches too
    assert_trees_close(
        ramie.to_pure_dict(ramie.state(ours)),
        nnx.to_pure_dict(nnx.state(theirs)),
        rtol=case.rtol,
        atol=case.atol,
    )


_ = np
