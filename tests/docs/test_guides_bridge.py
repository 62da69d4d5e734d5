"""The Haiku and weight-loading guides run, top to bottom, as written."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import pytest

GUIDES = pathlib.Path(__file__).resolve().parents[2] / "docs" / "guides"


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a markdown page (as tests/docs/test_readme.py)."""
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def run_guide(name: str) -> tuple[dict, str]:
    path = GUIDES / name
    blocks = python_blocks(path.read_text())
    assert blocks, f"{name} has no python blocks"
    namespace: dict = {"__name__": f"guide_{name}"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for i, block in enumerate(blocks):
            exec(compile(block, f"{path}:block{i}", "exec"), namespace)
    return namespace, out.getvalue()


def plain_blocks(text: str) -> list[str]:
    """The untagged fenced blocks (the outputs the page shows)."""
    blocks, current, lang = [], None, None
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current, lang = [], line[3:].strip()
            else:
                if not lang:
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


@pytest.mark.parametrize("name", ["from_haiku.md", "loading_weights.md"])
def test_guide_runs_and_its_printed_reports_are_what_the_page_shows(name):
    namespace, printed = run_guide(name)
    shown = plain_blocks((GUIDES / name).read_text())
    # every output block the page shows was printed by its code
    assert shown
    for block in shown:
        assert block.strip() in printed, block
    assert "model" in namespace
