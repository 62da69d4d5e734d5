"""Console output of the demo: the header, per-epoch lines and progress bars.

Lines go to stdout through :func:`echo` (``tqdm.write`` while a bar is shown,
so bars and lines never overwrite each other); progress bars go to stderr and
disappear when their epoch ends, leaving one line per epoch.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import jax


def echo(line: str = "") -> None:
    """Print one line to stdout without breaking an active progress bar."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stdout)


def progress(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar over ``total`` steps, or a silent stand-in when disabled.

    Args:
        total: Number of steps in the bar.
        desc: Label in front of the bar.
        enabled: Show the bar (``--quiet`` turns it off). It is also hidden
            when stderr is not a terminal, so logs and CI output stay clean.

    Returns:
        A ``tqdm`` object (``update``, ``set_postfix_str``, ``close``).
    """
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        leave=False,
        disable=None if enabled else True,  # None: off when stderr is no TTY
        dynamic_ncols=True,
        file=sys.stderr,
        unit="step",
    )


def device_line() -> str:
    """One line naming the JAX backend and device that the demo runs on.

    Example:
        >>> device_line().startswith("device: ")
        True
    """
    device = jax.devices()[0]
    count = jax.device_count()
    extra = f", 1 of {count} devices" if count > 1 else ""
    kind = str(getattr(device, "device_kind", "") or device.platform)
    name = kind if kind.lower() != device.platform else device.platform.upper()
    cores = os.cpu_count() or 1
    return (
        f"device: {name} ({device}{extra}), "
        f"host with {cores} CPU core{'s' if cores != 1 else ''}"
    )


def count_params(model: Any) -> tuple[int, int]:
    """Number of trainable parameters (``Param``) and of other state values.

    Example:
        >>> import ramie
        >>> count_params(ramie.Linear(3, 2, rngs=ramie.Rngs(0)))
        (8, 0)
        >>> # Abstract models (ramie.eval_shape) work too: nothing is allocated.
        >>> norm = ramie.eval_shape(lambda: ramie.BatchNorm(4, rngs=ramie.Rngs(0)))
        >>> count_params(norm)
        (8, 8)
    """
    import ramie

    _, params, rest = ramie.split(model, ramie.Param, ...)
    sizes = [int(getattr(x, "size", 1)) for x in jax.tree.leaves(params)]
    other = [int(getattr(x, "size", 1)) for x in jax.tree.leaves(rest)]
    return sum(sizes), sum(other)


def model_summary(
    model: Any, *inputs: Any, depth: int | None = None, width: int = 120
) -> str:
    """``ramie.tabulate`` of ``model`` on ``inputs`` and a one-line count.

    Args:
        model: The model.
        *inputs: Example inputs (arrays or ``jax.ShapeDtypeStruct``).
        depth: Deepest level of sub-modules to list (None: all).
        width: Width of the table in characters.

    Returns:
        The table then the parameter count; without ``rich``, the count.
    """
    import ramie

    params, other = count_params(model)
    name = type(model).__name__
    count = f"{name}: {params:,} trainable params, {other:,} other state values"
    try:
        table = ramie.tabulate(
            model, *inputs, depth=depth, console_kwargs={"width": width}
        )
    except ImportError:
        return count
    return f"{table}\n{count}"


def format_seconds(seconds: float) -> str:
    """``'1m 05.3s'`` or ``'4.2s'``.

    Example:
        >>> format_seconds(4.21), format_seconds(65.3)
        ('4.2s', '1m 05.3s')
    """
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m {rest:04.1f}s"
