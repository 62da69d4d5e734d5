"""Run the multi-device tests (``tests/spmd/on8``) in one 8-device subprocess."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def run_on8(*extra: str) -> tuple[subprocess.CompletedProcess, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    env["RAMIE_SPMD_SUBPROCESS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(HERE / "on8"), "-q", "-x", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, (proc.stdout + proc.stderr)[-6000:]


def test_spmd_modules_pass_on_8_devices():
    proc, tail = run_on8()
    assert proc.returncode == 0, tail
    summary = re.search(r"(\d+) passed", proc.stdout)
    assert summary and int(summary.group(1)) >= 10, tail
    assert "skipped" not in proc.stdout.splitlines()[-1], tail


@pytest.mark.slow
def test_slow_spmd_modules_pass_on_8_devices():
    proc, tail = run_on8("-m", "slow")
    assert proc.returncode == 0, tail
    assert re.search(r"[1-9]\d* passed", proc.stdout), tail
