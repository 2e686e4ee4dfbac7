"""The runs the built-in remedies' thresholds were measured on, named once: each Check's and
Diagnosis' `why` cites them (docs/checks.md renders every one)."""

from vgbench.expect import Diagnosis
from vgbench.remedy import QUICK_EPOCHS

# Every threshold of the built-in remedies comes from runs on CPU (torch 2.14.1, real data,
# default split), `python -m vgbench run NAME --seed S --epochs E --device cpu --threads 1`,
# seeds 42, 43, 44 at each budget; "init" checks (computed before any training) also from
# seeds 45, 46. Each `why` gives the measured range and the margin left to the threshold.
# They were first measured on an AMD EPYC and cross-checked on an H200 (torch 2.11, seeds
# 42-44); every check also held on an Intel Xeon (AVX512; `pytest benchmarks -n 2
# --vg-seeds 3`), whose values the newer checks (marked Intel) come from.
QUICK = f"quick ({QUICK_EPOCHS} epochs), seeds 42-44"
FULL = "full (100 epochs), seeds 42-44"
INTEL = "Intel"
DEPTHS = ("depths 3-30: init seeds 42-46, epoch 1 seeds 42-45, all agreed; the intervention: "
          "sweep, seeds 42-45")
SWEPT = "sweep (30 epochs), seeds 42-45"
DEPTH30 = ("sweep, seeds 42-45, all agreed (gain 0.48-0.51 per layer); at the end 3 of 4 read "
           "vanishing, seed 43 dead units: no end verdict declared at depth 30")
CONTROL_RUNS = "init: seeds 42-44 at depths 3-30; epoch 1 and end: quick, seeds 42-44"
SATURATION = "seeds 42-46 (slope-based): 0.935..0.939; margin 0.035"
HEALTHY = (
    Diagnosis("healthy", "init", (3, 30), why=DEPTHS),
    Diagnosis("healthy", "epoch1", (3, 30), why=DEPTHS),
    Diagnosis("healthy", "end", (3, 30), ("sweep",), why=SWEPT),
)
"""Healthy at init, after epoch 1 and at the end of the sweep, at every depth."""
SWEEP_INTEL = "sweep (30 epochs), seeds 42-44 Intel"
MOVED = ("proof that it trained: a pipeline that never steps leaves it at 0, and one "
         "baseline SGD step already moves it 2.6e-3")
LN10 = "ln(10) = 2.3026 is a uniform guess, an untrained net sits within 0.1 of it, so "\
       "above 2.5 the loss blew up"
