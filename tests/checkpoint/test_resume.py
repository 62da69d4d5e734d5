"""Training resumes bit-exactly in a new process, into an abstract model."""

import json
import os
import subprocess
import sys
import textwrap

COMMON = textwrap.dedent(
    """
    import sys, json
    import numpy as np, jax, jax.numpy as jnp, optax
    import ramie as nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(6, 16, rngs=rngs)
            self.bn = nnx.BatchNorm(16, rngs=rngs)
            self.do = nnx.Dropout(0.3, rngs=rngs)
            self.l2 = nnx.Linear(16, 1, rngs=rngs)

        def __call__(self, x):
            return self.l2(self.do(nnx.relu(self.bn(self.l1(x)))))

    def make(seed):
        model = Net(nnx.Rngs(seed, dropout=seed + 1))
        return model, nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, opt, x, y):
        def loss_fn(model):
            return jnp.mean((model(x) - y) ** 2)
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    data = np.random.default_rng(0).normal(size=(10, 8, 7)).astype(np.float32)

    def train(model, opt, steps):
        return [float(train_step(model, opt, d[:, :6], d[:, 6:])).hex() for d in steps]
    """
)

RESUMED = COMMON + textwrap.dedent(
    """
    model, opt = nnx.eval_shape(lambda: make(123))
    nnx.checkpoint.restore(sys.argv[1], model, optimizer=opt)
    assert int(opt.step.get_value()) == 5
    print(json.dumps(train(model, opt, data[5:])))
    """
)


def _run(code, *args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_resume_in_new_process_is_bit_exact(tmp_path):
    path = str(tmp_path / "ckpt")
    ns = {}
    exec(COMMON, ns)  # the same model, data and step as the new process runs
    model, opt = ns["make"](0)
    ns["train"](model, opt, ns["data"][:5])
    ns["nnx"].checkpoint.save(path, model, optimizer=opt, step=5)
    expected = ns["train"](model, opt, ns["data"][5:])
    resumed = _run(RESUMED, path)
    assert len(expected) == 5 and len(set(expected)) > 1
    assert resumed == expected
