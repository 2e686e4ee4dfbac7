"""The suite's --vg-* options as data: the pytest plugin adds them, Settings is built from
them, and the docs' option table (docs/options.md) is rendered from them (docgen.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vgbench.config import option_type
from vgbench.session import BUDGETS, SETS, Settings
from vgbench.remedy import QUICK_EPOCHS, SWEEP_DEPTHS, SWEEP_EPOCHS

GROUP = ("vgbench", "vgbench: vanishing-gradient remedies")


def depths(text: str) -> list[int]:
    """--vg-depth: one depth or a comma list (3,7,15,30)."""
    return [option_type(int, lo=1)(part.strip()) for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class Option:
    """One --vg-* option: its flag and what argparse needs (kwargs), its help text."""

    flag: str
    help: str
    kwargs: dict = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


OPTIONS = (
    Option("--vg-budget",
           f"full: the protocol's 100 epochs (default); quick: {QUICK_EPOCHS} epochs "
           f"and the checks that hold that early; sweep: {SWEEP_EPOCHS} epochs at "
           f"depths {','.join(map(str, SWEEP_DEPTHS))} (or --vg-depth)",
           dict(choices=list(BUDGETS), default="full")),
    Option("--vg-epochs",
           "override the budget's epochs (per stage for layerwise; 0: evaluate the untrained "
           "net); the budget's checks still apply",
           dict(type=option_type(int, lo=0), default=None, metavar="N")),
    Option("--vg-seeds", "run seeds 42..42+K-1, each its own test (default 1)",
           dict(type=option_type(int, lo=1), default=1, metavar="K")),
    Option("--vg-depth",
           "sweep these depths (hidden layers): repeatable or a comma list, e.g. 3,7,15,30; "
           "ids become NAME-depthD-seedS (default: each remedy's own)",
           dict(type=depths, action="append", default=[], metavar="D")),
    Option("--vg-device", "where to train (default auto: cuda if available)",
           dict(default="auto", choices=["auto", "cpu", "cuda"])),
    Option("--vg-set",
           "which built-in remedies run: course (default, the protocol's), literature, "
           "control (the diagnosis' positive controls), or all; user remedies always join",
           dict(default="course", choices=list(SETS))),
    Option("--vg-remedy", "only this remedy (repeatable); see `python -m vgbench list`",
           dict(action="append", default=[], metavar="NAME")),
    Option("--vg-remedies",
           "add the remedies of this Python file (its REMEDIES list; repeatable)",
           dict(action="append", default=[], metavar="FILE")),
    Option("--vg-out", "histories, figures, summary.json and summary.md (default vg-out)",
           dict(default="vg-out", metavar="DIR")),
    Option("--vg-target", "the summary's 'epochs to val ACC' column, in (0, 1] (default 0.70)",
           dict(type=option_type(float, lo=0, hi=1, lo_open=True), default=0.70,
                metavar="ACC")),
    Option("--vg-limit",
           "cap each data split at N samples, at least the batch size (smoke tests; checks "
           "still apply)",
           dict(type=option_type(int, lo=1), default=None, metavar="N")),
    Option("--vg-data-dir", "folder with the Fashion-MNIST IDX files (default: usual lookup)",
           dict(default=None, metavar="DIR")),
    Option("--vg-no-figures", "skip the per-run PNG figures", dict(action="store_true")),
    Option("--vg-threads",
           "torch threads per process (default: each host's cores // its xdist workers)",
           dict(type=option_type(int, lo=1), default=None, metavar="N")),
    Option("--vg-batch-seeds",
           "on: train runs of one network shape as one group (a remedy's seeds, and "
           "remedies that differ only in init or learning rate; layerwise and user "
           "optimizers never group), its step in one CUDA graph on a GPU; auto (default) "
           "and off: one by one (no GPU measurement has shown the group faster yet)",
           dict(default="auto", choices=["auto", "on", "off"])),
    Option("--vg-progress",
           "the live progress line on the controller: auto (default: on a terminal, not "
           "under CI), on, off",
           dict(default="auto", choices=["auto", "on", "off"])),
    Option("--vg-compare", "fail cases that moved beyond the tolerances in this reference file",
           dict(default=None, metavar="FILE")),
    Option("--vg-allow-new", "with --vg-compare: accept cases the reference has no entry for",
           dict(action="store_true")),
    Option("--vg-save",
           "merge this session's results into this reference file (only from a session "
           "where every case finished and held)",
           dict(default=None, metavar="FILE")),
)


def add(parser) -> None:
    """Every option into pytest's parser, in its own group."""
    g = parser.getgroup(*GROUP)
    for o in OPTIONS:
        g.addoption(o.flag, help=o.help, **o.kwargs)


def settings(getoption) -> Settings:
    """The session's Settings from the parsed options (getoption: pytest's
    config.getoption); a bad combination is a ValueError that names the option."""
    return Settings(
        budget=getoption("vg_budget"), epochs=getoption("vg_epochs"),
        n_seeds=getoption("vg_seeds"), device=getoption("vg_device"),
        remedies=tuple(getoption("vg_remedy")), out=getoption("vg_out"),
        target=getoption("vg_target"), limit=getoption("vg_limit"),
        data_dir=getoption("vg_data_dir"), figures=not getoption("vg_no_figures"),
        set=getoption("vg_set"), depths=tuple(d for ds in getoption("vg_depth") for d in ds),
        batch_seeds=getoption("vg_batch_seeds"))
