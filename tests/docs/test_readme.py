"""The README's example runs and does what its comments say."""

from __future__ import annotations

import pathlib
import re

import jax
import numpy as np

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_taste_example_trains_and_round_trips():
    blocks = [b for b in python_blocks(README.read_text()) if "train_step" in b]
    assert len(blocks) == 1, "the README's training example was not found"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    nnx = namespace["nnx"]
    model, optimizer = namespace["model"], namespace["optimizer"]
    # "model and optimizer updated in place": one Adam step per loss
    losses = namespace["losses"]
    assert int(optimizer.step.value) == len(losses) == 200
    # "the loss falls": to well under half of where it started
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    assert model.bn.use_running_average and model.dropout.deterministic
    assert type(model).__name__ == "Block"
    # the functional view round-trips to the same values
    graphdef, state = nnx.split(model)
    rebuilt = nnx.merge(graphdef, state)
    for a, b in zip(jax.tree.leaves(nnx.state(rebuilt)), jax.tree.leaves(state)):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)
    # BatchNorm statistics moved away from their initial values during training
    assert not np.allclose(model.bn.mean.value, 0.0)
