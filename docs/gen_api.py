"""Write docs/api/<package>.md: every public name with the first line of its docstring.

Run: ``python docs/gen_api.py`` (regenerates the pages from the installed sources).
"""

from __future__ import annotations

import inspect
import pathlib
import types

import ramie

PACKAGES = {
    "ramie": ramie,
    "ramie.nn": ramie.nn,
    "ramie.initializers": ramie.initializers,
    "ramie.bridge": ramie.bridge,
}


def first_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def kind(obj: object) -> str:
    if isinstance(obj, types.ModuleType):
        return "module"
    if inspect.isclass(obj):
        return "class"
    if callable(obj):
        return "function"
    return "value"


def page(name: str, module: types.ModuleType) -> str:
    lines = [
        f"# `{name}`",
        "",
        first_line(module),
        "",
        "| name | kind | summary |",
        "|---|---|---|",
    ]
    names = getattr(module, "__all__", None) or dir(module)
    for attr in sorted(n for n in names if not n.startswith("_")):
        obj = getattr(module, attr)
        lines.append(
            f"| `{attr}` | {kind(obj)} | {first_line(obj).replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    out = pathlib.Path(__file__).parent / "api"
    out.mkdir(exist_ok=True)
    for name, module in PACKAGES.items():
        (out / f"{name}.md").write_text(page(name, module))
    print(f"wrote {len(PACKAGES)} pages to {out}")


if __name__ == "__main__":
    main()
