"""Command line of ``python -m ramie.demo``: parse flags, run a demo, report.

:func:`main` takes ``argv`` and returns a :class:`DemoResult`, so tests and
notebooks can run the demo in-process and inspect the history; the module's
heavy imports (scikit-learn, matplotlib, the models) happen inside it, so
``import ramie.demo`` stays cheap.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

DESCRIPTION = """\
Train a small model with ramie on data that ships with Python packages (no
network access), show a progress bar and per-epoch metrics, and save a plot
of the training curves.

  cnn          (default) a CNN on scikit-learn's 8x8 digits: about 99% test
               accuracy after 10 epochs, about 20 seconds on 2 CPU cores.
  transformer  a character-level transformer on Python's help text
               (pydoc_data.topics), then text sampled with the attention
               decode cache; about 1.5 minutes on 2 CPU cores.
"""

EPILOG = """\
examples:
  python -m ramie.demo
  python -m ramie.demo --epochs 3 --out /tmp/plots --quiet
  python -m ramie.demo --model transformer --epochs 2 --steps 100
"""

#: Default (epochs, steps per epoch) of each model; None steps = a full pass.
DEFAULTS: dict[str, tuple[int, int | None]] = {
    "cnn": (10, None),
    "transformer": (6, 250),
}


@dataclasses.dataclass
class DemoResult:
    """What :func:`main` returns.

    Attributes:
        model: ``'cnn'`` or ``'transformer'``.
        history: :class:`~ramie.demo.cnn.CNNResult` or
            :class:`~ramie.demo.transformer.TransformerResult`.
        plot_path: Absolute path of the saved PNG.
        wall_seconds: Wall time of the whole run (data, model, training,
            evaluation, sampling, plot).
        samples: Generated texts (transformer only).
    """

    model: str
    history: Any
    plot_path: str
    wall_seconds: float
    samples: list[str] = dataclasses.field(default_factory=list)


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m ramie.demo``.

    Example:
        >>> args = build_parser().parse_args(["--model", "transformer", "--steps", "5"])
        >>> args.model, args.steps, args.seed
        ('transformer', 5, 0)
    """
    parser = argparse.ArgumentParser(
        prog="python -m ramie.demo",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        choices=sorted(DEFAULTS),
        default="cnn",
        help="which demo to run (default: cnn)",
    )
    parser.add_argument(
        "--epochs",
        type=_positive,
        default=None,
        metavar="N",
        help="epochs to train (default: 10 for cnn, 6 for transformer)",
    )
    parser.add_argument(
        "--steps",
        type=_positive,
        default=None,
        metavar="N",
        help="steps per epoch (cnn: at most, and by default, one pass over the "
        "training images; transformer: default 250)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of initialisation, dropout, shuffling and sampling "
        "(default: 0); the same seed gives the same run",
    )
    parser.add_argument(
        "--out",
        default="outputs",
        metavar="DIR",
        help="folder for the plot (default: ./outputs)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar (the per-epoch lines are still printed); the bar "
        "is also left out when stderr is not a terminal",
    )
    parser.add_argument(
        "--layers",
        type=_positive,
        default=2,
        metavar="N",
        help="transformer: number of blocks (default: 2)",
    )
    parser.add_argument(
        "--sample-len",
        type=_positive,
        default=128,
        metavar="N",
        help="transformer: characters per sample, prompt included, "
        "at most 128 (default: 128)",
    )
    return parser


def _header(title: str, seed: int) -> None:
    import jax

    import ramie
    from ramie.demo.report import device_line, echo

    echo(f"ramie {ramie.__version__} demo: {title}")
    echo(f"  jax {jax.__version__}, {device_line()}, seed {seed}")


def _run_cnn(
    args: argparse.Namespace, epochs: int, steps: int | None
) -> tuple[Any, str]:
    import jax
    import jax.numpy as jnp

    from ramie.demo import cnn, plot
    from ramie.demo.report import echo, format_seconds, model_summary

    _header("a CNN on scikit-learn's 8x8 digits", args.seed)
    model, digits = cnn.build(args.seed)
    echo(
        f"  data: {len(digits.y_train):,} train / {len(digits.y_test):,} test images "
        "(stratified split, fixed seed)"
    )
    echo(model_summary(model, jax.ShapeDtypeStruct((64, 8, 8, 1), jnp.float32)))
    history = cnn.train(
        model,
        digits,
        epochs=epochs,
        seed=args.seed,
        max_steps_per_epoch=steps,
        show_progress=not args.quiet,
    )
    n_test = len(digits.y_test)
    correct = round(history.test_accuracy[-1] * n_test)
    echo(
        f"final test accuracy: {history.test_accuracy[-1]:.2%} ({correct}/{n_test}), "
        f"training took {format_seconds(history.train_seconds)}"
    )
    path = plot.save_curves(
        os.path.join(args.out, "demo_cnn.png"),
        title=f"ramie demo: CNN on 8x8 digits (seed {args.seed})",
        step_losses=history.step_losses,
        steps_per_epoch=history.steps_per_epoch,
        eval_losses=history.test_loss,
        eval_loss_label="test",
        eval_name="test accuracy",
        eval_values=history.test_accuracy,
        eval_label="accuracy (%)",
        eval_as_percent=True,
    )
    return history, path


def _run_transformer(
    args: argparse.Namespace, epochs: int, steps: int
) -> tuple[Any, str, list[str]]:
    import jax
    import jax.numpy as jnp

    from ramie.demo import data, plot, transformer
    from ramie.demo.report import echo, format_seconds, model_summary

    _header("a character-level transformer on Python's help text", args.seed)
    model, tokens = transformer.build(args.seed, num_layers=args.layers)
    echo(
        f"  data: {len(tokens):,} characters of pydoc_data.topics, "
        f"vocabulary of {len(data.VOCAB)}, windows of {model.max_len}"
    )
    example = jax.ShapeDtypeStruct((8, model.max_len), jnp.int32)
    echo(model_summary(model, example, depth=2))
    history = transformer.train(
        model,
        tokens,
        epochs=epochs,
        steps_per_epoch=steps,
        seed=args.seed,
        show_progress=not args.quiet,
    )
    echo(
        f"final held-out loss: {history.val_loss[-1]:.3f} nats/char, "
        f"training took {format_seconds(history.train_seconds)}"
    )
    start = time.perf_counter()
    samples = transformer.generate(
        model, transformer.PROMPTS, length=args.sample_len, seed=args.seed
    )
    echo(
        f"\nsamples ({len(samples)} prompts decoded as one batch through the "
        f"attention cache, temperature {transformer.TEMPERATURE}, "
        f"{format_seconds(time.perf_counter() - start)}):"
    )
    for prompt, text in zip(transformer.PROMPTS, samples):
        echo(f"--- prompt {prompt!r}")
        echo(text)
    echo("---")
    path = plot.save_curves(
        os.path.join(args.out, "demo_transformer.png"),
        title=f"ramie demo: character transformer on pydoc topics (seed {args.seed})",
        step_losses=history.step_losses,
        steps_per_epoch=history.steps_per_epoch,
        eval_losses=history.val_loss,
        eval_name="held-out loss",
        eval_values=history.val_loss,
        eval_label="cross-entropy (nats/char)",
    )
    return history, path, samples


# module imported -> the package pip installs it from
DEMO_PACKAGES = {"tqdm": "tqdm", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}

MISSING_EXTRA = (
    "ramie.demo needs the `demo` extra, which is not installed (missing: {packages}).\n"
    "  Install it with:\n"
    "      pip install 'ramie[demo]'     # from a clone: pip install -e '.[demo]'"
)


def missing_packages() -> list[str]:
    """The pip names of the demo's packages that cannot be imported.

    Example:
        >>> missing_packages()   # the dev environment has the demo extra
        []
    """
    import importlib

    missing = []
    for module, package in DEMO_PACKAGES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    return missing


def main(argv: Sequence[str] | None = None) -> DemoResult:
    """Run the demo with command-line arguments ``argv`` (default ``sys.argv``).

    Args:
        argv: Arguments without the program name, e.g. ``["--epochs", "1"]``.

    Returns:
        The run's history, plot path, wall time and samples.

    Raises:
        SystemExit: on ``--help`` or invalid arguments (from argparse), or
            when the ``demo`` extra is not installed (with the pip command).
    """
    start = time.perf_counter()
    args = build_parser().parse_args(argv)
    missing = missing_packages()
    if missing:
        raise SystemExit(MISSING_EXTRA.format(packages=", ".join(missing)))
    default_epochs, default_steps = DEFAULTS[args.model]
    epochs = args.epochs or default_epochs
    steps = args.steps or default_steps

    from ramie.demo.report import echo, format_seconds

    samples: list[str] = []
    if args.model == "cnn":
        history, path = _run_cnn(args, epochs, steps)
    else:
        assert steps is not None
        history, path, samples = _run_transformer(args, epochs, steps)
    echo(f"plot saved to {path}")
    wall = time.perf_counter() - start
    echo(f"wall time: {format_seconds(wall)}")
    return DemoResult(args.model, history, path, wall, samples)
