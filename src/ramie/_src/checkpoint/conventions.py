"""Naming conventions: how a model's Variables are named and laid out in a file.

``None`` (ramie's own): every Variable under its dotted path
(``blocks.0.kernel``), arrays as they are.

``"torch"``: the names and layouts of PyTorch's ``state_dict``, so that a
PyTorch checkpoint of an equivalent model loads with one call:

=================  ===========================  ===============================
ramie layer        ramie Variable               PyTorch name and layout
=================  ===========================  ===============================
Linear             ``kernel (in, out)``         ``weight (out, in)``
Conv               ``kernel (*k, in, out)``     ``weight (out, in, *k)``
ConvTranspose      ``kernel (*k, in, out)``     ``weight (in, out, *k)``
LayerNorm,         ``scale``, ``bias``          ``weight``, ``bias``
RMSNorm, GroupNorm
BatchNorm          ``scale``, ``bias``,         ``weight``, ``bias``,
                   ``mean``, ``var``            ``running_mean``, ``running_var``
                                                (``num_batches_tracked`` ignored)
Embed              ``embedding``                ``weight``
=================  ===========================  ===============================

Other Variables keep their dotted path. RNG state has no PyTorch counterpart
and is left out of the torch convention unless asked for (``rng=True``), when
it keeps its dotted path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ramie._src.checkpoint.flat import Slot, dotted
from ramie._src.core.graph import api as graph_api
from ramie._src.core.module import Module
from ramie._src.core.rngs import RngState
from ramie._src.core.state import to_flat_state
from ramie.errors import CheckpointError

CONVENTIONS = (None, "torch")


def _swap_last2(x: Any) -> Any:
    return x.swapaxes(-1, -2) if hasattr(x, "swapaxes") else x.T


def _conv_to_torch(x: Any) -> Any:
    # (*k, in, out) -> (out, in, *k)
    n = x.ndim
    return x.transpose((n - 1, n - 2, *range(n - 2)))


def _conv_from_torch(x: Any) -> Any:
    # (out, in, *k) -> (*k, in, out)
    n = x.ndim
    return x.transpose((*range(2, n), 1, 0))


def _convT_to_torch(x: Any) -> Any:
    # (*k, in, out) -> (in, out, *k)
    n = x.ndim
    return x.transpose((n - 2, n - 1, *range(n - 2)))


def _convT_from_torch(x: Any) -> Any:
    # (in, out, *k) -> (*k, in, out)
    n = x.ndim
    return x.transpose((*range(2, n), 0, 1))


def _shape_fn(fn: Callable[[Any], Any]) -> Callable[[tuple], tuple]:
    import numpy as np

    def shape(s: tuple) -> tuple:
        return tuple(fn(np.empty(s, np.bool_)).shape)

    return shape


def _torch_rules() -> dict[
    type, dict[str, tuple[str, Callable | None, Callable | None]]
]:
    from ramie._src.nn import (
        conv,
        conv_transpose,
        embedding,
        group_norm,
        linear,
        normalization,
    )

    norm = {"scale": ("weight", None, None), "bias": ("bias", None, None)}
    rules: dict[type, dict[str, tuple[str, Callable | None, Callable | None]]] = {
        linear.Linear: {
            "kernel": ("weight", _swap_last2, _swap_last2),
            "bias": ("bias", None, None),
        },
        conv.Conv: {
            "kernel": ("weight", _conv_to_torch, _conv_from_torch),
            "bias": ("bias", None, None),
        },
        normalization.LayerNorm: norm,
        normalization.RMSNorm: norm,
        group_norm.GroupNorm: norm,
        normalization.BatchNorm: {
            **norm,
            "mean": ("running_mean", None, None),
            "var": ("running_var", None, None),
        },
        embedding.Embed: {"embedding": ("weight", None, None)},
    }
    rules[conv_transpose.ConvTranspose] = {
        "kernel": ("weight", _convT_to_torch, _convT_from_torch),
        "bias": ("bias", None, None),
    }
    return rules


def slots(
    model: Any, convention: str | None, *, api: str, rng: bool | None = None
) -> list[Slot]:
    """The named arrays of ``model`` under ``convention``.

    ``rng``: include RNG state (``RngState`` Variables: keys and counts); None
    means the convention's default (ramie names: yes; torch: no).
    """
    if convention not in CONVENTIONS:
        raise CheckpointError(
            f"{api}: unknown convention {convention!r}; use one of {CONVENTIONS}."
        )
    flat = list(to_flat_state(graph_api.state(model)))
    if rng is None:
        rng = convention is None
    if not rng:
        flat = [(p, v) for p, v in flat if not isinstance(v, RngState)]
    if convention is None:
        return [Slot(dotted(tuple(p)), v) for p, v in flat]
    rules = _torch_rules()
    owners: dict[tuple, type] = {}
    for path, node in graph_api.iter_graph(model):
        if isinstance(node, Module):
            owners[tuple(path)] = type(node)
    out = []
    for path, var in flat:
        path = tuple(path)
        owner = owners.get(path[:-1])
        rule = None
        for cls, table in rules.items():
            if owner is not None and issubclass(owner, cls):
                rule = table.get(str(path[-1]))
                break
        if rule is None:
            out.append(Slot(dotted(path), var))
            continue
        name, to_ext, from_ext = rule
        ext = dotted((*path[:-1], name))
        if to_ext is None:
            out.append(Slot(ext, var))
        else:
            out.append(Slot(ext, var, to_ext, from_ext, _shape_fn(to_ext)))
    return out


def ignored(convention: str | None) -> Callable[[str], bool]:
    """File names a convention ignores on load (PyTorch's ``num_batches_tracked``)."""
    if convention == "torch":
        return lambda name: name.endswith("num_batches_tracked")
    return lambda name: False
