"""Tests for the Flax mode switches (``var_defaults`` and friends)."""

from __future__ import annotations

import pytest

import ramie


def test_var_defaults_hijax_can_decorate_but_refuses_to_run():
    # decorating happens at class-definition time in Flax code: it must not raise
    @ramie.var_defaults(hijax=True)
    def needs_refs():
        return 1

    with pytest.raises(NotImplementedError, match=r"var_defaults\(hijax=True"):
        needs_refs()
    with pytest.raises(NotImplementedError, match="mutable-array"):
        with ramie.var_defaults(ref=True):
            pass


def test_var_defaults_without_refs_is_a_no_op_block():
    with ramie.var_defaults(hijax=False) as defaults:
        assert defaults.hijax is False
    assert ramie.var_defaults().hijax is False
