"""Per-layer summaries for reprs: ``Linear(784 -> 256, ...)``.

Display never leaks into layer classes: instead of a ``__repr__`` on every
layer, this module keeps a registry from layer type to a *formatter*, a
function returning the parts of the layer's one-line summary:

* a ``str`` is printed as is (``"784 -> 256"``, ``"momentum=0.9"``);
* a ``(name, value)`` pair is printed as ``name=<value>``, with ``value``
  rendered like any other attribute (Variables as ``f32[784,256]``);
* a ``(None, value)`` pair is a positional child (Sequential's layers).

Layers are registered by class, or by class name for ramie's own layers (so
this module never imports the layer files). A formatter that raises, and any
type without one, falls back to :func:`generic_parts`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from ramie._src.core.graph import registry
from ramie._src.display.arrays import short_dtype

Part = str | tuple[str | None, Any]
Formatter = Callable[[Any], list[Part]]

_BY_TYPE: dict[type, Formatter] = {}
_BY_NAME: dict[str, Formatter] = {}
_NOTSET = object()
STATIC_MAX = 28


def register_formatter(layer: type | str, fn: Formatter | None = None) -> Any:
    """Register the repr summary of a layer type (usable as a decorator).

    Args:
        layer: The layer class, or the class name of a ramie layer
            (``"Conv"`` matches classes named ``Conv`` defined under ``ramie.``).
        fn: ``fn(layer) -> list of parts`` (see the module docstring).

    Returns:
        ``fn`` (or a decorator when ``fn`` is omitted).

    Example:
        >>> import ramie
        >>> from ramie._src.display.layer_formats import register_formatter, data_parts
        >>> class Scale(ramie.Module):
        ...     def __init__(self, n):
        ...         self.n = n
        ...         self.w = ramie.Param(ramie.initializers.ones(None, (n,)))
        >>> _ = register_formatter(Scale, lambda m: [f"n={m.n}", *data_parts(m)])
        >>> Scale(3)
        Scale(n=3, w=f32[3])
    """
    if fn is None:
        return lambda f: register_formatter(layer, f)
    if isinstance(layer, str):
        _BY_NAME[layer] = fn
    else:
        _BY_TYPE[layer] = fn
    return fn


def formatter_for(obj: Any) -> Formatter | None:
    """The formatter registered for ``type(obj)`` (exact type), or None."""
    t = type(obj)
    fn = _BY_TYPE.get(t)
    if fn is None and t.__module__.startswith("ramie."):
        fn = _BY_NAME.get(t.__qualname__)
    return fn


# ------------------------------------------------------------------ helpers
def short_static(value: Any, limit: int = STATIC_MAX) -> str | None:
    """Compact text of a static attribute, or None when it is too long.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> short_static(jax.nn.relu), short_static(jnp.bfloat16), short_static((3, 3))
        ('relu', 'bf16', '(3, 3)')
    """
    if isinstance(value, type):
        if hasattr(value, "dtype") and not isinstance(value.dtype, property):
            try:
                return short_dtype(value.dtype)  # jnp.float32 and friends
            except Exception:  # pragma: no cover - exotic metaclasses
                pass
        return value.__name__
    if isinstance(value, np.dtype):
        return short_dtype(value)
    if (
        callable(value)
        and hasattr(value, "__name__")
        and not registry.is_simple_static(value)
    ):
        return str(value.__name__)
    text = repr(value)
    if "\n" in text or len(text) > limit:
        return None
    return text


def _children(obj: Any) -> list[tuple[Hashable, Any]]:
    """Children in definition order for plain attribute objects."""
    from ramie._src.core.pytree import Pytree

    if type(obj)._graph_children is Pytree._graph_children:
        return list(obj.__dict__.items())
    return list(obj._graph_children())


def data_parts(obj: Any, *first: str) -> list[Part]:
    """``(name, value)`` for every data attribute; the ``first`` names lead.

    Example:
        >>> import ramie
        >>> [k for k, _ in data_parts(ramie.Linear(2, 3, rngs=ramie.Rngs(0)), "kernel")]
        ['kernel', 'bias']
    """
    children = _children(obj)
    data = {k: v for k, v in children if registry.has_data(v)}
    out: list[Part] = [(k, data.pop(k)) for k in first if k in data]
    out.extend((str(k), v) for k, v in data.items())
    return out


def flags(obj: Any, **defaults: Any) -> list[Part]:
    """``name=value`` for the attributes that differ from the given defaults.

    Example:
        >>> import ramie
        >>> flags(ramie.Linear(2, 3, use_bias=False, rngs=ramie.Rngs(0)), use_bias=True)
        ['use_bias=False']
    """
    out: list[Part] = []
    for name, default in defaults.items():
        value = getattr(obj, name, _NOTSET)
        if value is _NOTSET or _same(value, default):
            continue
        text = short_static(value, limit=40)
        if text is not None:
            out.append(f"{name}={text}")
    return out


def _same(value: Any, default: Any) -> bool:
    if value is default:
        return True
    if isinstance(default, tuple) and isinstance(value, (int, tuple, list)):
        # `strides=1` and `strides=(1, 1)` both mean the default
        if isinstance(value, int):
            return all(d == value for d in default)
        return tuple(value) == default or (
            len(default) == 1 and all(v == default[0] for v in value)
        )
    try:
        return bool(value == default)
    except Exception:
        return False


def _arrow(a: Any, b: Any) -> str:
    def fmt(x: Any) -> str:
        if isinstance(x, (tuple, list)):
            return "x".join(str(i) for i in x) if len(x) != 1 else str(x[0])
        return str(x)

    return f"{fmt(a)} -> {fmt(b)}"


def generic_parts(obj: Any) -> list[Part]:
    """Fallback summary: data attributes, then short static attributes.

    Static attributes that are None, private or long are left out.

    Example:
        >>> import jax, ramie
        >>> class Block(ramie.Module):
        ...     def __init__(self):
        ...         self.linear = ramie.Linear(2, 2, rngs=ramie.Rngs(0))
        ...         self.act = jax.nn.gelu
        >>> [p if isinstance(p, str) else p[0] for p in generic_parts(Block())]
        ['linear', 'act=gelu']
    """
    parts = data_parts(obj)
    for k, v in _children(obj):
        if (
            registry.has_data(v)
            or v is None
            or (isinstance(k, str) and k.startswith("_"))
        ):
            continue
        text = short_static(v)
        if text is not None and text != k:  # `promote_dtype=promote_dtype` is noise
            parts.append(f"{k}={text}")
    return parts


# ------------------------------------------------------------ built-ins
def _dtype_flag(m: Any) -> list[Part]:
    return flags(m, dtype=None)


@register_formatter("Linear")
def _linear(m: Any) -> list[Part]:
    return [
        _arrow(m.in_features, m.out_features),
        *flags(m, use_bias=True),
        *_dtype_flag(m),
        *data_parts(m, "kernel", "bias"),
    ]


@register_formatter("LinearGeneral")
def _linear_general(m: Any) -> list[Part]:
    return [
        _arrow(m.in_features, m.out_features),
        *flags(m, axis=(-1,), use_bias=True),
        *_dtype_flag(m),
        *data_parts(m, "kernel", "bias"),
    ]


@register_formatter("Einsum")
def _einsum(m: Any) -> list[Part]:
    return [repr(m.einsum_str), *_dtype_flag(m), *data_parts(m, "kernel", "bias")]


def _conv(**defaults: Any) -> Formatter:
    def fmt(m: Any) -> list[Part]:
        size = m.kernel_size
        return [
            _arrow(m.in_features, m.out_features),
            f"kernel_size={tuple(size) if isinstance(size, (tuple, list)) else size}",
            *flags(m, **defaults),
            *_dtype_flag(m),
            *data_parts(m, "kernel", "bias"),
        ]

    return fmt


_CONV_DEFAULTS = dict(strides=(1,), padding="SAME", use_bias=True)
register_formatter(
    "Conv",
    _conv(
        **_CONV_DEFAULTS,
        input_dilation=(1,),
        kernel_dilation=(1,),
        feature_group_count=1,
    ),
)
register_formatter("ConvTranspose", _conv(**_CONV_DEFAULTS, kernel_dilation=None))


@register_formatter("Embed")
def _embed(m: Any) -> list[Part]:
    return [
        _arrow(m.num_embeddings, m.features),
        *_dtype_flag(m),
        *data_parts(m, "embedding"),
    ]


def _norm(**defaults: Any) -> Formatter:
    def fmt(m: Any) -> list[Part]:
        return [
            str(m.num_features),
            *flags(m, **defaults),
            *_dtype_flag(m),
            *data_parts(m, "scale", "bias", "mean", "var"),
        ]

    return fmt


register_formatter(
    "BatchNorm",
    _norm(
        momentum=0.99, epsilon=1e-5, axis=-1, use_running_average=False, axis_name=None
    ),
)
register_formatter("LayerNorm", _norm(epsilon=1e-6, reduction_axes=-1, feature_axes=-1))
register_formatter("RMSNorm", _norm(epsilon=1e-6, reduction_axes=-1, feature_axes=-1))
register_formatter("GroupNorm", _norm(num_groups=32, group_size=None, epsilon=1e-6))
register_formatter("InstanceNorm", _norm(epsilon=1e-6))


@register_formatter("Dropout")
def _dropout(m: Any) -> list[Part]:
    return [
        str(m.rate),
        *flags(m, broadcast_dims=(), deterministic=False, rng_collection="dropout"),
        *data_parts(m),
    ]


@register_formatter("MultiHeadAttention")
def _attention(m: Any) -> list[Part]:
    parts: list[Part] = [f"{m.num_heads} heads", _arrow(m.in_features, m.out_features)]
    if getattr(m, "qkv_features", m.in_features) != m.in_features:
        parts.append(f"qkv_features={m.qkv_features}")
    parts += flags(m, dropout_rate=0.0, decode=False, deterministic=None)
    return [*parts, *_dtype_flag(m), *data_parts(m, "query", "key", "value", "out")]


def _cell(m: Any) -> list[Part]:
    return [_arrow(m.in_features, m.hidden_features), *_dtype_flag(m), *data_parts(m)]


for _name in ("LSTMCell", "OptimizedLSTMCell", "GRUCell", "SimpleCell"):
    register_formatter(_name, _cell)


@register_formatter("RNN")
def _rnn(m: Any) -> list[Part]:
    return [
        *flags(
            m, time_major=False, return_carry=False, reverse=False, keep_order=False
        ),
        *data_parts(m, "cell"),
    ]


@register_formatter("LoRA")
def _lora(m: Any) -> list[Part]:
    return [
        _arrow(m.in_features, m.out_features),
        f"rank={m.lora_rank}",
        *data_parts(m, "lora_a", "lora_b"),
    ]


@register_formatter("LoRALinear")
def _lora_linear(m: Any) -> list[Part]:
    return [_arrow(m.in_features, m.out_features), *data_parts(m, "kernel", "bias")]


@register_formatter("PReLU")
def _prelu(m: Any) -> list[Part]:
    return data_parts(m, "negative_slope")


@register_formatter("Bidirectional")
def _bidirectional(m: Any) -> list[Part]:
    merge = getattr(m, "merge_fn", None)
    name = getattr(merge, "__name__", "")
    return [
        *flags(m, time_major=False, return_carry=False),
        *([f"merge_fn={name}"] if name and "concatenate" not in name else []),
        *data_parts(m, "forward_rnn", "backward_rnn"),
    ]


@register_formatter("SpectralNorm")
def _spectral_norm(m: Any) -> list[Part]:
    return [
        *flags(m, n_steps=1, epsilon=1e-12, use_running_average=False),
        *data_parts(m, "layer_instance"),
    ]


@register_formatter("WeightNorm")
def _weight_norm(m: Any) -> list[Part]:
    return [
        *flags(m, feature_axes=-1, use_scale=True, epsilon=1e-12),
        *data_parts(m, "layer_instance"),
    ]


@register_formatter("Sequential")
def _sequential(m: Any) -> list[Part]:
    layers = m.__dict__.get("layers")
    rest = [(k, v) for k, v in data_parts(m) if k != "layers"]
    if layers is None:
        return generic_parts(m)
    return [*((None, f) for f in layers), *rest]


@register_formatter("List")
def _list(m: Any) -> list[Part]:
    return [(None, v) for _, v in m._graph_children()]


@register_formatter("Dict")
def _dict(m: Any) -> list[Part]:
    return [(str(k), v) for k, v in m._graph_children()]


@register_formatter("RngStream")
def _rng_stream(s: Any) -> list[Part]:
    parts: list[Part] = [repr(s.tag)]
    shape = getattr(s.key[...], "shape", ())
    if shape:
        parts.append(f"split={tuple(shape)}")
    return parts


@register_formatter("Rngs")
def _rngs(r: Any) -> list[Part]:
    return [", ".join(r._names())]
