"""Checkpoint save/restore speed and peak memory, side by side with orbax and the disk.

Two states: 25 x ``Linear(2048, 2048)`` (~420 MB) and a 2 MB one. Every method
runs in its own subprocess (so that the RSS high-water mark,
``resource.getrusage``, measures that method alone); all of them are started
together and timed round by round, one method after the other in a rotating
order, so that the disk and CPU load of a shared machine falls on every method
alike. Reported: best, median and worst wall time over ``--repeats`` rounds,
the median and range of the per-round ratio to the floor, and the peak extra
resident memory:

* ``ramie``: ``ramie.checkpoint.save`` / ``restore`` into an ``eval_shape`` model;
* ``orbax``: ``ocp.StandardCheckpointer().save(path, nnx.state(model))`` / restore
  into ``nnx.state(eval_shape model)`` then ``nnx.update`` (orbax's NNX recipe);
* ``orbax_fast``: orbax set up for speed on one host: a synchronous
  ``Checkpointer(StandardCheckpointHandler(use_ocdbt=False))`` (one file per
  array, no OCDBT merge, no background thread);
* ``safetensors``: ``safetensors.numpy.save_file`` (+ fsync) / ``load_file`` +
  ``jax.device_put``;
* ``floor``: ``dd if=/dev/zero bs=1M conv=fsync`` for the same bytes (save), and
  one raw ``readinto`` per array into preallocated buffers + ``jax.device_put``
  (restore).

Every timed run starts after ``os.sync()``, so that what earlier runs left
dirty is not written during it. Restores read files that were just written
(page cache warm) for every method.
The checksum rates (xxh3-64 and crc32 over 1 MiB chunks) are printed last.

Run: ``python benchmarks/checkpoint.py --repeats 5`` (``--quick``: the 2 MB
state only; ``--big-only``; ``--methods floor,ramie,safetensors``: a subset).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap

CHILD = textwrap.dedent(
    r"""
    import gc, json, os, resource, shutil, statistics, subprocess, sys, time
    import numpy as np, jax, jax.numpy as jnp
    import ramie as nnx

    method, op, size, root, repeats = sys.argv[1:6]
    repeats = int(repeats)

    def make(seed=0):
        if size == "big":
            n, width = 25, 2048
            layers = [
                nnx.Linear(width, width, rngs=nnx.Rngs(seed + i)) for i in range(n)
            ]
        else:
            layers = [nnx.Linear(512, 512, rngs=nnx.Rngs(seed + i)) for i in range(2)]
        return nnx.Sequential(*layers)

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def arrays(model):
        return [v.get_value() for _, v in nnx.to_flat_state(nnx.state(model))]

    def block(xs):
        for x in xs:
            x.block_until_ready()

    src = os.path.join(root, f"src-{method}")
    if op == "save":
        model = make()
        block(arrays(model))
        nbytes = sum(x.nbytes for x in arrays(model))
    else:
        abstract = nnx.eval_shape(make)
        nbytes = sum(
            int(np.prod(v.get_value().shape)) * 4
            for _, v in nnx.to_flat_state(nnx.state(abstract))
        )

    if method == "orbax":
        import orbax.checkpoint as ocp
        ckptr = ocp.StandardCheckpointer()
    if method == "orbax_fast":
        import orbax.checkpoint as ocp
        fast = ocp.Checkpointer(ocp.StandardCheckpointHandler(use_ocdbt=False))

    n_targets = repeats + 1 if op == "restore" else 0
    targets = [nnx.eval_shape(make) for _ in range(n_targets)]

    def run(i):
        dst = os.path.join(root, f"out-{method}-{i}")
        if op == "save":
            if method == "ramie":
                nnx.checkpoint.save(dst, model)
            elif method == "orbax":
                ckptr.save(dst, nnx.state(model))
                ckptr.wait_until_finished()
            elif method == "orbax_fast":
                fast.save(dst, args=ocp.args.StandardSave(nnx.state(model)))
            elif method == "safetensors":
                from safetensors.numpy import save_file
                flat = {str(i): np.asarray(x) for i, x in enumerate(arrays(model))}
                save_file(flat, dst)
                fd = os.open(dst, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
            elif method == "floor":
                subprocess.run(
                    ["dd", "if=/dev/zero", f"of={dst}", "bs=1M",
                     f"count={(nbytes + (1 << 20) - 1) >> 20}", "conv=fsync"],
                    check=True, capture_output=True)
            return dst
        target = targets.pop()
        if method == "ramie":
            nnx.checkpoint.restore(src, target)
            out = arrays(target)
        elif method == "orbax":
            restored = ckptr.restore(src, nnx.state(target))
            nnx.update(target, restored)
            out = arrays(target)
        elif method == "orbax_fast":
            args = ocp.args.StandardRestore(nnx.state(target))
            nnx.update(target, fast.restore(src, args=args))
            out = arrays(target)
        elif method == "safetensors":
            from safetensors.numpy import load_file
            out = [jax.device_put(x) for x in load_file(src).values()]
        elif method == "floor":
            out = []
            with open(src, "rb", buffering=0) as f:
                for _, v in nnx.to_flat_state(nnx.state(target)):
                    sds = v.get_value()
                    buf = np.empty(sds.shape, sds.dtype)
                    f.readinto(memoryview(buf.reshape(-1).view(np.uint8)))
                    out.append(jax.device_put(buf))
                    del buf
        block(out)
        return out

    def timed(i):
        os.sync()  # what earlier runs (any method's) left dirty is not timed here
        gc.collect()
        t0 = time.perf_counter()
        result = run(i)
        dt = time.perf_counter() - t0
        if op == "save":
            if i == repeats - 1 and not os.path.exists(src):
                os.rename(result, src)
            elif os.path.isdir(result):
                shutil.rmtree(result)
            elif os.path.exists(result):
                os.remove(result)
        return dt

    base = rss()
    timed(-1)  # warms up (imports, first dispatch)
    print("ready", flush=True)
    for line in sys.stdin:  # the parent says when: "run <i>", then "quit"
        cmd = line.split()
        if cmd[0] == "quit":
            break
        print(json.dumps({"t": timed(int(cmd[1]))}), flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_extra": max(0, peak - base), "nbytes": nbytes}))
    """
)

ALL_METHODS = ("floor", "ramie", "orbax", "orbax_fast", "safetensors")
METHODS = ALL_METHODS


class Child:
    """One method's subprocess, timed one run at a time."""

    def __init__(self, method: str, op: str, size: str, root: str, repeats: int):
        env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        self.name = f"{method} {op} {size}"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, method, op, size, root, str(repeats)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read()
            raise RuntimeError(f"{self.name} failed:\n{err[-3000:]}")
        return line.strip()

    def ready(self) -> None:
        while self._line() != "ready":
            pass

    def run(self, i: int) -> float:
        self.proc.stdin.write(f"run {i}\n")
        self.proc.stdin.flush()
        return json.loads(self._line())["t"]

    def finish(self) -> dict:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        out = json.loads(self._line())
        self.proc.wait()
        return out


def measure(op: str, size: str, root: str, repeats: int) -> dict[str, dict]:
    """Every method's times for ``op``, interleaved round by round."""
    children = {m: Child(m, op, size, root, repeats) for m in METHODS}
    try:
        for c in children.values():
            c.ready()
        times: dict[str, list[float]] = {m: [] for m in METHODS}
        for i in range(repeats):
            order = METHODS[i % len(METHODS) :] + METHODS[: i % len(METHODS)]
            for m in order:
                times[m].append(children[m].run(i))
        rows = {}
        for m, c in children.items():
            rows[m] = dict(c.finish(), times=times[m])
    finally:
        for c in children.values():
            if c.proc.poll() is None:
                c.proc.kill()
    return rows


def checksum_rates() -> str:
    """xxh3-64 and crc32 throughput over 1 MiB chunks of 256 MB, in GB/s."""
    import time
    import zlib

    import numpy as np

    data = memoryview(np.random.default_rng(0).bytes(256 << 20))
    chunk = 1 << 20
    fns = {"crc32": zlib.crc32}
    try:
        import xxhash

        fns["xxh3_64"] = xxhash.xxh3_64_intdigest
    except ImportError:
        pass
    out = []
    for name, fn in fns.items():
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for i in range(0, len(data), chunk):
                fn(data[i : i + chunk])
            best = min(best, time.perf_counter() - t0)
        out.append(f"{name} {len(data) / best / 1e9:.1f} GB/s")
    return "checksums (one core, 1 MiB chunks): " + ", ".join(out)


def fmt_time(s: float) -> str:
    return f"{s * 1e3:9.1f} ms"


def main() -> None:
    import statistics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 MB state only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write (default: tmp)")
    parser.add_argument(
        "--methods",
        default=",".join(ALL_METHODS),
        help="comma-separated subset of " + ",".join(ALL_METHODS),
    )
    parser.add_argument("--big-only", action="store_true", help="420 MB state only")
    args = parser.parse_args()
    global METHODS
    METHODS = tuple(m for m in ALL_METHODS if m in args.methods.split(","))
    if "floor" not in METHODS or "ramie" not in METHODS:
        parser.error("--methods must include floor and ramie")
    import jax

    print(
        f"python {platform.python_version()}, jax {jax.__version__}, "
        f"{platform.machine()} {os.cpu_count()} cores, backend "
        f"{os.environ.get('JAX_PLATFORMS', 'cpu')}"
    )
    sizes = ["small"] if args.quick else ["big"] if args.big_only else ["small", "big"]
    for size in sizes:
        root = tempfile.mkdtemp(prefix="ramie-ckpt-bench-", dir=args.dir)
        repeats = args.repeats if size == "big" else 5 * args.repeats
        try:
            rows = {}
            for op in ("save", "restore"):
                for method, row in measure(op, size, root, repeats).items():
                    rows[(method, op)] = row
            nbytes = rows[("ramie", "save")]["nbytes"]
            print(f"\n{size}: {nbytes / 1e6:.1f} MB of float32, {repeats} rounds")
            print(
                f"  {'op':8} {'method':12} {'best':>12} {'median':>12} {'worst':>12} "
                f"{'MB/s':>6} {'x floor':>8} {'(range)':>13} {'peak extra':>12} "
                f"{'x data':>6}"
            )
            for op in ("save", "restore"):
                floor = rows[("floor", op)]["times"]
                for method in METHODS:
                    r = rows[(method, op)]
                    t = r["times"]
                    ratios = [a / b for a, b in zip(t, floor)]
                    med = statistics.median(t)
                    print(
                        f"  {op:8} {method:12} {fmt_time(min(t)):>12} "
                        f"{fmt_time(med):>12} {fmt_time(max(t)):>12} "
                        f"{nbytes / med / 1e6:6.0f} "
                        f"{statistics.median(ratios):8.2f} "
                        f"{f'({min(ratios):.2f}-{max(ratios):.2f})':>13} "
                        f"{r['peak_extra'] / 1e6:9.1f} MB "
                        f"{r['peak_extra'] / nbytes:6.2f}"
                    )
        finally:
            shutil.rmtree(root, ignore_errors=True)
    # last: the children's RSS high-water marks include this process's at
    # their start (Linux keeps it across exec), so nothing big is allocated here
    # before they run
    print("\n" + checksum_rates())


if __name__ == "__main__":
    main()
