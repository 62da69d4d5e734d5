"""Execute the code cells of Flax's NNX guides under Flax and under ramie.

    python tools/flaxcompat/guides.py [GUIDE ...] [--timeout S] [--json FILE]

Each guide runs twice, in fresh processes: once with Flax NNX and once with
``flax.nnx`` resolving to ramie. The cells of a guide run in order in one
namespace, as in a notebook; a failing cell does not stop the next. The report
lists, per guide, the cells that run under Flax and fail under ramie, with the
error; cells that fail under Flax too (network, missing packages) are out of
scope and only counted. ``GUIDE`` is a path relative to ``docs_nnx`` without
its extension (``guides/surgery``); the default is every guide that runs
offline.

Code comes from MyST notebooks (```` ```{code-cell} ```` blocks; cells tagged
``skip-execution`` are skipped, ``raises-exception`` cells pass when they
raise; a page with no such block gives its ```` ```python ```` blocks) and
from reStructuredText pages (``testcode``/``testsetup`` blocks, and the last
column of ``codediff`` blocks, which is the NNX version).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import traceback

HERE = pathlib.Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from source import flax_source  # noqa: E402

GUIDES = [
    "nnx_basics", "key_concepts", "mnist_tutorial", "why",
    "guides/filters_guide", "guides/randomness", "guides/transforms",
    "guides/pytree", "guides/view", "guides/surgery", "guides/checkpointing",
    "guides/extracting_intermediates", "guides/optimization_cookbook",
    "guides/performance", "guides/bridge_guide", "guides/flax_gspmd",
    "guides/blog", "hijax/hijax",
    "migrating/linen_to_nnx", "migrating/haiku_to_flax",
    "migrating/nnx_010_to_nnx_011", "migrating/pytorch_to_jax_flax",
]  # fmt: skip

FENCE = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)
PLAIN = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def myst_cells(text: str) -> list[dict]:
    """Notebook cells; pages written as plain Markdown give their python blocks."""
    cells = []
    fence = FENCE if FENCE.search(text) else PLAIN
    for match in fence.finditer(text):
        body = match.group(1)
        tags: list[str] = []
        if body.startswith("---\n"):  # YAML options block
            header, _, body = body[4:].partition("---\n")
            tags = re.findall(r"[\w-]+", header.partition("tags:")[2])
        while body.startswith(":"):
            option, _, body = body.partition("\n")
            if option.startswith(":tags:"):
                tags += re.findall(r"[\w-]+", option[len(":tags:") :])
        cells.append({"code": body, "tags": tags})
    return cells


def _indented_block(lines: list[str], start: int) -> tuple[list[str], int]:
    block, i = [], start
    while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
        block.append(lines[i])
        i += 1
    while block and block[-1].strip() == "":
        block.pop()
    return block, i


def _dedent(block: list[str]) -> str:
    while block and not block[0].strip():
        block = block[1:]
    indents = [len(line) - len(line.lstrip()) for line in block if line.strip()]
    cut = min(indents, default=0)
    return "\n".join(line[cut:] for line in block) + "\n"


def rst_cells(text: str) -> list[dict]:
    lines = text.splitlines()
    cells, i = [], 0
    while i < len(lines):
        directive = re.match(r"\.\. (testcode|testsetup|codediff)::", lines[i])
        if not directive:
            i += 1
            continue
        block, i = _indented_block(lines, i + 1)
        options = [line for line in block if line.strip().startswith(":")]
        body = [line for line in block if not line.strip().startswith(":")]
        if any(":skip_test:" in option for option in options):
            continue
        if directive.group(1) == "codediff":
            parts, current = [], []
            for line in body:
                if line.strip() == "---":
                    parts.append(current)
                    current = []
                else:
                    current.append(line)
            body = current if parts else body
        cells.append({"code": _dedent(body), "tags": []})
    return cells


def read_cells(path: pathlib.Path) -> list[dict]:
    text = path.read_text()
    return rst_cells(text) if path.suffix == ".rst" else myst_cells(text)


def guide_path(docs: pathlib.Path, name: str) -> pathlib.Path:
    for suffix in (".md", ".rst"):
        if (docs / f"{name}{suffix}").exists():
            return docs / f"{name}{suffix}"
    raise SystemExit(f"no guide {name!r} under {docs}")


class CellTimeout(Exception):
    pass


def _strip_magics(code: str) -> str:
    return "\n".join(
        "pass" if line.lstrip().startswith(("%", "!")) else line
        for line in code.splitlines()
    )


def run_child(path: pathlib.Path, impl: str, timeout: int) -> list[dict]:
    """Run one guide's cells in this process; return one result per cell."""
    if impl == "ramie":
        import alias

        alias.install()
    os.environ.setdefault("MPLBACKEND", "Agg")

    def on_alarm(signum, frame):
        raise CellTimeout(f"cell ran longer than {timeout} s")

    signal.signal(signal.SIGALRM, on_alarm)
    namespace: dict = {"__name__": "__main__", "display": print}
    results = []
    for number, cell in enumerate(read_cells(path)):
        if "skip-execution" in cell["tags"]:
            results.append({"cell": number, "outcome": "skipped"})
            continue
        expect_error = "raises-exception" in cell["tags"]
        signal.alarm(timeout)
        error = None
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(_strip_magics(cell["code"]), f"<cell {number}>", "exec"),
                     namespace)  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 - a cell may raise anything
            if isinstance(exc, KeyboardInterrupt):
                raise
            error = "".join(traceback.format_exception_only(type(exc), exc))
            error = "\n".join(
                line
                for line in error.splitlines()
                if line.strip("-") and not line.startswith("For simplicity, JAX")
            )
        finally:
            signal.alarm(0)
        passed = (error is not None) if expect_error else (error is None)
        results.append({
            "cell": number,
            "outcome": "passed" if passed else "failed",
            "error": (error or "expected an exception")[-600:] if not passed else "",
            "first_line": cell["code"].strip().splitlines()[0][:80]
            if cell["code"].strip() else "",
        })  # fmt: skip
    return results


def run_guide(path: pathlib.Path, impl: str, timeout: int) -> list[dict]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), str(PROJECT / "src"), env.get("PYTHONPATH", "")]
    )
    env.setdefault("JAX_PLATFORMS", "cpu")
    if "gspmd" in path.name:
        env.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    child = subprocess.run(
        [sys.executable, __file__, "--child", str(path), "--impl", impl,
         "--timeout", str(timeout)],
        env=env, capture_output=True, text=True, cwd=path.parent,
    )  # fmt: skip
    marker = child.stdout.rfind("\n@@RESULTS@@")
    if marker < 0:
        tail = (child.stderr or child.stdout)[-600:]
        return [{"cell": -1, "outcome": "failed", "error": f"crashed: {tail}"}]
    return json.loads(child.stdout[marker + len("\n@@RESULTS@@") :])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("guides", nargs="*", default=GUIDES)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    parser.add_argument("--json", help="write the full report here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="ramie", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        results = run_child(pathlib.Path(args.child), args.impl, args.timeout)
        sys.stdout.write("\n@@RESULTS@@" + json.dumps(results))
        return 0
    docs = flax_source() / "docs_nnx"
    report, total, flax_only, both = {}, 0, 0, 0
    for name in args.guides:
        path = guide_path(docs, name)
        flax = run_guide(path, "flax", args.timeout)
        ours = run_guide(path, "ramie", args.timeout)
        flax_ok = {r["cell"] for r in flax if r["outcome"] == "passed"}
        ours_by_cell = {r["cell"]: r for r in ours}
        gaps = [
            ours_by_cell.get(cell, {"cell": cell, "error": "not run"})
            for cell in sorted(flax_ok)
            if ours_by_cell.get(cell, {}).get("outcome") != "passed"
        ]
        ran = sum(r["outcome"] != "skipped" for r in flax)
        total += len(flax_ok)
        flax_only += len(gaps)
        both += len(flax_ok) - len(gaps)
        report[name] = {"cells": ran, "flax_passed": len(flax_ok), "gaps": gaps}
        print(f"{name:36} cells {ran:3}  flax {len(flax_ok):3}  "
              f"ramie {len(flax_ok) - len(gaps):3}")  # fmt: skip
        for gap in gaps:
            print(f"    cell {gap['cell']}: {gap.get('first_line', '')}")
            print(f"      {gap.get('error', '').splitlines()[-1][:200]}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"guides: {both} of {total} cells that run under Flax run under ramie "
          f"({flax_only} run under Flax only)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
