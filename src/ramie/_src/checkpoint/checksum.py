"""Checksums of checkpoint entries: xxh3 when ``xxhash`` is installed, else crc32.

The manifest records the algorithm with every checkpoint, so a reader verifies
with the same one. Since format version 2 every stored array (or shard) has one
checksum per fixed-size chunk of its bytes (:data:`CHUNK_BYTES`, recorded in the
manifest as ``chunk_bytes``), so a read of part of an array (one shard of a
sharded restore) verifies only the chunks it touches. The digests of an array
are stored as one string of fixed-width hex digests (:func:`chunk_digests`).

xxh3-64 hashes several GB/s on one core (``benchmarks/checkpoint.py`` prints the
rate measured on the machine it runs on), faster than the disk, so verifying
on every restore costs little; ``zlib.crc32`` is the slower fallback that needs
nothing beyond the standard library.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

CHUNK_BYTES = 1 << 20
"""Bytes per checksum chunk: small enough that a partial read verifies little
more than it reads, large enough that the manifest holds ~20 bytes per MiB."""

WIDTH = {"crc32": 8, "xxh3_64": 16}
"""Hex digits of one digest, per algorithm."""


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


def chunk_digests(algorithm: str, data: Any, chunk_bytes: int = CHUNK_BYTES) -> str:
    """The digests of every ``chunk_bytes`` chunk of ``data``, concatenated.

    ``data`` is a bytes-like object (a ``memoryview`` of an array's bytes); the
    last chunk may be shorter. An empty ``data`` has no chunks.

    Example:
        >>> d = chunk_digests("crc32", bytes(10), chunk_bytes=4)
        >>> len(d) == 3 * WIDTH["crc32"], d[:8] == function("crc32")(bytes(4))
        (True, True)
    """
    fn = function(algorithm)
    view = memoryview(data).cast("B")
    return "".join(
        fn(view[i : i + chunk_bytes]) for i in range(0, len(view), chunk_bytes)
    )


def split_digests(algorithm: str, digests: str) -> list[str]:
    """The per-chunk digests of a string made by :func:`chunk_digests`."""
    w = WIDTH[algorithm]
    return [digests[i : i + w] for i in range(0, len(digests), w)]
