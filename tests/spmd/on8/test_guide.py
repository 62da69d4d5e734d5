"""Every Python block of docs/guides/scale.md runs, in order, on 8 devices."""

from __future__ import annotations

import pathlib
import re

import pytest

GUIDE = pathlib.Path(__file__).resolve().parents[3] / "docs" / "guides" / "scale.md"


@pytest.mark.slow  # four compiled trainings; run by `make test-all`
def test_scale_guide_runs():
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) >= 7
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{GUIDE.name}[block {i}]", "exec"), namespace)
    assert namespace["single"] == namespace["single"]  # ran to the end
    assert len(namespace["tp"]) == 3
