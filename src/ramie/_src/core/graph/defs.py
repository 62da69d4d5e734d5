"""GraphDef: the static, hashable description of an object graph.

A GraphDef records everything about a graph except the values of its state:
the node types, attribute names, static attribute values, which Variables and
nodes are shared (by index), and Variable types and metadata. Together with a
State it rebuilds the graph (``ramie.merge``). Being hashable and comparable it
can be a static argument of ``jax.jit`` or a cache key.

Internally a GraphDef wraps a tree of small tuples, one per node, in depth-first
order (the order of the leaves in the State):

* ``('O', type, index, attrs)`` - a graph object; ``attrs`` is a tuple of
  ``(key, child_def)``;
* ``('V', type, index, metadata)`` - the first occurrence of a Variable;
* ``('R', index)`` - another reference to an object or Variable seen earlier;
* ``('A',)`` - a bare array leaf; ``('S', value)`` - a static value;
* ``('L'|'T'|'D', attrs)``, ``('N', type, attrs)``, ``('P', treedef, attrs)`` -
  lists, tuples, dicts, namedtuples and other JAX pytree nodes.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

A = TypeVar("A")

OBJ = "O"
VAR = "V"
REF = "R"
ARR = "A"
STC = "S"
LST = "L"
TUP = "T"
DCT = "D"
NTP = "N"
PTR = "P"
ARRAY_DEF = (ARR,)
CONTAINER_TAGS = frozenset({LST, TUP, DCT, NTP, PTR})


def attrs_of(defn: tuple) -> tuple:
    tag = defn[0]
    if tag == OBJ:
        return defn[3]
    if tag in (LST, TUP, DCT):
        return defn[1]
    if tag in (NTP, PTR):
        return defn[2]
    return ()


class GraphDef(Generic[A]):
    """Static structure of a graph: pass it with its State(s) to ``merge``.

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> graphdef, state = ramie.split(ramie.Linear(2, 3, rngs=ramie.Rngs(0)))
        >>> graphdef
        GraphDef(Linear, 2 leaves)
        >>> other = ramie.Linear(2, 3, rngs=ramie.Rngs(1))
        >>> hash(graphdef) == hash(ramie.graphdef(other))
        True
        >>> y, (graphdef, state) = graphdef.apply(state)(jnp.ones((1, 2)))
        >>> y.shape
        (1, 3)
    """

    __slots__ = ("root", "num_leaves", "num_nodes", "_hash", "_plan", "__weakref__")

    def __init__(self, root: tuple, num_leaves: int, num_nodes: int):
        self.root = root
        self.num_leaves = num_leaves
        self.num_nodes = num_nodes
        self._hash: int | None = None
        self._plan: Any = None  # merge plan, built on first merge (see flatten.py)

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = self._hash = hash((self.root, self.num_leaves))
        return h

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, GraphDef):
            return False
        return (
            hash(self) == hash(other)
            and self.num_leaves == other.num_leaves
            and self.root == other.root
        )

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __reduce__(self):
        return (GraphDef, (self.root, self.num_leaves, self.num_nodes))

    @property
    def node_type(self) -> type | None:
        """The type of the root node (``None`` for container roots)."""
        tag = self.root[0]
        if tag in (OBJ, VAR, NTP):
            return self.root[1]
        return {LST: list, TUP: tuple, DCT: dict}.get(tag)

    def apply(self, state: Any, *states: Any) -> Any:
        """A caller that merges, calls a method, and splits again.

        ``graphdef.apply(params, rest)(x)`` returns ``(y, (graphdef, state))``
        and ``graphdef.apply(state).encode(x)`` calls another method. Pure:
        usable as ``apply_fn`` of a ``flax.training.train_state.TrainState``.
        """
        from ramie._src.core.graph.api import ApplyCaller

        return ApplyCaller(self, (state, *states))

    # Flax-compatible no-ops: ramie GraphDefs carry no outer indices.
    def with_no_outer_index(self) -> GraphDef[A]:
        return self

    def with_same_outer_index(self) -> GraphDef[A]:
        return self

    def with_matching_outer_index(self, other: GraphDef) -> GraphDef[A]:
        return self

    @property
    def nodes(self) -> list[tuple]:
        """Node definitions in depth-first order."""
        out: list[tuple] = []

        def walk(d: tuple) -> None:
            out.append(d)
            for _, c in attrs_of(d):
                if c[0] in CONTAINER_TAGS or c[0] in (OBJ, VAR):
                    walk(c)

        walk(self.root)
        return out

    def __repr__(self) -> str:
        t = self.node_type
        name = t.__name__ if isinstance(t, type) else str(t)
        return f"GraphDef({name}, {self.num_leaves} leaves)"

    def describe(self) -> str:
        """A multi-line tree of the structure, for debugging."""
        lines: list[str] = []

        def walk(d: tuple, key: str, depth: int) -> None:
            pad = "  " * depth
            tag = d[0]
            if tag == OBJ:
                lines.append(f"{pad}{key}{d[1].__name__} #{d[2]}")
            elif tag == VAR:
                lines.append(f"{pad}{key}{d[1].__name__} #{d[2]}")
                return
            elif tag == REF:
                lines.append(f"{pad}{key}-> #{d[1]}")
                return
            elif tag == ARR:
                lines.append(f"{pad}{key}<array>")
                return
            elif tag == STC:
                lines.append(f"{pad}{key}{d[1]!r}")
                return
            else:
                lines.append(
                    f"{pad}{key}"
                    f"{ {LST: 'list', TUP: 'tuple', DCT: 'dict'}.get(tag, tag) }"
                )
            for k, c in attrs_of(d):
                walk(c, f"{k}: ", depth + 1)

        walk(self.root, "", 0)
        return "\n".join(lines)


# A GraphDef is a leafless pytree node: it passes through jax.jit, jax.grad and
# jax.tree utilities as static structure (like a PyTreeDef).
import jax  # noqa: E402

jax.tree_util.register_pytree_node(GraphDef, lambda g: ((), g), lambda g, _: g)
