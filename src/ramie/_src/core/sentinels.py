"""Sentinel values shared across ramie."""

from __future__ import annotations

from typing import Final


class _Missing:
    """Marks an argument that was not given (distinct from ``None``)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self):
        return (_Missing, ())


MISSING: Final = _Missing()
