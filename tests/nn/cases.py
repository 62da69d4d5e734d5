"""The registry of layer cases: one or more per exported layer.

Every ``tests/nn/cases_*.py`` module defines ``CASES: list[LayerCase]``;
:func:`collect` gathers them. ``test_common.py`` runs the same checks on every case
(jit, grad, vmap, bfloat16, split/merge round trip, repr, check_grads,
numerical equality with Flax NNX) and fails when an exported layer has no case.
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class LayerCase:
    """How to build, feed and check one layer configuration.

    Attributes:
        name: Unique id, e.g. ``"Linear-bias"``.
        layer: The ramie class this case covers (for the completeness check).
        make: ``make(rngs) -> ramie module``.
        inputs: ``inputs(key) -> tuple of call args`` (float32 arrays).
        make_flax: ``make_flax(flax_rngs) -> flax.nnx module`` with the same
            configuration, or None when Flax has no equivalent.
        call: ``call(module, *args) -> output`` (default ``module(*args)``);
            must be a pure function of the module's state and the inputs.
        train: Put the module in train mode first (``module.train()``);
            otherwise ``module.eval()``.
        copy_weights: Copy ramie's state into the Flax module before comparing
            (default True); set False if both initialise identically anyway.
        rtol, atol: Tolerance of the float32 comparison with Flax.
        grad_check: Run ``jax.test_util.check_grads`` (order 1) on the inputs.
        bf16: Run the bfloat16 smoke check (param_dtype/dtype via ``make_bf16``).
        make_bf16: ``make_bf16(rngs) -> module`` computing in bfloat16, or None
            to skip that check for this case.
        vmap: Run the vmap-over-batch check.
    """

    name: str
    layer: type
    make: Callable[[Any], Any]
    inputs: Callable[[jax.Array], tuple]
    make_flax: Callable[[Any], Any] | None = None
    call: Callable[..., Any] | None = None
    train: bool = False
    copy_weights: bool = True
    rtol: float = 1e-5
    atol: float = 1e-5
    grad_check: bool = True
    bf16: bool = True
    make_bf16: Callable[[Any], Any] | None = None
    vmap: bool = True

    def run(self, module: Any, *args: Any) -> Any:
        return self.call(module, *args) if self.call is not None else module(*args)


def _numpy_rng(key: jax.Array) -> np.random.Generator:
    return np.random.default_rng(int(np.asarray(jax.random.key_data(key)).sum()))


def normal(*shape: int, dtype: Any = jnp.float32) -> Callable[[jax.Array], tuple]:
    """An ``inputs`` function giving one standard-normal array.

    Drawn with NumPy (seeded from the key): ``jax.random`` would compile once per
    shape, which dominates the run time of the layer suite.
    """
    return lambda key: (jnp.asarray(_numpy_rng(key).standard_normal(shape), dtype),)


def collect() -> list[LayerCase]:
    """All cases of all ``cases_*.py`` modules (imported lazily, no cycles)."""
    cases: list[LayerCase] = []
    here = pathlib.Path(__file__).parent
    for path in sorted(here.glob("cases_*.py")):
        module = importlib.import_module(path.stem)
        cases.extend(module.CASES)
    names = [c.name for c in cases]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"duplicate layer case names: {sorted(dupes)}")
    return cases
