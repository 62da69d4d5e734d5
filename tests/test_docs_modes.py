"""Runs the code blocks of docs/guides/modes.md, in order, in one namespace."""

from __future__ import annotations

import pathlib
import re

GUIDE = pathlib.Path(__file__).parent.parent / "docs" / "guides" / "modes.md"


def test_modes_guide_code_runs():
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) >= 8
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{GUIDE.name}[block {i}]", "exec"), namespace)
