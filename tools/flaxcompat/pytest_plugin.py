"""pytest plugin used by ``suite.py`` (``-p pytest_plugin``).

Environment:
  FLAXCOMPAT_IMPL     ``ramie`` (default) aliases flax.nnx to ramie; ``flax``
                      runs Flax itself, for a baseline.
  FLAXCOMPAT_SELECT   a file of test ids (one per line): only those run.
  FLAXCOMPAT_RESULTS  where to write ``{test id: outcome}`` as JSON.
"""

from __future__ import annotations

import json
import os

import alias

if os.environ.get("FLAXCOMPAT_IMPL", "ramie") == "ramie":
    alias.install()

_outcomes: dict[str, str] = {}
_broken_files: dict[str, str] = {}


def read_ids(path: str) -> list[str]:
    with open(path) as f:
        lines = (line.split("#", 1)[0].strip() for line in f)
        return [line for line in lines if line]


def pytest_collection_modifyitems(session, config, items):
    path = os.environ.get("FLAXCOMPAT_SELECT")
    if not path:
        return
    wanted = set(read_ids(path))
    dropped = [item for item in items if item.nodeid not in wanted]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item.nodeid in wanted]


def pytest_collectreport(report):
    if report.failed:
        _broken_files[report.nodeid] = str(report.longrepr)[-1500:]


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if report.passed:
            outcome = "passed"
        elif report.skipped:
            outcome = "skipped"
        else:
            outcome = "error" if report.when == "setup" else "failed"
        _outcomes[report.nodeid] = outcome
    elif report.when == "teardown" and report.failed:
        _outcomes[report.nodeid] = "error"


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):
        return  # under xdist the controller writes the results
    path = os.environ.get("FLAXCOMPAT_RESULTS")
    if path:
        with open(path, "w") as f:
            json.dump(
                {
                    "outcomes": _outcomes,
                    "broken_files": _broken_files,
                    "stand_ins": alias.stand_ins,
                },
                f,
                indent=1,
                sort_keys=True,
            )
