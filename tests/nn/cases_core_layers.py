"""Cases for the layers the seeds use: Linear, Dropout, BatchNorm."""

import jax.numpy as jnp
from cases import LayerCase, normal

import ramie

CASES = [
    LayerCase(
        name="Linear",
        layer=ramie.Linear,
        make=lambda rngs: ramie.Linear(4, 5, rngs=rngs),
        make_flax=lambda rngs: __import__("flax").nnx.Linear(4, 5, rngs=rngs),
        inputs=normal(3, 4),
        make_bf16=lambda rngs: ramie.Linear(
            4, 5, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=rngs
        ),
    ),
    LayerCase(
        name="Linear-nobias-3d",
        layer=ramie.Linear,
        make=lambda rngs: ramie.Linear(4, 6, use_bias=False, rngs=rngs),
        make_flax=lambda rngs: __import__("flax").nnx.Linear(
            4, 6, use_bias=False, rngs=rngs
        ),
        inputs=normal(2, 3, 4),
    ),
    LayerCase(
        name="Dropout-train",
        layer=ramie.Dropout,
        make=lambda rngs: ramie.Dropout(0.3, rngs=rngs),
        make_flax=lambda rngs: __import__("flax").nnx.Dropout(0.3, rngs=rngs),
        inputs=normal(4, 8),
        train=True,
        grad_check=False,
        vmap=False,
        make_bf16=lambda rngs: ramie.Dropout(0.3, rngs=rngs),
    ),
    LayerCase(
        name="Dropout-broadcast-dims",
        layer=ramie.Dropout,
        make=lambda rngs: ramie.Dropout(0.5, broadcast_dims=(0,), rngs=rngs),
        make_flax=lambda rngs: __import__("flax").nnx.Dropout(
            0.5, broadcast_dims=(0,), rngs=rngs
        ),
        inputs=normal(4, 8),
        train=True,
        grad_check=False,
        vmap=False,
    ),
    LayerCase(
        name="BatchNorm-train",
        layer=ramie.BatchNorm,
        make=lambda rngs: ramie.BatchNorm(6, momentum=0.9, rngs=rngs),
        make_flax=lambda rngs: __import__("flax").nnx.BatchNorm(
            6, momentum=0.9, rngs=rngs
        ),
        inputs=normal(5, 6),
        train=True,
        vmap=False,
        make_bf16=lambda rngs: ramie.BatchNorm(
            6, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=rngs
        ),
    ),
    LayerCase(
        name="BatchNorm-eval-4d-axis1",
        layer=ramie.BatchNorm,
        make=lambda rngs: ramie.BatchNorm(
            3, axis=1, use_fast_variance=False, rngs=rngs
        ),
        make_flax=lambda rngs: __import__("flax").nnx.BatchNorm(
            3, axis=1, use_fast_variance=False, rngs=rngs
        ),
        inputs=normal(2, 3, 4, 4),
    ),
]
