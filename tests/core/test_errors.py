"""Tests for ``ramie/errors.py``: every error class renders with the docs link,
subclasses the builtin users catch, and has a section in ``docs/errors.md``.

Also renders the long messages built by the core (unmatched filters, merge
structure errors, load reports) so their layout is checked once.
"""

from __future__ import annotations

import pathlib
import re

import pytest

import ramie as nnx
from ramie import errors
from ramie._src.core.graph.api import _structure_error
from ramie._src.core.state import load_error, unmatched_error

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "errors.md"

ERROR_CLASSES = {
    errors.RamieError: Exception,
    errors.GraphStructureError: ValueError,
    errors.FilterError: ValueError,
    errors.StateLoadError: ValueError,
    errors.TraceContextError: ValueError,
    errors.RngError: ValueError,
    errors.ModuleAttributeError: AttributeError,
    errors.InputShapeError: ValueError,
    errors.MissingExtraError: ImportError,
    errors.VariableTypeError: TypeError,
    errors.CarryStructureError: ValueError,
    errors.StaticArgumentError: ValueError,
    errors.AbstractValueError: TypeError,
    errors.DeletedArrayError: RuntimeError,
    errors.AttributeStatusError: ValueError,
    errors.TransformError: ValueError,
    errors.SharedReferenceError: ValueError,
    errors.PrefixModeError: ValueError,
    errors.CheckpointError: ValueError,
    errors.BridgeError: ValueError,
    errors.ShardingError: ValueError,
    errors.MissingExtraError: ImportError,
    errors.RamieInternalError: RuntimeError,
}


@pytest.mark.parametrize("cls", list(ERROR_CLASSES), ids=lambda c: c.__name__)
def test_error_renders_message_then_docs_link(cls):
    err = cls("something at block.linear.kernel went wrong")
    text = str(err)
    assert text.startswith("something at block.linear.kernel went wrong")
    assert text.endswith(f"\nSee {errors.docs_url('errors.md', cls.__name__.lower())}")
    assert isinstance(err, ERROR_CLASSES[cls]) and isinstance(err, errors.RamieError)
    with pytest.raises(ERROR_CLASSES[cls]):
        raise err


ALL_CLASSES = [
    obj
    for obj in vars(errors).values()
    if isinstance(obj, type)
    and issubclass(obj, (errors.RamieError, errors.RamieWarning))
    and obj.__module__ == errors.__name__
]


def test_the_builtin_base_of_every_error_is_known():
    assert set(ERROR_CLASSES) | {errors.RngStreamNotFoundError} >= {
        c for c in ALL_CLASSES if issubclass(c, errors.RamieError)
    }


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_class_has_a_docs_section_its_link_points_to(cls):
    text = DOCS.read_text()
    headings = re.findall(r"^## (\w+)$", text, flags=re.M)
    assert cls.__name__ in headings
    # GitHub's anchor for a heading is the lower-cased heading
    if issubclass(cls, errors.RamieError):
        link = str(cls("x")).splitlines()[-1]
        assert link == f"See {errors.DOCS_ROOT}/errors.md#{cls.__name__.lower()}"
        assert link.startswith("See https://")


def test_internal_error_asks_for_a_report():
    text = str(errors.RamieInternalError("invariant broken"))
    lines = text.splitlines()
    assert lines[0] == "invariant broken"
    assert "This is a bug in ramie" in text and "https://github.com/" in text
    assert lines[-1].endswith("/docs/errors.md#ramieinternalerror")


def test_state_load_error_attributes():
    err = errors.StateLoadError("msg")
    assert err.missing == [] and err.unexpected == [] and err.mismatched == []
    err = errors.StateLoadError(
        "msg", [("a",)], [("b",)], [(("c",), "f32[1]", "f32[2]")]
    )
    assert err.missing == [("a",)] and err.unexpected == [("b",)]
    assert err.mismatched[0][0] == ("c",)


def test_warnings_hierarchy():
    assert issubclass(errors.LostStateWarning, errors.RamieWarning)
    assert issubclass(errors.RamieWarning, UserWarning)
    assert nnx.errors is errors


def test_unmatched_error_rendering():
    from ramie._src.core.variables import BatchStat

    rest = [(("block", i, "mean"), BatchStat(0)) for i in range(12)]
    err = unmatched_error("ramie.split()", (nnx.Param, "kernel"), rest)
    text = str(err)
    assert text.startswith(
        "ramie.split(): 12 Variable(s) matched none of the filters (Param, 'kernel'):\n"
    )
    assert "    block[0].mean (BatchStat)\n" in text
    assert "block[9].mean" in text and "block[10].mean" not in text
    assert "... and 2 more" in text
    assert "ramie.split(model, Param, 'kernel', ...)" in text
    assert text.endswith("/docs/errors.md#filtererror")


def test_load_error_rendering():
    err = load_error("loader", [("a", "b")], [("c", 0)], [(("d",), "f32[2]", "f32[3]")])
    lines = str(err).splitlines()
    assert lines[0] == "loader: the values do not fit the target; nothing was changed."
    assert "  Missing (1): in the target, not in the values:" in lines
    assert (
        "    a.b" in lines
        and "    c[0]" in lines
        and "    d: f32[2] vs f32[3]" in lines
    )
    assert lines[-1].endswith("/docs/errors.md#stateloaderror")
    custom = load_error("x", [], [("u",)], [], fix="  Fix: do this")
    assert "  Fix: do this" in str(custom) and "Missing" not in str(custom)


def test_structure_error_rendering():
    graphdef = nnx.graphdef(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
    missing = _structure_error("ramie.merge()", graphdef, [("kernel",)], [], 1)
    text = str(missing)
    assert "No value for 1 leaf(s):\n    kernel" in text
    assert "expects 2 leaves; the 1 State(s) hold 1" in text
    assert "pass every resulting State to merge" in text
    extra = str(_structure_error("ramie.merge()", graphdef, [], [("x", "y")], 2))
    assert "1 value(s) the GraphDef has no place for:\n    x.y" in extra
    assert "the 2 State(s) hold 3" in extra and "definition probably changed" in extra


def test_trace_errors_are_also_flax_errors_once_flax_is_loaded():
    import jax
    import jax.numpy as jnp
    from flax import errors as flax_errors

    import ramie

    rngs = ramie.Rngs(0)
    box = ramie.Dict(w=ramie.Param(jnp.ones(1)))
    caught = []

    @jax.jit
    def f():
        for action in (lambda: rngs.params(), lambda: setattr(box, "w", 2.0)):
            try:
                action()
            except flax_errors.TraceContextError as e:  # code migrated from Flax
                caught.append(e)

    f()
    assert len(caught) == 2
    assert all(isinstance(e, ramie.errors.TraceContextError) for e in caught)
    assert "Cannot mutate RngCount from a different trace level" in str(caught[0])
    assert "Cannot mutate 'Dict' from different trace level" in str(caught[1])
    assert "docs/errors.md#tracecontexterror" in str(caught[1])
