"""Epoch time against the hardware's floor: the same epoch's matrix multiplies alone.

For each remedy, in one process and interleaved (floor, remedy, floor, remedy, ...):
(a) the floor: every GEMM one vgbench epoch runs (train forward and backward, validation
    forward, the diagnostics probe's forward and backward), with the same shapes, the same
    transposes and the same thread count, on preallocated tensors: no autograd, no
    elementwise work, no data movement;
(b) one vgbench epoch (train + validation + probe), as Run.step times it;
(c) with --before, the same epoch with this version's CPU speed-ups switched off
    (denormals not flushed, per-tensor optimizer steps): what the loop cost before them,
    measured side by side.
Prints ms per epoch (medians) and the multiple of the floor. With --course, also the course
project's own loop (torchvision DataLoader, a `.item()` per batch) for the baseline.

    python benchmarks/speed.py --all [--before] [--epochs 3] [--device auto] [--threads 1]
    python benchmarks/speed.py --remedy baseline --remedy custom_norm
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import torch
from tabulate import tabulate
from torch import nn
from torch.utils.data import DataLoader, random_split

from vgbench import data, model, registry, train
from vgbench.model import IN_DIM, N_CLASS, build

SUITE_THREADS = 1
"""`pytest benchmarks -n auto` runs one worker per core, each with one torch thread."""


def gemm_plan(cfg, n_train: int, n_val: int, probe: int) -> list[tuple[int, list]]:
    """[(epochs, gemms)] per training stage: every GEMM of one epoch as
    (kind, batch, fan_in, fan_out) with kind 'fwd' (addmm, as nn.Linear), 'dx' (the input
    gradient) or 'dw' (the weight gradient)."""
    dims = [IN_DIM] + [cfg.width] * cfg.n_layer
    bounds = train.batch_bounds(n_train, cfg.batch_size)
    val = [min(cfg.batch_size, n_val - i) for i in range(0, n_val, cfg.batch_size)]
    ends = [sum(cfg.stage_blocks[:i + 1]) for i in range(cfg.n_stages)]
    plan = []
    for k in range(cfg.n_stages):
        last = not cfg.layerwise or k == cfg.n_stages - 1
        hi = cfg.n_layer if last else ends[k]
        lo = 0 if last else (ends[k - 1] if k else 0)
        layers = list(zip(dims[:hi], dims[1:hi + 1])) + [(cfg.width, N_CLASS)]
        trained = set(range(lo, hi)) | {hi}  # the block and the head
        gemms = []
        for b in [hi_ - lo_ for lo_, hi_ in bounds]:
            gemms += [("fwd", b, i, o) for i, o in layers]
            for j, (i, o) in enumerate(layers):
                if j in trained:
                    gemms.append(("dw", b, i, o))
                if j > lo:  # the gradient flows down to the block's first layer
                    gemms.append(("dx", b, i, o))
        full = list(zip(dims[:-1], dims[1:])) + [(cfg.width, N_CLASS)]
        gemms += [("fwd", b, i, o) for b in val for i, o in layers]
        gemms += [("fwd", probe, i, o) for i, o in full]  # the probe: the whole net
        gemms += [("dw", probe, i, o) for i, o in full]
        gemms += [("dx", probe, i, o) for j, (i, o) in enumerate(full) if j > 0]
        epochs = cfg.epochs_per_stage if cfg.layerwise else cfg.epochs
        plan.append((epochs, gemms))
    return plan


class Floor:
    """Runs a plan's GEMMs on preallocated tensors (the inputs are reused: no data
    movement, the caches as warm as they get)."""

    def __init__(self, gemms: list, device: torch.device):
        self.device, self.calls = device, []
        shapes = {}
        for kind, b, i, o in gemms:
            key = (kind, b, i, o)
            if key not in shapes:
                x = torch.randn(b, i, device=device)
                w = torch.randn(o, i, device=device)
                g = torch.randn(b, o, device=device)
                bias = torch.randn(o, device=device)
                shapes[key] = (x, w, g, bias)
            x, w, g, bias = shapes[key]
            if kind == "fwd":
                self.calls.append((torch.addmm, (bias, x, w.t())))
            elif kind == "dx":
                self.calls.append((torch.mm, (g, w)))
            else:
                self.calls.append((torch.mm, (g.t(), x)))

    def epoch(self) -> float:
        """Seconds for one pass over the GEMMs, the device synchronized."""
        train.sync(self.device)
        t0 = time.perf_counter()
        for fn, args in self.calls:
            fn(*args)
        train.sync(self.device)
        return time.perf_counter() - t0


@contextmanager
def speedups_off():
    """This version's CPU speed-ups switched off, for a before/after in one process."""
    real_flush, real_opt = train.flush_denormals, model.make_optimizer

    def per_tensor(params, cfg, parts=model.DEFAULT_PARTS, capturable=False):
        opt = real_opt(params, cfg, parts, capturable)
        opt.defaults["foreach"] = False
        for group in opt.param_groups:
            group["foreach"] = False
        return opt

    train.flush_denormals = nullcontext
    model.make_optimizer = per_tensor
    try:
        yield
    finally:
        train.flush_denormals, model.make_optimizer = real_flush, real_opt


def remedy_vs_floor(name: str, splits, epochs: int, before: bool = False) -> tuple:
    """(median seconds per vgbench epoch, per floor epoch, per epoch with the speed-ups off
    or None), interleaved; the first epoch of each is a warm-up. Layerwise: each stage's
    first epoch is dropped too."""
    cfg = replace(registry.get(name).config, epochs=epochs + 1, stage_epochs=epochs + 1)
    device = splits.train_x.device
    plan = gemm_plan(cfg, len(splits.train_y), len(splits.val_y), cfg.probe_size)
    floors = [Floor(gemms, device) for _, gemms in plan]
    parts = registry.get(name).parts
    run = train.Run(cfg, splits, name, parts)
    old = None
    if before:
        with speedups_off():
            old = train.Run(cfg, splits, name, parts)
    ours, floor_times, old_times = [], [], []
    while not run.done:
        stage = min(run.epoch_no // cfg.epochs_per_stage, len(floors) - 1)
        floor_times.append(floors[stage].epoch())
        run.step()
        ours.append(run.history.epoch_time[-1])
        if old is not None:
            with speedups_off():
                old.step()
            old_times.append(old.history.epoch_time[-1])
    keep = (lambda i: i % cfg.epochs_per_stage) if cfg.layerwise else (lambda i: i > 0)

    def median(times):
        return statistics.median([t for i, t in enumerate(times) if keep(i)]) if times else None
    return median(ours), median(floor_times), median(old_times)


def _torchvision_root(tmp: Path) -> Path:
    # torchvision wants the uncompressed files under ROOT/FashionMNIST/raw
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in data.locate(download=False).values():
        target = raw / path.name.removesuffix(".gz")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return tmp


def course_epochs(root: Path, device: torch.device, epochs: int) -> list[float]:
    """The seed text's training loop, timed per epoch (train + validation)."""
    import torchvision.transforms as transforms
    from torchvision.datasets import FashionMNIST

    torch.manual_seed(42)
    full = FashionMNIST(str(root), train=True, transform=transforms.ToTensor())
    train_size = int(len(full) * 0.9)
    train_subset, val_subset = random_split(full, [train_size, len(full) - train_size])
    train_loader = DataLoader(train_subset, batch_size=512, shuffle=True)
    val_loader = DataLoader(val_subset, batch_size=512, shuffle=False)
    model = build(registry.get("baseline").config).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    times = []
    for _ in range(epochs):
        train.sync(device)
        t0 = time.perf_counter()
        model.train()
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            outputs = model(x)
            loss = criterion(outputs, y)
            loss.backward()
            optimizer.step()
            loss.item(), (torch.argmax(outputs, 1) == y).sum().item()
        model.eval()
        with torch.no_grad():
            for x, y in val_loader:
                x, y = x.to(device), y.to(device)
                outputs = model(x)
                criterion(outputs, y).item(), (torch.argmax(outputs, 1) == y).sum().item()
        train.sync(device)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--all", action="store_true", help="every remedy of the registry")
    p.add_argument("--remedy", action="append", default=[], help="this remedy (repeatable)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=SUITE_THREADS,
                   help=f"torch threads (default {SUITE_THREADS}, as in the suite)")
    p.add_argument("--before", action="store_true",
                   help="also time each epoch with this version's CPU speed-ups off")
    p.add_argument("--course", action="store_true",
                   help="also time the course project's own loop (baseline)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = train.resolve_device(args.device)
    names = registry.names() if args.all else args.remedy or ["baseline"]
    splits = data.split(data.load_cached(device=device), 42)
    rows = []
    for name in names:
        ours, floor, old = remedy_vs_floor(name, splits, args.epochs, args.before)
        row = [name, f"{floor * 1e3:.0f}", f"{ours * 1e3:.0f}", f"{ours / floor:.2f}"]
        if old is not None:
            row += [f"{old * 1e3:.0f}", f"{old / floor:.2f}"]
        rows.append(row)
        print(f"  {name}: {ours * 1e3:.0f} ms, floor {floor * 1e3:.0f} ms", flush=True)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"median of {args.epochs} epochs after a warm-up (train 54,000 + validation 6,000 "
          "+ probe 512)")
    headers = ["remedy", "floor ms/epoch", "vgbench ms/epoch", "x floor"]
    if args.before:
        headers += ["speed-ups off ms/epoch", "x floor"]
    print(tabulate(rows, headers=headers))
    if args.course:
        with tempfile.TemporaryDirectory() as tmp:
            course = course_epochs(_torchvision_root(Path(tmp)), device, args.epochs)
        c = statistics.median(course)
        base = next((float(r[2]) for r in rows if r[0] == "baseline"), None)
        print(f"course loop (baseline) s/epoch: {' '.join(f'{t:.2f}' for t in course)}, "
              f"median {c:.2f}" + (f"; vgbench is {c * 1e3 / base:.1f}x faster"
                                   if base else ""))


if __name__ == "__main__":
    main()
