"""Data sets for the demo, all read from files that ship with installed packages.

Nothing is downloaded: the CNN trains on scikit-learn's bundled 8x8 digits
(1,797 images, 10 classes) and the transformer on the text of Python's own
``pydoc_data.topics`` (the help pages behind ``help("if")``, about 460k
characters). The split of the digits is stratified and uses a fixed seed, so
every run is scored on the same 360 test images whatever ``--seed`` is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

#: The digits split is fixed so that accuracies are comparable across seeds.
SPLIT_SEED = 0


@dataclasses.dataclass(frozen=True)
class Digits:
    """The 8x8 digits, split into train and test sets.

    Attributes:
        x_train: ``float32[n_train, 8, 8, 1]`` images scaled to ``[0, 1]``.
        y_train: ``int32[n_train]`` labels in ``0..9``.
        x_test: ``float32[n_test, 8, 8, 1]``.
        y_test: ``int32[n_test]``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(test_fraction: float = 0.2) -> Digits:
    """Load scikit-learn's bundled 8x8 digits as NHWC float images.

    Args:
        test_fraction: Fraction of each class held out for testing.

    Returns:
        A :class:`Digits` with scikit-learn's stratified ``train_test_split``
        (``random_state=SPLIT_SEED``), so both sets keep the class balance.

    Example:
        >>> d = load_digits()
        >>> d.x_train.shape, d.x_test.shape, d.x_train.dtype.name
        ((1437, 8, 8, 1), (360, 8, 8, 1), 'float32')
    """
    from sklearn.datasets import load_digits as sklearn_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_load_digits()
    images = (np.asarray(bunch.images, np.float32) / 16.0)[..., None]
    labels = np.asarray(bunch.target, np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        labels,
        test_size=test_fraction,
        stratify=labels,
        random_state=SPLIT_SEED,
    )
    return Digits(x_train, y_train, x_test, y_test)


def batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled index batches of exactly ``batch_size`` (the remainder is dropped).

    Equal batch shapes mean the jitted train step compiles once.

    Args:
        n: Number of examples.
        batch_size: Examples per batch.
        rng: Source of the shuffle.

    Yields:
        ``int`` index arrays of shape ``(batch_size,)``.

    Example:
        >>> import numpy as np
        >>> [b.shape for b in batches(10, 4, np.random.default_rng(0))]
        [(4,), (4,)]
    """
    order = rng.permutation(n)
    for start in range(0, n - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


def random_shift(
    images: np.ndarray, rng: np.random.Generator, max_shift: int = 1
) -> np.ndarray:
    """Shift each image by up to ``max_shift`` pixels in each direction (zero fill).

    A cheap augmentation: a digit moved by one pixel is still the same digit.

    Args:
        images: ``[batch, height, width, channels]``.
        rng: Source of the shifts.
        max_shift: Largest shift, in pixels.

    Returns:
        The shifted images, same shape and dtype.

    Example:
        >>> import numpy as np
        >>> x = np.zeros((1, 3, 3, 1), np.float32); x[0, 1, 1, 0] = 1
        >>> y = random_shift(x, np.random.default_rng(0))
        >>> y.shape, float(y.sum())
        ((1, 3, 3, 1), 1.0)
    """
    n, h, w, _ = images.shape
    m = max_shift
    padded = np.pad(images, ((0, 0), (m, m), (m, m), (0, 0)))
    dy = rng.integers(0, 2 * m + 1, size=n)
    dx = rng.integers(0, 2 * m + 1, size=n)
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


# ----------------------------------------------------------------------------
# Text

# Typographic characters in the help text, mapped to plain ASCII.
_ASCII_FOR = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2013": "-",
    "\u2014": "-",
    "\u2026": "...",
    "\u00b0": "o",
    "\u00df": "ss",
}

#: The character vocabulary: newline and printable ASCII (96 symbols).
VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))
_INDEX = {ch: i for i, ch in enumerate(VOCAB)}
_UNKNOWN = _INDEX["?"]


def encode(text: str) -> np.ndarray:
    """Map text to ``int32`` token ids in :data:`VOCAB` (unknown -> ``'?'``).

    Example:
        >>> decode(encode("if x:\\n"))
        'if x:\\n'
    """
    return np.array([_INDEX.get(ch, _UNKNOWN) for ch in text], np.int32)


def decode(tokens: np.ndarray | list[int]) -> str:
    """Map token ids back to text (the inverse of :func:`encode`)."""
    return "".join(VOCAB[int(t)] for t in tokens)


def load_topics_text() -> str:
    """The help topics of ``pydoc_data.topics`` as one ASCII string.

    Topics are joined in sorted order so that the text is the same on every
    run; typographic quotes and dashes become their ASCII forms.

    Example:
        >>> text = load_topics_text()
        >>> len(text) > 100_000, text.isascii()
        (True, True)
    """
    from pydoc_data import topics

    text = "\n\n".join(topics.topics[name] for name in sorted(topics.topics))
    for fancy, plain in _ASCII_FOR.items():
        text = text.replace(fancy, plain)
    return text.encode("ascii", "replace").decode("ascii")


def text_windows(
    tokens: np.ndarray, batch_size: int, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A batch of random windows and the same windows shifted by one token.

    Args:
        tokens: The encoded corpus, shape ``(n,)``.
        batch_size: Number of windows.
        length: Tokens per window.
        rng: Source of the window starts.

    Returns:
        ``(inputs, targets)``, each ``int32[batch_size, length]``;
        ``targets[:, i]`` is the token after ``inputs[:, i]``.

    Example:
        >>> import numpy as np
        >>> x, y = text_windows(np.arange(100), 2, 5, np.random.default_rng(0))
        >>> x.shape, bool((y == x + 1).all())
        ((2, 5), True)
    """
    starts = rng.integers(0, len(tokens) - length - 1, size=batch_size)
    idx = starts[:, None] + np.arange(length + 1)[None, :]
    windows = tokens[idx]
    return windows[:, :-1].astype(np.int32), windows[:, 1:].astype(np.int32)
