"""The diagnosis' positive controls: runs built to show a verdict no course or literature
run shows, each with the intervention that proves its cause."""

import math
from dataclasses import replace

from torch import nn

from vgbench.config import Config
from vgbench.expect import Check, Diagnosis
from vgbench.model import Parts
from vgbench.remedies.runs import CONTROL_RUNS as _DXC
from vgbench.remedies.runs import LN10 as _LN10
from vgbench.remedies.runs import QUICK as _Q
from vgbench.remedy import BASELINE, Remedy


def negative_biases(linear, cfg: Config) -> None:
    """Every bias at -1 (after the config's init): a He-initialized ReLU unit then gets a
    negative input for nearly every example and passes no gradient (dying ReLU)."""
    nn.init.constant_(linear.bias, -1.0)


# Positive controls: runs built to show a verdict no course or literature run shows (dead
# units; gradients that explode without turning NaN), each with the intervention that
# proves the cause. Thresholds from `pytest benchmarks -n 2 --vg-set control --vg-seeds 3`
# (quick and sweep budgets), CPU, Intel Xeon.
CONTROL = [
    Remedy(
        "dead_relu", "ReLU, He init, every bias -1: nearly every unit is off for every input",
        replace(BASELINE, activation="relu", init="kaiming", init_gain=math.sqrt(2)),
        parts=Parts(init=negative_biases),
        quick=(
            Check("test_acc", "<=", 0.15, f"{_Q}: 0.100 all; chance + 0.05"),
            Check("final_train_loss", "<=", 2.5, f"{_Q}: 2.3026 all; {_LN10}"),
        ),
        source="dying ReLU (Lu et al. 2019); control",
        diagnoses=(
            Diagnosis("dead units", "init", (3, 30), fixed_by=("he_relu",),
                      not_fixed_by=("dead_relu_adam",), why=_DXC),
            Diagnosis("dead units", "epoch1", (7, 7), why=_DXC),
            Diagnosis("dead units", "end", (7, 7), ("quick",), why=_DXC),
        ),
    ),
    Remedy(
        "dead_relu_adam", "dead_relu trained with Adam lr 1e-3: dead units get no gradient",
        replace(BASELINE, activation="relu", init="kaiming", init_gain=math.sqrt(2),
                optimizer="adam", lr=1e-3),
        parts=Parts(init=negative_biases),
        quick=(
            Check("test_acc", "<=", 0.15, f"{_Q}: 0.100 all; chance + 0.05"),
            Check("final_train_loss", "<=", 2.5, f"{_Q}: 2.3026 all; {_LN10}"),
        ),
        source="control",
        diagnoses=(
            Diagnosis("dead units", "init", (3, 30), why=_DXC),
            Diagnosis("dead units", "epoch1", (7, 7), why=_DXC),
            Diagnosis("dead units", "end", (7, 7), ("quick",), why=_DXC),
        ),
    ),
    Remedy(
        "explode_tanh", "tanh_xavier at lr 1.0: a step moves a layer by a tenth of its norm",
        replace(BASELINE, activation="tanh", init="xavier", lr=1.0),
        # finite all along, yet the loss blows up to ~50 and stays at chance
        quick=(
            Check("test_acc", "<=", 0.15, f"{_Q}: 0.100 all; chance + 0.05"),
            Check("final_train_loss", ">=", 10, f"{_Q}: 52.7..53.7; 5x margin (a stall "
                                                "sits at ln 10 = 2.3)"),
            Check("output_layer_change", ">=", 1.0, f"{_Q}: 4.04..4.87; 4x margin"),
        ),
        source="too large a step (Pascanu et al. 2013); control",
        diagnoses=(
            Diagnosis("exploding", "init", (3, 7), fixed_by=("tanh_xavier",), why=_DXC),
        ),
    ),
]
