"""Guides marked ``<!-- test: exec -->`` run: all their python blocks, in order.

Each guide's ```python blocks are executed top to bottom in one namespace (a
guide reads as one session); the asserts inside the blocks check what the
prose says. A guide opts in with the marker on its first line.
"""

from __future__ import annotations

import pathlib
import re
import sys
import types

import pytest

GUIDES = pathlib.Path(__file__).resolve().parents[2] / "docs" / "guides"
MARKER = "<!-- test: exec -->"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def executable_guides() -> list[pathlib.Path]:
    return sorted(p for p in GUIDES.glob("*.md") if p.read_text().startswith(MARKER))


def test_guides_opt_in():
    assert any(p.name == "from_linen.md" for p in executable_guides())


@pytest.mark.parametrize("guide", executable_guides(), ids=lambda p: p.name)
def test_every_python_block_runs(guide: pathlib.Path):
    blocks = python_blocks(guide.read_text())
    assert blocks, f"{guide.name} has no ```python blocks"
    # a real module, so dataclasses (Linen modules) defined in the guide resolve
    module = types.ModuleType(f"guide_{guide.stem}")
    sys.modules[module.__name__] = module
    try:
        for i, block in enumerate(blocks, 1):
            try:
                code = compile(block, f"{guide.name}[block {i}]", "exec")
                exec(code, module.__dict__)
            except Exception as e:  # name the block, keep the traceback
                raise AssertionError(f"{guide.name}: block {i} failed: {e!r}") from e
    finally:
        del sys.modules[module.__name__]
