"""Where every threshold of the diagnosis comes from, as data: the runs it was set on, what
they measured on either side of it, and the runs that tested it afterwards. The docs render
this table (docs/thresholds.md); the constants' docstrings say only what each one means."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Threshold:
    """One threshold: the constant (in `module`), the rule that reads it, the runs it was set
    on and what they measured, and the runs that tested it (held out, or not yet)."""

    name: str
    rule: str
    set_on: str
    measured: str
    tested_on: str = "not yet tested on other runs"
    module: str = "diagnose"


SWEEP42 = "the depth sweep (depths 3-30, 30 epochs), seed 42"
ZOO0 = "the zoo (benchmarks/zoo, 40 runs), seed 0"

THRESHOLDS = (
    Threshold("EXPLODE_UPDATE", "exploding", f"{SWEEP42}, at init",
              "runs that train: at most 0.02 (Adam lr 1e-3 on small weights; SGD below 3e-3); "
              "tanh at lr 1.0 (explode_tanh, never learns) 0.098; gradnorm_pre 4..8",
              "seeds 43-45 of the sweep: every declared verdict held"),
    Threshold("SCALE_FREE", "exploding (a layer a norm follows is left out)",
              "torchvision's resnet18, vgg11_bn, mobilenet_v3_small and timm's convnext_atto, "
              "seed 0, SGD and AdamW, random 64x64 batches and Fashion-MNIST 32x32",
              "normalized layers with a large update ratio: |cos| 2e-8..1.6e-5 (factor 60 "
              "below); heads without a norm after them: 1e-2..6.5e-2 (factor 10 above)"),
    Threshold("ADAPTIVE_GAIN", "exploding (an optimizer that sets its own step)",
              "the optimizers' definitions", "SGD, with or without momentum: 2; Adam's first "
              "step: about 1"),
    Threshold("REPLACE_STEP", "exploding (a step as large as the weight)", ZOO0,
              "every run that learned: at most 0.047; every learning-rate x100 twin 2.6..4.7 "
              "(the GPT stack's AdamW at lr 0.1: 2.77, though its first step lowers the "
              "batch's loss)", "the zoo at seed 1 (32 runs): no call changed"),
    Threshold("LOSS_RISE", "exploding in a watched run (the loss after a large step)",
              "seed 0: benchmarks/watch_late.py (4 scenarios, with and without the "
              "intervention, 600 steps, every 10) and benchmarks/zoo/watched.py (24 zoo "
              "cases: 7 models, their lr_x100, x0.1 and rezero twins)",
              "steps between EXPLODE_UPDATE and REPLACE_STEP in runs that learned: the loss "
              "after them 0.83..1.19 of the loss before (resnet18 under SGD momentum "
              "0.88..1.06, AdamW's first step 0.88..1.07, the pre-norm transformer at lr x100 "
              "1.19); learning rate x30 at step 200: 34.8..50.6, the pre-norm transformer at "
              "lr x100 at step 10: 2.36 (a factor 1.26 above the highest healthy one, 1.57 "
              "below the lowest explosion); timm's MLP-Mixer at lr x100 (did not learn, "
              "0.44): 0.49..0.97, no longer flagged",
              "seeds 1-2 of watch_late and seed 1 of the same zoo cases: no false alarm from "
              "a large step (every learned run's 0.58..1.07), every lr jump flagged at its "
              "step; the pre-norm transformer at lr x100 at step 20: 1.46, just below"),
    Threshold("OVERSHOOT", "exploding at init (the step raises the batch's loss)", ZOO0,
              "every run that learned lowered the loss (by 0.2% at least); timm's MLP-Mixer "
              "at AdamW lr x100 raised it by 37%", "the zoo at seed 1 (32 runs): no call "
              "changed. Models never used to set it: torchvision's ConvNeXt-Tiny under "
              "AdamW without warm-up raises it by 41-50% and learns (0.78-0.80): excused "
              "since by the loss over LOOKAHEAD steps"),
    Threshold("LOOKAHEAD", "exploding at init: the real steps on the probe batch whose "
              "losses LOOKAHEAD_RISE reads where a large step or an overshoot decides",
              "watch's sampling interval in the zoo's runs under watch (every 10), where "
              "LOSS_RISE was set; then checked, not tuned, on the zoo's seed 0",
              "seed 0: ConvNeXt-Tiny's design and sigmoid twin (AdamW, learn) 0.57 and 0.58; "
              "timm's MLP-Mixer at lr x100 (did not learn) 3.46; ResNet-50's design (SGD lr "
              "0.02, no warm-up, learns 0.57) 2.06; the suite's tanh MLP at SGD lr 1.0 "
              "(explode_tanh, never learns) 5.3",
              "the zoo's seeds 1 and 2: benchmarks/zoo/RESULTS.md", module="lookahead"),
    Threshold("LOOKAHEAD_RISE", "exploding at init, where the lookahead decides (the mean "
              "loss over LOOKAHEAD steps on the probe batch over the loss before them)",
              "the zoo's seed 0, every case where the lookahead ran (10 of 99); first "
              "LOSS_RISE (1.5, set on watched runs), which left ResNet-50's design a false "
              "alarm at every seed; changed once seeds 1 and 2 had been judged (their "
              "ResNet-50 false alarms were known), the value from seed 0 alone",
              "runs that learned: ConvNeXt-Tiny's design and sigmoid twin 0.575, 0.58, "
              "ResNet-50's design 2.06; runs that did not, flagged: the small ViT at lr x100 "
              "2.99, timm's MLP-Mixer at lr x100 3.46, MobileNetV3 at lr x100 472; the line at "
              "the geometric middle of 2.06 and 2.99 (2.48), a factor 1.2 from each. Runs that "
              "did not learn at 0.35-1.17 (ResNet-50's sigmoid and x0.1 twins, MobileNetV3's "
              "and EfficientNet's x10) are below any line that spares the ResNet",
              "the zoo's seeds 1 and 2 (16 cases with a lookahead): learned 0.36-0.74, "
              "ResNet-50's design 2.16 and x0.1 1.5 (were false alarms, now right); not "
              "learned and flagged 2.79 (the small ViT at lr x100, a factor 1.12 above), "
              "3.01-3.6e7; ResNet-50's design at seed 2 (0.43, no ground truth) 1.98 now "
              "reads healthy; no call became a miss"),
    Threshold("EXPLODE_SPREAD", "exploding at init (the gradient grows toward the input)",
              "the zoo's seed 0 (99 cases: the first layer's per-example gradient norm over "
              "the output layer's, along the verdict's chain, at init); rule and value after "
              "seeds 1 and 2 had been judged (EfficientNet's misses were known)",
              "runs that learned: at most 217 (EfficientNet-B0's design; ResNet-50 121); "
              "runs that did not and read healthy: MobileNetV3 x10 11,274, EfficientNet-B0 "
              "with biases -1 and norm shifts -4 1.7e8, x10 2.4e9 (dead-unit twins of the "
              "ReLU nets 3e5-1.6e7 are dead units first); the line near the geometric "
              "middle of 217 and 11,274 (1,564): a factor 6.9 above, 7.5 below. The suite "
              "(every registered remedy at depths 3, 7, 15, 30, seeds 42-44, at init): at "
              "most 10.5 where the verdict is healthy, frozen or vanishing; above the line "
              "only init_std10/clip_std10 (saturated first) and gradnorm_pre (exploding "
              "first): no init verdict changed",
              "the zoo's seeds 1 and 2: runs that learned at most 186; EfficientNet-B0 x10 "
              "9.0e7 and 3.8e8 (were missed, now right) and its dead twin 6.5e6 and 6.3e6 "
              "(were missed; now exploding, which the judge counts a wrong cause: its SiLUs "
              "at -4 keep a slope of 5%, not dead)"),
    Threshold("DEAD_SHARE", "dead units",
              "first SageMaker Debugger's DeadRelu threshold_layer (50%); raised to three "
              "quarters (a layer then passes at most half the gradient's norm, sqrt(1 - "
              "0.75)) on the suite's seeds 42-44 at depths 3-30 and the zoo's seed 0, after "
              "the zoo's seed 2 (held out) showed timm's RegNetY-002 at 50-51% and learning",
              "runs that learned: the suite's ReLU nets with zero biases up to 40% (depth 30), "
              "the zoo's pre-norm TransformerEncoder at x0.1 50% (seed 0, learned 0.541); "
              "runs that did not: the suite's dead_relu (biases -1) 100% in some layer at "
              "every depth and seed (its first layer above the line 0.56-1.0), the zoo's "
              "dead twins 98-100% (seed 0)",
              "the sweep's seeds 43-45 and the controls (at 50%); the zoo's seeds 1 and 2 "
              "(seed 2's RegNetY was seen before the change: not a clean test)"),
    Threshold("SATURATED_SHARE", "saturated", "seeds 42-46 at init",
              "N(0, 10) sigmoid nets: 0.92..0.95 in every layer; N(0, 1) ones (they train): "
              "38% on average, 55% in their first layer at depth 30",
              "the sweep's seeds 43-45: every declared verdict held"),
    Threshold("ATTENTION_SATURATED", "saturated through an attention: its rows on one key",
              "the zoo's seed 0 at init (benchmarks/zoo, AdamW): weights x10 in both "
              "TransformerEncoders, the GPT stack and the small ViT, their designs and "
              "other twins",
              "x10 (first attention): 48-75% of rows; every design and other twin: 0%; "
              "about half the lowest x10 share",
              "seeds 1 and 2: x10 51-78%, the others 0%"),
    Threshold("ATTENTION_GAIN", "saturated through an attention: its output against the stream",
              "as ATTENTION_SATURATED (the gain: the attention's output RMS over its "
              "calling block's input RMS)",
              "x10, first attention: post-norm 41, GPT 40, pre-norm 16.4 (the three did not "
              "learn: 0.21-0.44), the small ViT 8.6 (learned, 0.57); designs and other twins "
              "1.5 and below; the line at the geometric middle of 8.6 and 16.4. Either part "
              "alone trains (only queries and keys x10: rows saturated, gain 1.5 and below; "
              "all but them x10: gain 5.5-137, no row saturated)",
              "seeds 1 and 2: pre-norm x10 13.9 and 17.4, post-norm 35-45, GPT 38-43 (none "
              "learned), the ViT 9.3 and 9.2 (learned); a thin margin: 16% above the line, "
              "23% below"),
    Threshold("VANISH_SPREAD", "vanishing", f"{SWEEP42}, at init and after epoch 1",
              "below: the baseline at depth 3 (2.6e-3; 1.3e-6 at depth 7), skip at 7 "
              "(2.8e-3), layernorm and custom_norm at 7 (3e-4..7e-4), xavier and orthogonal "
              "at 7 (3e-5..2e-4); every run that reached 0.5 in 30 epochs: 1.1e-2 or more "
              "(orthogonal at depth 3); a factor 2 either side",
              "seeds 43-46: the baseline at depth 3 at 2.5e-3..4.3e-3, the nets that train "
              "from 7.2e-3: every declared verdict held"),
    Threshold("VANISH_GAIN", "vanishing (the gradient shrinks toward the input)",
              "its definition: a gain below 1 per layer", "-"),
    Threshold("FROZEN_UPDATE", "frozen", f"{SWEEP42}, at init",
              "GELU with small init at depth 7 (never learns): 2.0e-6; ReLU and LeakyReLU "
              "with small init at depth 7 (learn after ~20 epochs): 8e-6; depth 15 and more: "
              "below 5e-9", "seeds 43-45: GELU at 1.7e-6..2.2e-6 (1.4x below the line), ReLU "
              "8.1e-6..1.4e-5"),
    Threshold("TRIAL", "inspect(trial=True): the real steps on the probe batch whose losses "
              "the trial's rules read (FIT_FALL over all of them, LOOKAHEAD_RISE over the "
              "first LOOKAHEAD)",
              "set before the trial by the zoo's seed 0 (a candidate rule, 2026-12-07): ten "
              "steps barely tell a net on a saddle from one slow to start",
              "MobileNetV3 x0.1 (does not learn) 0.998 of the start after 10 steps, 0.993 "
              "after 30; RegNetY x0.1 (learns) 0.994 and 0.74", "the zoo's seeds 1 and 2 with the trial's rules (FROZEN_DROP, FIT_FALL): "
              "benchmarks/zoo/RESULTS.md",
              module="lookahead"),
    Threshold("FROZEN_DROP", "frozen in inspect's trial: the saddle (the would-be step's "
              "change of the batch's loss, over the loss)",
              "the zoo's seed 0, the 61 cases that read healthy without the trial (first "
              "set so in a candidate rule of 2026-12-07, not adopted then)",
              "did not learn: VGG-11-BN x0.1 6.4e-5, MobileNetV3 x0.1 9.8e-5; the smallest of "
              "a run that learned RegNetY x0.1 3.7e-4, then the recall LSTM x0.1 1.4e-3; the "
              "line at the geometric middle of 9.8e-5 and 3.7e-4 (1.9e-4), a factor 1.9 from "
              "each", "the zoo's seeds 1 and 2 (121 cases that read healthy without the trial; "
              "the rule was chosen after a fit alone, set on seed 0, had made 4 false alarms "
              "there: losses that swing up, not stay): the four x0.1 misses of MobileNetV3 and "
              "VGG-11-BN 6.0e-5..9.0e-5, frozen, right; below the line and learned: RegNetY "
              "x0.1 at seed 2 (1.2e-4) and ConvNeXt-Tiny's sigmoid twin at seed 2 (AdamW, "
              "6.6e-5), kept healthy by their fits (0.71, 0.22); no call on a run that learned "
              "changed"),
    Threshold("FIT_FALL", "frozen in inspect's trial: how far the trial's steps must lower "
              "the batch's loss (1 - their mean loss over the start)",
              "the zoo's seed 0, the 61 cases that read healthy without the trial",
              "runs that learned kept at most 0.875 of the start (the pre-norm encoder x0.1; "
              "then RegNetY x10 0.843, the Mixer x10 0.838); runs that did not: ResNet-50 "
              "x0.1 0.937, the small ViT x0.1 0.963, MobileNetV3 x0.1 0.993, VGG-11-BN x0.1 "
              "0.998 (timm's ViT sigmoid 0.817 and ResNet-50 sigmoid 0.12 fall further); "
              "the line at the geometric middle of the falls 0.125 and 0.063 (0.089)",
              "the zoo's seeds 1 and 2, behind FROZEN_DROP: the four x0.1 misses 0.993-0.998, "
              "the runs that learned 0.22 and 0.71. Alone (without FROZEN_DROP) it was 4 false "
              "alarms held out: ResNet-50 x0.1 (1.10), RegNetY x10 (1.11; 1.03 at seed 2), "
              "MobileNetV3's sigmoid twin at seed 2 (0.961); not adopted alone"),
    Threshold("VANISH_TIME", "vanishing through time (RNN, LSTM, GRU)",
              "the Recall task (examples/own_model/time_rule.py: one-layer nets of 64 units, "
              "30 and 100 steps, seeds 0-2, at init; then Adam lr 1e-3 for 400 steps; learned "
              "= held-out accuracy 0.5, chance 0.25)",
              "it separates all 36 runs: not learned at 2e-6 and below (tanh RNN, GRU, LSTM "
              "at default init, 30 steps), learned at 0.028 and above (orthogonal RNN, "
              "chrono LSTM); at the boundary no margin: a forget-bias-1 LSTM at 30 steps "
              "4.1e-3 (did not learn, 0.48) against 5.8e-3 and 6.7e-3 (learned)",
              "the zoo's LSTM and GRU at seeds 0 and 1: 4 false alarms per seed (their "
              "ratio equals the memory task's), gone with TIME_SIGNAL"),
    Threshold("TIME_SIGNAL", "vanishing through time: what the gradient reaches says nothing "
              "of the labels",
              "seed 0 at batch 64, at init: the zoo's LSTM and GRU on Fashion-MNIST's rows (28 "
              "steps) with their x0.1 twins, the zoo's LSTM recalling the first of 24 tokens "
              "(chrono and default gates), one-hot tokens into an LSTM of 32 units (30 steps) "
              "labelled by the last or the first step",
              "rows (all learn): 3.45-3.58; labels in the last step: 2.07; recall (default "
              "gates do not learn): 1.03-1.12; labels in the first step: 0.95; no tie gives "
              "about 1",
              "seeds 1 and 2: rows 1.70-4.82, last-step labels 1.79-1.87 (0.2 above the "
              "line); recall 0.86-0.97, first-step labels 1.05-1.06. Read at the output "
              "layer for VANISH_REACH (not set there, tested): the GPT stack x0.1, seeds 0-2, "
              "1.46, 0.87, 0.70 (did not learn; seed 0 3% below the line); the same stack "
              "labelled by its last token (learns, 1.0): 4.08 and 4.39 (seeds 0, 1); timm's "
              "vit_tiny x0.1: 1.01-1.02. Smaller batches (the zoo's LSTM and GRU on rows, "
              "seeds 0-2): 1 of 6 below the line at batch 32, 2 of 6 at batch 16 (the false "
              "alarm returns); the recall cases stayed below"),
    Threshold("VANISH_REACH", "vanishing across positions (attention)",
              "the zoo's GPT stack at seed 0 (benchmarks/zoo: read at its last position, "
              "recalling the first of 24 tokens; AdamW, at init) with its twins, and the "
              "TransformerEncoders over rows (mean-pooled) with theirs",
              "GPT design 0.040 and sigmoid twin 0.038 (both learn); every matrix x0.1 "
              "3.3e-4 (did not learn, 0.32); the line at the family's 200x (VANISH_SPREAD, "
              "VANISH_TIME): 8 times below the design, 15 above x0.1. Rows encoders: 0.13 and "
              "above (x0.1: 0.97-1.0, the pool reads every position). ReZero twins: 0, not "
              "judged while their zero maps are zero",
              "seeds 1 and 2: GPT design 0.039-0.044, sigmoid 0.038-0.042, x0.1 3.2e-4-3.6e-4 "
              "(did not learn), rows encoders 0.076 and above; timm's vit_tiny (never used to "
              "set it): design 0.015-0.016, x0.1 3.9e-4-4.1e-4; torchvision's small ViT not "
              "measured (its head starts at zero: no gradient at init)"),
    Threshold("EXPLODE_TIME", "exploding through time (RNN, LSTM, GRU)",
              "the zoo's LSTM and GRU at seed 0 (benchmarks/zoo, rows of Fashion-MNIST, 28 "
              "steps, at init)",
              "weights x10 (did not learn): 558 and 436; the designs and their x0.1 and "
              "lr x100 twins: 6e-6 and below; any line between separates them, 10 is a "
              "tenfold growth over the unit gain of a recurrence that remembers perfectly",
              "seeds 1 and 2: x10 at 64 to 4,350 (did not learn), every other case at 1e-5 "
              "and below"),
    Threshold("GATE_SATURATED", "saturated at init in a recurrent layer (the mean share on a "
              "flat tail over the nonlinearities inside its kernel)",
              "the zoo's seed 0, its 13 recurrent cases at init (the LSTM and GRU over rows, the "
              "chrono LSTM recalling the first of 24 tokens, with their twins)",
              "every run that learned, and every twin but x10: 0.0 (none of their gates on a "
              "flat tail); weights x10 (none learned): LSTM 0.079, GRU 0.173, recall LSTM "
              "0.302. One side is all zeros, so no middle: the line at a twentieth, a factor "
              "1.6 below the least x10. Read after exploding through time, so it changes one "
              "call: the recall LSTM x10 (0.30 against 0.33 of its gradient kept over 24 "
              "steps; was healthy), the LSTM and GRU x10 stay exploding through time",
              "seeds 1 and 2: x10 0.062-0.074 (LSTM), 0.148-0.180 (GRU), 0.300-0.312 (recall: "
              "healthy -> saturated, both did not learn); every other recurrent case 0.0, "
              "no other call changed; the suite's MLP has no recurrent layer"),
    Threshold("REACH", "prediction: trains when the slowest layer can move this far",
              "seed 42, sweep and full budgets",
              "trained: 7.8e-3 (layernorm, full budget) or more; did not: ReLU and LeakyReLU "
              "at depth 7 in 30 epochs 3.8e-3, GELU at depth 7 in 100 epochs 2.5e-3",
              "seeds 43-45 overlap it: ReLU and LeakyReLU at depth 7 in 30 epochs stalled at "
              "5.2e-3..6.4e-3 (predicted to train: wrong), layernorm in 100 epochs trained at "
              "6.2e-3, GELU in 100 epochs stalled at 3.1e-3", module="prediction"),
    Threshold("LEARNING_ACC", "prediction: learning after epoch 1, whatever the verdict",
              "the sweep's seeds 42-44 (264 runs)",
              "highest epoch-1 accuracy of a run that did not train: 0.227 (layerwise at "
              "depth 7, its first stage); lowest of a broken-verdict run that trained: 0.462 "
              "(gradnorm at depth 3)", "seed 45 of the sweep: balanced accuracy 0.96",
              module="prediction"),
    Threshold("TRAINABLE_ACC", "trained (ground truth) and the trainable depth",
              "halfway from chance (0.1) to the good remedies' 0.85-0.88", "-",
              module="prediction"),
    Threshold("MIN_DROP", "assert_trains: the loss must fall by this share over the run",
              "set at 0.1 before any run; then the example project's 10 models "
              "(examples/own_model/trains.py), seeds 0-2, at their pairs' budgets (300 "
              "steps, Recall 400): 30 of 30 runs agree with training",
              "models that learn: +0.514 or more; that do not: +0.027 or less, but the "
              "LayerNorm stack without skips -0.35..+0.074 (its loss falls, then climbs)",
              "seeds 3-4: 20 of 20 agree. At 100 steps (below the budgets) 26 of 30: the "
              "LSTM has not started on Recall (3 false alarms), one LayerNorm stack passes",
              module="trains"),
    Threshold("SLOPE_FRACTION", "saturated: a slope below this share of the largest",
              "half of LeakyReLU(0.01)'s leak, so a leaky unit's linear side is not "
              "saturation", "for the sigmoid: |h| > 6.7", module="diagnostics"),
    Threshold("INACTIVE_SLOPE", "peers' rules (SageMaker's SaturatedActivation, DeadRelu)",
              "SageMaker Debugger's documented 'vanishing gradient threshold'", "-",
              module="diagnostics"),
    Threshold("INACTIVE_SHARE", "peers' rules: inactive on this share of the examples",
              "SageMaker Debugger's threshold_inactivity (1%)", "-", module="diagnostics"),
)
"""Every threshold, in the order the rules read them."""
