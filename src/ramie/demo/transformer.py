"""A character-level transformer trained on Python's help text, then sampled.

The model is a pre-norm decoder-only transformer: token and learned position
embeddings (``ramie.Embed``), a few blocks of causal ``MultiHeadAttention``
and an MLP with ``LayerNorm`` before each, and a ``Linear`` head over the
96-character vocabulary. Training feeds random 128-character windows of the
``pydoc_data.topics`` help pages with a causal mask.

Sampling uses the attention layers' autoregressive cache, as Flax NNX does:
``init_cache`` allocates the keys and values of the whole sequence once, then
each ``decode=True`` call feeds one token per sequence, writes its key/value
at the cache index and attends to everything written so far - one position of
work per token instead of re-running the whole prefix. Several prompts are
decoded as one batch; while a prompt lasts its next character is forced, then
the model's samples take over.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ramie
from ramie.demo import data
from ramie.demo.report import count_params, echo, format_seconds, progress

#: Softmax temperature of the samples: below 1 favours likely characters.
TEMPERATURE = 0.7

#: Prompts decoded by default: three headings of the help pages.
PROMPTS = (
    'The "while" statement\n',
    'The "import" statement\n',
    "Function definitions\n",
)


class Block(ramie.Module):
    """Pre-norm transformer block: causal self-attention, then a GELU MLP.

    Args:
        d_model: Width of the residual stream.
        num_heads: Attention heads (must divide ``d_model``).
        rngs: ``params`` initialises the layers.
    """

    def __init__(self, d_model: int, num_heads: int, *, rngs: ramie.Rngs):
        self.attn_norm = ramie.LayerNorm(d_model, rngs=rngs)
        self.attn = ramie.MultiHeadAttention(
            num_heads, d_model, decode=False, rngs=rngs
        )
        self.mlp_norm = ramie.LayerNorm(d_model, rngs=rngs)
        self.mlp_in = ramie.Linear(d_model, 4 * d_model, rngs=rngs)
        self.mlp_out = ramie.Linear(4 * d_model, d_model, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None, decode: bool) -> jax.Array:
        """Update the residual stream ``x`` of shape ``[batch, length, d_model]``."""
        h = self.attn(self.attn_norm(x), mask=mask, decode=decode)
        x = x + h
        h = self.mlp_out(ramie.gelu(self.mlp_in(self.mlp_norm(x))))
        return x + h


class CharTransformer(ramie.Module):
    """A small GPT-style language model over characters.

    Args:
        vocab_size: Number of distinct tokens.
        d_model: Width of the residual stream.
        num_heads: Attention heads per block.
        num_layers: Number of blocks.
        max_len: Longest sequence (size of the position embedding).
        rngs: ``params`` initialises the layers. (No dropout: one pass over
            the 465k characters of text does not overfit this small model.)

    Example:
        >>> import jax.numpy as jnp, ramie
        >>> # Built abstractly (shapes only, nothing computed):
        >>> model = ramie.eval_shape(
        ...     lambda: CharTransformer(96, num_layers=1, rngs=ramie.Rngs(0)))
        >>> model.blocks[0].attn.query.kernel.shape  # (d_model, heads, head_dim)
        (64, 4, 16)
        >>> _ = model.eval()
        >>> forward = lambda m, tokens: m(tokens)
        >>> ramie.eval_shape(forward, model, jnp.zeros((2, 128), jnp.int32)).shape
        (2, 128, 96)
        >>> model.init_cache(batch_size=2)  # then one token per call:
        >>> step = lambda m, token, position: m(token, position, decode=True)
        >>> token = position = jnp.zeros((2, 1), jnp.int32)
        >>> ramie.eval_shape(step, model, token, position).shape
        (2, 1, 96)
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        max_len: int = 128,
        rngs: ramie.Rngs,
    ):
        self.d_model = d_model
        self.max_len = max_len
        self.token_embed = ramie.Embed(vocab_size, d_model, rngs=rngs)
        self.pos_embed = ramie.Embed(max_len, d_model, rngs=rngs)
        self.blocks = ramie.List(
            [Block(d_model, num_heads, rngs=rngs) for _ in range(num_layers)]
        )
        self.final_norm = ramie.LayerNorm(d_model, rngs=rngs)
        self.head = ramie.Linear(d_model, vocab_size, rngs=rngs)

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        *,
        decode: bool = False,
    ) -> jax.Array:
        """Next-token logits.

        Args:
            tokens: ``int[batch, length]``; with ``decode=True`` ``length`` is 1.
            positions: Position of each token (default ``0..length-1``);
                required with ``decode=True``.
            decode: Feed one token per sequence through the attention caches
                (call :meth:`init_cache` first).

        Returns:
            ``float[batch, length, vocab_size]``.
        """
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[-1]), tokens.shape)
        x = self.token_embed(tokens) + self.pos_embed(positions)
        # Training sees whole windows and needs the causal mask; in decode mode
        # the cache only holds the past, so nothing needs masking.
        mask = None if decode else ramie.make_causal_mask(tokens)
        for block in self.blocks:
            x = block(x, mask, decode)
        return self.head(self.final_norm(x))

    def init_cache(self, batch_size: int) -> None:
        """Create empty decode caches for ``batch_size`` sequences of ``max_len``."""
        for block in self.blocks:
            block.attn.init_cache((batch_size, self.max_len, self.d_model))


def loss_fn(model: CharTransformer, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean next-character cross-entropy (nats)."""
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@ramie.jit
def train_step(
    model: CharTransformer, optimizer: ramie.Optimizer, x: jax.Array, y: jax.Array
) -> jax.Array:
    """One optimisation step; returns the batch loss."""
    loss, grads = ramie.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


@ramie.jit
def eval_loss(model: CharTransformer, x: jax.Array, y: jax.Array) -> jax.Array:
    """Held-out loss of ``model`` (call ``model.eval()`` first)."""
    return loss_fn(model, x, y)


@ramie.jit
def decode_step(
    model: CharTransformer,
    tokens: jax.Array,
    position: jax.Array,
    forced: jax.Array,
    use_forced: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
) -> jax.Array:
    """Feed one token per sequence through the caches and pick the next one.

    Args:
        model: The model, with caches from :meth:`CharTransformer.init_cache`.
        tokens: ``int[batch]``, the tokens at ``position``.
        position: Scalar position of ``tokens``.
        forced: ``int[batch]``: the prompt's next token where it has one.
        use_forced: ``bool[batch]``: take ``forced`` instead of a sample.
        key: PRNG key of the whole sample; each position folds itself in.
        temperature: Softmax temperature of the samples.

    Returns:
        ``int[batch]``, the tokens at ``position + 1``.
    """
    positions = jnp.full((tokens.shape[0], 1), position, jnp.int32)
    logits = model(tokens[:, None], positions, decode=True)[:, -1]
    step_key = jax.random.fold_in(key, position)
    sampled = jax.random.categorical(step_key, logits / temperature, axis=-1)
    return jnp.where(use_forced, forced, sampled).astype(jnp.int32)


def generate(
    model: CharTransformer,
    prompts: Sequence[str],
    *,
    length: int,
    seed: int,
    temperature: float = TEMPERATURE,
) -> list[str]:
    """Continue each prompt by sampling from ``model`` with the decode cache.

    Args:
        model: A trained model; it is switched to ``eval()`` and gets fresh
            caches for ``len(prompts)`` sequences.
        prompts: Non-empty prompts, decoded together as one batch.
        length: Total characters per sample, prompt included (at most
            ``model.max_len``).
        seed: Seed of the samples.
        temperature: Below 1 sharpens the distribution, above 1 flattens it.

    Returns:
        One string per prompt, starting with the prompt.
    """
    length = min(length, model.max_len)
    model.eval()
    model.init_cache(batch_size=len(prompts))
    encoded = [data.encode(p) for p in prompts]
    prompt_len = np.array([len(e) for e in encoded])
    padded = np.zeros((len(prompts), length + 1), np.int32)
    for i, e in enumerate(encoded):
        padded[i, : min(len(e), length)] = e[:length]
    out = np.zeros((len(prompts), length), np.int32)
    out[:, 0] = padded[:, 0]
    tokens = jnp.asarray(out[:, 0])
    key = jax.random.key(seed)
    temp = np.float32(temperature)
    for pos in range(length - 1):
        forced, use_forced = padded[:, pos + 1], pos + 1 < prompt_len
        tokens = decode_step(
            model, tokens, np.int32(pos), forced, use_forced, key, temp
        )
        out[:, pos + 1] = np.asarray(tokens)
    return [data.decode(row) for row in out]


@functools.lru_cache(maxsize=8)
def make_tx(learning_rate: float, total_steps: int) -> optax.GradientTransformation:
    """Clipped AdamW; linear warm-up, then cosine decay to 1/20 of the peak.

    Cached, so that runs with the same settings reuse the compiled train step.
    """
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        learning_rate,
        warmup_steps=min(100, max(1, total_steps // 10)),
        decay_steps=max(total_steps, 2),
        end_value=learning_rate / 20,
    )
    return optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.01)
    )


@dataclasses.dataclass
class TransformerResult:
    """What one transformer run produced (returned by :func:`train`).

    Attributes:
        step_losses: Training loss of every step.
        steps_per_epoch: Steps between evaluations.
        train_loss: Mean training loss per epoch.
        val_loss: Held-out loss after each epoch.
        train_seconds: Wall time of the training loop, compilation included.
        num_params: Trainable parameters of the model.
    """

    step_losses: list[float]
    steps_per_epoch: int
    train_loss: list[float]
    val_loss: list[float]
    train_seconds: float
    num_params: int


def build(seed: int, num_layers: int = 2) -> tuple[CharTransformer, np.ndarray]:
    """The model (seeded with ``seed``) and the encoded corpus."""
    tokens = data.encode(data.load_topics_text())
    rngs = ramie.Rngs(params=seed)
    return CharTransformer(len(data.VOCAB), num_layers=num_layers, rngs=rngs), tokens


def train(
    model: CharTransformer,
    tokens: np.ndarray,
    *,
    epochs: int,
    steps_per_epoch: int,
    seed: int,
    batch_size: int = 8,
    learning_rate: float = 1e-2,
    show_progress: bool = True,
    log: Callable[[str], None] = echo,
) -> TransformerResult:
    """Train on random windows of ``tokens``; the last 10% is held out.

    Args:
        model: The transformer (trained in place).
        tokens: The encoded corpus.
        epochs: Number of rounds of ``steps_per_epoch`` steps, each followed
            by a held-out evaluation.
        steps_per_epoch: Steps per round.
        seed: Seed of the window sampling.
        batch_size: Windows per step.
        learning_rate: Peak learning rate (linear warm-up, cosine decay).
        show_progress: Show a tqdm bar per epoch.
        log: Receives one line per epoch.

    Returns:
        The loss history, see :class:`TransformerResult`.
    """
    split = int(0.9 * len(tokens))
    train_tokens, val_tokens = tokens[:split], tokens[split:]
    optimizer = ramie.Optimizer(
        model, make_tx(learning_rate, epochs * steps_per_epoch), wrt=ramie.Param
    )
    rng = np.random.default_rng(seed)
    val_x, val_y = data.text_windows(
        val_tokens, 64, model.max_len, np.random.default_rng(0)
    )
    result = TransformerResult([], steps_per_epoch, [], [], 0.0, count_params(model)[0])

    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        bar = progress(steps_per_epoch, f"epoch {epoch}/{epochs}", show_progress)
        losses = []
        for _ in range(steps_per_epoch):
            x, y = data.text_windows(train_tokens, batch_size, model.max_len, rng)
            loss = float(train_step(model, optimizer, x, y))
            losses.append(loss)
            bar.update()
            bar.set_postfix_str(f"loss {loss:.3f}", refresh=False)
        bar.close()
        model.eval()
        val = float(eval_loss(model, val_x, val_y))
        result.step_losses += losses
        result.train_loss.append(float(np.mean(losses)))
        result.val_loss.append(val)
        log(
            f"epoch {epoch:>{len(str(epochs))}}/{epochs}  "
            f"train loss {result.train_loss[-1]:.3f}  |  held-out loss {val:.3f} "
            f"({val / np.log(2):.2f} bits/char)  "
            f"({format_seconds(time.perf_counter() - epoch_start)})"
        )
    result.train_seconds = time.perf_counter() - start
    return result
