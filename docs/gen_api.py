"""Write docs/api/<package>.md: every public name with the first line of its docstring.

Run: ``python docs/gen_api.py`` (regenerates the pages from the installed sources).
"""

from __future__ import annotations

import inspect
import pathlib
import types
import typing

import ramie

PACKAGES = {
    "ramie": ramie,
    "ramie.nn": ramie.nn,
    "ramie.initializers": ramie.initializers,
    "ramie.bridge": ramie.bridge,
    "ramie.checkpoint": ramie.checkpoint,
}


# Names whose objects carry no docstring of their own (a builtin type or value).
DESCRIPTIONS = {
    "PureState": "Alias of `tuple`: a `(graphdef, state)` pair, as `split` returns.",
    "PARTITION_NAME": "The metadata key naming a Variable's partition axis "
    "(`'partition_name'`).",
}


def is_listed(attr: str, obj: object) -> bool:
    """Only the project's public names: no typing helpers (``A``, ``M``)."""
    return not attr.startswith("_") and not isinstance(obj, typing.TypeVar)


def first_line(obj: object, attr: str = "") -> str:
    if attr in DESCRIPTIONS:
        return DESCRIPTIONS[attr]
    doc = inspect.getdoc(obj) or ""
    builtin = (inspect.isclass(obj) and obj.__module__ == "builtins") or (
        not inspect.isclass(obj) and doc == inspect.getdoc(type(obj))
    )
    if builtin:  # a builtin's docstring says nothing about ramie
        raise ValueError(
            f"{attr}: {type(obj).__name__} with a builtin docstring; add it to "
            "DESCRIPTIONS in docs/gen_api.py"
        )
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
    for attr in sorted(names):
        obj = getattr(module, attr)
        if not is_listed(attr, obj):
            continue
        lines.append(
            f"| `{attr}` | {kind(obj)} | {first_line(obj, attr).replace('|', '/')} |"
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
