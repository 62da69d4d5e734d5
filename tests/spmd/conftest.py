"""tests/spmd: the modules under ``on8/`` run in one subprocess on 8 CPU devices.

``test_spmd_subprocess.py`` starts ``pytest tests/spmd/on8`` once with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` and
``RAMIE_SPMD_SUBPROCESS=1``; without that variable the ``on8`` modules are
not collected, so the default suite runs them exactly once.
"""

import os

# Outside the subprocess the on8 modules are not collected at all (rather than
# collected and skipped), so the default suite reports no skipped tests.
collect_ignore = [] if os.environ.get("RAMIE_SPMD_SUBPROCESS") == "1" else ["on8"]
