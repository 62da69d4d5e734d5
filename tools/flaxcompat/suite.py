"""Run Flax NNX's own test suite against ramie.

    python tools/flaxcompat/suite.py [--tier core|public|all] [--files A,B]
                                     [-k EXPR] [-j N] [--impl ramie|flax]

The ``tests/nnx`` directory of the Flax source release runs with ``flax.nnx``
resolving to ramie (``flax.linen``, ``flax.training`` stay Flax's). A tier is
a list of test ids: ``--select FILE`` names one; for ``core`` and ``public``
the lists kept beside the project (``../shared/conformance/<tier>_tests.txt``)
are used when present. The run prints a table per file, writes the tests that
did not pass to ``<out>/not_passed.txt`` and ends with the line
``conformance: N passed, M failed, K errors of T``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from source import flax_source  # noqa: E402

INI = """[pytest]
filterwarnings =
    error
    ignore::DeprecationWarning:jax.*
    ignore::DeprecationWarning:orbax.*
    ignore:No GPU/TPU found.*:UserWarning
"""


def tier_list(tier: str, select: str | None) -> list[str] | None:
    if select:
        path = pathlib.Path(select)
    elif tier == "all":
        return None
    else:
        path = PROJECT.parent / "shared" / "conformance" / f"{tier}_tests.txt"
        if not path.exists():
            sys.exit(f"no test list for tier {tier!r}: pass --select FILE")
    with open(path) as f:
        lines = (line.split("#", 1)[0].strip() for line in f)
        return [line for line in lines if line]


def run(args: argparse.Namespace) -> int:
    tree = flax_source()
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="flaxcompat-"))
    out.mkdir(parents=True, exist_ok=True)
    wanted = tier_list(args.tier, args.select)
    files = [f.strip().rstrip("/") for f in args.files.split(",") if f.strip()]
    if wanted is not None and files:
        wanted = [t for t in wanted if any(t.startswith(f) for f in files)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), str(PROJECT / "src"), env.get("PYTHONPATH", "")]
    )
    env.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["FLAXCOMPAT_IMPL"] = args.impl
    env["FLAXCOMPAT_RESULTS"] = str(out / "results.json")
    if wanted is not None:
        (out / "selected.txt").write_text("\n".join(wanted) + "\n")
        env["FLAXCOMPAT_SELECT"] = str(out / "selected.txt")
    (out / "pytest.ini").write_text(INI)
    command = [
        sys.executable, "-m", "pytest", "-c", str(out / "pytest.ini"),
        f"--rootdir={tree}", "-p", "no:cacheprovider", "-p", "pytest_plugin",
        "--continue-on-collection-errors", "-q", "-W", "default",
    ]  # fmt: skip
    if args.jobs > 1:
        command += ["-n", str(args.jobs)]
    if args.k:
        command += ["-k", args.k]
    command += [str(tree / f) for f in files] or [str(tree / "tests" / "nnx")]
    print(f"[flaxcompat] impl={args.impl} tier={args.tier}; log: {out}/pytest.log")
    with open(out / "pytest.log", "w") as log:
        subprocess.run(command, cwd=tree, env=env, stdout=log, stderr=log)
    return summarize(out, wanted)


def summarize(out: pathlib.Path, wanted: list[str] | None) -> int:
    results = json.loads((out / "results.json").read_text())
    outcomes = results["outcomes"]
    broken = {key.split("::")[0] for key in results["broken_files"]}
    ids = wanted if wanted is not None else sorted(outcomes)
    final = {}
    for test in ids:
        outcome = outcomes.get(test)
        if outcome is None:
            outcome = "error" if test.split("::")[0] in broken else "not run"
        final[test] = outcome
    per_file: dict[str, collections.Counter] = collections.defaultdict(
        collections.Counter
    )
    for test, outcome in final.items():
        per_file[test.split("::")[0]][outcome] += 1
    print(f"{'file':48} {'total':>6} {'passed':>7} {'failed':>7} {'errors':>7}")
    for name in sorted(per_file):
        c = per_file[name]
        short = name.removeprefix("tests/nnx/")
        print(
            f"{short:48} {sum(c.values()):6} {c['passed']:7} {c['failed']:7} "
            f"{c['error']:7}"
        )
    not_passed = sorted(t for t, o in final.items() if o != "passed")
    (out / "not_passed.txt").write_text(
        "".join(f"{final[t]}\t{t}\n" for t in not_passed)
    )
    totals = collections.Counter(final.values())
    if results["stand_ins"]:
        print("stand-in modules:", ", ".join(results["stand_ins"]))
    print(f"skipped: {totals['skipped']}, not run: {totals['not run']}")
    print(f"not passing: {out}/not_passed.txt")
    print(
        f"conformance: {totals['passed']} passed, {totals['failed']} failed, "
        f"{totals['error']} errors of {len(final)}"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tier", default="core", choices=["core", "public", "all"])
    parser.add_argument("--select", help="file of test ids to run")
    parser.add_argument("--files", default="", help="comma-separated tests/nnx paths")
    parser.add_argument("-k", default="", help="pytest -k expression")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("--impl", default="ramie", choices=["ramie", "flax"])
    parser.add_argument("--out", help="results folder (default: a new temp folder)")
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
