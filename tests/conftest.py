import sys
from pathlib import Path

# Test helpers (helpers.py) live beside the tests; make them importable.
sys.path.insert(0, str(Path(__file__).parent))
