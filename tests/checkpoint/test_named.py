"""State dicts, safetensors files and PyTorch names (vs a NumPy PyTorch forward)."""

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

import ramie as nnx
from ramie.errors import StateLoadError


class TorchLike(nnx.Module):
    """The ramie twin of a small PyTorch model (conv, bn, fc, ln, emb)."""

    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), padding="VALID", rngs=rngs)
        self.bn = nnx.BatchNorm(4, use_running_average=True, epsilon=1e-5, rngs=rngs)
        self.fc = nnx.Linear(4, 5, rngs=rngs)
        self.ln = nnx.LayerNorm(5, epsilon=1e-5, rngs=rngs)
        self.emb = nnx.Embed(7, 5, rngs=rngs)

    def __call__(self, x_nhwc, tokens):
        h = nnx.relu(self.bn(self.conv(x_nhwc)))
        h = self.ln(self.fc(h.mean(axis=(1, 2))))
        return h + self.emb(tokens)


def torch_state(seed=0):
    """A PyTorch-style state_dict (names, layouts) as NumPy arrays."""
    r = np.random.default_rng(seed)
    f = lambda *s: r.normal(size=s).astype(np.float32)  # noqa: E731
    return {
        "conv.weight": f(4, 3, 3, 3),
        "conv.bias": f(4),
        "bn.weight": f(4),
        "bn.bias": f(4),
        "bn.running_mean": f(4),
        "bn.running_var": np.abs(f(4)) + 0.5,
        "bn.num_batches_tracked": np.array(12, np.int64),
        "fc.weight": f(5, 4),
        "fc.bias": f(5),
        "ln.weight": f(5),
        "ln.bias": f(5),
        "emb.weight": f(7, 5),
    }


def torch_forward(sd, x_nchw, tokens):
    """PyTorch semantics in NumPy: Conv2d, BatchNorm2d (eval), ReLU, Linear, LN."""
    w, b = sd["conv.weight"], sd["conv.bias"]
    n, c, hgt, wid = x_nchw.shape
    kh, kw = w.shape[2:]
    out = np.zeros((n, w.shape[0], hgt - kh + 1, wid - kw + 1), np.float32)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            patch = x_nchw[:, :, i : i + kh, j : j + kw]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w) + b
    shape = (1, -1, 1, 1)
    out = (out - sd["bn.running_mean"].reshape(shape)) / np.sqrt(
        sd["bn.running_var"].reshape(shape) + 1e-5
    ) * sd["bn.weight"].reshape(shape) + sd["bn.bias"].reshape(shape)
    h = np.maximum(out, 0).mean(axis=(2, 3))
    h = h @ sd["fc.weight"].T + sd["fc.bias"]
    mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    h = (h - mu) / np.sqrt(var + 1e-5) * sd["ln.weight"] + sd["ln.bias"]
    return h + sd["emb.weight"][tokens]


def test_pytorch_checkpoint_loads_with_one_call_and_matches_numpy(tmp_path):
    sd = torch_state()
    save_file(sd, str(tmp_path / "torch.safetensors"))
    model = TorchLike(nnx.Rngs(0))
    report = nnx.checkpoint.load_safetensors(
        model, tmp_path / "torch.safetensors", convention="torch"
    )
    assert report.ok
    x = np.random.default_rng(1).normal(size=(2, 3, 6, 6)).astype(np.float32)
    tokens = np.array([1, 6])
    ours = model(jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(tokens))
    np.testing.assert_allclose(ours, torch_forward(sd, x, tokens), rtol=1e-4, atol=1e-5)


def test_torch_state_dict_round_trip_layouts():
    model = TorchLike(nnx.Rngs(0))
    sd = nnx.checkpoint.state_dict(model, convention="torch")
    assert sd["conv.weight"].shape == (4, 3, 3, 3)
    assert sd["fc.weight"].shape == (5, 4)
    assert {"bn.running_mean", "bn.running_var", "emb.weight", "ln.weight"} <= set(sd)
    np.testing.assert_array_equal(sd["fc.weight"], model.fc.kernel.get_value().T)
    other = TorchLike(nnx.Rngs(1))
    assert nnx.checkpoint.load_state_dict(other, sd, convention="torch").ok
    np.testing.assert_array_equal(
        other.conv.kernel.get_value(), model.conv.kernel.get_value()
    )


def test_state_dict_round_trip_and_safetensors_file(tmp_path):
    model = TorchLike(nnx.Rngs(0))
    sd = nnx.checkpoint.state_dict(model)
    assert sd["conv.kernel"].shape == (3, 3, 3, 4)
    nnx.checkpoint.save_safetensors(tmp_path / "w.safetensors", model)
    other = TorchLike(nnx.Rngs(1))
    assert nnx.checkpoint.load_safetensors(other, tmp_path / "w.safetensors").ok
    for k, v in nnx.checkpoint.state_dict(other).items():
        np.testing.assert_array_equal(v, sd[k], err_msg=k)


def test_key_map_dict_and_callable(tmp_path):
    sd = {f"model.{k}": v for k, v in torch_state().items()}
    save_file(sd, str(tmp_path / "t.safetensors"))
    a = TorchLike(nnx.Rngs(0))
    strip = lambda k: k.removeprefix("model.")  # noqa: E731
    assert nnx.checkpoint.load_safetensors(
        a, tmp_path / "t.safetensors", key_map=strip, convention="torch"
    ).ok
    b = TorchLike(nnx.Rngs(0))
    mapping = {k: strip(k) for k in sd}
    assert nnx.checkpoint.load_safetensors(
        b, tmp_path / "t.safetensors", key_map=mapping, convention="torch"
    ).ok
    np.testing.assert_array_equal(a.fc.kernel.get_value(), b.fc.kernel.get_value())


def _bad_torch_state():
    sd = torch_state()
    sd["fc.weight"] = sd["fc.weight"][:, :3]  # shape mismatch
    sd["ln.weight"] = sd["ln.weight"].astype(np.int32)  # dtype mismatch (lossy cast)
    del sd["ln.bias"]  # missing
    sd["head.weight"] = np.zeros((2, 2), np.float32)  # unexpected
    return sd


def _snapshot(model):
    return {
        k: np.asarray(v)
        for k, v in nnx.checkpoint.state_dict(model).items()
        if v.dtype != jnp.uint32 and "rngs" not in k
    }


def _assert_lists_all(err):
    msg = str(err.value)
    for needle in [
        "fc.weight: shape (5, 4) vs (5, 3)",
        "ln.weight: dtype float32 vs int32",
        "ln.bias",
        "head.weight",
    ]:
        assert needle in msg, needle
    assert err.value.missing == [("ln", "bias")]
    assert err.value.unexpected == [("head", "weight")]


@pytest.mark.parametrize("route", ["state_dict", "safetensors"])
def test_every_mismatch_listed_and_model_unchanged(tmp_path, route):
    sd = _bad_torch_state()
    model = TorchLike(nnx.Rngs(0))
    before = _snapshot(model)
    with pytest.raises(StateLoadError) as err:
        if route == "state_dict":
            nnx.checkpoint.load_state_dict(model, sd, convention="torch")
        else:
            save_file(sd, str(tmp_path / "bad.safetensors"))
            nnx.checkpoint.load_safetensors(
                model, tmp_path / "bad.safetensors", convention="torch"
            )
    _assert_lists_all(err)
    after = _snapshot(model)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)


def test_ramie_names_mismatch_and_non_strict():
    model = TorchLike(nnx.Rngs(0))
    sd = nnx.checkpoint.state_dict(model)
    sd["fc.kernel"] = np.zeros((3, 5), np.float32)
    sd.pop("emb.embedding")
    sd["extra"] = np.zeros(1, np.float32)
    target = TorchLike(nnx.Rngs(1))
    with pytest.raises(StateLoadError, match=r"fc\.kernel: shape \(4, 5\) vs \(3, 5\)"):
        nnx.checkpoint.load_state_dict(target, sd)
    report = nnx.checkpoint.load_state_dict(target, sd, strict=False)
    assert report.missing == [("emb", "embedding")] and report.unexpected == [
        ("extra",)
    ]
    np.testing.assert_array_equal(
        target.conv.kernel.get_value(), model.conv.kernel.get_value()
    )
    assert not np.array_equal(target.fc.kernel.get_value(), model.fc.kernel.get_value())


def test_allow_cast_on_state_dict():
    model = TorchLike(nnx.Rngs(0))
    sd = {
        k: np.asarray(v)
        for k, v in nnx.checkpoint.state_dict(model, convention="torch").items()
    }
    sd["fc.weight"] = (sd["fc.weight"] * 100).astype(np.int32)
    with pytest.raises(StateLoadError, match="fc.weight: dtype float32 vs int32"):
        nnx.checkpoint.load_state_dict(model, sd, convention="torch")
    assert nnx.checkpoint.load_state_dict(
        model, sd, convention="torch", allow_cast=True
    ).ok
    assert model.fc.kernel.get_value().dtype == jnp.float32
