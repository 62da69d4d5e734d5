"""Every Python block of docs/guides/checkpointing.md runs, in order."""

from __future__ import annotations

import pathlib
import re

GUIDE = (
    pathlib.Path(__file__).resolve().parents[2] / "docs" / "guides" / "checkpointing.md"
)


def test_checkpointing_guide_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) >= 8
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{GUIDE.name}[block {i}]", "exec"), namespace)
    assert (tmp_path / "runs" / "ckpt" / "manifest.json").is_file()
    assert sorted(p.name for p in (tmp_path / "runs" / "train").iterdir()) == [
        "step_00000040",
        "step_00000050",
    ]
