"""Run Flax's own NNX example programs under Flax and under ramie.

    python tools/flaxcompat/examples.py [NAME ...] [--timeout S]

The Flax source release ships user programs written against ``flax.nnx``:
the scripts of ``examples/nnx_toy_examples`` (functional API, lifted
transforms, TrainState, data parallelism, scan over layers, checkpoints with
orbax, parameter surgery, FSDP with a hand-written optimizer, hijax) and the
unit tests of the Gemma example (``examples/gemma/*_test.py``: attention,
feed-forward, the transformer, loading Linen weights). Each runs twice, in
fresh processes: with Flax NNX and with ``flax.nnx`` resolving to ramie. The
report lists every program with both outcomes; programs that fail under Flax
too (a dataset download, a package the example needs, an API the example
predates) are out of scope and only shown. The scripts' own random data is
unseeded, so their losses are not compared, only that they run to the end.

The data-parallel scripts run on 8 virtual CPU devices. On a machine with few
cores XLA's in-process collectives sometimes give up waiting for one of the
8 device threads ("Termination timeout for `all reduce`", raw ``jax.jit``
loops included); such a run is retried up to twice and the report says so.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from source import flax_source  # noqa: E402

GEMMA_TESTS = [
    "modules_test.py", "layers_test.py", "positional_embeddings_test.py",
    "helpers_test.py", "transformer_test.py", "sampler_test.py",
]  # fmt: skip

# Runs a script as __main__ with flax.nnx aliased to ramie (argv: impl, script).
RUNNER = """
import os, runpy, sys
impl, script = sys.argv[1], sys.argv[2]
if impl == "ramie":
    import alias
    alias.install()
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
"""


def programs(root: pathlib.Path) -> list[tuple[str, list[str], pathlib.Path]]:
    """``(name, command after the interpreter, working directory)`` per program."""
    toy = root / "examples" / "nnx_toy_examples"
    out = [
        (f"nnx_toy_examples/{p.name}", ["-c", RUNNER, "{impl}", p.name], toy)
        for p in sorted(toy.glob("*.py"))
    ]
    gemma = root / "examples" / "gemma"
    out += [
        (
            f"gemma/{name}",
            [
                "-m",
                "pytest",
                "-q",
                "-p",
                "pytest_plugin",
                "-p",
                "no:cacheprovider",
                name,
            ],
            gemma,
        )  # fmt: skip
        for name in GEMMA_TESTS
    ]
    return out


RENDEZVOUS_STALL = "Termination timeout for"


def run(cmd: list[str], cwd: pathlib.Path, impl: str, timeout: int) -> tuple[bool, str]:
    """Run one program; retry it after an XLA CPU collective stall (see above)."""
    attempts = 0
    while True:
        attempts += 1
        ok, err, stalled = _run_once(cmd, cwd, impl, timeout)
        if not stalled or attempts == 3:
            break
    if ok and attempts > 1:
        err = f"passed on attempt {attempts} (an XLA CPU collective stall before)"
    return ok, err


def _run_once(
    cmd: list[str], cwd: pathlib.Path, impl: str, timeout: int
) -> tuple[bool, str, bool]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), str(PROJECT / "src"), str(cwd), env.get("PYTHONPATH", "")]
    )
    env["FLAXCOMPAT_IMPL"] = impl
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.setdefault("MPLBACKEND", "Agg")
    env.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    args = [a.replace("{impl}", impl) for a in cmd]
    try:
        proc = subprocess.run(
            [sys.executable, *args], cwd=cwd, env=env, capture_output=True,
            text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False, f"ran longer than {timeout} s", False
    if proc.returncode == 0:
        return True, "", False
    text = proc.stdout + proc.stderr
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or ln.startswith(("E ", "FAILED"))]
    return False, (errors or lines or ["?"])[-1].strip()[:160], RENDEZVOUS_STALL in text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="programs to run (default: all)")
    parser.add_argument("--timeout", type=int, default=900)
    args = parser.parse_args(argv)
    root = flax_source()
    names = args.names
    selected = [p for p in programs(root) if not names or any(n in p[0] for n in names)]
    regressions, in_scope = [], 0
    for name, cmd, cwd in selected:
        flax_ok, flax_err = run(cmd, cwd, "flax", args.timeout)
        ramie_ok, ramie_err = run(cmd, cwd, "ramie", args.timeout)
        in_scope += flax_ok
        if flax_ok and not ramie_ok:
            regressions.append(name)
        status = {
            (True, True): "ok",
            (True, False): "FAILS UNDER RAMIE",
            (False, True): "runs under ramie only",
            (False, False): "fails under both",
        }[(flax_ok, ramie_ok)]
        print(f"{name:48} {status}", flush=True)
        for impl, err in (("flax", flax_err), ("ramie", ramie_err)):
            if err:  # the error, or a note on a retried run
                print(f"    {impl}: {err}")
    print(
        f"examples: {in_scope - len(regressions)} of {in_scope} programs that run "
        "under Flax run under ramie"
    )
    return 1 if regressions else 0


if __name__ == "__main__":
    raise SystemExit(main())
