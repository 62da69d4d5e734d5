"""Sharded construction and sharded step overhead on 8 virtual CPU devices.

Part 1 - construction of an FSDP-sharded model of ``--layers`` x
``Linear(dim, dim)`` (every kernel split by rows over an 8-way ``data`` axis;
``--dim 4096 --layers 12`` is the ~200M-parameter model). Each variant runs
in its own subprocess so its memory is measured alone:

  raw-jit        jax.jit(init, out_shardings=...) of the same initializers:
                 the floor
  ramie-eager-*  ``with jax.set_mesh(mesh): Model(...)`` (Auto / Explicit mesh)
  ramie-jit-*    Flax's documented recipe: ``nnx.jit(create)`` with
                 ``get_partition_spec`` + ``with_sharding_constraint``
  flax-*         the same two spellings with Flax NNX (when installed)

Reported: wall time of construction (after one warm-up construction of a
small model, so JAX's own start-up is not counted), and per device: the peak
of live buffer bytes (``jax.live_arrays()`` per addressable shard, sampled
every millisecond by a thread) plus, for compiled constructors, the
compiled temp bytes - all divided by the per-device shard of the model.

Part 2 - per-step overhead of a tiny train step (2 x Linear(16, 16), adam) on
one device and FSDP-sharded on 8: ``ramie.jit`` (and Flax ``nnx.jit``) vs a
raw ``jax.jit`` on plain pytrees with the same shardings; median µs per step,
and the median (and interquartile range) over rounds of each round's ratio to
the raw step, every variant being timed back to back within a round; and the
fastest round of each variant (the least disturbed by the machine) with its
ratio to the raw step's fastest round.

Run: ``python benchmarks/scale.py`` (``--dim 4096`` for the 200M model).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

VARIANTS = (
    "raw-jit",
    "ramie-eager-auto",
    "ramie-eager-explicit",
    "ramie-jit-auto",
    "ramie-jit-explicit",
    "flax-eager-auto",
    "flax-jit-auto",
    "flax-jit-explicit",
)


# ----------------------------------------------------------- construction
class Sampler:
    """Peak live bytes per device, sampled by a background thread."""

    def __init__(self) -> None:
        self.peak: dict[Any, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        import jax

        now: dict[Any, int] = {}
        for a in jax.live_arrays():
            try:
                # from the sharding: touching `shard.data` would create arrays
                shape = a.sharding.shard_shape(a.shape)
                nbytes = math.prod(shape) * a.dtype.itemsize
                for d in a.sharding.addressable_devices:
                    now[d] = now.get(d, 0) + nbytes
            except Exception:  # deleted meanwhile
                continue
        for d, b in now.items():
            self.peak[d] = max(self.peak.get(d, 0), b)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.001)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def construct(variant: str, dim: int, layers: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    mode = AxisType.Explicit if variant.endswith("explicit") else AxisType.Auto
    mesh = jax.make_mesh((8,), ("data",), axis_types=(mode,))
    lib = variant.split("-")[0]
    if lib == "flax":
        from flax import nnx
    else:
        import ramie as nnx

    def model_fn(d: int, n: int) -> Any:
        init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("data", None))

        class Model(nnx.Module):
            def __init__(self, rngs: Any):
                self.layers = nnx.List(
                    [
                        nnx.Linear(d, d, use_bias=False, kernel_init=init, rngs=rngs)
                        for _ in range(n)
                    ]
                )

        return Model

    compiled_temp = 0
    if lib == "raw":
        init = jax.nn.initializers.lecun_normal()
        target = NamedSharding(mesh, P("data", None))

        def build(d: int, n: int) -> Any:
            def create(key: Any) -> list:
                return [init(k, (d, d), jnp.float32) for k in jax.random.split(key, n)]

            fn = jax.jit(create, out_shardings=[target] * n)
            return fn(jax.random.key(0)), fn

    elif "eager" in variant:

        def build(d: int, n: int) -> Any:
            return model_fn(d, n)(nnx.Rngs(0)), None

    else:

        def build(d: int, n: int) -> Any:
            model_cls = model_fn(d, n)

            @nnx.jit
            def create() -> Any:
                model = model_cls(nnx.Rngs(0))
                state = nnx.state(model)
                specs = nnx.get_partition_spec(state)
                nnx.update(model, jax.lax.with_sharding_constraint(state, specs))
                return model

            return create(), None

    with jax.set_mesh(mesh):
        warm, _ = build(64, 2)  # JAX start-up and small compiles, not timed
        del warm
        gc.collect()
        base = Sampler()
        base.sample()
        with Sampler() as sampler:
            t0 = time.perf_counter()
            out, fn = build(dim, layers)
            jax.block_until_ready(jax.tree.leaves(out))
            seconds = time.perf_counter() - t0
        if lib == "raw":
            stats = fn.lower(jax.random.key(0)).compile().memory_analysis()
            compiled_temp = stats.temp_size_in_bytes
        elif lib == "ramie" and "eager" in variant:
            # ramie compiled each initializer; its temp adds to the live peak
            from ramie._src.spmd import placement

            compiled_temp = max(
                fn.lower(jax.random.key(0))
                .compile()
                .memory_analysis()
                .temp_size_in_bytes
                for fn in placement._compiled.values()
            )
    shard = layers * dim * dim * 4 // 8
    peak = max(b - base.peak.get(d, 0) for d, b in sampler.peak.items())
    return {
        "variant": variant,
        "seconds": seconds,
        "peak_live_over_shard": peak / shard,
        "peak_with_temp_over_shard": (peak + compiled_temp) / shard,
        "shard_mib": shard / 2**20,
    }


# ------------------------------------------------------------ step overhead
def step_overhead(rounds: int, steps: int) -> list[dict[str, Any]]:
    return [
        _overhead_one(name, n_dev, rounds, steps)
        for name, n_dev in (("1 device", 1), ("FSDP x8", 8))
    ]


def _overhead_one(name: str, n_dev: int, rounds: int, steps: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import optax
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    import ramie

    mesh = jax.make_mesh(
        (n_dev,),
        ("data",),
        axis_types=(AxisType.Auto,),
        devices=jax.devices()[:n_dev],
    )
    axes = ("data", None)
    tx = optax.adam(1e-3)
    with jax.set_mesh(mesh):
        init = ramie.with_partitioning(ramie.initializers.lecun_normal(), axes)

        class MLP(ramie.Module):
            def __init__(self, rngs: Any):
                self.a = ramie.Linear(16, 16, kernel_init=init, rngs=rngs)
                self.b = ramie.Linear(16, 16, kernel_init=init, rngs=rngs)

            def __call__(self, x: Any) -> Any:
                return self.b(jax.nn.relu(self.a(x)))

        model = MLP(ramie.Rngs(0))
        opt = ramie.Optimizer(model, tx, wrt=ramie.Param)
        x = jax.device_put(jnp.ones((32, 16)), NamedSharding(mesh, P("data")))
        y = jax.device_put(jnp.zeros((32, 16)), NamedSharding(mesh, P("data")))

        @ramie.jit
        def ramie_step(model: Any, opt: Any, x: Any, y: Any) -> Any:
            def loss_fn(m: Any) -> Any:
                return jnp.mean((m(x) - y) ** 2)

            loss, grads = ramie.value_and_grad(loss_fn)(model)
            opt.update(model, grads)
            return loss

        params = jax.tree.map(
            lambda v: v, ramie.state(model, ramie.Param).to_pure_dict()
        )
        opt_state = tx.init(params)
        shardings = jax.tree.map(lambda a: a.sharding, (params, opt_state))

        def raw_loss(p: Any, x: Any, y: Any) -> Any:
            h = jax.nn.relu(x @ p["a"]["kernel"] + p["a"]["bias"])
            return jnp.mean((h @ p["b"]["kernel"] + p["b"]["bias"] - y) ** 2)

        def raw_step(p: Any, s: Any, x: Any, y: Any) -> Any:
            loss, g = jax.value_and_grad(raw_loss)(p, x, y)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s, loss

        raw_step = jax.jit(
            raw_step,
            in_shardings=(*shardings, x.sharding, y.sharding),
            out_shardings=(*shardings, NamedSharding(mesh, P())),
        )
        box = {"p": params, "s": opt_state}

        def raw_call() -> Any:
            box["p"], box["s"], loss = raw_step(box["p"], box["s"], x, y)
            return loss

        fns = {"raw": raw_call, "ramie": lambda: ramie_step(model, opt, x, y)}
        try:
            from flax import nnx as fnnx

            finit = fnnx.with_partitioning(fnnx.initializers.lecun_normal(), axes)

            class FMLP(fnnx.Module):
                def __init__(self, rngs: Any):
                    self.a = fnnx.Linear(16, 16, kernel_init=finit, rngs=rngs)
                    self.b = fnnx.Linear(16, 16, kernel_init=finit, rngs=rngs)

                def __call__(self, x: Any) -> Any:
                    return self.b(jax.nn.relu(self.a(x)))

            fmodel = FMLP(fnnx.Rngs(0))
            fopt = fnnx.Optimizer(fmodel, tx, wrt=fnnx.Param)

            @fnnx.jit
            def flax_step(model: Any, opt: Any, x: Any, y: Any) -> Any:
                def loss_fn(m: Any) -> Any:
                    return jnp.mean((m(x) - y) ** 2)

                loss, grads = fnnx.value_and_grad(loss_fn)(model)
                opt.update(model, grads)
                return loss

            fns["flax"] = lambda: flax_step(fmodel, fopt, x, y)
        except ImportError:
            pass
        times: dict[str, list[float]] = {k: [] for k in fns}
        for fn in fns.values():  # compile
            jax.block_until_ready(fn())
        order = list(fns.items())
        for i in range(rounds):
            # Rotate the order so each variant follows each other one equally
            # often, and run a few untimed steps first: a variant timed right
            # after a slower one otherwise pays for the caches it evicted.
            for k, fn in order[i % len(order) :] + order[: i % len(order)]:
                for _ in range(5):
                    out = fn()
                jax.block_until_ready(out)
                t0 = time.perf_counter()
                for _ in range(steps):
                    out = fn()
                jax.block_until_ready(out)
                times[k].append((time.perf_counter() - t0) / steps * 1e6)
    med = {k: statistics.median(v) for k, v in times.items()}
    # Each round times every variant back to back, so the per-round ratio
    # cancels most of the machine's drift; its median is the reported ratio.
    ratios = {
        k: sorted(a / b for a, b in zip(v, times["raw"]))
        for k, v in times.items()
        if k != "raw"
    }
    best = {k: min(v) for k, v in times.items()}
    return {"setting": name, "us": med, "ratios": ratios, "best": best}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--skip-construction", action="store_true")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(construct(args.one, args.dim, args.layers)))
        return
    import jax

    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}, "
        f"jax {jax.__version__}, {jax.device_count()} devices, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    if not args.skip_construction:
        params = args.layers * args.dim * args.dim
        print(
            f"\nconstruction: {args.layers} x Linear({args.dim}, {args.dim}) = "
            f"{params / 1e6:.0f}M params, FSDP over 8 devices"
        )
        print(
            f"{'variant':22} {'seconds':>8} {'peak live/shard':>16} {'+temp/shard':>12}"
        )
        for variant in args.variants.split(","):
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    variant,
                    "--dim",
                    str(args.dim),
                    "--layers",
                    str(args.layers),
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode:
                last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{variant:22} failed: {last[:100]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(
                f"{variant:22} {r['seconds']:8.2f} {r['peak_live_over_shard']:16.2f} "
                f"{r['peak_with_temp_over_shard']:12.2f}"
            )
    print("\nstep overhead: median µs per step (2 x Linear(16, 16), adam)")
    print(
        "(ratio: median of per-round ratios to raw, with its interquartile range; "
        "best: fastest round's µs, and its ratio to raw's fastest)"
    )
    for r in step_overhead(args.rounds, args.steps):
        us, ratios, best = r["us"], r["ratios"], r["best"]
        extras = "  ".join(
            f"{k} {us[k]:7.1f} ({_quartiles(ratios[k])}; best {best[k]:.1f}, "
            f"{best[k] / best['raw']:.2f}x)"
            for k in ratios
        )
        base = f"raw {us['raw']:7.1f} (best {best['raw']:.1f})"
        print(f"{r['setting']:10} {base}  {extras}")


def _quartiles(xs: list[float]) -> str:
    q1, q2, q3 = statistics.quantiles(xs, n=4)
    return f"{statistics.median(xs):.2f}x, {q1:.2f}-{q3:.2f}"


if __name__ == "__main__":
    main()
