"""Every experiment of PROTOCOL.md, declared once: the baseline plus the fields it changes.

Test ids, CLI choices, summary rows and plot legends all come from REMEDIES. The expected
outcome of each remedy (per budget) is declared next to it, with the seeds and margin
that justify each threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from vgbench.config import Config
from vgbench.expect import Check

BASELINE = Config()
SMALL = replace(BASELINE, init="normal", init_std=0.05)  # "small init": N(0, 0.05), biases 0


@dataclass(frozen=True)
class Remedy:
    """One experiment: its config, a one-line description and its expected outcomes."""

    name: str
    description: str
    config: Config
    full: tuple[Check, ...] = ()
    """Checks at the full budget (protocol: 100 epochs)."""
    quick: tuple[Check, ...] = ()
    """Checks at the quick budget (QUICK_EPOCHS)."""

    def checks(self, budget: str) -> tuple[Check, ...]:
        """The checks for budget 'full' or 'quick'."""
        return self.full if budget == "full" else self.quick


QUICK_EPOCHS = 5
"""Epochs of the quick budget (per stage for layerwise)."""

# Every threshold below comes from runs on CPU (torch 2.14.1, real data, default split),
# `python -m vgbench run NAME --seed S --epochs E --device cpu --threads 1`, seeds 42, 43, 44
# at each budget; "init" checks (computed before any training) also from seeds 45, 46.
# Each `why` gives the measured range and the margin left to the threshold. The full budget
# was cross-checked on an H200 (torch 2.11, seeds 42-44): every check held there too.
_Q = f"quick ({QUICK_EPOCHS} epochs), seeds 42-44"
_F = "full (100 epochs), seeds 42-44"

_REMEDIES = [
    Remedy(
        "baseline", "7x128 sigmoid MLP, default init, SGD lr 1e-2: the vanishing case",
        BASELINE,
        full=(
            Check("test_acc", "<=", 0.15, f"{_F}: 0.1000 all; chance + 0.05"),
            Check("grad_ratio_final", "<=", 1e-4, f"{_F}: 9.3e-6..1.2e-5; 8.7x margin"),
            Check("first_layer_change", "<=", 1e-3, f"{_F}: 8.6e-6..1.2e-5; 83x margin"),
        ),
        quick=(
            Check("test_acc", "<=", 0.15, f"{_Q}: 0.1000 all; chance + 0.05"),
            Check("grad_ratio_init", "<=", 1e-4, "seeds 42-46: 3.2e-6..6.1e-6; 16x margin"),
            Check("first_layer_change", "<=", 1e-4, f"{_Q}: 4.3e-7..6.1e-7; 160x margin"),
        ),
    ),
    Remedy(
        "init_std1", "weights ~ N(0, 1.0): larger init keeps gradients alive",
        replace(BASELINE, init="normal", init_std=1.0),
        full=(
            Check("test_acc", ">=", 0.65, f"{_F}: 0.721..0.741; margin 0.071"),
            Check("grad_gain_init", ">=", 1e3, "seeds 42-46: 2.1e4..5.9e4 x baseline; 20x"),
        ),
        quick=(
            Check("test_acc", ">=", 0.30, f"{_Q}: 0.422..0.502; margin 0.12"),
            Check("grad_gain_init", ">=", 1e3, "seeds 42-46: 2.1e4..6.0e4 x baseline; 20x"),
        ),
    ),
    Remedy(
        "init_std10", "weights ~ N(0, 10.0): too large, sigmoids saturate",
        replace(BASELINE, init="normal", init_std=10.0),
        full=(
            Check("test_acc", "<=", 0.20, f"{_F}: 0.103..0.122 (GPU up to 0.150); margin 0.05"),
            Check("saturation_init", ">=", 0.9, "seeds 42-46: 0.971..0.973; margin 0.07"),
        ),
        quick=(
            Check("test_acc", "<=", 0.15, f"{_Q}: 0.093..0.102; chance + 0.05"),
            Check("saturation_init", ">=", 0.9, "seeds 42-46: 0.971..0.973; margin 0.07"),
        ),
    ),
    Remedy(
        "relu", "ReLU instead of Sigmoid (small init)",
        replace(SMALL, activation="relu"),
        # still near chance after 5 epochs (0.134..0.145), as PROTOCOL.md says: no acc check
        full=(
            Check("test_acc", ">=", 0.70, f"{_F}: 0.772..0.807; margin 0.072"),
            Check("grad_ratio_init", ">=", 0.1, "seeds 42-46: 1.07..1.40; 10x margin"),
        ),
        quick=(
            Check("grad_ratio_init", ">=", 0.1, "seeds 42-46: 1.07..1.40; 10x margin"),
            Check("grad_gain_init", ">=", 1e4, "seeds 42-46: 1.9e5..4.3e5 x baseline; 19x"),
        ),
    ),
    Remedy(
        "adam", "Adam lr 1e-3 instead of SGD (sigmoid, small init)",
        replace(SMALL, optimizer="adam", lr=1e-3),
        # same network as the baseline at init: Adam's per-weight step moves layer 1 anyway
        full=(
            Check("test_acc", ">=", 0.80, f"{_F}: 0.842..0.872; margin 0.042"),
            Check("grad_ratio_final", ">=", 0.1, f"{_F}: 3.7..12.2; 37x margin"),
        ),
        quick=(
            Check("test_acc", ">=", 0.15, f"{_Q}: 0.202..0.491; margin 0.05"),
            Check("first_layer_change", ">=", 0.1, f"{_Q}: 1.04..1.25; 10x margin"),
            Check("grad_ratio_final", ">=", 1e-2, f"{_Q}: 0.116..0.139; 11x margin"),
        ),
    ),
    Remedy(
        "batchnorm", "BatchNorm1d between each hidden Linear and its Sigmoid",
        replace(SMALL, norm="batchnorm"),
        full=(
            Check("test_acc", ">=", 0.80, f"{_F}: 0.866..0.878; margin 0.066"),
            Check("grad_ratio_init", ">=", 1e-2, "seeds 42-46: 0.47..0.88; 47x margin"),
        ),
        quick=(
            Check("test_acc", ">=", 0.70, f"{_Q}: 0.775..0.777; margin 0.075"),
            Check("grad_ratio_init", ">=", 1e-2, "seeds 42-46: 0.47..0.88; 47x margin"),
        ),
    ),
    Remedy(
        "custom_norm", "parameter-free (x - mean) / std over the batch, BatchNorm position",
        replace(SMALL, norm="custom"),
        # still at chance after 5 epochs (0.1000 for all seeds): only the gradient checks
        full=(
            Check("test_acc", ">=", 0.75, f"{_F}: 0.821..0.840; margin 0.071"),
            Check("grad_gain_init", ">=", 100, "seeds 42-46: 183..924 x baseline; 1.8x"),
        ),
        quick=(
            Check("grad_gain_init", ">=", 100, "seeds 42-46: 183..924 x baseline; 1.8x"),
            Check("grad_ratio_init", ">=", 5e-4, "seeds 42-46: 1.1e-3..3.1e-3; 2.2x margin"),
        ),
    ),
    Remedy(
        "skip", "residual adds: h3 += h1, h7 += h4 (small init)",
        replace(SMALL, skip=((1, 3), (4, 7))),
        full=(
            Check("test_acc", ">=", 0.60, f"{_F}: 0.659..0.666; margin 0.059"),
            Check("grad_ratio_init", ">=", 5e-3, "seeds 42-46: 1.7e-2..2.4e-2; 3.4x margin"),
        ),
        quick=(
            Check("grad_ratio_init", ">=", 5e-3, "seeds 42-46: 1.7e-2..2.4e-2; 3.4x margin"),
            Check("grad_ratio_final", ">=", 1e-2, f"{_Q}: 7.6e-2..7.9e-2; 7.6x margin"),
        ),
    ),
    Remedy(
        "layerwise", "train blocks of 2, 2, 2, 1 layers in stages, then the whole net",
        replace(SMALL, layerwise=True),
        # weak, as PROTOCOL.md says: 0.45..0.54 after 4 x 100 epochs. After 4 x 5 epochs the
        # 2-layer first stage learns; the deeper stages and the whole net fall back to chance
        full=(
            Check("test_acc", ">=", 0.35, f"{_F} x 4 stages: 0.452..0.541; margin 0.10"),
            Check("grad_ratio_final", ">=", 1e-2, f"{_F}: 0.149..0.638; 15x margin"),
        ),
        quick=(
            Check("best_val_acc", ">=", 0.20, f"{_Q} x 4 stages: 0.265..0.315; margin 0.065"),
        ),
    ),
    Remedy(
        "gradnorm", "normalize the backward gradient after every hidden activation",
        replace(SMALL, gradnorm="post"),
        # accuracy is seed-dependent: after 100 epochs one seed in three learns (CPU: seed 43
        # 0.355, seeds 42 and 44 at chance; GPU: seed 42 0.391), as PROTOCOL.md says; after
        # 5 epochs 0.100..0.229. So only what holds for every seed is asserted.
        full=(
            Check("grad_ratio_init", ">=", 100, "seeds 42-46: 3.0e3..6.4e3; 30x margin"),
            Check("first_layer_change", ">=", 2.0, f"{_F}: 8.7..12.6; 4.4x margin"),
        ),
        quick=(
            Check("grad_ratio_init", ">=", 100, "seeds 42-46: 3.0e3..6.4e3; 30x margin"),
            Check("first_layer_change", ">=", 1.0, f"{_Q}: 4.2..5.5; 4x margin"),
        ),
    ),
    Remedy(
        "gradnorm_pre", "normalize the backward gradient between Linear and activation",
        replace(SMALL, gradnorm="pre"),
        # gradients explode rather than vanish, and it stays at chance
        full=(
            Check("test_acc", "<=", 0.15, f"{_F}: 0.1000 all; chance + 0.05"),
            Check("grad_ratio_init", ">=", 1e3, "seeds 42-46: 1.3e4..2.8e4; 13x margin"),
        ),
        quick=(
            Check("test_acc", "<=", 0.15, f"{_Q}: 0.1000 all; chance + 0.05"),
            Check("grad_ratio_init", ">=", 1e3, "seeds 42-46: 1.3e4..2.8e4; 13x margin"),
            Check("first_layer_change", ">=", 5.0, f"{_Q}: 18.9..24.5; 3.8x margin"),
        ),
    ),
]

REMEDIES: dict[str, Remedy] = {r.name: r for r in _REMEDIES}
NAMES: tuple[str, ...] = tuple(REMEDIES)


class UnknownRemedy(ValueError):
    """A remedy name that is not in the registry."""


def get(name: str) -> Remedy:
    """The remedy called name; an unknown name is an error listing the valid ones."""
    try:
        return REMEDIES[name]
    except KeyError:
        raise UnknownRemedy(f"unknown remedy {name!r}; choose from {', '.join(NAMES)}") from None
