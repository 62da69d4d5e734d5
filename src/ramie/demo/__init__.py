"""ramie's demo: train a real model with a progress bar and plot its curves.

Run ``python -m ramie.demo`` (a CNN on scikit-learn's bundled 8x8 digits) or
``python -m ramie.demo --model transformer`` (a character-level transformer on
Python's help text, sampled with the attention decode cache); ``--help`` lists
the flags. Everything runs offline; on a 2-core CPU the CNN takes about 20
seconds (99.7% test accuracy) and the transformer about a minute and a half.

In Python, :func:`main` takes the same arguments and returns the history::

    from ramie.demo import main
    result = main(["--epochs", "1", "--quiet", "--out", "/tmp/plots"])
    print(result.history.test_accuracy, result.plot_path)

The demo needs the ``demo`` extra: ``pip install 'ramie[demo]'`` (tqdm,
scikit-learn, matplotlib, rich).
"""

from ramie.demo.cli import DemoResult as DemoResult
from ramie.demo.cli import main as main
