"""Load Linen and Haiku checkpoints into equivalent hand-written ramie models.

:func:`load_linen` and :func:`load_haiku` take a checkpoint as plain nested
dicts of arrays (what ``model.init`` returned, or what a checkpoint library
restored; neither Flax nor Haiku is imported) and write its values into the
Variables of a ramie model, in place. Which checkpoint entry goes to which
Variable is worked out from the structure of both (see
:mod:`ramie._src.bridge.matching`); layer formats that differ are converted:

* Haiku names: ``w``/``b`` -> ``kernel``/``bias``, ``offset`` -> ``bias``,
  ``embeddings`` -> ``embedding``; ``scale``/``offset`` and BatchNorm
  statistics stored as ``(1, C)`` are reshaped to ``(C,)``; BatchNorm's
  ``mean_ema``/``var_ema`` ``average`` -> ``mean``/``var``.
* ``hk.MultiHeadAttention``: ``query``/``key``/``value``/``linear`` kernels
  ``(in, heads*size)`` -> ramie's ``(in, heads, size)``; ``linear`` -> ``out``.
* ``hk.LSTM``'s packed ``linear`` (gates i, g, f, o; +1 forget bias added at
  run time) -> ramie ``LSTMCell``'s eight gate Linears (+1 folded into
  ``hf.bias``), or ``OptimizedLSTMCell``'s ``dense_i``/``dense_h`` (gates
  reordered to i, f, g, o).
* ``hk.GRU``'s ``w_i``/``w_h``/``b`` (gates z, r, a) -> ``bridge.HaikuGRUCell``
  (gates r, z, n; z negated, as Haiku's z is the complement of ramie's).
  Into a plain ``GRUCell`` it is refused: the candidate formulas differ.
* BatchNorm's ``mean_ema``/``var_ema`` ``hidden`` and ``counter`` ->
  ``bridge.HaikuBatchNorm``'s ``mean_hidden``/``var_hidden``/``counter``
  (ignored, and reported, for a plain ``BatchNorm``).
* ``hk.ConvNDTranspose`` kernels ``(*k, out, in)`` -> ``ConvTranspose``'s
  ``(*k, in, out)``.
* Linen ``GRUCell``'s six gate Denses -> ramie ``GRUCell``'s packed
  ``dense_i``/``dense_h`` (``hn``'s bias into ``bridge.LinenGRUCell``'s
  ``bias_hn``; a plain ``GRUCell`` takes it only when it is zero).
* Linen ``LSTMCell``/``OptimizedLSTMCell``'s eight gate Denses ->
  ``LSTMCell`` (as they are) or ``OptimizedLSTMCell`` (concatenated, gates
  i, f, g, o).

The result is a :class:`LoadReport`. If anything does not fit, one
:class:`~ramie.errors.StateLoadError` lists every problem and nothing is
loaded; ``strict=False`` loads what fits and puts the problems in the report.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ramie._src.bridge import matching as m
from ramie._src.bridge.haiku_layers import HaikuGRUCell
from ramie._src.core.loading import SKIPPED, check_load
from ramie._src.core.paths import format_path
from ramie._src.nn.conv_transpose import ConvTranspose
from ramie._src.nn.multi_head_attention import MultiHeadAttention
from ramie._src.nn.recurrent import GRUCell, LSTMCell, OptimizedLSTMCell
from ramie.errors import StateLoadError

MappingValue = str | tuple[str, Callable[[Any], Any]] | None

# ------------------------------------------------------------------- report


@dataclass(frozen=True)
class Loaded:
    """One ramie Variable filled from the checkpoint.

    Attributes:
        target: The Variable's path in the model (``block.linear.kernel``).
        sources: The checkpoint entries its value came from.
        transform: How the value was changed on the way (``""`` if it was not).
    """

    target: str
    sources: tuple[str, ...]
    transform: str = ""


@dataclass(frozen=True)
class Mismatch:
    """A checkpoint entry paired with a Variable whose shape or dtype differ."""

    source: str
    target: str
    expected: str
    found: str


@dataclass
class LoadReport:
    """What :func:`load_linen` / :func:`load_haiku` did.

    Attributes:
        loaded: Every Variable filled, with its source entries and transform.
        unmatched: Checkpoint entries that went nowhere.
        unfilled: Variables of the model that got no value.
        mismatched: Pairs whose shape or dtype do not fit (not loaded).
        ignored: ``(entry, reason)`` for entries skipped on purpose (Haiku's
            moving-average bookkeeping, entries mapped to ``None``).
    """

    api: str
    loaded: list[Loaded] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    unfilled: list[str] = field(default_factory=list)
    mismatched: list[Mismatch] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every entry and every Variable found its partner."""
        return not (self.unmatched or self.unfilled or self.mismatched)

    def problems(self) -> str:
        lines = []
        if self.unmatched:
            lines.append(
                f"  {len(self.unmatched)} checkpoint entries have no place "
                "in the model:"
            )
            lines += [f"    {k}" for k in self.unmatched]
        if self.unfilled:
            lines.append(f"  {len(self.unfilled)} Variables of the model got no value:")
            lines += [f"    {k}" for k in self.unfilled]
        if self.mismatched:
            lines.append(
                f"  {len(self.mismatched)} entries do not fit the "
                "Variable they were paired with:"
            )
            lines += [
                f"    {x.source} -> {x.target}: expected {x.expected}, found {x.found}"
                for x in self.mismatched
            ]
        return "\n".join(lines)

    def __str__(self) -> str:
        head = f"{self.api}: {len(self.loaded)} Variables loaded"
        if not self.ok:
            head += " (not everything fitted)"
        lines = [head]
        width = max((len(", ".join(x.sources)) for x in self.loaded), default=0)
        for x in self.loaded:
            src = ", ".join(x.sources)
            tail = f"  [{x.transform}]" if x.transform else ""
            lines.append(f"  {src:<{width}} -> {x.target}{tail}")
        for k, why in self.ignored:
            lines.append(f"  {k}: ignored ({why})")
        if not self.ok:
            lines.append(self.problems())
        return "\n".join(lines)


# --------------------------------------------------------------- conversion


@dataclass(eq=False)
class _Assign:
    path: tuple
    var: Any
    value: Any
    sources: tuple[str, ...]
    transform: str = ""


@dataclass(eq=False)
class _Conversion:
    assigns: list[_Assign] = field(default_factory=list)
    used: set[int] = field(default_factory=set)  # ids of SourceEntry objects
    ignored: list[tuple[str, str]] = field(default_factory=list)
    mismatched: list[Mismatch] = field(default_factory=list)
    # Variables the converter already accounts for (mismatch reported)
    accounted: set[int] = field(default_factory=set)


def _describe(shape: Any, dtype: Any) -> str:
    return f"{np.dtype(dtype).name}{list(shape)}"


def _reshape_ok(src: tuple, dst: tuple) -> bool:
    """True when ``dst`` only merges, splits or drops size-1 axes of ``src``."""
    if int(np.prod(src)) != int(np.prod(dst)):
        return False

    def cuts(shape: tuple) -> set[int]:
        out, acc = set(), 1
        for d in shape:
            if d != 1:
                acc *= d
                out.add(acc)
        return out

    a, b = cuts(src), cuts(dst)
    return a <= b or b <= a


def _value(entry: m.SourceEntry, target_shape: tuple, reshape: bool) -> tuple:
    value = entry.value
    shape = tuple(np.shape(value))
    if shape != tuple(target_shape) and (reshape or entry.reshapable):
        if _reshape_ok(shape, tuple(target_shape)):
            return jnp.reshape(value, target_shape), f"reshape {shape} -> " + str(
                tuple(target_shape)
            )
    return value, ""


_EMA_REASON = (
    "Haiku's moving-average bookkeeping; ramie.BatchNorm keeps only the "
    "average (ramie.bridge.HaikuBatchNorm keeps all of it and continues "
    "Haiku's statistics exactly)"
)


def _leaf(
    t: m.TNode,
    s: m.SNode,
    out: _Conversion,
    reshape: bool = False,
    flavour: str = "linen",
) -> None:
    by_name = {m.norm_name(e.name): e for e in s.entries.values()}
    for name, (path, var) in t.vars.items():
        e = by_name.get(m.norm_name(name))
        if e is None:
            continue
        if (
            flavour == "haiku"
            and name == "kernel"
            and isinstance(t.obj, ConvTranspose)
            and np.ndim(e.value) >= 3
        ):
            # hk.ConvNDTranspose stores (*kernel, out, in); ramie (*kernel, in, out)
            out.assigns.append(
                _Assign(
                    path,
                    var,
                    jnp.swapaxes(e.value, -1, -2),
                    (e.key,),
                    "swap the last two axes (Haiku's (..., out, in) -> (..., in, out))",
                )
            )
            out.used.add(id(e))
            continue
        value, how = _value(e, np.shape(var.value), reshape)
        out.assigns.append(_Assign(path, var, value, (e.key,), how))
        out.used.add(id(e))
    _extras(t, s, out)


def _extras(t: m.TNode, s: m.SNode, out: _Conversion) -> None:
    """Load a checkpoint layer's optional entries where the ramie layer has room."""
    for name, (path, var) in t.extras.items():
        e = s.extras.get(name)
        if e is not None:
            value, how = _value(e, np.shape(var.value), False)
            out.assigns.append(_Assign(path, var, value, (e.key,), how))
            out.used.add(id(e))
    for name, e in s.extras.items():
        if name in t.extras:
            continue
        out.used.add(id(e))
        first = s.extras.get("counter")
        if name == "var_counter" and "counter" in t.extras and first is not None:
            if np.array_equal(np.asarray(e.value), np.asarray(first.value)):
                out.ignored.append((e.key, f"equal to {first.key}"))
            else:
                out.mismatched.append(
                    Mismatch(
                        e.key,
                        format_path(t.extras["counter"][0]),
                        f"the same step count as {first.key}",
                        "a different count",
                    )
                )
        else:
            out.ignored.append((e.key, _EMA_REASON))


def _gate_split(x: Any, n: int, i: int) -> Any:
    size = np.shape(x)[-1] // n
    return x[..., i * size : (i + 1) * size]


def _gates(x: Any, n: int, order: str, want: str) -> Any:
    """Reorder ``n`` gates packed on the last axis from ``order`` to ``want``."""
    return jnp.concatenate([_gate_split(x, n, order.index(g)) for g in want], -1)


def _lstm_shape_error(
    t: m.TNode, w: m.SourceEntry, want: str, out: _Conversion
) -> None:
    out.mismatched.append(
        Mismatch(w.key, format_path(t.path), want, str(tuple(np.shape(w.value))))
    )
    out.accounted |= {id(v) for _, v in t.all_vars()}


def _haiku_lstm(t: m.TNode, s: m.SNode, out: _Conversion) -> None:
    cell = t.obj
    lin = s.children.get("linear")
    w = lin.entries.get("kernel") if lin else None
    b = lin.entries.get("bias") if lin else None
    if w is None:
        return
    out.used.add(id(w))
    if b is not None:
        out.used.add(id(b))
    n_in, h = cell.in_features, cell.hidden_features
    if tuple(np.shape(w.value))[-2:] != (n_in + h, 4 * h):
        want = f"an LSTM kernel of shape (..., {n_in} + {h}, 4 * {h})"
        _lstm_shape_error(t, w, want, out)
        return
    wx, wh = w.value[..., :n_in, :], w.value[..., n_in:, :]
    if isinstance(cell, OptimizedLSTMCell):
        di, dh = t.children["dense_i"], t.children["dense_h"]
        how = "gates i,g,f,o -> i,f,g,o"
        for node, value, rows in ((di, wx, f"[:{n_in}]"), (dh, wh, f"[{n_in}:]")):
            path, var = node.vars["kernel"]
            value = _gates(value, 4, "igfo", "ifgo")
            out.assigns.append(
                _Assign(path, var, value, (w.key,), f"rows {rows}; {how}")
            )
        if b is not None and "bias" in dh.vars:
            bias = _gates(b.value, 4, "igfo", "ifgo")
            bias = bias.at[..., h : 2 * h].add(1)
            path, var = dh.vars["bias"]
            out.assigns.append(
                _Assign(
                    path, var, bias, (b.key,), how + "; f + 1 (Haiku's forget offset)"
                )
            )
        return
    # Haiku's gate order along the packed axis is i, g, f, o.
    for g, k in {"i": 0, "g": 1, "f": 2, "o": 3}.items():
        tx = t.children["if_" if g == "f" else "i" + g]
        th = t.children["h" + g]
        for node, value, rows in (
            (tx, wx, f"input rows [:{n_in}]"),
            (th, wh, f"hidden rows [{n_in}:]"),
        ):
            path, var = node.vars["kernel"]
            how = f"{rows}, gate {g} of i,g,f,o"
            out.assigns.append(
                _Assign(path, var, _gate_split(value, 4, k), (w.key,), how)
            )
        if b is not None and "bias" in th.vars:
            bias = _gate_split(b.value, 4, k)
            how = f"gate {g} of i,g,f,o"
            if g == "f":
                bias, how = bias + 1, how + "; + 1 (Haiku's forget-gate offset)"
            out.assigns.append(
                _Assign(th.vars["bias"][0], th.vars["bias"][1], bias, (b.key,), how)
            )


_LSTM_GATES = ("ii", "if", "ig", "io", "hi", "hf", "hg", "ho")


def _linen_lstm(t: m.TNode, s: m.SNode, out: _Conversion) -> None:
    """Linen ``LSTMCell``/``OptimizedLSTMCell`` (eight gate Denses) -> ramie."""
    if not isinstance(t.obj, OptimizedLSTMCell):
        for g in _LSTM_GATES:
            tn = t.children.get("if_" if g == "if" else g)
            if tn is not None:
                _leaf(tn, s.children[g], out)
        return
    parts = {g: s.children[g].entries for g in _LSTM_GATES}
    di, dh = t.children["dense_i"], t.children["dense_h"]
    for node, side in ((di, "i"), (dh, "h")):
        for name in ("kernel", "bias"):
            es = [parts[side + g].get(name) for g in "ifgo"]
            if name in node.vars and all(es):
                _concat_gates(out, node.vars[name], es, "i, f, g, o")
            else:
                # Linen's input gates have no bias; ramie's dense_i has none either
                out.used |= {id(e) for e in es if e is not None}


def _concat_gates(
    out: Any, target: tuple, entries: list, order: str = "r, z, n"
) -> None:
    """Assign the gate entries, concatenated on the last axis, to target."""
    out.assigns.append(
        _Assign(
            target[0],
            target[1],
            jnp.concatenate([e.value for e in entries], -1),
            tuple(e.key for e in entries),
            f"concatenate {order} along the last axis",
        )
    )
    out.used |= {id(e) for e in entries}


def _haiku_gru(t: m.TNode, s: m.SNode, out: _Conversion) -> None:
    """``hk.GRU``'s ``w_i``/``w_h``/``b`` (gates z, r, a) -> HaikuGRUCell."""
    di, dh = t.children["dense_i"], t.children["dense_h"]
    how = "gates z,r,a -> r,z,n with z negated (Haiku's z is 1 - ramie's)"

    def convert(x: Any) -> Any:
        z, r, a = (_gate_split(x, 3, i) for i in range(3))
        return jnp.concatenate([r, -z, a], -1)

    for key, node, name in (
        ("w_i", di, "kernel"),
        ("bias", di, "bias"),
        ("w_h", dh, "kernel"),
    ):
        e = s.entries.get(key)
        if e is None or name not in node.vars:
            continue
        path, var = node.vars[name]
        out.assigns.append(_Assign(path, var, convert(e.value), (e.key,), how))
        out.used.add(id(e))


def _gru(t: m.TNode, s: m.SNode, out: _Conversion) -> None:
    if "dense_i" not in t.children or "dense_h" not in t.children:
        return
    haiku_src = {"w_i", "w_h", "bias"} <= set(s.entries)
    haiku_dst = isinstance(t.obj, HaikuGRUCell)
    if haiku_src != haiku_dst:
        src = s.entries["w_i"].key.rsplit("/", 1)[0] if haiku_src else ""
        if not src:
            src = next(iter(s.all_entries())).key.rsplit("/", 2)[0]
        found, fix = (
            (
                "Haiku's GRU, which computes n = tanh(W x + U (r * h)); the two "
                "cannot be converted into each other",
                "ramie.bridge.HaikuGRUCell",
            )
            if haiku_src
            else (
                "a GRU computing n = tanh(W x + r * (U h)) (Linen's GRUCell)",
                "ramie.GRUCell",
            )
        )
        want = (
            "a GRU computing n = tanh(W x + r * (U h))"
            if not haiku_dst
            else "a GRU computing n = tanh(W x + U (r * h)) (HaikuGRUCell)"
        )
        out.mismatched.append(
            Mismatch(src, format_path(t.path), want, f"{found}; use {fix} there")
        )
        out.used |= {id(e) for e in s.all_entries()}
        out.accounted |= {id(v) for _, v in t.all_vars()}
        return
    if haiku_src:
        _haiku_gru(t, s, out)
    else:
        _linen_gru(t, s, out)


def _linen_gru(t: m.TNode, s: m.SNode, out: _Conversion) -> None:
    di, dh = t.children["dense_i"], t.children["dense_h"]
    parts = {}
    for g in ("ir", "iz", "in", "hr", "hz", "hn"):
        node = s.children.get(g)
        if node is None or "kernel" not in node.entries:
            return
        parts[g] = node.entries
    _concat_gates(
        out, di.vars["kernel"], [parts[g]["kernel"] for g in ("ir", "iz", "in")]
    )
    bs = [parts[g].get("bias") for g in ("ir", "iz", "in")]
    if all(bs) and "bias" in di.vars:
        _concat_gates(out, di.vars["bias"], bs)
    _concat_gates(
        out, dh.vars["kernel"], [parts[g]["kernel"] for g in ("hr", "hz", "hn")]
    )
    hn_b = parts["hn"].get("bias")
    if hn_b is not None:
        out.used.add(id(hn_b))
        if "bias_hn" in t.vars:  # a LinenGRUCell
            path, var = t.vars["bias_hn"]
            out.assigns.append(_Assign(path, var, hn_b.value, (hn_b.key,)))
        elif np.any(np.asarray(hn_b.value) != 0):
            out.mismatched.append(
                Mismatch(
                    hn_b.key,
                    format_path(dh.path),
                    "a zero recurrent candidate bias (ramie's GRUCell has none)",
                    "non-zero values; load into ramie.bridge.LinenGRUCell, "
                    "which has one",
                )
            )
        else:
            out.ignored.append(
                (hn_b.key, "all zeros; ramie's GRUCell has no recurrent candidate bias")
            )


def _haiku_mha(t: m.TNode, s: m.SNode, out: _Conversion) -> None:
    for tn, sn in (
        ("query", "query"),
        ("key", "key"),
        ("value", "value"),
        ("out", "linear"),
    ):
        if tn in t.children and sn in s.children:
            _leaf(t.children[tn], s.children[sn], out, reshape=True)


_UNITS: dict[str, dict[str, Callable[[m.TNode, m.SNode, _Conversion], None]]] = {
    "haiku": {"lstm": _haiku_lstm, "gru": _gru, "mha": _haiku_mha},
    "linen": {"lstm": _linen_lstm, "gru": _gru},
}


def _convert(t: m.Layer, s: m.Layer, flavour: str) -> _Conversion:
    out = _Conversion()
    if t.node.unit is not None:
        if t.node.unit == s.node.unit:
            _UNITS[flavour][t.node.unit](t.node, s.node, out)
    else:
        _leaf(t.node, s.node, out, flavour=flavour)
    return out


def _mismatch(a: _Assign) -> Mismatch:
    have = np.shape(a.value)
    want = np.shape(a.var.value)
    hd = np.dtype(getattr(a.value, "dtype", np.asarray(a.value).dtype))
    wd = np.dtype(a.var.value.dtype)
    hint = ""
    if tuple(have) == tuple(want)[::-1] and len(want) >= 2:
        hint = " (transposed?)"
    return Mismatch(
        ", ".join(a.sources),
        format_path(a.path),
        _describe(want, wd),
        _describe(have, hd) + hint,
    )


def _fit_problems(a: _Assign) -> bool:
    """Whether ``a`` would be refused (cheap: shapes and dtype kinds only)."""
    have = tuple(np.shape(a.value))
    want = tuple(np.shape(a.var.value))
    return have != want


def _fits(t: m.Layer, s: m.Layer, flavour: str) -> int:
    conv = _convert(t, s, flavour)
    bad = len(conv.mismatched) + sum(_fit_problems(a) for a in conv.assigns)
    if t.node.unit:
        n_t = sum(1 for _ in t.node.all_vars())
        n_s = sum(1 for _ in s.node.all_entries())
    else:
        n_t = len(t.node.vars) + len(t.node.extras)
        n_s = len(s.node.entries) + len(s.node.extras)
    return bad + (n_t - len(conv.assigns)) + (n_s - len(conv.used))


# ------------------------------------------------------------------ sources


def _is_leaf(x: Any) -> bool:
    return not isinstance(x, Mapping)


def linen_tree(variables: Mapping[str, Any]) -> m.SNode:
    """The checkpoint tree of Linen ``variables`` (``{"params": ..., ...}``)."""
    if "params" not in variables:
        variables = {"params": variables}
    root = m.SNode("")

    def walk(node: m.SNode, tree: Mapping, key: str) -> None:
        for k, v in tree.items():
            if _is_leaf(v):
                node.entries[str(k) if str(k) not in node.entries else f"{key}/{k}"] = (
                    m.SourceEntry(f"{key}/{k}", str(k), v)
                )
            else:
                walk(node.child(str(k)), v, f"{key}/{k}")

    for coll, tree in variables.items():
        if _is_leaf(tree):
            root.entries[coll] = m.SourceEntry(coll, coll, tree)
        else:
            walk(root, tree, coll)
    _mark_units(root, _linen_unit)
    return root


_GRU_GATES = frozenset({"ir", "iz", "in", "hr", "hz", "hn"})
_MHA_HAIKU = frozenset({"query", "key", "value", "linear"})


def _linen_unit(node: m.SNode) -> str | None:
    if set(node.children) == _GRU_GATES and not node.entries:
        return "gru"
    if set(node.children) == set(_LSTM_GATES) and not node.entries:
        return "lstm"
    return None


def _haiku_unit(node: m.SNode) -> str | None:
    if (
        re.fullmatch(r"lstm(_\d+)?", node.name)
        and not node.entries
        and set(node.children) == {"linear"}
    ):
        return "lstm"
    if set(node.children) == _MHA_HAIKU and not node.entries:
        return "mha"
    if {"w_i", "w_h", "bias"} == set(node.entries) and not node.children:
        return "gru"
    return None


def _mark_units(node: m.SNode, detect: Callable[[m.SNode], str | None]) -> None:
    node.unit = detect(node)
    if node.unit is None:
        for c in node.children.values():
            _mark_units(c, detect)


_HAIKU_NAMES = {"w": "kernel", "b": "bias", "offset": "bias", "embeddings": "embedding"}
_EMA = re.compile(r"^(mean|var)_ema(_\d+)?$")


def haiku_tree(
    params: Mapping[str, Mapping[str, Any]],
    state: Mapping[str, Mapping[str, Any]] | None,
    ignored: list[tuple[str, str]],
) -> m.SNode:
    """The checkpoint tree of Haiku ``params`` and ``state``.

    Module names are split at ``/`` with Haiku's ``~`` markers dropped, so
    ``mlp/~/linear_0`` becomes the node ``mlp`` -> ``linear_0``.
    """
    root = m.SNode("")

    def node_of(module: str) -> m.SNode:
        node = root
        for part in module.split("/"):
            if part != "~":
                node = node.child(part)
        return node

    for module, entries in params.items():
        node = node_of(module)
        for name, value in entries.items():
            node.entries[_HAIKU_NAMES.get(name, name)] = m.SourceEntry(
                f"params/{module}/{name}",
                _HAIKU_NAMES.get(name, name),
                value,
                reshapable=name in ("scale", "offset"),
            )
    for module, entries in (state or {}).items():
        last = module.split("/")[-1]
        ema = _EMA.match(last)
        if ema and "average" in entries:
            node = node_of(module.rsplit("/", 1)[0]) if "/" in module else root
            which = ema.group(1)
            node.entries[which] = m.SourceEntry(
                f"state/{module}/average", which, entries["average"], True
            )
            # hidden sum and step counter: loaded into a HaikuBatchNorm,
            # ignored (and reported) for a plain BatchNorm
            for name, value in entries.items():
                key = f"state/{module}/{name}"
                if name == "hidden":
                    extra = f"{which}_hidden"
                    node.extras[extra] = m.SourceEntry(key, extra, value, True)
                elif name == "counter":
                    extra = "counter" if which == "mean" else "var_counter"
                    node.extras[extra] = m.SourceEntry(key, extra, value)
                elif name != "average":
                    ignored.append((key, "not part of Haiku's moving average"))
            continue
        node = node_of(module)
        for name, value in entries.items():
            node.entries[name] = m.SourceEntry(f"state/{module}/{name}", name, value)
    # the top-level ``~`` module holds entries of the root
    if "~" in root.children:
        top = root.children.pop("~")
        root.entries.update(top.entries)
        root.children.update(top.children)
    _mark_units(root, _haiku_unit)
    return root


# -------------------------------------------------------------------- load


def _remove_entries(node: m.SNode, drop: set[str]) -> None:
    for k in [k for k, e in node.entries.items() if e.key in drop]:
        del node.entries[k]
    for k in [k for k, e in node.extras.items() if e.key in drop]:
        del node.extras[k]
    for c in node.children.values():
        _remove_entries(c, drop)


def _remove_vars(node: m.TNode, drop: set[int]) -> None:
    for k in [k for k, (_, v) in node.vars.items() if id(v) in drop]:
        del node.vars[k]
    for k in [k for k, (_, v) in node.extras.items() if id(v) in drop]:
        del node.extras[k]
    for c in node.children.values():
        _remove_vars(c, drop)


def _load(
    api: str,
    model: Any,
    source: m.SNode,
    units: dict[type, str],
    mapping: Mapping[str, MappingValue] | None,
    strict: bool,
    ignored: list[tuple[str, str]],
) -> LoadReport:
    target = m.target_tree(model, units)
    report = LoadReport(api, ignored=list(ignored))
    all_vars = {format_path(p): (p, v) for p, v in target.all_vars()}
    all_entries = {e.key: e for e in source.all_entries()}
    assigns: list[_Assign] = []
    mismatched: list[Mismatch] = []

    # explicit mapping first
    claimed_entries: set[str] = set()
    claimed_vars: set[int] = set()
    bad_keys = []
    for key, dest in (mapping or {}).items():
        if key not in all_entries:
            bad_keys.append(f"    {key!r} is not an entry of the checkpoint")
            continue
        claimed_entries.add(key)
        if dest is None:
            report.ignored.append((key, "mapped to None"))
            continue
        path_s, fn = (dest, None) if isinstance(dest, str) else dest
        if path_s not in all_vars:
            bad_keys.append(
                f"    {path_s!r} (for {key!r}) is not a Variable of the model"
            )
            continue
        path, var = all_vars[path_s]
        value = all_entries[key].value
        how = ""
        if fn is not None:
            value = fn(value)
            how = f"mapping: {getattr(fn, '__name__', 'transform')}"
        assigns.append(_Assign(path, var, value, (key,), how))
        claimed_vars.add(id(var))
    if bad_keys:
        raise StateLoadError(
            f"{api}: mapping= names paths that do not exist:\n"
            + "\n".join(bad_keys)
            + "\n  Source paths are '/'-joined checkpoint keys "
            "('params/Dense_0/kernel'); ramie paths are printed as "
            "'block.linear.kernel'. Print the automatic pairing with\n"
            f"      print({api.removesuffix('()')}(model, checkpoint, strict=False))"
        )
    _remove_entries(source, claimed_entries)
    _remove_vars(target, claimed_vars)

    flavour = "haiku" if "haiku" in api else "linen"
    result = m.match(target, source, lambda t, s: _fits(t, s, flavour))
    used: set[int] = set()
    accounted: set[int] = set()
    for t, s in result.pairs:
        conv = _convert(t, s, flavour)
        assigns += conv.assigns
        used |= conv.used
        mismatched += conv.mismatched
        report.ignored += conv.ignored
        accounted |= conv.accounted
    # check every assignment before touching the model (the shared loading
    # policy: NumPy values canonicalised, lossless dtype casts accepted)
    checked = check_load(
        [(a.path, a.var, a.value) for a in assigns], api=api, strict=False
    ).values
    good = []
    for a, value in zip(assigns, checked):
        if value is SKIPPED:
            mismatched.append(_mismatch(a))
        else:
            good.append((a, value))
    assigned = {id(a.var) for a in assigns} | accounted | claimed_vars
    ignored_keys = {k for k, _ in report.ignored}
    report.unfilled = [
        format_path(p) for p, v in target.all_vars() if id(v) not in assigned
    ]
    report.unmatched = [
        e.key
        for e in source.all_entries()
        if id(e) not in used and e.key not in ignored_keys
    ]
    report.mismatched = mismatched
    if strict and not report.ok:
        call = api.removesuffix("()")
        raise StateLoadError(
            f"{api}: the checkpoint does not fit the model; nothing was loaded.\n"
            + report.problems()
            + "\n  Pair entries by hand where the automatic matching cannot:\n"
            f"      {call}(model, checkpoint, mapping={{'params/Dense_0/kernel': "
            "'linear.kernel'})\n  or load what fits and inspect the report:\n"
            f"      report = {call}(model, checkpoint, strict=False)",
            missing=report.unfilled,
            unexpected=report.unmatched,
            mismatched=[(x.target, x.expected, x.found) for x in mismatched],
        )
    for a, value in good:
        old = a.var.value
        sharding = getattr(old, "sharding", None)
        if sharding is not None and isinstance(old, jax.Array):
            value = jax.device_put(value, sharding)
        a.var.value = value
        report.loaded.append(Loaded(format_path(a.path), a.sources, a.transform))
    return report


def load_linen(
    model: Any,
    variables: Mapping[str, Any],
    *,
    mapping: Mapping[str, MappingValue] | None = None,
    strict: bool = True,
) -> LoadReport:
    """Load Linen ``variables`` into an equivalent ramie model, in place.

    Entries are paired with the model's Variables by structure: equal names
    first (``setup`` names such as ``encoder``), then module creation order,
    layer kind and shape (auto-names ``Dense_0``, ``Block_1`` in numeric
    order). Stacked parameters from ``nn.scan``/``nn.vmap`` load into a ramie
    stack made with ``ramie.vmap``. Every collection is read (``params``,
    ``batch_stats``, custom ones such as ``counter``). Flax is not imported.

    Args:
        model: The ramie model to fill.
        variables: What Linen's ``init`` returned (``{"params": ..., ...}``),
            as dicts of arrays; a bare ``params`` dict is accepted too.
        mapping: ``{source_path: ramie_path}`` pairs that override or complete
            the automatic pairing. A value may be ``(ramie_path, fn)`` to
            transform the array, or ``None`` to skip the entry. Source paths
            are ``/``-joined keys (``"params/Dense_0/kernel"``); ramie paths
            are printed paths (``"block.linear.kernel"``).
        strict: If True (default), raise when anything does not fit and load
            nothing; if False, load what fits and report the rest.

    Returns:
        A :class:`LoadReport`; ``print(report)`` shows every pairing.

    Raises:
        StateLoadError: listing every unmatched entry, unfilled Variable and
            shape/dtype mismatch (with both paths), when ``strict``.

    Example:
        >>> import jax.numpy as jnp, numpy as np, ramie
        >>> model = ramie.Linear(2, 3, rngs=ramie.Rngs(0))
        >>> ckpt = {"params": {"kernel": np.ones((2, 3), np.float32),
        ...                    "bias": np.zeros((3,), np.float32)}}
        >>> print(ramie.bridge.load_linen(model, ckpt))
        ramie.bridge.load_linen(): 2 Variables loaded
          params/kernel -> kernel
          params/bias   -> bias
        >>> float(model.kernel.value.sum())
        6.0
    """
    source = linen_tree(variables)
    return _load(
        "ramie.bridge.load_linen()",
        model,
        source,
        {GRUCell: "gru", LSTMCell: "lstm", OptimizedLSTMCell: "lstm"},
        mapping,
        strict,
        [],
    )


def load_haiku(
    model: Any,
    params: Mapping[str, Mapping[str, Any]],
    state: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    mapping: Mapping[str, MappingValue] | None = None,
    strict: bool = True,
) -> LoadReport:
    """Load Haiku ``params`` (and ``state``) into an equivalent ramie model.

    Pairing works as in :func:`load_linen` on Haiku's module names
    (``model/~/block/linear``, ``linear_1``); ``w``/``b``, ``scale``/
    ``offset``, ``embeddings``, BatchNorm ``mean_ema``/``var_ema`` averages,
    ``hk.layer_stack`` stacks, ``hk.MultiHeadAttention``, ``hk.LSTM``,
    ``hk.ConvNDTranspose`` and ``hk.GRU`` (into
    :class:`~ramie.bridge.HaikuGRUCell`) are converted to ramie's layouts
    (see the module docs). A :class:`~ramie.bridge.HaikuBatchNorm` also
    receives the moving averages' ``hidden`` and ``counter``, so training
    continues with Haiku's statistics. Haiku is not imported.

    Args:
        model: The ramie model to fill.
        params: Haiku params, ``{module_name: {name: array}}``.
        state: Haiku state from ``transform_with_state``, or None.
        mapping: As in :func:`load_linen`; source paths are
            ``"params/<module>/<name>"`` and ``"state/<module>/<name>"``.
        strict: As in :func:`load_linen`.

    Returns:
        A :class:`LoadReport`.

    Raises:
        StateLoadError: listing every problem, when ``strict``.

    Example:
        >>> import numpy as np, ramie
        >>> model = ramie.LayerNorm(3, rngs=ramie.Rngs(0))
        >>> params = {"layer_norm": {"scale": np.full((3,), 2, np.float32),
        ...                          "offset": np.zeros((3,), np.float32)}}
        >>> print(ramie.bridge.load_haiku(model, params))
        ramie.bridge.load_haiku(): 2 Variables loaded
          params/layer_norm/scale  -> scale
          params/layer_norm/offset -> bias
    """
    ignored: list[tuple[str, str]] = []
    source = haiku_tree(params, state, ignored)
    units = {
        LSTMCell: "lstm",
        OptimizedLSTMCell: "lstm",
        GRUCell: "gru",
        MultiHeadAttention: "mha",
    }
    return _load(
        "ramie.bridge.load_haiku()", model, source, units, mapping, strict, ignored
    )
