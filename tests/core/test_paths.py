"""Tests for ``ramie/_src/core/paths.py``: the one way paths are printed."""

from __future__ import annotations

import pytest

import ramie as nnx
from ramie._src.core.paths import format_path, format_paths, parse_key


@pytest.mark.parametrize(
    "path, expected",
    [
        ((), "<root>"),
        (("kernel",), "kernel"),
        (("decoder", "blocks", 3, "mlp", "bias"), "decoder.blocks[3].mlp.bias"),
        ((0,), "[0]"),
        ((0, "w"), "[0].w"),
        (("opt_state", 0, "mu", "odd key"), "opt_state[0].mu['odd key']"),
        (("a", "3"), "a['3']"),  # a string that looks like an int stays quoted
        (("a", True), "a[True]"),  # bools are not indices
        (("a", ("t", 1)), "a[('t', 1)]"),
        (("a", None), "a[None]"),
    ],
)
def test_format_path(path, expected):
    assert format_path(path) == expected


def test_format_path_with_root_and_public_alias():
    assert format_path(("w",), root="model") == "model.w"
    assert format_path((), root="model") == "model"
    assert format_path([2, "b"], root="m") == "m[2].b"
    assert nnx.format_path is format_path


def test_format_paths_limit():
    assert format_paths([("a",), ("b", 0)]) == "    a\n    b[0]"
    text = format_paths([(str(i),) for i in range(12)], limit=10)
    assert text.splitlines()[-1] == "    ... and 2 more"
    assert len(text.splitlines()) == 11
    assert format_paths([]) == ""


@pytest.mark.parametrize(
    "key, expected", [("3", 3), ("03", 3), ("kernel", "kernel"), (3, 3), ("-1", "-1")]
)
def test_parse_key(key, expected):
    assert parse_key(key) == expected
