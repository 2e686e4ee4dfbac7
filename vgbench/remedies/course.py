"""The course project's remedies: the baseline and each fix the course names, as
docs/protocol.md states them."""

from dataclasses import replace

from vgbench.expect import Check, Diagnosis
from vgbench.remedies.runs import DEPTH30 as _DX30
from vgbench.remedies.runs import DEPTHS as _DX
from vgbench.remedies.runs import FULL as _F
from vgbench.remedies.runs import HEALTHY as _HEALTHY
from vgbench.remedies.runs import INTEL as _INTEL
from vgbench.remedies.runs import LN10 as _LN10
from vgbench.remedies.runs import MOVED as _MOVED
from vgbench.remedies.runs import QUICK as _Q
from vgbench.remedies.runs import SATURATION as _SAT
from vgbench.remedies.runs import SWEEP_INTEL as _S
from vgbench.remedies.runs import SWEPT as _DXS
from vgbench.remedy import BASELINE, SMALL, Remedy

COURSE = [
    Remedy(
        "baseline", "7x128 sigmoid MLP, default init, SGD lr 1e-2: the vanishing case",
        BASELINE,
        # the stall is asserted with proof that training happened: the output layer moved
        # and the loss sits at ln(10) (a uniform guess), not above; a pipeline that never
        # steps would pass test_acc <= 0.15 alone (tests/test_reliability.py)
        full=(
            Check("test_acc", "<=", 0.15, f"{_F}: 0.1000 all; chance + 0.05"),
            Check("grad_ratio_final", "<=", 1e-4, f"{_F}: 9.3e-6..1.2e-5; 8.7x margin"),
            Check("first_layer_change", "<=", 1e-3, f"{_F}: 8.6e-6..1.2e-5; 83x margin"),
            Check("output_layer_change", ">=", 1e-4, f"{_F} {_INTEL}: 0.063..0.106; {_MOVED}"),
            Check("final_train_loss", "<=", 2.5, f"{_F} {_INTEL}: 2.303 all; {_LN10}"),
        ),
        quick=(
            Check("test_acc", "<=", 0.15, f"{_Q}: 0.1000 all; chance + 0.05"),
            Check("grad_ratio_init", "<=", 1e-4, "seeds 42-46: 3.2e-6..6.1e-6; 16x margin"),
            Check("first_layer_change", "<=", 1e-4, f"{_Q}: 4.3e-7..6.1e-7; 160x margin"),
            Check("output_layer_change", ">=", 1e-4, f"{_Q} {_INTEL}: 0.064..0.106; {_MOVED}"),
            Check("final_train_loss", "<=", 2.5, f"{_Q} {_INTEL}: 2.303 all; {_LN10}"),
        ),
        sweep=(
            Check("whole_val_acc", "<=", 0.30, f"{_S}: 0.119..0.211; margin 0.09", (3, 3)),
            Check("whole_val_acc", "<=", 0.15, f"{_S}: 0.102..0.107; chance + 0.05", (7, None)),
            Check("grad_ratio_init_rms", "<=", 1e-4, f"{_S}: 2.6e-6 at 7, less deeper; 38x",
                  (7, None)),
            Check("output_layer_change", ">=", 1e-4, f"{_S}: 0.064..0.107; {_MOVED}"),
        ),
        # sigmoid's slope of at most 1/4 shrinks the gradient by 7x per layer: the first
        # layer's step is 2.6e-3 (depth 3) to 1e-6 (depth 7) of the output layer's
        diagnoses=(
            Diagnosis("vanishing", "init", (3, 30), fixed_by=("batchnorm",), why=_DX),
            Diagnosis("vanishing", "epoch1", (7, 30), why=_DX),
            Diagnosis("vanishing", "end", (7, 30), ("sweep",), why=_DXS),
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
        sweep=(
            Check("whole_val_acc", ">=", 0.55, f"{_S}: 0.627..0.684; margin 0.077"),
            Check("grad_ratio_init_rms", ">=", 0.3, f"{_S}: 1.36..10.5; 4.5x margin"),
        ),
        deeper_than=("baseline", "relu", "adam"),
        diagnoses=(
            Diagnosis("healthy", "init", (3, 30), why=_DX),
            Diagnosis("healthy", "epoch1", (3, 30), why=_DX),
            Diagnosis("healthy", "end", (7, 30), ("sweep",), why=_DXS),
        ),
    ),
    Remedy(
        "init_std10", "weights ~ N(0, 10.0): too large, sigmoids saturate",
        replace(BASELINE, init="normal", init_std=10.0),
        # saturated nets are chaotic in float rounding: the same seeds land 0.1 apart on
        # different CPUs, so the thresholds cover every platform measured (it barely learns)
        full=(
            Check("test_acc", "<=", 0.25, f"{_F}: AMD 0.103..0.122, {_INTEL} 0.196..0.200, "
                                          "H200 up to 0.150; margin 0.05"),
            Check("saturation_init", ">=", 0.9, _SAT),
            Check("output_layer_change", ">=", 1e-4, f"{_F} {_INTEL}: 0.028..0.048; {_MOVED}"),
        ),
        quick=(
            Check("test_acc", "<=", 0.20, f"{_Q}: AMD 0.093..0.102, {_INTEL} 0.126..0.156; "
                                          "margin 0.044"),
            Check("saturation_init", ">=", 0.9, _SAT),
            Check("output_layer_change", ">=", 1e-4, f"{_Q} {_INTEL}: 0.022..0.033; {_MOVED}"),
        ),
        sweep=(
            Check("whole_val_acc", "<=", 0.35, f"{_S}: 0.178..0.267; margin 0.083", (3, 7)),
            Check("whole_val_acc", "<=", 0.15, f"{_S}: 0.102..0.110; chance + 0.04", (15, None)),
            Check("saturation_init", ">=", 0.9, "depths 3-30, seeds 42-46 (slope-based): "
                                                "0.933..0.939; margin 0.033"),
            Check("output_layer_change", ">=", 1e-4, f"{_S}: 0.028..0.094; {_MOVED}"),
        ),
        # a smaller init fixes it, clipping the gradient does not
        diagnoses=(
            Diagnosis("saturated", "init", (3, 30), fixed_by=("init_std1",),
                      not_fixed_by=("clip_std10",), why=_DX),
            Diagnosis("saturated", "epoch1", (3, 30), why=_DX),
            Diagnosis("saturated", "end", (3, 30), ("sweep",), why=_DXS),
        ),
    ),
    Remedy(
        "relu", "ReLU instead of Sigmoid (small init)",
        replace(SMALL, activation="relu"),
        # still near chance after 5 epochs (0.134..0.145), as docs/protocol.md says: no acc check
        full=(
            Check("test_acc", ">=", 0.70, f"{_F}: 0.772..0.807; margin 0.072"),
            Check("grad_ratio_init", ">=", 0.1, "seeds 42-46: 1.07..1.40; 10x margin"),
        ),
        quick=(
            Check("grad_ratio_init", ">=", 0.1, "seeds 42-46: 1.07..1.40; 10x margin"),
            Check("grad_gain_init", ">=", 1e4, "seeds 42-46: 1.9e5..4.3e5 x baseline; 19x"),
        ),
        # with small init its ratio stays near 1 at any depth, yet from depth 15 its
        # gradients are so small that the output layer barely moves in 30 epochs
        sweep=(
            Check("whole_val_acc", ">=", 0.65, f"{_S}: 0.794..0.806; margin 0.144", (3, 3)),
            Check("whole_val_acc", "<=", 0.15, f"{_S}: 0.090..0.095; chance + 0.05", (15, None)),
            Check("grad_ratio_init_rms", ">=", 0.1, f"{_S}: 0.77..1.70; 7.7x margin"),
            Check("output_layer_change", "<=", 1e-3, f"{_S}: 6.6e-7..6.0e-5; 17x margin",
                  (15, None)),
        ),
        deeper_than=("baseline",),
        # from depth 15 its steps are below 5e-9 of a weight (frozen), and after one epoch
        # most units of the deep layers are dead: a tiny bias step outweighs tiny signals;
        # at depth 30 the gradient also shrinks by half per layer, far more than the dead
        # units take, so that is the verdict (diagnose: vanishing beyond dead units)
        diagnoses=(
            Diagnosis("healthy", "init", (3, 7), why=_DX),
            Diagnosis("frozen", "init", (15, 30), fixed_by=("he_relu",), why=_DX),
            Diagnosis("healthy", "epoch1", (3, 7), why=_DX),
            Diagnosis("dead units", "epoch1", (15, 15), why=_DX),
            Diagnosis("vanishing", "epoch1", (30, 30), why=_DX30),
            Diagnosis("dead units", "end", (15, 15), ("sweep",), why=_DXS),
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
        sweep=(
            Check("whole_val_acc", ">=", 0.75, f"{_S}: 0.842..0.889; margin 0.092", (3, 7)),
            Check("whole_val_acc", "<=", 0.15, f"{_S}: 0.104..0.110; chance + 0.04", (15, None)),
        ),
        deeper_than=("baseline", "relu"),
        # Adam moves the first layer where SGD's gradient vanished, until that gradient falls
        # below its epsilon (1e-8): from depth 15 its first-layer step vanishes too
        diagnoses=(
            Diagnosis("healthy", "init", (3, 7), why=_DX),
            Diagnosis("vanishing", "init", (15, 30), fixed_by=("batchnorm",), why=_DX),
            Diagnosis("healthy", "epoch1", (3, 7), why=_DX),
            Diagnosis("vanishing", "epoch1", (15, 30), why=_DX),
            Diagnosis("vanishing", "end", (15, 30), ("sweep",), why=_DXS),
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
        sweep=(
            Check("whole_val_acc", ">=", 0.75, f"{_S}: 0.827..0.879; margin 0.077"),
            Check("grad_ratio_init_rms", ">=", 0.1, f"{_S}: 0.69..1.78; 6.9x margin"),
        ),
        deeper_than=("baseline", "relu", "adam", "custom_norm", "skip", "gradnorm"),
        diagnoses=_HEALTHY,
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
        sweep=(
            Check("whole_val_acc", ">=", 0.70, f"{_S}: 0.822..0.823; margin 0.12", (3, 3)),
            Check("whole_val_acc", "<=", 0.25, f"{_S}: 0.107..0.170; margin 0.08", (7, None)),
        ),
        deeper_than=("baseline",),
        diagnoses=(
            Diagnosis("healthy", "init", (3, 3), why=_DX),
            Diagnosis("vanishing", "init", (7, 30), fixed_by=("batchnorm",), why=_DX),
            Diagnosis("vanishing", "epoch1", (7, 30), why=_DX),
            Diagnosis("vanishing", "end", (7, 30), ("sweep",), why=_DXS),
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
        sweep=(
            Check("whole_val_acc", ">=", 0.60, f"{_S}: 0.733..0.741; margin 0.133", (3, 3)),
            Check("whole_val_acc", ">=", 0.35, f"{_S}: 0.436..0.504; margin 0.086", (7, 7)),
            Check("whole_val_acc", "<=", 0.15, f"{_S}: 0.102..0.110; chance + 0.04", (15, None)),
            Check("grad_ratio_init_rms", ">=", 1e-5, f"{_S}: 7.8e-5 at 15, more above; 7.8x",
                  (3, 15)),
        ),
        deeper_than=("baseline",),
        diagnoses=(
            Diagnosis("healthy", "init", (3, 3), why=_DX),
            # at depth 7 the skips slow the vanishing, they do not stop learning: in 30 epochs
            # skip itself creeps to 0.436..0.504 (seeds 42-45), so "does not train where
            # batchnorm does" is undecidable there; the intervention is declared from 15
            Diagnosis("vanishing", "init", (7, 7), why=_DX),
            Diagnosis("vanishing", "init", (15, 30), fixed_by=("batchnorm",), why=_DX),
            Diagnosis("vanishing", "epoch1", (15, 30), why=_DX),
            Diagnosis("vanishing", "end", (15, 30), ("sweep",), why=_DXS),
        ),
    ),
    Remedy(
        "layerwise", "train blocks of 2, 2, 2, 1 layers in stages, then the whole net",
        replace(SMALL, layerwise=True),
        # weak, as docs/protocol.md says: 0.45..0.54 after 4 x 100 epochs. After 4 x 5 epochs the
        # 2-layer first stage learns; the deeper stages and the whole net fall back to chance
        full=(
            Check("test_acc", ">=", 0.35, f"{_F} x 4 stages: 0.452..0.541; margin 0.10"),
            Check("grad_ratio_final", ">=", 1e-2, f"{_F}: 0.149..0.638; 15x margin"),
        ),
        quick=(
            Check("best_val_acc", ">=", 0.20, f"{_Q} x 4 stages: 0.265..0.315; margin 0.065"),
        ),
        # the first stage's two-layer net learns at any depth; the whole net does not
        sweep=(
            Check("best_val_acc", ">=", 0.40, f"{_S}: 0.476..0.550; margin 0.076"),
            Check("whole_val_acc", "<=", 0.45, f"{_S}: 0.313..0.356; margin 0.094", (3, 3)),
            Check("whole_val_acc", "<=", 0.15, f"{_S}: 0.102..0.110; chance + 0.04", (7, None)),
        ),
        # judged on the whole network (what the last stage trains); the early stages train
        # only their own blocks, whose steps on the whole network's gradient are tiny
        diagnoses=(
            Diagnosis("vanishing", "init", (3, 30), fixed_by=("batchnorm",), why=_DX),
            Diagnosis("vanishing", "epoch1", (3, 30), why=_DX),
            Diagnosis("vanishing", "end", (7, 30), ("sweep",), why=_DXS),
        ),
    ),
    Remedy(
        "gradnorm", "normalize the backward gradient after every hidden activation",
        replace(SMALL, gradnorm="post"),
        # accuracy is seed-dependent: after 100 epochs one seed in three learns (CPU: seed 43
        # 0.355, seeds 42 and 44 at chance; GPU: seed 42 0.391), as docs/protocol.md says; after
        # 5 epochs 0.100..0.229. So only what holds for every seed is asserted.
        full=(
            Check("grad_ratio_init", ">=", 100, "seeds 42-46: 3.0e3..6.4e3; 30x margin"),
            Check("first_layer_change", ">=", 2.0, f"{_F}: 8.7..12.6; 4.4x margin"),
        ),
        quick=(
            Check("grad_ratio_init", ">=", 100, "seeds 42-46: 3.0e3..6.4e3; 30x margin"),
            Check("first_layer_change", ">=", 1.0, f"{_Q}: 4.2..5.5; 4x margin"),
        ),
        sweep=(
            Check("whole_val_acc", ">=", 0.75, f"{_S}: 0.868..0.877; margin 0.118", (3, 3)),
            # at depth 7 a seed can learn part of the way: seed 45 reached 0.301 and broke the
            # bound of 0.20 set on seeds 42-44 (0.107..0.126); what holds for every seed is
            # that it does not train (below TRAINABLE_ACC)
            Check("whole_val_acc", "<=", 0.45, "sweep (30 epochs), seeds 42-45 Intel: "
                  "0.107..0.301; margin 0.149", (7, 7)),
            Check("whole_val_acc", "<=", 0.20, "sweep (30 epochs), seeds 42-45 Intel: "
                  "0.104..0.110; margin 0.09", (15, None)),
            Check("grad_ratio_init_rms", ">=", 300, f"{_S}: 3.0e3..3.3e3; 10x margin"),
        ),
        deeper_than=("baseline",),
        # the backward pass rescaled to unit variance after every sigmoid: one SGD step
        # would move the first layer by 1.3..1.8 of its norm; after an epoch the sigmoids
        # saturate (no remedy in the registry undoes the rescaling alone)
        diagnoses=(
            Diagnosis("exploding", "init", (3, 30), why=_DX),
            Diagnosis("saturated", "epoch1", (3, 7), why=_DX),
        ),
    ),
    Remedy(
        "gradnorm_pre", "normalize the backward gradient between Linear and activation",
        replace(SMALL, gradnorm="pre"),
        # gradients explode rather than vanish, and it stays at chance
        full=(
            Check("test_acc", "<=", 0.15, f"{_F}: 0.1000 all; chance + 0.05"),
            Check("grad_ratio_init", ">=", 1e3, "seeds 42-46: 1.3e4..2.8e4; 13x margin"),
            Check("output_layer_change", ">=", 1e-4, f"{_F} {_INTEL}: 0.084..0.115; {_MOVED}"),
        ),
        quick=(
            Check("test_acc", "<=", 0.15, f"{_Q}: 0.1000 all; chance + 0.05"),
            Check("grad_ratio_init", ">=", 1e3, "seeds 42-46: 1.3e4..2.8e4; 13x margin"),
            Check("first_layer_change", ">=", 5.0, f"{_Q}: 18.9..24.5; 3.8x margin"),
            Check("output_layer_change", ">=", 1e-4, f"{_Q} {_INTEL}: 0.082..0.113; {_MOVED}"),
        ),
        sweep=(
            Check("whole_val_acc", "<=", 0.15, f"{_S}: 0.107..0.110; chance + 0.04"),
            Check("grad_ratio_init_rms", ">=", 1e3, f"{_S}: 1.30e4..1.40e4; 13x margin"),
            Check("output_layer_change", ">=", 1e-4, f"{_S}: 0.050..0.115; {_MOVED}"),
        ),
        diagnoses=(
            Diagnosis("exploding", "init", (3, 30), why=_DX),
            Diagnosis("saturated", "epoch1", (3, 30), why=_DX),
            Diagnosis("saturated", "end", (3, 30), ("sweep",), why=_DXS),
        ),
    ),
]
