"""Notebook display through treescope (optional dependency).

``__treescope_repr__`` hooks on Variables, graph objects and States render them
as expandable trees when treescope is installed (``pip install ramie[display]``).
"""

from __future__ import annotations

from typing import Any


def _attrs_of(obj: Any) -> dict[str, Any]:
    return {str(k): v for k, v in obj._graph_children()}


def render_object(obj: Any, path: str | None, subtree_renderer: Any) -> Any:
    import treescope

    return treescope.repr_lib.render_object_constructor(
        object_type=type(obj),
        attributes=_attrs_of(obj),
        path=path,
        subtree_renderer=subtree_renderer,
        roundtrippable=False,
    )


def render_variable(var: Any, path: str | None, subtree_renderer: Any) -> Any:
    import treescope

    attrs = {"value": var._raw, **var._meta}
    return treescope.repr_lib.render_object_constructor(
        object_type=type(var),
        attributes=attrs,
        path=path,
        subtree_renderer=subtree_renderer,
        roundtrippable=False,
    )


def render_state(state: Any, path: str | None, subtree_renderer: Any) -> Any:
    import treescope

    return treescope.repr_lib.render_dictionary_wrapper(
        object_type=type(state),
        wrapped_dict=dict(state),
        path=path,
        subtree_renderer=subtree_renderer,
    )
