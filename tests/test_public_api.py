"""The public surface: every Flax NNX name, and no silent removals.

``tests/public_api.txt`` is the checked-in list of ``dir(ramie)``. A name that
disappears fails here (API churn is a bug); a new name must be added to the
list on purpose (``python -c "import ramie; print(*sorted(n for n in dir(ramie)
if not n.startswith('_')), sep='\\n')" > tests/public_api.txt``).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

import ramie

SNAPSHOT = pathlib.Path(__file__).with_name("public_api.txt")

# Flax NNX names ramie does not provide yet, each with the reason.
NOT_YET: dict[str, str] = {}


def public(module) -> set[str]:
    return {n for n in dir(module) if not n.startswith("_")}


def fresh_public_names() -> set[str]:
    """``dir(ramie)`` right after ``import ramie``, in a fresh interpreter.

    In this process other tests may have imported optional submodules
    (``ramie.testing``, ``ramie.demo``), which then show up as attributes.
    """
    code = "import ramie; print(*[n for n in dir(ramie) if not n.startswith('_')])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def test_no_public_name_disappeared():
    expected = set(SNAPSHOT.read_text().split())
    missing = sorted(expected - fresh_public_names())
    assert not missing, f"public names removed from ramie: {missing}"


def test_new_public_names_are_recorded():
    expected = set(SNAPSHOT.read_text().split())
    new = sorted(fresh_public_names() - expected)
    assert not new, f"new public names; add them to {SNAPSHOT.name}: {new}"


def test_every_flax_nnx_name_exists():
    nnx = pytest.importorskip("flax.nnx")
    missing = sorted(public(nnx) - public(ramie) - set(NOT_YET))
    assert not missing, f"Flax NNX names ramie lacks: {missing}"


@pytest.mark.parametrize("name", sorted(public(ramie)))
def test_public_name_is_documented(name):
    obj = getattr(ramie, name)
    if isinstance(obj, (str, int, float, tuple, type(None))):
        return  # constants carry no docstring of their own
    assert obj.__doc__ and obj.__doc__.strip(), f"ramie.{name} has no docstring"


def test_initializers_importable_as_a_module():
    import ramie.initializers as initializers
    from ramie.initializers import lecun_normal

    assert ramie.initializers is initializers is ramie.nn.initializers
    assert lecun_normal is initializers.lecun_normal
    assert set(initializers.__all__) <= set(dir(initializers))
    assert "jax" not in initializers.__all__


def test_flax_module_paths_exist():
    # nnx.graph.Key in type hints, nnx.nn.<submodule>.X as in flax.nnx.nn
    key_path = tuple[ramie.graph.Key, ...]
    assert key_path == ramie.graph.PathParts
    assert ramie.nn.linear.Linear is ramie.Linear
    assert ramie.nn.attention.MultiHeadAttention is ramie.MultiHeadAttention
    assert ramie.nn.stochastic.Dropout is ramie.Dropout
    for sub in ("activations", "dtypes", "lora", "normalization", "recurrent"):
        mod = getattr(ramie.nn, sub)
        names = [n for n in dir(mod) if not n.startswith("_")]
        assert names and all(getattr(mod, n) is getattr(ramie.nn, n, getattr(mod, n))
                             for n in names)  # fmt: skip
