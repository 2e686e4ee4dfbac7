"""vgbench: vanishing gradients on Fashion-MNIST, every remedy measured.

The library works without pytest; the pytest side lives in vgbench.plugin.
"""

__version__ = "0.1.0"
