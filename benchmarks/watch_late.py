"""Trouble that starts late, labelled by intervention: does vgbench.watch flag it at the
step it starts, and stay quiet on the same run without it?

    python benchmarks/watch_late.py [--seeds 0 1 2] [--steps 600] [--at 300] [--every 10]
                                    [--peers]

Each scenario is a 7 x 128 MLP on Fashion-MNIST (batches of 512 from the train split, the
suite's data), trained twice from the same init and batches: once with an intervention at
step `at`, once without (the twin). Scenarios:
  lr_jump     tanh, Xavier init, SGD lr 0.05; at `at` the learning rate jumps 30x
  kill_relu   ReLU, He init, SGD lr 0.05; at `at` every hidden bias is pushed down by 2
              (what one large step down the biases does; a 50x step diverges instead)
  grow        tanh, Xavier init, SGD lr 0.05; from `at` every weight grows 1% a step
  no_decay    tanh, Xavier init, AdamW lr 0.01 with weight decay 0 (the run) against 0.5
              (the twin): without decay the weights grow and the units saturate over the
              run, with it they do not; no single step starts it (`at` is not used)
Printed per run: the onset of the first non-healthy verdict at or after `at` (its step and
verdict; for no_decay after the first step), alarms before `at`, and the validation
accuracy at the end (did it train). --peers: torchmortem's Autopsy (pip install
torchmortem; its default sampling, the loss every step) rides in the same loop, and its
warnings and critical findings are printed by the cause each names, with the first step
of their step_range (torchmortem judges the second half of the run after it ends: that
step is where its window starts, not an onset); findings on the twins are its false
alarms.
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import vgbench
from vgbench import data

EXPECTED = {"lr_jump": "exploding", "kill_relu": "dead units", "grow": "saturated",
            "no_decay": "saturated"}
DECAY = 0.5
"""no_decay's twin: AdamW's weight decay (decoupled: each step shrinks the weights by
lr x DECAY = 0.5%)."""


def build(kind: str, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    act = nn.ReLU if kind == "kill_relu" else nn.Tanh
    layers, width = [nn.Linear(784, 128), act()], 128
    for _ in range(6):
        layers += [nn.Linear(width, width), act()]
    net = nn.Sequential(*layers, nn.Linear(width, 10))
    for m in net:
        if isinstance(m, nn.Linear):
            if kind == "kill_relu":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            else:
                nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def run(kind: str, seed: int, steps: int, at: int, every: int, intervene: bool,
        splits, peers: bool = False, keep: Path | None = None) -> dict:
    net = build(kind, seed)
    if kind == "no_decay":
        at = 1  # the first step is AdamW's (see docs/watch.md): the run starts after it
        opt = torch.optim.AdamW(net.parameters(), lr=0.01,
                                weight_decay=0.0 if intervene else DECAY)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(seed)
    autopsy = None
    if peers:
        from torchmortem import Autopsy

        autopsy = Autopsy(net, optimizer=opt)
        autopsy.attach()
    out = None if keep is None else keep / f"{kind}-{'on' if intervene else 'off'}-seed{seed}"
    with vgbench.watch(net, opt, every=every, out=out) as w:
        for step in range(steps):
            idx = torch.randint(0, len(splits.train_y), (512,), generator=g)
            x, y = splits.train_x[idx], splits.train_y[idx]
            if intervene and step == at and kind == "lr_jump":
                opt.param_groups[0]["lr"] *= 30
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if intervene and kind == "kill_relu" and step == at:
                with torch.no_grad():  # what one large step down the biases does
                    for m in list(net)[:-1]:
                        if isinstance(m, nn.Linear):
                            m.bias.sub_(2.0)
            if intervene and kind == "grow" and step >= at:
                with torch.no_grad():
                    for m in net:
                        if isinstance(m, nn.Linear):
                            m.weight.mul_(1.01)
            w.step(loss)
            if autopsy is not None:
                autopsy.step(loss=loss.item())
    found = None
    if autopsy is not None:
        autopsy.detach()
        found = torchmortem_findings(autopsy)
    net.eval()
    with torch.no_grad():
        acc = (net(splits.val_x).argmax(1) == splits.val_y).float().mean().item()
    before = [r for r in w.timeline if r["step"] < at and r["verdict"] != "healthy"]
    after = next((r for r in w.timeline if r["step"] >= at and r["verdict"] != "healthy"),
                 None)
    return {"kind": kind, "seed": seed, "intervened": intervene, "val_acc": acc,
            "alarms_before": len(before), "sampled": len(w.timeline),
            "alarms": sum(r["verdict"] != "healthy" for r in w.timeline),
            "onset": (after["step"], after["verdict"]) if after else None,
            "after": sorted({r["verdict"] for r in w.timeline if r["step"] >= at}),
            "torchmortem": found, "at": at}


def torchmortem_findings(autopsy) -> list[dict]:
    """Its warnings and critical findings: title, the step it starts at, the cause named
    (zoo.TORCHMORTEM_CAUSES: the same mapping the zoo's table uses)."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "zoo"))
    from zoo import TORCHMORTEM_CAUSES

    out = []
    for f in autopsy.get_report().findings:
        if f.severity.name == "INFO":
            continue
        cause = next((c for start, c in TORCHMORTEM_CAUSES if f.title.startswith(start)),
                     "other")
        out.append({"title": f.title, "start": int(f.step_range[0]), "cause": cause})
    return sorted(out, key=lambda f: f["start"])


def grouped(found: list[dict]) -> str:
    """torchmortem's findings by the cause they name: 'cause from S (k layers)'."""
    by: dict[str, list[int]] = {}
    for f in found:
        by.setdefault(f["cause"], []).append(f["start"])
    return ", ".join(f"{c} from {min(v)} ({len(v)} layer{'s' if len(v) > 1 else ''})"
                     for c, v in sorted(by.items(), key=lambda kv: min(kv[1])))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--at", type=int, default=300)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--kinds", nargs="+", default=list(EXPECTED))
    p.add_argument("--peers", action="store_true",
                   help="torchmortem's Autopsy in the same loop (pip install torchmortem)")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="write each run's history.json and report.html under DIR/KIND-on|off-"
                        "seedS (on: with the intervention)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ds = data.load_cached()
    peer = " torchmortem: causes from their window's start |" if args.peers else ""
    print("| scenario | seed | intervention | onset (step, verdict) | steps after | alarms "
          f"before | alarms / sampled | verdicts from then | val acc |{peer}")
    print("|---|---:|---|---|---:|---:|---:|---|---:|" + ("---|" if args.peers else ""))
    quiet = sampled = 0
    tm = {"caught": 0, "runs": 0, "twin_findings": 0, "twins": 0, "twins_quiet": 0}
    for kind in args.kinds:
        for seed in args.seeds:
            splits = data.split(ds, 42 + seed, 0.1)
            for intervene in (True, False):
                r = run(kind, seed, args.steps, args.at, args.every, intervene, splits,
                        args.peers, args.keep)
                onset = f"{r['onset'][0]}, {r['onset'][1]}" if r["onset"] else "-"
                late = r["onset"][0] - r["at"] if r["onset"] else "-"
                if not intervene:
                    quiet += r["alarms"]
                    sampled += r["sampled"]
                if kind == "no_decay":
                    what = "weight decay 0" if intervene else f"weight decay {DECAY}"
                else:
                    what = f"at {args.at}" if intervene else "none"
                row = (f"| {kind} | {seed} | {what} | {onset} | {late} | {r['alarms_before']} "
                       f"| {r['alarms']}/{r['sampled']} | {', '.join(r['after'])} "
                       f"| {r['val_acc']:.3f} |")
                if args.peers:
                    found = r["torchmortem"]
                    row += " " + (grouped(found) or "nothing") + " |"
                    if intervene:
                        tm["runs"] += 1
                        tm["caught"] += any(f["cause"] == EXPECTED[kind]
                                            and f["start"] >= r["at"] for f in found)
                    else:
                        tm["twins"] += 1
                        tm["twin_findings"] += len(found)
                        tm["twins_quiet"] += not found
                print(row, flush=True)
    print(f"\ntwins without intervention: {quiet} alarms in {sampled} sampled steps "
          f"({1000 * quiet / max(1, sampled):.1f} per 1,000)")
    if args.peers:
        print(f"torchmortem: the expected cause found from the intervention on in "
              f"{tm['caught']} of {tm['runs']} runs; on the twins {tm['twin_findings']} "
              f"findings, {tm['twins_quiet']} of {tm['twins']} twins with none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
