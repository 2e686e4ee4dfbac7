"""`python -m vgbench`: see vgbench.cli."""

import sys

from vgbench.cli import main

sys.exit(main())
