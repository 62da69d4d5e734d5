import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# helpers are imported by the test files, not collected by pytest
collect_ignore = ["tx_helpers.py"]
