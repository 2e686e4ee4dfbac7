"""How a remedy is declared: the baseline config, the Remedy (one experiment: the baseline
with one idea changed, and the outcome it must show), the budgets. Built-in remedies
(vgbench/remedies/) and a user's are declared alike; registry.py finds them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from vgbench import prediction
from vgbench.config import Config
from vgbench.expect import Check, Diagnosis
from vgbench.model import DEFAULT_PARTS, Parts

BASELINE = Config()
SMALL = replace(BASELINE, init="normal", init_std=0.05)  # "small init": N(0, 0.05), biases 0

SETS = ("course", "literature", "control", "user")
"""Where a remedy comes from: the course protocol, the literature (docs/protocol.md), the
diagnosis' positive controls, a user."""
BUDGETS = ("full", "quick", "sweep")
"""The budgets a remedy declares checks for."""


@dataclass(frozen=True)
class Remedy:
    """One experiment: the baseline with one idea changed, and the outcome it must show.

    Built-in and user remedies are declared alike. `config` changes any Config field;
    `parts` brings the remedy's own code (activation or norm module, init, optimizer), which
    the one MLP builder and the training loop call.
    """

    name: str
    description: str
    """One line: what the remedy changes."""
    config: Config
    full: tuple[Check, ...] = ()
    """Checks at the full budget (protocol: 100 epochs), at the config's own depth."""
    quick: tuple[Check, ...] = ()
    """Checks at the quick budget (QUICK_EPOCHS), at the config's own depth."""
    sweep: tuple[Check, ...] = ()
    """Checks at the depth-sweep budget (SWEEP_EPOCHS), each at the depths it names."""
    diagnoses: tuple[Diagnosis, ...] = ()
    """The verdicts (vgbench.diagnose) its runs must get, each with the depths, moment and
    budgets it applies to and the intervention that proves the cause (fixed_by,
    not_fixed_by: checked by a session that ran those remedies at the same depth)."""
    deeper_than: tuple[str, ...] = ()
    """At the sweep budget over SWEEP_DEPTHS: on every seed, this remedy's trainable depth
    (the deepest where the whole network's validation accuracy reaches TRAINABLE_ACC)
    exceeds these remedies'. Checked by the session at its end."""
    parts: Parts = DEFAULT_PARTS
    """The remedy's own code; the defaults use the config's choices."""
    set: str = "user"
    """'course', 'literature', 'control' or 'user' (what --vg-set picks)."""
    source: str = ""
    """Where the idea comes from (a paper, the course text, a file)."""
    origin: str = field(default="", compare=False)
    """Where it was declared: 'vgbench', or the user's file or plugin (set on registration)."""

    def __post_init__(self) -> None:
        where = f"remedy {self.name!r}" + (f" ({self.origin})" if self.origin else "")
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"{where}: the name must be a Python identifier (letters, digits, "
                             "underscores), as it becomes part of the test ids")
        if not isinstance(self.config, Config):
            raise ValueError(f"{where}: config must be a vgbench Config, got "
                             f"{type(self.config).__name__}")
        if not isinstance(self.parts, Parts):
            raise ValueError(f"{where}: parts must be a vgbench Parts, got "
                             f"{type(self.parts).__name__}")
        if self.set not in SETS:
            raise ValueError(f"{where}: unknown set {self.set!r}; choose from {list(SETS)}")
        if not isinstance(self.deeper_than, tuple):
            raise ValueError(f"{where}: deeper_than must be a tuple of remedy names")
        if not all(isinstance(d, Diagnosis) for d in self.diagnoses) or not isinstance(
                self.diagnoses, tuple):
            raise ValueError(f"{where}: diagnoses= must be a tuple of Diagnosis objects")
        if not (self.full or self.quick or self.sweep):
            raise ValueError(f"{where} declares no checks: give it at least one Check in "
                             "full=, quick= or sweep= (an experiment must assert its outcome)")
        for budget in BUDGETS:
            for c in getattr(self, budget):
                if not isinstance(c, Check):
                    raise ValueError(f"{where}: {budget}= must hold Check objects, got {c!r}")
                try:
                    c.validate()
                except ValueError as exc:
                    raise ValueError(f"{where}, {budget} budget: {exc}") from None

    def checks(self, budget: str, depth: int | None = None) -> tuple[Check, ...]:
        """The checks for a budget at a depth (None: the config's own). The full and quick
        checks were measured at the config's depth and apply there only."""
        depth = self.config.n_layer if depth is None else depth
        if budget == "sweep":
            return tuple(c for c in self.sweep if c.applies_at(depth))
        if budget not in ("full", "quick"):
            raise ValueError(f"unknown budget {budget!r}; choose from {list(BUDGETS)}")
        return getattr(self, budget) if depth == self.config.n_layer else ()


    def diagnoses_at(self, budget: str, depth: int | None = None) -> tuple[Diagnosis, ...]:
        """The declared diagnoses asserted at this budget and depth (None: the config's)."""
        depth = self.config.n_layer if depth is None else depth
        return tuple(d for d in self.diagnoses if d.applies(budget, depth, self.config.n_layer))


QUICK_EPOCHS = 5
"""Epochs of the quick budget (per stage for layerwise)."""
SWEEP_EPOCHS = 30
"""Epochs of the depth-sweep budget (per stage for layerwise): the most the protocol allows
for a sweep, since ReLU at depth 7 only leaves chance after 20-25 epochs; one seed of the
course remedies at depths 3-30 takes about 15 minutes on 2 cores."""
SWEEP_DEPTHS = (3, 7, 15, 30)
"""Depths the sweep budget runs unless --vg-depth says otherwise."""
TRAINABLE_ACC = prediction.TRAINABLE_ACC
"""A depth is trainable when the whole network's validation accuracy (metric whole_val_acc)
reaches this within the budget (defined in vgbench.prediction, which predicts it)."""
