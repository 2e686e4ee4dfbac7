"""Trouble that starts late, labelled by intervention: does vgbench.watch flag it at the
step it starts, and stay quiet on the same run without it?

    python benchmarks/watch_late.py [--seeds 0 1 2] [--steps 600] [--at 300] [--every 10]

Each scenario is a 7 x 128 MLP on Fashion-MNIST (batches of 512 from the train split, the
suite's data), trained twice from the same init and batches: once with an intervention at
step `at`, once without (the twin). Scenarios:
  lr_jump     tanh, Xavier init, SGD lr 0.05; at `at` the learning rate jumps 30x
  kill_relu   ReLU, He init, SGD lr 0.05; at `at` every hidden bias is pushed down by 2
              (what one large step down the biases does; a 50x step diverges instead)
  grow        tanh, Xavier init, SGD lr 0.05; from `at` every weight grows 1% a step
Printed per run: the onset of the first non-healthy verdict at or after `at` (its step and
verdict), alarms before `at`, and the validation accuracy at the end (did it train).
"""

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn

import vgbench
from vgbench import data

EXPECTED = {"lr_jump": "exploding", "kill_relu": "dead units", "grow": "saturated"}


def build(kind: str, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    act = {"lr_jump": nn.Tanh, "kill_relu": nn.ReLU, "grow": nn.Tanh}[kind]
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
        splits) -> dict:
    net = build(kind, seed)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(seed)
    with vgbench.watch(net, opt, every=every) as w:
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
            "after": sorted({r["verdict"] for r in w.timeline if r["step"] >= at})}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--at", type=int, default=300)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--kinds", nargs="+", default=list(EXPECTED))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ds = data.load_cached()
    print("| scenario | seed | intervention | onset (step, verdict) | steps after | alarms "
          "before | alarms / sampled | verdicts from then | val acc |")
    print("|---|---:|---|---|---:|---:|---:|---|---:|")
    quiet = sampled = 0
    for kind in args.kinds:
        for seed in args.seeds:
            splits = data.split(ds, 42 + seed, 0.1)
            for intervene in (True, False):
                r = run(kind, seed, args.steps, args.at, args.every, intervene, splits)
                onset = f"{r['onset'][0]}, {r['onset'][1]}" if r["onset"] else "-"
                late = r["onset"][0] - args.at if r["onset"] else "-"
                if not intervene:
                    quiet += r["alarms"]
                    sampled += r["sampled"]
                print(f"| {kind} | {seed} | {'at ' + str(args.at) if intervene else 'none'} | "
                      f"{onset} | {late} | {r['alarms_before']} | {r['alarms']}/{r['sampled']} "
                      f"| {', '.join(r['after'])} | {r['val_acc']:.3f} |", flush=True)
    print(f"\ntwins without intervention: {quiet} alarms in {sampled} sampled steps "
          f"({1000 * quiet / max(1, sampled):.1f} per 1,000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
