"""Paths into an object graph, and the one way they are printed.

A path is a tuple of keys from the root of a graph to a node or a Variable:
attribute names (``str``), list/tuple indices (``int``) and dict keys. Every
message that points at a part of a model prints its path with
:func:`format_path`, as ``decoder.blocks[3].mlp.bias``, so that paths look the
same in errors, reprs and reports.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

# One step of a path (an attribute name, index or dict key), and a whole path.
Key = Hashable
PathParts = tuple[Key, ...]


def _is_identifier(key: str) -> bool:
    return key.isidentifier()


def format_path(path: Sequence[Hashable], root: str = "") -> str:
    """Render a path as ``a.b[3].c`` (or ``<root>`` for the empty path).

    Args:
        path: Keys from the root: attribute names, indices and dict keys.
        root: Optional name of the root object, prefixed to the path.

    Returns:
        The path as a string.

    Example:
        >>> format_path(("decoder", "blocks", 3, "mlp", "bias"))
        'decoder.blocks[3].mlp.bias'
        >>> format_path(())
        '<root>'
        >>> format_path(("opt_state", 0, "mu", "odd key"))
        "opt_state[0].mu['odd key']"
    """
    out = [root] if root else []
    for key in path:
        if isinstance(key, str) and _is_identifier(key):
            out.append(f".{key}" if out else key)
        elif isinstance(key, int) and not isinstance(key, bool):
            out.append(f"[{key}]")
        else:
            out.append(f"[{key!r}]")
    if not out:
        return "<root>"
    return "".join(out)


def format_paths(paths: Sequence[Sequence[Hashable]], limit: int = 10) -> str:
    """Render several paths, one per line, at most ``limit`` then a count.

    Example:
        >>> print(format_paths([("a",), ("b", 0)], limit=1))
            a
            ... and 1 more
    """
    lines = [f"    {format_path(p)}" for p in list(paths)[:limit]]
    if len(paths) > limit:
        lines.append(f"    ... and {len(paths) - limit} more")
    return "\n".join(lines)


def parse_key(key: Hashable) -> Hashable:
    """Turn a key that went through a string-keyed format back into an int.

    Checkpoint formats store every key as a string, so list index ``3`` comes
    back as ``'3'``.

    Example:
        >>> parse_key("3"), parse_key("kernel")
        (3, 'kernel')
    """
    if isinstance(key, str) and key.isdigit():
        return int(key)
    return key
