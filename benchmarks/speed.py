"""Epoch time: the course project's loop vs vgbench's, in one process, on the same data.

(a) the seed text's loop: torchvision FashionMNIST + ToTensor + DataLoader(batch 512,
    shuffle), a `.item()` per batch for loss and accuracy, then validation the same way;
(b) one vgbench epoch (train + validation, diagnostics on as by default).
Both train the baseline model. Prints each epoch time, the medians and the ratio.

    python benchmarks/speed.py [--epochs 3] [--device auto] [--threads N]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, random_split

from vgbench import data, registry, train
from vgbench.model import build


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
        train_loss, train_acc, count = 0.0, 0.0, 0
        model.train()
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            outputs = model(x)
            loss = criterion(outputs, y)
            loss.backward()
            optimizer.step()
            train_loss += loss.item()
            train_acc += (torch.argmax(outputs, 1) == y).sum().item()
            count += len(y)
        model.eval()
        val_loss, val_acc, count = 0.0, 0.0, 0
        with torch.no_grad():
            for x, y in val_loader:
                x, y = x.to(device), y.to(device)
                outputs = model(x)
                val_loss += criterion(outputs, y).item()
                val_acc += (torch.argmax(outputs, 1) == y).sum().item()
                count += len(y)
        train.sync(device)
        times.append(time.perf_counter() - t0)
    return times


def vgbench_epochs(device: torch.device, epochs: int) -> list[float]:
    """vgbench's epochs (train + validation + probe), as recorded in the history."""
    ds = data.load_cached(device=device)
    cfg = replace(registry.get("baseline").config, epochs=epochs)
    h = train.train(cfg, data.split(ds, cfg.seed), "baseline")
    return h.epoch_time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per loop (default 3)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = train.resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = _torchvision_root(Path(tmp))
        course = course_epochs(root, device, args.epochs)
    ours = vgbench_epochs(device, args.epochs)
    c, v = statistics.median(course), statistics.median(ours)
    print(f"device {device}, torch threads {torch.get_num_threads()}, "
          f"{args.epochs} epochs each (train 54,000 + validation 6,000 images)")
    print(f"course loop   s/epoch: {' '.join(f'{t:.2f}' for t in course)}  median {c:.2f}")
    print(f"vgbench       s/epoch: {' '.join(f'{t:.2f}' for t in ours)}  median {v:.2f}")
    print(f"speed-up (course / vgbench, medians): {c / v:.1f}x")


if __name__ == "__main__":
    main()
