"""Training curves as a PNG, drawn with matplotlib's object API.

The figure is built from ``matplotlib.figure.Figure`` and rendered by the Agg
canvas directly, without ``pyplot``: no GUI backend is ever selected, no global
figure state is touched (so the demo can run inside a test process or a
notebook), and nothing needs a display.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Moving average over ``window`` points (shorter at the start)."""
    if len(values) == 0 or window <= 1:
        return values
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    out = np.empty_like(values)
    for i in range(len(values)):
        lo = max(0, i + 1 - window)
        out[i] = (cumsum[i + 1] - cumsum[lo]) / (i + 1 - lo)
    return out


def save_curves(
    path: str,
    *,
    title: str,
    step_losses: Sequence[float],
    steps_per_epoch: int,
    eval_name: str,
    eval_values: Sequence[float],
    eval_label: str,
    eval_as_percent: bool = False,
    eval_losses: Sequence[float] | None = None,
    eval_loss_label: str = "held out",
) -> str:
    """Plot the training loss per step and one evaluation curve per epoch.

    The left panel shows the per-step training loss (faint) with its moving
    average, plus an optional per-epoch evaluation loss; the right panel shows
    ``eval_values`` (e.g. test accuracy) per epoch.

    Args:
        path: Where to write the PNG; parent folders are created.
        title: Figure title.
        step_losses: Training loss of every step.
        steps_per_epoch: Steps per epoch (places the epoch points on the x axis).
        eval_name: Title of the right panel.
        eval_values: One value per epoch.
        eval_label: y-axis label of the right panel.
        eval_as_percent: Show ``eval_values`` (fractions) as percentages.
        eval_losses: Optional per-epoch evaluation loss for the left panel.
        eval_loss_label: Legend label of ``eval_losses``.

    Returns:
        The absolute path of the written file.

    Example:
        >>> import os, tempfile
        >>> out = save_curves(os.path.join(tempfile.mkdtemp(), "c.png"), title="t",
        ...                   step_losses=[2.0, 1.0, 0.5, 0.4], steps_per_epoch=2,
        ...                   eval_name="acc", eval_values=[0.5, 0.9], eval_label="%",
        ...                   eval_as_percent=True)
        >>> os.path.getsize(out) > 1000
        True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    losses = np.asarray(step_losses, np.float64)
    steps = np.arange(1, len(losses) + 1)
    epochs_x = steps_per_epoch * np.arange(1, len(eval_values) + 1)

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_eval = fig.subplots(1, 2)

    ax_loss.plot(
        steps, losses, color="tab:blue", alpha=0.25, linewidth=1, label="train (step)"
    )
    window = max(1, min(steps_per_epoch, len(losses) // 10))
    ax_loss.plot(
        steps,
        _smooth(losses, window),
        color="tab:blue",
        linewidth=2,
        label=f"train (mean of {window})",
    )
    if eval_losses is not None and len(eval_losses):
        ax_loss.plot(
            epochs_x, eval_losses, "o-", color="tab:orange", label=eval_loss_label
        )
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.set_title("loss")
    if len(losses) and losses.min() > 0 and losses.max() / losses.min() > 20:
        ax_loss.set_yscale("log")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()

    values = np.asarray(eval_values, np.float64) * (100.0 if eval_as_percent else 1.0)
    ax_eval.plot(np.arange(1, len(values) + 1), values, "o-", color="tab:green")
    for x, v in zip(np.arange(1, len(values) + 1), values):
        text = f"{v:.1f}%" if eval_as_percent else f"{v:.3f}"
        ax_eval.annotate(
            text,
            (x, v),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    ax_eval.set_xlabel("epoch")
    ax_eval.set_ylabel(eval_label)
    ax_eval.set_title(eval_name)
    if len(values) <= 20:
        ax_eval.set_xticks(np.arange(1, len(values) + 1))
    ax_eval.margins(y=0.15)  # room for the labels above the points
    ax_eval.grid(alpha=0.3)

    fig.suptitle(title)
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
