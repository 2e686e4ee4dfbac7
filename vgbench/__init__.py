"""vgbench: vanishing gradients on Fashion-MNIST, every remedy measured.

The library works without pytest; the pytest side lives in vgbench.plugin. What a user's
own remedies need is importable from here:

    from vgbench import BASELINE, SMALL, Check, Config, Diagnosis, Parts, Remedy

what checks any model's gradient flow, and what watches it while it trains:

    from vgbench import assert_gradient_flow, assert_trains, inspect, watch
"""

__version__ = "0.1.0"

from vgbench.config import Config  # noqa: E402
from vgbench.expect import Check, Diagnosis  # noqa: E402
from vgbench.inspection import assert_gradient_flow, inspect  # noqa: E402
from vgbench.model import Parts  # noqa: E402
from vgbench.monitor import watch  # noqa: E402
from vgbench.remedy import BASELINE, SMALL, Remedy  # noqa: E402
from vgbench.trains import assert_trains  # noqa: E402

__all__ = ["BASELINE", "SMALL", "Check", "Config", "Diagnosis", "Parts", "Remedy",
           "__version__", "assert_gradient_flow", "assert_trains", "inspect", "watch"]
