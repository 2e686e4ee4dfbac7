"""The zoo's modules import as `zoo` (benchmarks/ is no package)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
