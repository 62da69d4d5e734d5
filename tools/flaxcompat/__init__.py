"""Run Flax NNX's own test suite and guides against ramie.

``suite.py`` runs the ``tests/nnx`` directory of the Flax source release with
``flax.nnx`` resolving to ``ramie``; ``guides.py`` executes the code cells of
Flax's NNX guides under both libraries and reports the cells that only Flax
runs. Neither is part of ``make test``: they download the Flax source release.
"""
