"""Tests for the Flax mode switches (``var_defaults`` and friends)."""

from __future__ import annotations

import ramie


def test_var_defaults_without_refs_is_a_no_op_block():
    with ramie.var_defaults(hijax=False):
        assert ramie.var_defaults().hijax is False
    assert ramie.var_defaults().hijax is False
