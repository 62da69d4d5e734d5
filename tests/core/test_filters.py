"""Tests for ``ramie/_src/core/filters.py``: every filter form and its use in
``state``/``split``."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import ramie as nnx
from ramie._src.core.filters import (
    PathIn,
    filter_name,
    filters_to_predicates,
    to_predicate,
)
from ramie.errors import FilterError

P = nnx.Param(jnp.ones(1))
B = nnx.BatchStat(jnp.ones(1))
T = nnx.Param(jnp.ones(1), tag="dropout")
PATH = ("block", "linear", "kernel")


@pytest.mark.parametrize(
    "filt, path, value, expected",
    [
        (nnx.Param, PATH, P, True),
        (nnx.Param, PATH, B, False),
        (nnx.Variable, PATH, B, True),
        ("linear", PATH, B, True),  # a path key
        ("kern", PATH, B, False),  # keys match whole
        ("dropout", ("x",), T, True),  # the tag metadata
        ("dropout", ("x",), P, False),
        (..., PATH, P, True),
        (True, PATH, P, True),
        (None, PATH, P, False),
        (False, PATH, P, False),
        ([nnx.BatchStat, "linear"], PATH, P, True),
        ((nnx.BatchStat,), PATH, P, False),
        (nnx.OfType(nnx.BatchStat), PATH, B, True),
        (nnx.WithTag("dropout"), PATH, T, True),
        (nnx.WithTag("dropout"), ("dropout",), P, False),  # tags only, not paths
        (nnx.PathContains("linear"), PATH, P, True),
        (nnx.PathContains("lin"), PATH, P, False),
        (nnx.PathContains("lin", exact=False), PATH, P, True),
        (nnx.PathContains(3), ("layers", 3, "w"), P, True),
        (PathIn(("a", "b"), ("c",)), ("c",), P, True),
        (PathIn(("a", "b")), ("a",), P, False),
        (nnx.All(nnx.Param, "linear"), PATH, P, True),
        (nnx.All(nnx.Param, "head"), PATH, P, False),
        (nnx.Any(nnx.BatchStat, "head"), PATH, P, False),
        (nnx.Any(nnx.BatchStat, "block"), PATH, P, True),
        (nnx.Not(nnx.Param), PATH, B, True),
        (nnx.Not(nnx.Param), PATH, P, False),
        (nnx.Everything(), PATH, P, True),
        (nnx.Nothing(), PATH, P, False),
        (lambda path, x: len(path) == 3, PATH, P, True),
    ],
)
def test_filter_forms(filt, path, value, expected):
    assert to_predicate(filt)(path, value) is expected


def test_with_tag_on_objects_with_tag_attribute():
    stream = nnx.RngStream(0, tag="dropout")
    assert nnx.WithTag("dropout")((), stream)
    assert to_predicate("dropout")((), stream.key)


def test_filter_objects_pass_through():
    f = nnx.PathContains("x")
    assert to_predicate(f) is f


# misuse: something that is not a filter
@pytest.mark.parametrize("bad", [3, 2.5, object()])
def test_bad_filter_type(bad):
    with pytest.raises(
        TypeError, match=r"Expected a filter.*got " + type(bad).__name__
    ):
        to_predicate(bad)


# misuse: a non-filter given to split
def test_bad_filter_in_split_names_value():
    with pytest.raises(TypeError, match="got int: 3"):
        nnx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)), 3)


def test_ellipsis_must_be_last():
    assert len(filters_to_predicates((nnx.Param, ...))) == 2
    with pytest.raises(
        ValueError, match=r"`\.\.\.` must be the last filter; got it at position 0 of 2"
    ):
        filters_to_predicates((..., nnx.Param))
    with pytest.raises(ValueError, match="position 1"):
        nnx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)), nnx.BatchStat, True, nnx.Param)


def test_reprs_and_names():
    assert repr(nnx.Any(nnx.Param, nnx.BatchStat)) == "Any(Param, BatchStat)"
    assert repr(nnx.All(nnx.Param, "x")) == "All(Param, 'x')"
    assert repr(nnx.Not(nnx.Param)) == "Not(Param)"
    assert repr(nnx.OfType(nnx.Param)) == "OfType(Param)"
    assert repr(nnx.PathContains("kernel")) == "PathContains('kernel')"
    assert (
        repr(nnx.Everything()) == "Everything()" and repr(nnx.Nothing()) == "Nothing()"
    )
    assert filter_name(...) == "..." and filter_name(nnx.Param) == "Param"
    assert repr(to_predicate("w")) == "'w'"


def test_equality_and_hash():
    assert nnx.Any(nnx.Param, "x") == nnx.Any(nnx.Param, "x")
    assert nnx.Any(nnx.Param) != nnx.All(nnx.Param)
    assert nnx.Not(nnx.Param) == nnx.Not(nnx.Param)
    assert nnx.Everything() == nnx.Everything() and nnx.Nothing() != nnx.Everything()
    filters = {
        nnx.Any(nnx.Param),
        nnx.Any(nnx.Param),
        nnx.All(nnx.BatchStat),
        nnx.Not(nnx.Cache),
        nnx.Nothing(),
    }
    assert len(filters) == 4
    assert nnx.PathContains("a") == nnx.PathContains("a") and nnx.OfType(
        nnx.Param
    ) == nnx.OfType(nnx.Param)


# ------------------------------------------------------------ with models
class Block(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(2, 3, rngs=rngs)
        self.bn = nnx.BatchNorm(3, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)


def _paths(state):
    return sorted(nnx.to_flat_state(state).paths)


FLAX_COMPARABLE = {
    "param": lambda n: n.Param,
    "batchstat": lambda n: n.BatchStat,
    "rngstate": lambda n: n.RngState,
    "pathcontains": lambda n: n.PathContains("kernel"),
    "not": lambda n: n.Not(n.Param),
    "all": lambda n: n.All(n.Param, n.PathContains("linear")),
    "any": lambda n: n.Any(n.BatchStat, n.PathContains("bias")),
    "oftype": lambda n: n.OfType(n.Variable),
    "list": lambda n: [n.BatchStat, n.PathContains("kernel")],
    "ellipsis": lambda n: ...,
    "none": lambda n: None,
}


@pytest.mark.parametrize("name", sorted(FLAX_COMPARABLE))
def test_state_filters_match_flax(name):
    fnnx = pytest.importorskip("flax.nnx")

    class FBlock(fnnx.Module):
        def __init__(self, rngs):
            self.linear = fnnx.Linear(2, 3, rngs=rngs)
            self.bn = fnnx.BatchNorm(3, rngs=rngs)
            self.drop = fnnx.Dropout(0.5, rngs=rngs)

    ours = nnx.state(Block(nnx.Rngs(0)), FLAX_COMPARABLE[name](nnx))
    theirs = fnnx.state(FBlock(fnnx.Rngs(0)), FLAX_COMPARABLE[name](fnnx))
    assert _paths(ours) == _paths(theirs)


def test_string_filter_matches_tag_or_path_part():
    m = Block(nnx.Rngs(0))
    assert _paths(nnx.state(m, "dropout")) == [
        ("drop", "rngs", "count"),
        ("drop", "rngs", "key"),
    ]
    assert _paths(nnx.state(m, "kernel")) == [("linear", "kernel")]
    assert _paths(nnx.state(m, "bn")) == [
        ("bn", "bias"),
        ("bn", "mean"),
        ("bn", "scale"),
        ("bn", "var"),
    ]


def test_first_matching_filter_wins_in_split():
    m = Block(nnx.Rngs(0))
    _, kernels, params, rest = nnx.split(m, "kernel", nnx.Param, ...)
    assert _paths(kernels) == [("linear", "kernel")]
    assert ("linear", "kernel") not in _paths(params)
    assert len(_paths(rest)) == 4


# misuse: filters in split that leave Variables unmatched
def test_unmatched_filter_error_lists_paths():
    class Outer(nnx.Module):
        def __init__(self):
            self.block = nnx.Dict(batchnorm=nnx.BatchNorm(2, rngs=nnx.Rngs(0)))

    with pytest.raises(
        FilterError, match=r"block\.batchnorm\.mean \(BatchStat\)"
    ) as info:
        nnx.split(Outer(), nnx.Param)
    msg = str(info.value)
    assert "2 Variable(s) matched none of the filters (Param)" in msg
    assert "block.batchnorm.var (BatchStat)" in msg
    assert "ramie.split(model, Param, ...)" in msg
