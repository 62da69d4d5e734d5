"""Structural matching of a checkpoint's layers to a ramie model's layers.

A checkpoint (a nested dict of arrays from Linen or Haiku) and a ramie model
are both trees of *layers*: a layer is a node that holds values directly (a
Linear's ``kernel``/``bias``, a BatchNorm's ``scale``/``bias``/``mean``/
``var``) or a *unit* that is converted as a whole (a Haiku LSTM's packed ``w``
into ramie's eight gate Linears). The matcher pairs layers of the two trees
without requiring equal names, in this order at every level of the trees:

1. children with the same name (``encoder`` <-> ``encoder``; a trailing
   ``_`` on ramie names is ignored, so Linen's ``if`` is ramie's ``if_``);
2. remaining children whose subtrees hold the same multiset of layer kinds,
   in creation order (``Block_0`` <-> ``block``);
3. everything still unpaired is flattened into its layers, which are paired
   kind by kind in creation order (``Dense_0``, ``Dense_1``, ... by numeric
   suffix, never as strings, so ``Dense_10`` comes after ``Dense_9``).

Layers left over at one level are offered again one level up. The *kind* of a
layer is the set of its value names (``{"kernel", "bias"}``) or its unit name
(``"lstm"``); shapes are not part of it, so a transposed kernel is paired and
then reported as a shape mismatch with both paths, instead of vanishing.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ramie._src.core.module import Module
from ramie._src.core.rngs import RngState
from ramie._src.core.variables import Variable

_SUFFIX = re.compile(r"^(.*?)_(\d+)$")


@dataclass(eq=False)
class SourceEntry:
    """One array of the checkpoint.

    Attributes:
        key: Its path in the checkpoint, ``/``-joined
            (``params/Block_0/Dense_0/kernel``).
        name: Its canonical value name (``kernel``, ``bias``, ``mean``, ...).
        value: The array.
        reshapable: Whether its shape may be reshaped to the target's when the
            element counts agree (Haiku stores BatchNorm scales as ``(1, C)``).
    """

    key: str
    name: str
    value: Any
    reshapable: bool = False


@dataclass(eq=False)
class SNode:
    """A node of the checkpoint tree: entries held here, ordered children."""

    name: str
    entries: dict[str, SourceEntry] = field(default_factory=dict)
    children: dict[str, SNode] = field(default_factory=dict)
    unit: str | None = None
    # optional entries that do not decide the layer's kind (Haiku's EMA
    # ``hidden``/``counter``): loaded where the ramie layer has a place for
    # them, ignored otherwise
    extras: dict[str, SourceEntry] = field(default_factory=dict)

    def child(self, name: str) -> SNode:
        if name not in self.children:
            self.children[name] = SNode(name)
        return self.children[name]

    def all_entries(self) -> Iterator[SourceEntry]:
        yield from self.entries.values()
        yield from self.extras.values()
        for c in self.children.values():
            yield from c.all_entries()


@dataclass(eq=False)
class TNode:
    """A node of the ramie model: its loadable Variables and ordered children."""

    path: tuple
    obj: Any
    vars: dict[str, tuple[tuple, Variable]] = field(default_factory=dict)
    children: dict[Any, TNode] = field(default_factory=dict)
    unit: str | None = None
    # Variables a layer class lists in ``_load_extras``: filled from a
    # checkpoint layer's extras, not part of the layer's kind
    extras: dict[str, tuple[tuple, Variable]] = field(default_factory=dict)

    def all_vars(self) -> Iterator[tuple[tuple, Variable]]:
        yield from self.vars.values()
        yield from self.extras.values()
        for c in self.children.values():
            yield from c.all_vars()


def natural_order(keys: list[str]) -> list[str]:
    """Keep first-appearance order, but put ``Name``, ``Name_1``, ``Name_2``...

    of one base name in numeric order into the slots that base name occupies.

    Example:
        >>> natural_order(["Dense_10", "Block_0", "Dense_2", "Dense_0"])
        ['Dense_0', 'Block_0', 'Dense_2', 'Dense_10']
        >>> natural_order(["linear_1", "linear"])
        ['linear', 'linear_1']
    """

    def split(k: str) -> tuple[str, int]:
        m = _SUFFIX.match(k)
        return (m.group(1), int(m.group(2))) if m else (k, 0)

    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(split(k)[0], []).append(k)
    for base, ks in groups.items():
        groups[base] = sorted(ks, key=lambda k: split(k)[1])
    out = []
    taken: Counter[str] = Counter()
    for k in keys:
        base = split(k)[0]
        out.append(groups[base][taken[base]])
        taken[base] += 1
    return out


def norm_name(name: Any) -> str:
    return str(name).rstrip("_") or str(name)


# ---------------------------------------------------------------- ramie side


def _ordered_children(obj: Any) -> list[tuple[Any, Any]]:
    kids = list(obj._graph_children())
    if isinstance(obj, Module):
        order = {k: i for i, k in enumerate(vars(obj))}
        kids.sort(key=lambda kv: order.get(kv[0], len(order)))
    return kids


def target_tree(
    model: Any, units: dict[type, str], path: tuple = (), seen: set | None = None
) -> TNode:
    """The loadable Variables of ``model`` (every Variable but RNG state)."""
    seen = set() if seen is None else seen
    seen.add(id(model))
    node = TNode(path, model)
    # the most derived class with a unit decides (HaikuGRUCell over GRUCell)
    node.unit = next((units[c] for c in type(model).__mro__ if c in units), None)
    extras = getattr(type(model), "_load_extras", ())
    for key, value in _ordered_children(model):
        if id(value) in seen:
            continue
        if isinstance(value, Variable):
            seen.add(id(value))
            if not isinstance(value, RngState):
                where = node.extras if key in extras else node.vars
                where[key] = (path + (key,), value)
        elif hasattr(value, "_graph_children"):
            child = target_tree(value, units, path + (key,), seen)
            if child.vars or child.children or child.extras:
                node.children[key] = child
    return node


# -------------------------------------------------------------------- layers


@dataclass(eq=False)
class Layer:
    """A matchable layer: a ramie TNode or a checkpoint SNode."""

    node: Any
    path: tuple

    @property
    def kind(self) -> Any:
        n = self.node
        if n.unit is not None:
            return n.unit
        names = n.vars if isinstance(n, TNode) else n.entries
        return frozenset(norm_name(k) for k in names)


def _layers(node: Any, path: tuple) -> list[Layer]:
    """Every layer of a subtree, in order (units are not entered)."""
    if node.unit is not None:
        return [Layer(node, path)]
    out = []
    if node.vars if isinstance(node, TNode) else node.entries:
        out.append(Layer(node, path))
    for k, c in node.children.items():
        out.extend(_layers(c, path + (k,)))
    return out


def _signature(node: Any) -> tuple:
    kinds = Counter(
        repr(sorted(lay.kind) if isinstance(lay.kind, frozenset) else lay.kind)
        for lay in _layers(node, ())
    )
    return tuple(sorted(kinds.items()))


def _has_own(node: Any) -> bool:
    return bool(node.vars if isinstance(node, TNode) else node.entries)


@dataclass
class MatchResult:
    """Layer pairs, and the layers of either side left without a partner."""

    pairs: list[tuple[Layer, Layer]] = field(default_factory=list)
    target_left: list[Layer] = field(default_factory=list)
    source_left: list[Layer] = field(default_factory=list)


def match(t: TNode, s: SNode, fits: Any) -> MatchResult:
    """Pair the layers of ``t`` (ramie) and ``s`` (checkpoint).

    ``fits(target_layer, source_layer) -> int`` counts the mismatches a pair
    would have; it breaks ties when creation order alone pairs badly.
    """
    # A checkpoint wrapped in one outer name (Haiku's ``model/...``) that the
    # ramie model does not have: look through the wrapper.
    while (
        not s.entries
        and s.unit is None
        and len(s.children) == 1
        and next(iter(s.children)) not in {norm_name(k) for k in t.children}
        and t.unit is None
    ):
        (s,) = s.children.values()
    res = MatchResult()
    tl, sl = _match(t, t.path, s, (), res, fits)
    _align(tl, sl, res, fits)
    return res


def _match(
    t: TNode, tpath: tuple, s: SNode, spath: tuple, res: MatchResult, fits: Any
) -> tuple[list[Layer], list[Layer]]:
    if t.unit is not None or s.unit is not None:
        return _layers(t, tpath), _layers(s, spath)
    t_left: list[Layer] = []
    s_left: list[Layer] = []
    if _has_own(t) and _has_own(s):
        res.pairs.append((Layer(t, tpath), Layer(s, spath)))
    elif _has_own(t):
        t_left.append(Layer(t, tpath))
    elif _has_own(s):
        s_left.append(Layer(s, spath))
    s_names = {norm_name(k): k for k in s.children}
    t_rest = []
    s_used = set()
    for k, c in t.children.items():
        sk = s_names.get(norm_name(k))
        if sk is not None and sk not in s_used:
            s_used.add(sk)
            a, b = _match(c, tpath + (k,), s.children[sk], spath + (sk,), res, fits)
            t_left += a
            s_left += b
        else:
            t_rest.append(k)
    s_rest = [k for k in natural_order(list(s.children)) if k not in s_used]
    sigs = {k: _signature(s.children[k]) for k in s_rest}
    if _positional(t, t_rest, s, s_rest):
        # a layer lacks an entry: keep creation order, so the error names the
        # entry missing from its own layer instead of shifting every pairing
        for k, sk in zip(t_rest, s_rest):
            a, b = _match(
                t.children[k], tpath + (k,), s.children[sk], spath + (sk,), res, fits
            )
            t_left += a
            s_left += b
        t_rest, s_rest = [], []
    pairs, unpaired_t = _pair_children(t, tpath, t_rest, s, s_rest, sigs, fits)
    for k, sk in pairs:
        s_rest.remove(sk)
        a, b = _match(
            t.children[k], tpath + (k,), s.children[sk], spath + (sk,), res, fits
        )
        t_left += a
        s_left += b
    for k in unpaired_t:
        t_left += _layers(t.children[k], tpath + (k,))
    for k in s_rest:
        s_left += _layers(s.children[k], spath + (k,))
    return _align_level(t_left, s_left, res, fits)


def _pair_children(
    t: TNode,
    tpath: tuple,
    t_rest: list,
    s: SNode,
    s_rest: list,
    sigs: dict,
    fits: Any,
) -> tuple[list[tuple[Any, str]], list]:
    """Pair children with the same layers: equal class hints, creation order.

    If that pairs some children whose shapes do not fit, and choosing by fit
    pairs every child without a mismatch (a checkpoint whose keys were
    sorted: ``conv2_d_transpose_1`` before ``conv3_d_transpose``), the fitting
    pairing is used; otherwise creation order stays, so a wrong entry is
    reported against its own layer.
    """

    def pair(by_fit: bool) -> tuple[list, list]:
        free, out, unpaired = list(s_rest), [], []
        for k in t_rest:
            c = t.children[k]
            sig = _signature(c)
            same = [x for x in free if sigs[x] == sig]
            hint = _hint(Layer(c, tpath + (k,)))
            hinted = [x for x in same if _hint(Layer(s.children[x], (x,))) == hint]
            sk = hinted[0] if hinted else same[0] if same else None
            if by_fit:
                sk = next(
                    (x for x in hinted + same if _subtree_fits(c, s.children[x], fits)),
                    None,
                )
            if sk is None:
                unpaired.append(k)
                continue
            free.remove(sk)
            out.append((k, sk))
        return out, unpaired

    pairs, unpaired = pair(by_fit=False)
    if any(not _subtree_fits(t.children[k], s.children[sk], fits) for k, sk in pairs):
        alt, alt_unpaired = pair(by_fit=True)
        if len(alt) == len(pairs) and not alt_unpaired and not unpaired:
            return alt, alt_unpaired
    return pairs, unpaired


def _subtree_fits(t: TNode, s: SNode, fits: Any) -> bool:
    """Whether two subtrees' layers, in order, pair without any mismatch."""
    lt, ls = _layers(t, ()), _layers(s, ())
    return len(lt) == len(ls) and all(
        a.kind == b.kind and not fits(a, b) for a, b in zip(lt, ls)
    )


def _positional(t: TNode, t_rest: list, s: SNode, s_rest: list) -> bool:
    """Whether to pair leftover children by position: same count, every pair
    of the same layer kinds except some layers that lack entries."""
    if len(t_rest) != len(s_rest) or not t_rest:
        return False
    partial = False
    for k, sk in zip(t_rest, s_rest):
        lt, ls = _layers(t.children[k], ()), _layers(s.children[sk], ())
        if len(lt) != len(ls):
            return False
        for a, b in zip(lt, ls):
            ka, kb = a.kind, b.kind
            if ka == kb:
                continue
            if (
                isinstance(ka, frozenset)
                and isinstance(kb, frozenset)
                and (ka < kb or kb < ka)
            ):
                partial = True
                continue
            return False
    return partial


def _align_level(
    t_left: list[Layer], s_left: list[Layer], res: MatchResult, fits: Any
) -> tuple[list[Layer], list[Layer]]:
    """Pair leftovers of equal kind in order; return what is still unpaired."""
    sub = MatchResult()
    _align(t_left, s_left, sub, fits)
    res.pairs += sub.pairs
    return sub.target_left, sub.source_left


# Class names that auto-names and ramie classes spell differently.
_ALIASES = {
    "dense": "linear",
    "conv1d": "conv",
    "conv2d": "conv",
    "conv3d": "conv",
    "convnd": "conv",
    "multiheaddotproductattention": "multiheadattention",
    "batchnorm": "batchnorm",
    "lstm": "lstmcell",
    "optimizedlstmcell": "lstmcell",
    "gru": "grucell",
    "haikugrucell": "grucell",
    "linengrucell": "grucell",
    "haikubatchnorm": "batchnorm",
    "conv1dtranspose": "convtranspose",
    "conv2dtranspose": "convtranspose",
    "conv3dtranspose": "convtranspose",
    "convndtranspose": "convtranspose",
}


def _hint(lay: Layer) -> str:
    """The layer class a layer's name or type suggests (``Dense_3`` -> linear)."""
    if isinstance(lay.node, TNode):
        name = type(lay.node.obj).__name__
    else:
        name = str(lay.path[-1]) if lay.path else ""
        mt = _SUFFIX.match(name)
        name = mt.group(1) if mt else name
    name = name.lower().replace("_", "")
    return _ALIASES.get(name, name)


def _pair_in_order(ts: list[Layer], ss: list[Layer]) -> list[tuple[Layer, Layer]]:
    """Pair layers of one kind: equal class hints first, then creation order."""
    pairs, free_t, free_s = [], list(ts), list(ss)
    hints_s = {_hint(b) for b in ss}
    for h in [_hint(a) for a in ts]:
        if h not in hints_s:
            continue
        a_h = [a for a in free_t if _hint(a) == h]
        b_h = [b for b in free_s if _hint(b) == h]
        for a, b in zip(a_h, b_h):
            pairs.append((a, b))
            free_t.remove(a)
            free_s.remove(b)
    pairs += list(zip(free_t, free_s))
    order = {id(a): i for i, a in enumerate(ts)}
    return sorted(pairs, key=lambda p: order[id(p[0])])


def _align(t_left: list[Layer], s_left: list[Layer], res: MatchResult, fits: Any):
    by_kind_t: dict[Any, list[Layer]] = {}
    by_kind_s: dict[Any, list[Layer]] = {}
    for lay in t_left:
        by_kind_t.setdefault(lay.kind, []).append(lay)
    for lay in s_left:
        by_kind_s.setdefault(lay.kind, []).append(lay)
    paired_t: set[int] = set()
    paired_s: set[int] = set()
    for kind, ts in by_kind_t.items():
        ss = by_kind_s.get(kind, [])
        if not ss:
            continue
        pairs = _pair_in_order(ts, ss)
        if any(fits(a, b) for a, b in pairs):
            # creation order pairs badly: try pairing by fit, in order
            alt, free = [], list(ss)
            for a in ts:
                b = next((b for b in free if not fits(a, b)), None)
                if b is not None:
                    free.remove(b)
                    alt.append((a, b))
            if len(alt) == min(len(ts), len(ss)):
                pairs = alt
        for a, b in pairs:
            res.pairs.append((a, b))
            paired_t.add(id(a))
            paired_s.add(id(b))
    res.target_left += [lay for lay in t_left if id(lay) not in paired_t]
    res.source_left += [lay for lay in s_left if id(lay) not in paired_s]
