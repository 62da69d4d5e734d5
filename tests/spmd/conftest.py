"""tests/spmd: the modules under ``on8/`` run in one subprocess on 8 CPU devices.

``test_spmd_subprocess.py`` starts ``pytest tests/spmd/on8`` once with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` and
``RAMIE_SPMD_SUBPROCESS=1``; collected directly (without that variable) the
``on8`` modules are skipped, so the default suite runs them exactly once.
"""
