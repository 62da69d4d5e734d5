"""Checksums of checkpoint entries: xxh3 when ``xxhash`` is installed, else crc32.

The manifest records the algorithm with every checkpoint, so a reader verifies
with the same one. xxh3-64 runs at over 10 GB/s (measured in
``benchmarks/checkpoint.py``), far faster than any disk, so verifying on every
restore is nearly free; ``zlib.crc32`` (about 2 GB/s) is the fallback that
needs nothing beyond the standard library.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any


def _crc32(data: Any) -> str:
    return format(zlib.crc32(data), "08x")


def _xxh3(data: Any) -> str:
    import xxhash

    return format(xxhash.xxh3_64_intdigest(data), "016x")


def default_algorithm() -> str:
    """``"xxh3_64"`` when the ``xxhash`` package is importable, else ``"crc32"``."""
    try:
        import xxhash  # noqa: F401
    except ImportError:
        return "crc32"
    return "xxh3_64"


def function(algorithm: str) -> Callable[[Any], str]:
    """The checksum function (bytes-like -> hex string) for ``algorithm``.

    Example:
        >>> function("crc32")(b"ramie")
        '...'
    """
    if algorithm == "crc32":
        return _crc32
    if algorithm == "xxh3_64":
        try:
            import xxhash  # noqa: F401
        except ImportError:
            from ramie.errors import CheckpointError

            raise CheckpointError(
                "This checkpoint's checksums are xxh3_64, which needs the xxhash "
                "package: pip install ramie[checkpoint]"
            ) from None
        return _xxh3
    from ramie.errors import CheckpointError

    raise CheckpointError(f"Unknown checksum algorithm {algorithm!r}.")
