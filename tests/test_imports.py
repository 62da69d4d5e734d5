"""``import ramie`` stays light: optional integrations are imported on first use.

Checked by what is imported (module counts), never by seconds; the import time
itself is measured with ``python -X importtime -c "import ramie"``.
"""

from __future__ import annotations

import json
import subprocess
import sys

OPTIONAL = ("flax", "haiku", "orbax", "safetensors", "torch", "tensorflow", "treescope")
HEAVY = ("sklearn", "matplotlib", "tqdm", "rich", "pandas", "scipy.optimize")


def imported_after(code: str) -> list[str]:
    probe = (
        f"{code}\nimport sys, json\nprint(json.dumps(sorted(m for m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_ramie_imports_no_optional_integration():
    mods = imported_after("import ramie")
    tops = {m.split(".")[0] for m in mods}
    assert not tops & set(OPTIONAL), sorted(tops & set(OPTIONAL))
    assert not [m for m in mods if m.startswith(HEAVY)]


def test_import_ramie_adds_few_modules_over_jax_and_optax():
    base = set(imported_after("import jax, jax.numpy, optax"))
    ours = set(imported_after("import ramie"))
    extra = sorted(m for m in ours - base if not m.startswith("ramie"))
    # what ramie itself needs beyond jax and optax: a handful of stdlib modules
    assert len(extra) <= 40, extra
