"""``CheckpointManager``: the checkpoints of one training run in one directory.

Each save goes to ``<directory>/step_<step>`` through :func:`save` (so it is
durable and strict to restore). The manager keeps the newest ``max_to_keep``
checkpoints, or with ``keep_best=("loss", "min")`` the best ``max_to_keep`` by
that metric plus always the newest (training resumes from it). Old
checkpoints are deleted only after the new one is committed. Steps are found
by listing the directory, so a new manager (a restarted run) sees them.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

from ramie._src.checkpoint import api, async_save, durable
from ramie.errors import CheckpointError

_STEP = re.compile(r"^step_(\d+)$")


class CheckpointManager:
    """Save every ``save_every`` steps into ``directory`` and keep the last or best.

    Args:
        directory: where the ``step_<n>`` checkpoints go (created if needed).
        max_to_keep: how many to keep (None keeps all).
        keep_best: ``(metric, "min" | "max")``: keep the best ``max_to_keep``
            by ``metrics[metric]`` given to :meth:`save` (the newest is kept too).
        save_every: :meth:`save` writes only when ``step % save_every == 0``.
        async_save: write on a background thread (see ``save(async_save=True)``);
            a pending save is finished before the next one and at exit.

    Example:
        >>> import tempfile, ramie
        >>> model = ramie.nn.Linear(2, 3, rngs=ramie.Rngs(0))
        >>> directory = tempfile.mkdtemp()
        >>> manager = ramie.checkpoint.CheckpointManager(directory, max_to_keep=2)
        >>> for step in range(1, 5):
        ...     _ = manager.save(step, model)
        >>> manager.all_steps(), manager.latest_step()
        ([3, 4], 4)
        >>> model = manager.restore(model=model)
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int | None = None,
        keep_best: tuple[str, str] | None = None,
        save_every: int = 1,
        async_save: bool = False,
    ):
        if keep_best is not None and (
            len(keep_best) != 2 or keep_best[1] not in ("min", "max")
        ):
            raise ValueError(
                "CheckpointManager(keep_best=...) takes (metric, 'min' | 'max'), "
                f"got {keep_best!r}; e.g. keep_best=('loss', 'min')."
            )
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}.")
        self.directory = os.path.abspath(os.fspath(directory))
        self.max_to_keep = max_to_keep
        self.keep_best = keep_best
        self.save_every = save_every
        self.async_save = async_save
        os.makedirs(self.directory, exist_ok=True)

    def step_path(self, step: int) -> str:
        """The directory of the checkpoint of ``step``."""
        return os.path.join(self.directory, f"step_{step:08d}")

    def all_steps(self) -> list[int]:
        """Steps with a complete checkpoint, ascending (partial ones are invisible)."""
        steps = []
        for name in os.listdir(self.directory):
            m = _STEP.match(name)
            if m and durable.is_complete(os.path.join(self.directory, name)):
                steps.append(int(m.group(1)))
        return sorted(steps)

    def latest_step(self) -> int | None:
        """The newest step with a complete checkpoint, or None."""
        async_save.wait_until_finished()
        steps = self.all_steps()
        return steps[-1] if steps else None

    def should_save(self, step: int) -> bool:
        """Whether :meth:`save` at ``step`` writes (``step % save_every == 0``)."""
        return step % self.save_every == 0

    def save(
        self,
        step: int,
        model: Any,
        *,
        optimizer: Any = None,
        metrics: dict[str, float] | None = None,
        metadata: dict | None = None,
        force: bool = False,
    ) -> bool:
        """Save ``model`` (and ``optimizer``) as ``step``; return whether it wrote.

        Args:
            step: the training step (an int).
            model, optimizer: as for ``ramie.checkpoint.save``.
            metrics: numbers recorded with the checkpoint; ``keep_best`` ranks by them.
            metadata: JSON-serialisable dict recorded in the manifest.
            force: save even if ``step`` is not a multiple of ``save_every``.
        """
        if not force and not self.should_save(step):
            return False
        if self.keep_best is not None and self.keep_best[0] not in (metrics or {}):
            raise CheckpointError(
                f"CheckpointManager.save(): keep_best ranks by {self.keep_best[0]!r} "
                f"but metrics={metrics!r} lacks it; pass "
                f"metrics={{{self.keep_best[0]!r}: value}}."
            )
        if self.async_save:
            # the previous async save is finished first: prune only complete ones
            async_save.wait_until_finished()
            self._prune()
        meta = dict(metadata or {})
        if metrics is not None:
            meta["metrics"] = {k: float(v) for k, v in metrics.items()}
        api.save(
            self.step_path(step),
            model,
            optimizer=optimizer,
            step=step,
            metadata=meta,
            async_save=self.async_save,
        )
        if not self.async_save:
            self._prune()
        return True

    def wait_until_finished(self) -> None:
        """Finish a pending async save (raising its error) and prune old ones."""
        async_save.wait_until_finished()
        self._prune()

    def _metric(self, step: int) -> float:
        assert self.keep_best is not None
        value = self.metrics(step).get(self.keep_best[0])
        return float("nan") if value is None else value

    def _prune(self) -> None:
        if self.max_to_keep is None:
            return
        steps = self.all_steps()
        if len(steps) <= self.max_to_keep:
            return
        if self.keep_best is None:
            keep = set(steps[-self.max_to_keep :])
        else:
            sign = 1.0 if self.keep_best[1] == "min" else -1.0
            ranked = sorted(steps, key=lambda s: (sign * self._metric(s), -s))
            keep = set(ranked[: self.max_to_keep]) | {steps[-1]}
        for step in steps:
            if step not in keep:
                shutil.rmtree(self.step_path(step), ignore_errors=True)

    def restore(
        self,
        step: int | None = None,
        *,
        model: Any,
        optimizer: Any = None,
        strict: bool = True,
        allow_cast: bool = False,
    ) -> Any:
        """Restore ``step`` (default: the latest) into ``model`` and ``optimizer``.

        Returns what ``ramie.checkpoint.restore`` returns.

        Raises:
            CheckpointError: there is no checkpoint (of ``step``) in the directory.
        """
        if step is None:
            step = self.latest_step()
            if step is None:
                raise CheckpointError(
                    f"CheckpointManager.restore(): no checkpoint in {self.directory}."
                )
        elif step not in self.all_steps():
            raise CheckpointError(
                f"CheckpointManager.restore(): no checkpoint of step {step} in "
                f"{self.directory}; available: {self.all_steps()}."
            )
        return api.restore(
            self.step_path(step),
            model,
            optimizer=optimizer,
            strict=strict,
            allow_cast=allow_cast,
        )

    def metrics(self, step: int) -> dict[str, float]:
        """The metrics recorded with ``step``."""
        return dict(api.info(self.step_path(step)).metadata.get("metrics", {}))

    def __repr__(self) -> str:
        return (
            f"CheckpointManager({self.directory!r}, steps={self.all_steps()}, "
            f"max_to_keep={self.max_to_keep}, keep_best={self.keep_best})"
        )
