"""Tests for ``ramie/_src/core/links.py``: weak parent links that let an object
name its own path in error messages."""

from __future__ import annotations

import gc

import jax
import jax.numpy as jnp
import pytest

import ramie as nnx
from ramie._src.core import links
from ramie.errors import TraceContextError


class Node(nnx.Module):
    pass


def _tree():
    root = Node()
    root.block = Node()
    root.block.w = nnx.Param(jnp.ones(1))
    root.items = [Node(), {"k": [nnx.BatchStat(jnp.ones(1))]}]
    root.items[0].v = nnx.Cache(jnp.ones(1))
    return root


def test_path_of_attributes_and_nested_containers():
    root = _tree()
    assert links.path_of(root.block.w) == ("block", "w")
    assert links.path_of(root.block) == ("block",)
    assert links.path_of(root.items[1]["k"][0]) == ("items", 1, "k", 0)
    assert links.path_of(root.items[0].v) == ("items", 0, "v")
    assert links.path_of(root) is None
    assert links.path_of(nnx.Param(jnp.ones(1))) is None


def test_describe():
    root = _tree()
    assert links.describe(root.block.w) == "Param at block.w"
    assert links.describe(root.items[1]["k"][0]) == "BatchStat at items[1].k[0]"
    assert links.describe(nnx.Param(jnp.ones(1))) == "Param (not attached to a module)"


def test_shared_object_keeps_latest_placement():
    root = Node()
    w = nnx.Param(jnp.ones(1))
    root.a = w
    root.b = w
    assert links.path_of(w) == ("b",)


def test_dead_parent_ends_the_path():
    child = Node()
    child.w = nnx.Param(jnp.ones(1))
    parent = Node()
    parent.child = child
    assert links.path_of(child.w) == ("child", "w")
    del parent
    gc.collect()
    assert links.path_of(child.w) == ("w",)


def test_cycles_terminate():
    a, b = Node(), Node()
    a.b = b
    b.a = a
    assert links.path_of(a) == ("b", "a")  # stops when a parent repeats
    assert links.path_of(b) == ("a", "b")


def test_merge_and_clone_link_new_objects():
    root = _tree()
    graphdef, state = nnx.split(root)
    new = nnx.merge(graphdef, state, copy=True)
    assert links.path_of(new.block.w) == ("block", "w")
    assert links.path_of(new.items[1]["k"][0]) == ("items", 1, "k", 0)
    copy = nnx.clone(root)
    assert links.path_of(copy.items[0].v) == ("items", 0, "v")


def test_pytree_unflatten_links_children():
    root = _tree()
    mapped = jax.tree.map(lambda x: x, root)
    assert links.path_of(mapped.block.w) == ("block", "w")
    assert links.path_of(mapped.items[1]["k"][0]) == ("items", 1, "k", 0)


# misuse: the path appears in the error of a cloned model's Variable
def test_error_messages_use_links():
    copy = nnx.clone(_tree())

    def f(x):
        copy.items[1]["k"][0].value = x
        return x

    with pytest.raises(TraceContextError, match=r"BatchStat at items\[1\]\.k\[0\]"):
        jax.jit(f)(jnp.ones(1))
