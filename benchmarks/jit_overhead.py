"""Per-step overhead of ramie.jit vs raw jax.jit, Flax nnx.jit and a flat floor.

A full train step - forward, value_and_grad, Adam update - on an MLP of L tiny
layers (width 16, so compute is negligible), with and without BatchNorm +
Dropout, for L in 1, 4, 16, 64. Variants, interleaved in one process:

  raw    jax.jit on plain pytrees doing the same math with optax (the reference)
  ramie  ramie.jit on the stateful step (model, optimizer mutated in place)
  flax   flax.nnx.jit on the equivalent Flax NNX model (if flax is installed)
  flat   jax.jit over one flat list of the same leaves (the floor a cached path
         can reach)

Each step's output feeds the next, as in training. Reported: median µs per
step over interleaved rounds, and ratios to raw. Run:
``python benchmarks/jit_overhead.py`` (``--quick`` for a short run, ``--cnn`` for
the compute-bound CNN comparison).
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax

import ramie

WIDTH = 16
BATCH = 32
MOMENTUM = 0.99
EPS = 1e-5
RATE = 0.1


# --------------------------------------------------------------------- ramie
class RamieMLP(ramie.Module):
    def __init__(self, layers: int, bn: bool, rngs: ramie.Rngs):
        self.linears = ramie.List(
            [ramie.Linear(WIDTH, WIDTH, rngs=rngs) for _ in range(layers)]
        )
        self.bn = bn
        if bn:
            self.norms = ramie.List(
                [
                    ramie.BatchNorm(WIDTH, momentum=MOMENTUM, epsilon=EPS, rngs=rngs)
                    for _ in range(layers)
                ]
            )
            self.dropout = ramie.Dropout(RATE, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, lin in enumerate(self.linears):
            x = lin(x)
            if self.bn:
                x = self.norms[i](x)
                x = self.dropout(x)
            x = jax.nn.relu(x)
        return x


def ramie_step_fn():
    @ramie.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            return ((model(x) - y) ** 2).mean()

        loss, grads = ramie.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    return step


# ----------------------------------------------------------------------- raw
def raw_init(layers: int, bn: bool, key: jax.Array) -> tuple[dict, dict, jax.Array]:
    keys = jax.random.split(key, layers)
    init = jax.nn.initializers.lecun_normal()
    params: dict[str, Any] = {
        "linears": [
            {"kernel": init(k, (WIDTH, WIDTH), jnp.float32), "bias": jnp.zeros(WIDTH)}
            for k in keys
        ]
    }
    stats: dict[str, Any] = {}
    if bn:
        params["norms"] = [
            {"scale": jnp.ones(WIDTH), "bias": jnp.zeros(WIDTH)} for _ in range(layers)
        ]
        stats["norms"] = [
            {"mean": jnp.zeros(WIDTH), "var": jnp.ones(WIDTH)} for _ in range(layers)
        ]
    return params, stats, jax.random.key(1)


def raw_forward(params: dict, stats: dict, key: jax.Array, x: jax.Array, bn: bool):
    new_stats = []
    for i, lin in enumerate(params["linears"]):
        x = x @ lin["kernel"] + lin["bias"]
        if bn:
            p, s = params["norms"][i], stats["norms"][i]
            mean = x.mean(0)
            var = jnp.maximum(0.0, (x * x).mean(0) - mean * mean)
            new_stats.append(
                {
                    "mean": MOMENTUM * s["mean"] + (1 - MOMENTUM) * mean,
                    "var": MOMENTUM * s["var"] + (1 - MOMENTUM) * var,
                }
            )
            x = (x - mean) * jax.lax.rsqrt(var + EPS) * p["scale"] + p["bias"]
            key, sub = jax.random.split(key)
            keep = jax.random.bernoulli(sub, 1 - RATE, x.shape)
            x = jnp.where(keep, x / (1 - RATE), 0)
        x = jax.nn.relu(x)
    return x, ({"norms": new_stats} if bn else {}), key


def raw_step_fn(tx: optax.GradientTransformation, bn: bool):
    @jax.jit
    def step(params, stats, opt_state, key, x, y):
        def loss_fn(p):
            out, new_stats, new_key = raw_forward(p, stats, key, x, bn)
            return ((out - y) ** 2).mean(), (new_stats, new_key)

        (loss, (new_stats, new_key)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, new_stats, opt_state, new_key, loss

    return step


# ---------------------------------------------------------------------- flat
def flat_step_fn(tx: optax.GradientTransformation, bn: bool, treedef: Any):
    raw = raw_step_fn(tx, bn).__wrapped__

    @jax.jit
    def step(leaves, x, y):
        params, stats, opt_state, key = jax.tree_util.tree_unflatten(treedef, leaves)
        params, stats, opt_state, key, loss = raw(params, stats, opt_state, key, x, y)
        return jax.tree_util.tree_leaves((params, stats, opt_state, key)), loss

    return step


# ---------------------------------------------------------------------- flax
def flax_setup(layers: int, bn: bool):
    try:
        from flax import nnx
    except ImportError:
        return None

    class FlaxMLP(nnx.Module):
        def __init__(self, rngs):
            self.linears = nnx.List(
                [nnx.Linear(WIDTH, WIDTH, rngs=rngs) for _ in range(layers)]
            )
            self.bn = bn
            if bn:
                self.norms = nnx.List(
                    [
                        nnx.BatchNorm(WIDTH, momentum=MOMENTUM, epsilon=EPS, rngs=rngs)
                        for _ in range(layers)
                    ]
                )
                self.dropout = nnx.Dropout(RATE, rngs=rngs)

        def __call__(self, x):
            for i, lin in enumerate(self.linears):
                x = lin(x)
                if self.bn:
                    x = self.norms[i](x)
                    x = self.dropout(x)
                x = jax.nn.relu(x)
            return x

    model = FlaxMLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            return ((model(x) - y) ** 2).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    return lambda x, y: step(model, optimizer, x, y)


# --------------------------------------------------------------------- modes
def tree_step_fn(lib: Any):
    """The tree-mode train step of Flax's FLIP 5310, for ``lib`` = ramie or nnx."""

    def step(model, optimizer, x, y):
        graphdef, params, rest = lib.split(model, lib.Param, ..., graph=False)

        def loss_fn(params, rest):
            model = lib.merge(graphdef, params, rest)
            return ((model(x) - y) ** 2).mean()

        loss, grads = lib.value_and_grad(loss_fn, graph=False)(params, rest)
        optimizer.update(model, grads)
        return loss

    return step


def graph_step_fn(lib: Any, **jit_kwargs: Any):
    def step(model, optimizer, x, y):
        def loss_fn(model):
            return ((model(x) - y) ** 2).mean()

        loss, grads = lib.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    return lib.jit(step, **jit_kwargs)


def run_modes(layers: int, bn: bool, rounds: int, steps: int) -> dict[str, float]:
    """Graph mode, tree mode (graph=False, jit_partial) and hijax Variables, for
    ramie and (when installed) Flax, interleaved in one process."""
    x = jnp.ones((BATCH, WIDTH))
    y = jnp.zeros((BATCH, WIDTH))
    libs: dict[str, Any] = {"ramie": ramie}
    try:
        from flax import nnx

        libs["flax"] = nnx
    except ImportError:
        pass
    fns: dict[str, Any] = {}
    for name, lib in libs.items():

        def make(hijax: bool = False, lib: Any = lib) -> tuple[Any, Any]:
            with lib.var_defaults(hijax=hijax):
                model = _mlp(lib, layers, bn)
                return model, lib.Optimizer(model, optax.adam(1e-3), wrt=lib.Param)

        m, o = make()
        graph = graph_step_fn(lib)
        fns[f"{name} graph"] = lambda g=graph, m=m, o=o: g(m, o, x, y)
        m, o = make()
        tree = lib.jit(tree_step_fn(lib), graph=False)
        fns[f"{name} tree"] = lambda t=tree, m=m, o=o: t(m, o, x, y)
        m, o = make()
        part = lib.jit_partial(tree_step_fn(lib), m, o, graph=False)
        fns[f"{name} jit_partial"] = lambda p=part: p(x, y)
        m, o = make(hijax=True)
        hij = graph_step_fn(lib)
        fns[f"{name} hijax"] = lambda h=hij, m=m, o=o: h(m, o, x, y)
        m, o = make(hijax=True)
        hij_tree = lib.jit(tree_step_fn(lib), graph=False)
        fns[f"{name} hijax tree"] = lambda h=hij_tree, m=m, o=o: h(m, o, x, y)
    working = {}
    for k, f in fns.items():  # a variant the library cannot run reads nan
        try:
            jax.block_until_ready(f())
            working[k] = f
        except Exception as e:  # noqa: BLE001
            print(f"# {k}: fails ({type(e).__name__})", file=sys.stderr)
    return measure(working, rounds, steps)


def _mlp(lib: Any, layers: int, bn: bool) -> Any:
    rngs = lib.Rngs(0)
    mods: list[Any] = []
    for _ in range(layers):
        mods.append(lib.Linear(WIDTH, WIDTH, rngs=rngs))
        if bn:
            mods.append(lib.BatchNorm(WIDTH, momentum=MOMENTUM, epsilon=EPS, rngs=rngs))
            mods.append(lib.Dropout(RATE, rngs=rngs))
        mods.append(jax.nn.relu)
    return lib.Sequential(*mods)


def main_modes(layers: list[int], rounds: int, steps: int) -> None:
    names = [
        f"{lib} {mode}"
        for lib in ("ramie", "flax")
        for mode in ("graph", "tree", "jit_partial", "hijax", "hijax tree")
    ]
    print("µs per train step; tree = jit(graph=False) on the FLIP 5310 step")
    print(
        f"{'L':>3} {'bn+drop':>7} | " + " ".join(f"{n:>17}" for n in names), flush=True
    )
    for n_layers in layers:
        for bn in (False, True):
            r = run_modes(
                n_layers, bn, rounds, steps if n_layers < 64 else max(steps // 4, 5)
            )
            cells = " ".join(f"{r.get(n, float('nan')):17.1f}" for n in names)
            print(f"{n_layers:>3} {str(bn):>7} | {cells}", flush=True)


# -------------------------------------------------------------------- timing
def measure(fns: dict[str, Any], rounds: int, steps: int) -> dict[str, float]:
    for f in fns.values():  # compile and warm up
        for _ in range(5):
            out = f()
        jax.block_until_ready(out)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            gc.collect()  # nobody pays for garbage an earlier measurement left behind
            t0 = time.perf_counter()
            for _ in range(steps):
                out = f()
            jax.block_until_ready(out)
            samples[name].append((time.perf_counter() - t0) / steps * 1e6)
    return {k: statistics.median(v) for k, v in samples.items()}


def run_mlp(layers: int, bn: bool, rounds: int, steps: int) -> dict[str, float]:
    x = jnp.ones((BATCH, WIDTH))
    y = jnp.zeros((BATCH, WIDTH))
    tx = optax.adam(1e-3)
    fns: dict[str, Any] = {}

    params, stats, key = raw_init(layers, bn, jax.random.key(0))
    raw_state = [params, stats, tx.init(params), key]
    raw_step = raw_step_fn(tx, bn)

    def raw_call():
        raw_state[0], raw_state[1], raw_state[2], raw_state[3], loss = raw_step(
            *raw_state, x, y
        )
        return loss

    fns["raw"] = raw_call

    model = RamieMLP(layers, bn, ramie.Rngs(0))
    optimizer = ramie.Optimizer(model, optax.adam(1e-3), wrt=ramie.Param)
    step = ramie_step_fn()
    fns["ramie"] = lambda: step(model, optimizer, x, y)

    flax_call = flax_setup(layers, bn)
    if flax_call is not None:
        fns["flax"] = lambda: flax_call(x, y)

    leaves, treedef = jax.tree_util.tree_flatten((params, stats, tx.init(params), key))
    flat_state = [leaves]
    flat_step = flat_step_fn(tx, bn, treedef)

    def flat_call():
        flat_state[0], loss = flat_step(flat_state[0], x, y)
        return loss

    fns["flat"] = flat_call
    return measure(fns, rounds, steps)


def run_cnn(rounds: int, steps: int) -> dict[str, float]:
    """Compute-bound check: a small CNN at batch 128, ramie.jit vs raw jax.jit."""

    class CNN(ramie.Module):
        def __init__(self, rngs):
            self.conv1 = ramie.Conv(1, 32, (3, 3), rngs=rngs)
            self.conv2 = ramie.Conv(32, 64, (3, 3), rngs=rngs)
            self.head = ramie.Linear(64 * 7 * 7, 10, rngs=rngs)

        def __call__(self, x):
            x = ramie.avg_pool(jax.nn.relu(self.conv1(x)), (2, 2), (2, 2))
            x = ramie.avg_pool(jax.nn.relu(self.conv2(x)), (2, 2), (2, 2))
            return self.head(x.reshape(x.shape[0], -1))

    x = jnp.ones((128, 28, 28, 1))
    labels = jnp.zeros((128,), jnp.int32)
    model = CNN(ramie.Rngs(0))
    optimizer = ramie.Optimizer(model, optax.adam(1e-3), wrt=ramie.Param)

    @ramie.jit
    def step(model, optimizer, x, labels):
        def loss_fn(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(
                logits, labels
            ).mean()

        loss, grads = ramie.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    graphdef, params = ramie.split(ramie.clone(model))
    params = ramie.to_pure_dict(params)
    tx = optax.adam(1e-3)
    state = [params, tx.init(params)]

    @jax.jit
    def raw_step(params, opt_state, x, labels):
        def loss_fn(p):
            logits = ramie.merge(graphdef, ramie.State(p))(x)
            return optax.softmax_cross_entropy_with_integer_labels(
                logits, labels
            ).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def raw_call():
        state[0], state[1], loss = raw_step(state[0], state[1], x, labels)
        return loss

    return measure(
        {"raw": raw_call, "ramie": lambda: step(model, optimizer, x, labels)},
        rounds,
        steps,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds (CI smoke run)"
    )
    parser.add_argument(
        "--cnn", action="store_true", help="also run the compute-bound CNN check"
    )
    parser.add_argument(
        "--modes",
        action="store_true",
        help="graph vs tree mode vs hijax Variables, ramie and Flax",
    )
    parser.add_argument("--layers", type=int, nargs="*", default=[1, 4, 16, 64])
    args = parser.parse_args(argv)
    rounds, steps = (3, 20) if args.quick else (31, 50)
    if args.modes:
        main_modes(args.layers, rounds, steps)
        return
    print(
        f"# jit_overhead  {platform.processor() or platform.machine()}  "
        f"python {sys.version.split()[0]}  jax {jax.__version__}  "
        f"backend {jax.default_backend()}"
    )
    header = (
        f"{'L':>3} {'bn+drop':>7} | {'raw':>9} {'ramie':>9} {'flax':>9} {'flat':>9} | "
        f"{'ramie/raw':>9} {'flax/raw':>9} {'flat/raw':>9} {'flax/ramie':>10}"
    )
    print(header)
    print("-" * len(header))
    for layers in args.layers:
        for bn in (False, True):
            r = run_mlp(
                layers, bn, rounds, steps if layers < 64 else max(steps // 4, 5)
            )
            raw = r["raw"]
            flax_t = r.get("flax", float("nan"))
            print(
                f"{layers:>3} {str(bn):>7} | {raw:9.1f} {r['ramie']:9.1f} "
                f"{flax_t:9.1f} {r['flat']:9.1f} | "
                f"{r['ramie'] / raw:9.2f} {flax_t / raw:9.2f} {r['flat'] / raw:9.2f} "
                f"{flax_t / r['ramie']:10.1f}",
                flush=True,
            )
    if args.cnn:
        r = run_cnn(rounds, max(steps // 10, 5))
        print(
            f"CNN batch 128: raw {r['raw']:.0f} us/step, "
            f"ramie {r['ramie']:.0f} us/step, "
            f"ratio {r['ramie'] / r['raw']:.3f}"
        )


if __name__ == "__main__":
    main()
