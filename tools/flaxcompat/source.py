"""Download and unpack the Flax source release once (tests and guides)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tarfile

FLAX_VERSION = "0.12.8"


def cache_dir() -> pathlib.Path:
    default = pathlib.Path.home() / ".cache" / "ramie" / f"flax-{FLAX_VERSION}"
    return pathlib.Path(os.environ.get("RAMIE_FLAX_SOURCE", default))


def flax_source() -> pathlib.Path:
    """The unpacked ``flax-<version>`` source tree, downloaded on first use."""
    root = cache_dir()
    tree = root / f"flax-{FLAX_VERSION}"
    if (tree / "tests" / "nnx").is_dir():
        return tree
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
         "--no-binary", ":all:", f"flax=={FLAX_VERSION}", "-d", str(root)],
        check=True,
    )  # fmt: skip
    with tarfile.open(root / f"flax-{FLAX_VERSION}.tar.gz") as archive:
        archive.extractall(root, filter="data")
    return tree
