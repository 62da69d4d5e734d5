"""Seed 000/003: "Flax NNX vs JAX transformations" (Chinese and English copies).

Each example runs verbatim with ``import ramie as nnx``; the tests check what
the text says: the NNX-transformed step updates the module in place, the
JAX-transformed step returns updated (graphdef, state), and the mixed forms
work in both directions.
"""

import jax
import jax.numpy as jnp
import numpy as np

import ramie as nnx

x = jax.random.normal(jax.random.key(0), (1, 2))
y = jax.random.normal(jax.random.key(1), (1, 3))


def _loss(model):
    return float(((model(x) - y) ** 2).mean())


def test_nnx_jit_and_nnx_grad_update_the_model_in_place():
    @nnx.jit
    def train_step(model, x, y):
        def loss_fn(model):
            return ((model(x) - y) ** 2).mean()

        grads = nnx.grad(loss_fn)(model)
        params = nnx.state(model, nnx.Param)
        params = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
        nnx.update(model, params)

    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    before = _loss(model)
    kernel_before = np.asarray(model.kernel.value)
    train_step(model, x, y)
    assert not np.allclose(kernel_before, model.kernel.value)
    assert _loss(model) < before


def test_jax_jit_and_jax_grad_on_split_state():
    @jax.jit
    def train_step(graphdef, state, x, y):
        def loss_fn(graphdef, state):
            model = nnx.merge(graphdef, state)
            return ((model(x) - y) ** 2).mean()

        grads = jax.grad(loss_fn, argnums=1)(graphdef, state)

        model = nnx.merge(graphdef, state)
        params = nnx.state(model, nnx.Param)
        params = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
        nnx.update(model, params)
        return nnx.split(model)

    graphdef, state = nnx.split(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    before = _loss(nnx.merge(graphdef, state, copy=True))
    graphdef, state = train_step(graphdef, state, x, y)
    assert isinstance(graphdef, nnx.GraphDef)
    assert _loss(nnx.merge(graphdef, state)) < before


def test_nnx_jit_outside_jax_grad_inside():
    @nnx.jit
    def train_step(model, x, y):
        def loss_fn(graphdef, state):
            model = nnx.merge(graphdef, state)
            return ((model(x) - y) ** 2).mean()

        grads = jax.grad(loss_fn, 1)(*nnx.split(model))
        params = nnx.state(model, nnx.Param)
        params = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
        nnx.update(model, params)

    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    before = _loss(model)
    train_step(model, x, y)
    assert _loss(model) < before


def test_jax_jit_outside_nnx_grad_inside():
    @jax.jit
    def train_step(graphdef, state, x, y):
        model = nnx.merge(graphdef, state)

        def loss_fn(model):
            return ((model(x) - y) ** 2).mean()

        grads = nnx.grad(loss_fn)(model)
        params = nnx.state(model, nnx.Param)
        params = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
        nnx.update(model, params)
        return nnx.split(model)

    graphdef, state = nnx.split(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    before = _loss(nnx.merge(graphdef, state, copy=True))
    graphdef, state = train_step(graphdef, state, x, y)
    assert _loss(nnx.merge(graphdef, state)) < before


def test_all_four_forms_compute_the_same_update():
    """The text presents the four forms as equivalent; check they agree."""
    ref = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    g = jax.grad(lambda p: ((nnx.merge(nnx.graphdef(ref), p)(x) - y) ** 2).mean())(
        nnx.state(ref)
    )
    expected = jax.tree.map(
        lambda p, g: p - 0.1 * g, nnx.to_pure_dict(nnx.state(ref)), nnx.to_pure_dict(g)
    )

    @nnx.jit
    def train_step(model, x, y):
        def loss_fn(model):
            return ((model(x) - y) ** 2).mean()

        grads = nnx.grad(loss_fn)(model)
        params = nnx.state(model, nnx.Param)
        params = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
        nnx.update(model, params)

    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    train_step(model, x, y)
    got = nnx.to_pure_dict(nnx.state(model))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, expected
    )
    assert jnp.shape(got["kernel"]) == (2, 3)
