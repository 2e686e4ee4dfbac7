"""What the per-layer diagnostics cost: epoch time with them on vs off, side by side.

Runs each remedy for a few epochs twice, probing on and off, alternating the order per
remedy so drift in machine load hits both, and prints the medians and the ratio.

    python benchmarks/diag_cost.py [--epochs 4] [--device auto] [--remedy baseline ...]
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch
from tabulate import tabulate

from vgbench import data, registry, train


def epoch_times(name: str, splits, epochs: int, diagnostics: bool) -> list[float]:
    """Per-epoch seconds (train + validation + probe when on), device synchronized."""
    cfg = replace(registry.get(name).config, epochs=epochs, stage_epochs=epochs,
                  diagnostics=diagnostics)
    run = train.Run(cfg, splits, name)
    for _ in range(epochs):
        run.step()
    return run.history.epoch_time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4, help="timed epochs per setting")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--remedy", action="append", help="remedy (repeatable; default "
                   "baseline, relu, batchnorm)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = train.resolve_device(args.device)
    splits = data.split(data.load_cached(device=device), 42)
    rows = []
    for i, name in enumerate(args.remedy or ["baseline", "relu", "batchnorm"]):
        order = (True, False) if i % 2 == 0 else (False, True)
        times = {on: epoch_times(name, splits, args.epochs, on) for on in order}
        on, off = statistics.median(times[True]), statistics.median(times[False])
        rows.append([name, f"{off:.3f}", f"{on:.3f}", f"{100 * (on / off - 1):+.1f}%"])
    print(f"device {device}, torch threads {torch.get_num_threads()}, "
          f"{args.epochs} epochs per setting, median s/epoch")
    print(tabulate(rows, headers=["remedy", "diagnostics off", "diagnostics on", "cost"]))


if __name__ == "__main__":
    main()
