"""What `vgbench.inspect` costs on a model, next to one forward and backward of the same batch
(time) and next to training steps of the same model (memory).

Time: runs them in turn (forward+backward, inspect, forward+backward, ...) after one warm-up
of each, so that drift in machine load hits both alike; prints medians, their ratio, and
how many times inspect ran the model forward and backward. --trial also times
inspect(trial=True) in the same rotation (with SGD lr 0.01, inspect's default).

Memory (--memory, Linux): each of two training steps with the optimizer, and inspect with
the same optimizer, in a fresh process started from the same state (model, batch, optimizer
built); the peak resident memory above where it started (the kernel's high-water mark,
reset just before), next to the model's weights. Blocks above 64 KiB are mapped and given
back when freed (glibc's MALLOC_MMAP_THRESHOLD_, set for those processes), so the peak is
what was live, not what the allocator kept for reuse (--default-malloc: its own rule).

    python benchmarks/inspect_cost.py [--model resnet18] [--batch 32] [--size 224]
                                      [--repeats 3] [--threads N] [--trial]
                                      [--memory] [--optimizer adam]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from tabulate import tabulate

import vgbench


def model_and_batch(name: str, batch: int, size: int):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "wide_mlp":  # 33.6M weights in four Linear layers, 1024 inputs
        widths = (1024, 4096, 4096, 3072, 10)
        layers = []
        for a, b in zip(widths, widths[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        return torch.nn.Sequential(*layers[:-1]), torch.randn(batch, 1024, generator=g), 10
    if name == "sigmoid_cnn":  # the example project's CNN on 28x28 images
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "own_model"))
        import twins

        return twins.sigmoid_cnn(), torch.randn(batch, 1, 28, 28, generator=g), 10
    model = getattr(torchvision.models, name)(num_classes=10)
    return model, torch.randn(batch, 3, size, size, generator=g), 10


class Counts:
    """While active: forward calls of the root module, and backward passes through it (a
    hook on its output fires when a backward reaches it)."""

    def __init__(self, model):
        self.model, self.forward, self.backward = model, 0, 0

    def __enter__(self):
        def seen(module, inputs, output):
            self.forward += 1
            if torch.is_tensor(output) and output.requires_grad:
                output.register_hook(self._backward)
        self.hook = self.model.register_forward_hook(seen)
        return self

    def _backward(self, grad):
        self.backward += 1

    def __exit__(self, *exc):
        self.hook.remove()


def _status(key: str) -> int:
    """A /proc/self/status entry in bytes (VmRSS: resident now, VmHWM: its peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def _peak(job: tuple) -> tuple[float, float]:
    """In a fresh process: (MiB of the model's weights, peak MiB above the start) of job =
    (model name, batch, size, optimizer, what: 'train' (two steps) or 'inspect')."""
    name, batch, size, optimizer, what = job
    model, x, classes = model_and_batch(name, batch, size)
    y = torch.randint(0, classes, (len(x),), generator=torch.Generator().manual_seed(1))
    opt = (torch.optim.Adam(model.parameters(), lr=1e-3) if optimizer == "adam"
           else torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2 ** 20
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark := resident now
    start = _status("VmRSS")
    if what == "train":
        for _ in range(2):
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    else:
        vgbench.inspect(model, x, y, optimizer=opt)
    return weights, (_status("VmHWM") - start) / 2 ** 20


def memory(args) -> None:
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("inspect_cost.py --memory reads Linux's /proc/self (the peak resident "
                         "memory and its reset); this system has none")
    rows = []
    if not args.default_malloc:  # read by glibc as each measuring process starts
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)
    ctx = multiprocessing.get_context("spawn")
    for name in args.model or ["resnet18", "wide_mlp"]:
        peaks = {}
        for what in ("train", "inspect"):
            with ctx.Pool(1) as pool:  # a new process each: nothing left from the other
                weights, peaks[what] = pool.apply(_peak, ((name, args.batch, args.size,
                                                           args.optimizer, what),))
        rows.append([name, f"{weights:.0f}", f"{peaks['train']:.0f}", f"{peaks['inspect']:.0f}",
                     f"{peaks['inspect'] - peaks['train']:+.0f}",
                     f"{(peaks['inspect'] - peaks['train']) / weights:+.2f}"])
    malloc = ("default malloc" if args.default_malloc
              else "blocks over 64 KiB mapped and unmapped (MALLOC_MMAP_THRESHOLD_)")
    print(f"torch {torch.__version__}, CPU, batch {args.batch}, optimizer {args.optimizer}; "
          f"peak resident MiB above the start, each in a fresh process; {malloc}")
    print(tabulate(rows, headers=["model", "weights MiB", "2 train steps", "inspect",
                                  "inspect - train", "in weights"], disable_numparse=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append",
                   help="a torchvision model name, sigmoid_cnn or wide_mlp (repeatable; "
                        "default resnet18 and sigmoid_cnn; with --memory resnet18 and "
                        "wide_mlp)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224, help="image side for torchvision models")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--memory", action="store_true",
                   help="peak memory of inspect vs two training steps instead of time")
    p.add_argument("--default-malloc", action="store_true",
                   help="for --memory: leave glibc's mmap threshold alone (it rises as large "
                        "blocks are freed, and freed memory then stays resident for reuse, "
                        "so the peak counts it too)")
    p.add_argument("--trial", action="store_true",
                   help="also time inspect(trial=True), in the same rotation")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                   help="for --memory: Adam (lr 1e-3) or SGD with momentum 0.9 (lr 0.01)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory:
        return memory(args)
    rows = []
    for name in args.model or ["resnet18", "sigmoid_cnn"]:
        model, x, classes = model_and_batch(name, args.batch, args.size)
        y = torch.randint(0, classes, (len(x),), generator=torch.Generator().manual_seed(1))

        def forward_backward():
            F.cross_entropy(model(x), y).backward()
            model.zero_grad(set_to_none=True)

        def inspect():
            return vgbench.inspect(model, x, y)

        def trial():
            return vgbench.inspect(model, x, y, trial=True)

        forward_backward()
        with Counts(model) as counts:
            report = inspect()
        fns = {"fb": forward_backward, "inspect": inspect, **({"trial": trial} if args.trial
                                                              else {})}
        if args.trial:
            trial()  # its warm-up
        times = {k: [] for k in fns}
        for _ in range(args.repeats):
            for key, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
        fb, ins = (statistics.median(times[k]) for k in ("fb", "inspect"))
        row = [name, f"{len(x)}x" + "x".join(map(str, x.shape[1:])),
               len(report.layers), f"{fb:.3f}", f"{ins:.3f}", f"{ins / fb:.2f}",
               counts.forward, counts.backward, report.verdict["verdict"]]
        if args.trial:
            tri = statistics.median(times["trial"])
            row += [f"{tri:.3f}", f"{tri / fb:.2f}", f"{tri / ins:.2f}"]
        rows.append(row)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; medians of "
          f"{args.repeats}")
    print(tabulate(rows, headers=["model", "batch", "weights", "fwd+bwd s", "inspect s",
                                  "ratio", "forwards", "backwards", "verdict",
                                  *(["trial s", "trial / fwd+bwd", "trial / inspect"]
                                    if args.trial else [])],
                   disable_numparse=True))


if __name__ == "__main__":
    main()
