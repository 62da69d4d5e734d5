import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# case modules are imported by test_common.py, not collected by pytest
collect_ignore_glob = ["cases*.py"]
