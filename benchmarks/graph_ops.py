"""Speed of the graph functional API: split, merge, state, update, clone, construction.

Builds the same model - a root module holding B blocks of small leaf modules,
each leaf with two Params - in ramie, Flax NNX and (where an equivalent exists)
Equinox, with 1,000 and 10,000 Variables, and reports microseconds per Variable
(best of several repeats). Also times eager construction of 500 ``Linear(16, 16)``
layers (µs per layer) against Flax, Equinox and the bare ``jax.random`` calls.

Run: ``python benchmarks/graph_ops.py`` (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import ramie

LEAVES_PER_BLOCK = 50


def best(f: Callable[[], Any], repeats: int, number: int = 1) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()  # nobody pays for garbage an earlier measurement left behind
        t0 = time.perf_counter()
        for _ in range(number):
            f()
        times.append((time.perf_counter() - t0) / number)
    return min(times)


# ------------------------------------------------------------------ models
def ramie_model(n_vars: int, arrays: list):
    class Leaf(ramie.Module):
        def __init__(self, w, b):
            self.kernel = ramie.Param(w)
            self.bias = ramie.Param(b)

    class Block(ramie.Module):
        def __init__(self, leaves):
            self.layers = ramie.List(leaves)

    class Root(ramie.Module):
        def __init__(self, blocks):
            self.blocks = ramie.List(blocks)

    n_leaves = n_vars // 2
    leaves = [Leaf(*arrays[i % len(arrays)]) for i in range(n_leaves)]
    blocks = [
        Block(leaves[i : i + LEAVES_PER_BLOCK])
        for i in range(0, n_leaves, LEAVES_PER_BLOCK)
    ]
    return Root(blocks)


def flax_model(n_vars: int, arrays: list):
    from flax import nnx

    class Leaf(nnx.Module):
        def __init__(self, w, b):
            self.kernel = nnx.Param(w)
            self.bias = nnx.Param(b)

    class Block(nnx.Module):
        def __init__(self, leaves):
            self.layers = nnx.List(leaves)

    class Root(nnx.Module):
        def __init__(self, blocks):
            self.blocks = nnx.List(blocks)

    n_leaves = n_vars // 2
    leaves = [Leaf(*arrays[i % len(arrays)]) for i in range(n_leaves)]
    blocks = [
        Block(leaves[i : i + LEAVES_PER_BLOCK])
        for i in range(0, n_leaves, LEAVES_PER_BLOCK)
    ]
    return Root(blocks)


def equinox_model(n_vars: int, arrays: list):
    import equinox as eqx

    class Leaf(eqx.Module):
        kernel: jax.Array
        bias: jax.Array

    class Block(eqx.Module):
        layers: list

    class Root(eqx.Module):
        blocks: list

    n_leaves = n_vars // 2
    leaves = [Leaf(*arrays[i % len(arrays)]) for i in range(n_leaves)]
    blocks = [
        Block(leaves[i : i + LEAVES_PER_BLOCK])
        for i in range(0, n_leaves, LEAVES_PER_BLOCK)
    ]
    return Root(blocks)


# -------------------------------------------------------------- operations
# ``update`` writes a State of new Variable objects (as jax.tree.map or a
# jitted step returns), not the model's own State, which would be a no-op.
def ramie_ops(model: Any) -> dict[str, Callable[[], Any]]:
    graphdef, state = ramie.split(model)
    new_state = jax.tree.map(lambda x: x, state)
    return {
        "split": lambda: ramie.split(model),
        "merge": lambda: ramie.merge(graphdef, state),
        "state": lambda: ramie.state(model),
        "update": lambda: ramie.update(model, new_state),
        "clone": lambda: ramie.clone(model),
    }


def flax_ops(model: Any) -> dict[str, Callable[[], Any]]:
    from flax import nnx

    graphdef, state = nnx.split(model)
    new_state = jax.tree.map(lambda x: x, state)
    return {
        "split": lambda: nnx.split(model),
        "merge": lambda: nnx.merge(graphdef, state),
        "state": lambda: nnx.state(model),
        "update": lambda: nnx.update(model, new_state),
        "clone": lambda: nnx.clone(model),
    }


def equinox_ops(model: Any) -> dict[str, Callable[[], Any]]:
    import equinox as eqx

    params, static = eqx.partition(model, eqx.is_array)
    return {
        "split": lambda: eqx.partition(model, eqx.is_array),
        "merge": lambda: eqx.combine(params, static),
        "tree_flatten": lambda: jax.tree_util.tree_flatten(model),
    }


def construction(n: int, repeats: int) -> dict[str, float]:
    out: dict[str, float] = {}
    key = jax.random.key(0)

    def raw():
        k = key
        for _ in range(n):
            k, k1, k2 = jax.random.split(k, 3)
            jax.nn.initializers.lecun_normal()(k1, (16, 16), jnp.float32)
            jnp.zeros((16,), jnp.float32)

    def ours():
        rngs = ramie.Rngs(0)
        for _ in range(n):
            ramie.Linear(16, 16, rngs=rngs)

    fns = {"raw jax.random": raw, "ramie": ours}
    try:
        from flax import nnx

        def flax_():
            rngs = nnx.Rngs(0)
            for _ in range(n):
                nnx.Linear(16, 16, rngs=rngs)

        fns["flax"] = flax_
    except ImportError:
        pass
    try:
        import equinox as eqx

        def eqx_():
            k = key
            for _ in range(n):
                k, sub = jax.random.split(k)
                eqx.nn.Linear(16, 16, key=sub)

        fns["equinox"] = eqx_
    except ImportError:
        pass
    for f in fns.values():  # warm up caches and compilation
        f()
    for _ in range(repeats):  # interleaved rounds
        for name, f in fns.items():
            t = best(f, 1) / n * 1e6
            out[name] = min(out.get(name, float("inf")), t)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    print(
        f"# graph_ops  {platform.machine()}  python {sys.version.split()[0]}  "
        f"jax {jax.__version__}"
    )
    arrays = [(jnp.ones((2, 2)), jnp.zeros((2,))) for _ in range(4)]
    print(
        f"{'vars':>6} {'op':>12} | {'ramie us/var':>12} {'flax us/var':>12} "
        f"{'eqx us/var':>11} | {'flax/ramie':>10}"
    )
    for n_vars in (1_000, 10_000):
        r_ops = ramie_ops(ramie_model(n_vars, arrays))
        try:
            f_ops: dict[str, Any] = flax_ops(flax_model(n_vars, arrays))
        except ImportError:
            f_ops = {}
        try:
            e_ops: dict[str, Any] = equinox_ops(equinox_model(n_vars, arrays))
        except ImportError:
            e_ops = {}
        number = max(
            1, 10_000 // n_vars
        )  # calls per timing: at least ~10,000 Variables' worth
        for op in ("split", "merge", "state", "update", "clone"):
            libs = {"ramie": r_ops, "flax": f_ops, "eqx": e_ops}
            t = {lib: float("nan") for lib in libs}
            for _lib, ops in libs.items():  # warm up (merge plans, caches)
                if op in ops:
                    ops[op]()
            for _ in range(
                repeats
            ):  # interleaved rounds, so machine noise hits all alike
                for lib, ops in libs.items():
                    if op in ops:
                        # untimed: lets memory settle after the other library's call
                        ops[op]()
                        x = best(ops[op], 1, number) / n_vars * 1e6
                        t[lib] = x if t[lib] != t[lib] else min(t[lib], x)
            r, f, e = t["ramie"], t["flax"], t["eqx"]
            print(
                f"{n_vars:>6} {op:>12} | {r:12.3f} {f:12.3f} {e:11.3f} | {f / r:10.1f}",
                flush=True,
            )
        if "tree_flatten" in e_ops:
            t = best(e_ops["tree_flatten"], repeats) / n_vars * 1e6
            print(
                f"{n_vars:>6} {'tree_flatten':>12} | {'':>12} {'':>12} {t:11.3f} |  "
                "(jax.tree.flatten of the Equinox model)"
            )
    print()
    c = construction(500, repeats)
    print(
        "construction of 500 Linear(16, 16), us per layer: "
        + ", ".join(f"{k} {v:.0f}" for k, v in c.items())
    )


if __name__ == "__main__":
    main()
