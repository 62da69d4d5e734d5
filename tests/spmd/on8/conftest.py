import os

import jax
import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RAMIE_SPMD_SUBPROCESS") == "1" and jax.device_count() == 8:
        return
    skip = pytest.mark.skip(reason="runs in the 8-device subprocess")
    for item in items:
        if "/on8/" in str(item.fspath):
            item.add_marker(skip)
