"""Notebook display through treescope (optional dependency), and ``display``.

Variables, graph objects and States define ``__treescope_repr__``, which calls
the renderers here: a module renders as a foldable ``Linear(kernel=..., ...)``
whose first line carries its sizes (``# Param: 12 (48 B)``), a Variable as
``Param(value=<array>)`` with its metadata, a State as a foldable dict, and
``List``/``Dict``/``Sequential`` containers as lists and dicts. Treescope
itself handles arrays, shared references and cycles. Nothing here is imported
until treescope asks for it, so treescope stays optional
(``pip install ramie[display]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython  # type: ignore[import-not-found]
    except ImportError:
        return False
    return get_ipython() is not None


def display(*args: Any) -> None:
    """Show objects with treescope in a notebook; ``print`` them elsewhere.

    Args:
        *args: Models, Variables, States or any other values.

    Example:
        >>> import ramie
        >>> ramie.display(ramie.Linear(2, 3, rngs=ramie.Rngs(0)))
        Linear(2 -> 3, kernel=f32[2,3], bias=f32[3])
    """
    if _in_ipython():
        try:
            import treescope
        except ImportError:
            pass
        else:
            for x in args:
                treescope.display(x, ignore_exceptions=True, autovisualize=True)
            return
    for x in args:
        print(x)


def _sizes_comment(node: Any) -> str:
    from ramie._src.display.sizes import format_size, variable_stats

    try:
        stats = variable_stats(node)
    except Exception:  # half-built objects still render, without sizes
        return ""
    return ", ".join(f"{t.__name__}: {format_size(*sb)}" for t, sb in stats.items())


def _constructor(
    object_type: type,
    attributes: Mapping[str, Any],
    path: str | None,
    subtree_renderer: Any,
    comment: str = "",
) -> Any:
    """``Type(a=..., b=...)`` with an optional ``# comment`` on the first line."""
    from treescope import rendering_parts as rp

    prefix = rp.siblings(
        rp.roundtrip_condition(roundtrip=rp.text("<")),
        rp.maybe_qualified_type_name(object_type),
        "(",
    )
    suffix = rp.siblings(")", rp.roundtrip_condition(roundtrip=rp.text(">")))
    children = []
    items = list(attributes.items())
    for i, (name, value) in enumerate(items):
        child_path = None if path is None else f"{path}.{name}"
        if i < len(items) - 1:
            comma = rp.siblings(",", rp.fold_condition(collapsed=rp.text(" ")))
        else:
            comma = rp.fold_condition(expanded=rp.text(","))
        children.append(
            rp.build_full_line_with_annotations(
                rp.siblings_with_annotations(
                    f"{name}=", subtree_renderer(value, path=child_path)
                ),
                comma,
            )
        )
    annotation = rp.comment_color(rp.text(f"  # {comment}")) if comment else None
    return rp.build_foldable_tree_node_from_children(
        prefix=prefix,
        children=children,
        suffix=suffix,
        path=path,
        first_line_annotation=annotation,
    )


def _ordered_attrs(obj: Any) -> dict[str, Any]:
    """Data attributes first (definition order), then static ones."""
    from ramie._src.core.graph import registry
    from ramie._src.display.layer_formats import _children

    children = [(str(k), v) for k, v in _children(obj)]
    data = {k: v for k, v in children if registry.has_data(v)}
    static = {k: v for k, v in children if k not in data and not k.startswith("_")}
    return {**data, **static}


def render_object(obj: Any, path: str | None, subtree_renderer: Any) -> Any:
    """``__treescope_repr__`` of Modules and other graph objects.

    Example:
        >>> import treescope, ramie
        >>> text = treescope.render_to_text(ramie.Linear(2, 3, rngs=ramie.Rngs(0)))
        >>> text.splitlines()[0]
        'Linear(  # Param: 9 (36 B)'
    """
    from treescope import repr_lib

    name = type(obj).__name__
    if name == "List" and type(obj).__module__.startswith("ramie."):
        return repr_lib.render_list_wrapper(
            object_type=type(obj),
            wrapped_sequence=[v for _, v in obj._graph_children()],
            path=path,
            subtree_renderer=subtree_renderer,
        )
    if name == "Dict" and type(obj).__module__.startswith("ramie."):
        return repr_lib.render_dictionary_wrapper(
            object_type=type(obj),
            wrapped_dict=dict(obj._graph_children()),
            path=path,
            subtree_renderer=subtree_renderer,
        )
    return _constructor(
        type(obj), _ordered_attrs(obj), path, subtree_renderer, _sizes_comment(obj)
    )


def render_variable(var: Any, path: str | None, subtree_renderer: Any) -> Any:
    """``__treescope_repr__`` of Variables: ``Param(value=..., **metadata)``.

    Example:
        >>> import jax.numpy as jnp, treescope, ramie
        >>> text = treescope.render_to_text(ramie.Param(jnp.zeros((2, 3))))
        >>> text.splitlines()[0]
        'Param(  # 6 (24 B)'
    """
    from ramie._src.display.sizes import format_size, size_and_bytes

    attrs = {"value": var._raw}
    attrs.update((k, v) for k, v in var._meta.items() if k != "eager_sharding")
    size, nbytes = size_and_bytes(var._raw)
    comment = format_size(size, nbytes) if size else ""
    return _constructor(type(var), attrs, path, subtree_renderer, comment)


def render_state(state: Any, path: str | None, subtree_renderer: Any) -> Any:
    """``__treescope_repr__`` of States: a foldable ``State({...})``.

    Example:
        >>> import treescope, ramie
        >>> state = ramie.state(ramie.Linear(2, 3, rngs=ramie.Rngs(0)))
        >>> "kernel" in treescope.render_to_text(state)
        True
    """
    from treescope import repr_lib

    return repr_lib.render_dictionary_wrapper(
        object_type=type(state),
        wrapped_dict=dict(state),
        path=path,
        subtree_renderer=subtree_renderer,
    )
