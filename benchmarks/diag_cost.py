"""What the per-layer diagnostics cost: epoch time with them on vs off, side by side.

Builds two runs of each remedy, probing on and off, and steps them in turn (on, off, on,
off, ...) so that drift in machine load hits both alike. The first epoch of each is a
warm-up (CUDA and allocator start-up) and is not counted. Prints medians and the ratio.

    python benchmarks/diag_cost.py [--epochs 4] [--device auto] [--remedy baseline ...]
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch
from tabulate import tabulate

from vgbench import data, machine, registry, train


def paired_epoch_times(name: str, splits, epochs: int) -> dict[bool, list[float]]:
    """{diagnostics on?: per-epoch seconds}, the two runs stepped alternately."""
    cfg = replace(registry.get(name).config, epochs=epochs + 1, stage_epochs=epochs + 1)
    runs = {on: train.Run(replace(cfg, diagnostics=on), splits, name) for on in (True, False)}
    for _ in range(epochs + 1):
        for run in runs.values():
            run.step()
    return {on: run.history.epoch_time[1:] for on, run in runs.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4, help="timed epochs per setting (after one warm-up)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--remedy", action="append", help="remedy (repeatable; default "
                   "baseline, relu, batchnorm)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = machine.resolve_device(args.device)
    splits = data.split(data.load_cached(device=device), 42)
    rows = []
    for name in args.remedy or ["baseline", "relu", "batchnorm"]:
        times = paired_epoch_times(name, splits, args.epochs)
        on, off = statistics.median(times[True]), statistics.median(times[False])
        rows.append([name, f"{off:.3f}", f"{on:.3f}", f"{100 * (on / off - 1):+.1f}%"])
    print(f"device {device}, torch threads {torch.get_num_threads()}, "
          f"{args.epochs} epochs per setting, median s/epoch")
    print(tabulate(rows, headers=["remedy", "diagnostics off", "diagnostics on", "cost"]))


if __name__ == "__main__":
    main()
