"""What `vgbench.inspect` costs on a model, next to one forward and backward of the same batch.

Times them in turn (forward+backward, inspect, forward+backward, ...) after one warm-up of
each, so that drift in machine load hits both alike; prints medians, their ratio, and how
many times inspect ran the model forward and backward.

    python benchmarks/inspect_cost.py [--model resnet18] [--batch 32] [--size 224]
                                      [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append",
                   help="a torchvision model name or sigmoid_cnn (repeatable; default "
                        "resnet18 and sigmoid_cnn)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224, help="image side for torchvision models")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.model or ["resnet18", "sigmoid_cnn"]:
        model, x, classes = model_and_batch(name, args.batch, args.size)
        y = torch.randint(0, classes, (len(x),), generator=torch.Generator().manual_seed(1))

        def forward_backward():
            F.cross_entropy(model(x), y).backward()
            model.zero_grad(set_to_none=True)

        def inspect():
            return vgbench.inspect(model, x, y)

        forward_backward()
        with Counts(model) as counts:
            report = inspect()
        times = {"fb": [], "inspect": []}
        for _ in range(args.repeats):
            for key, fn in (("fb", forward_backward), ("inspect", inspect)):
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
        fb, ins = (statistics.median(times[k]) for k in ("fb", "inspect"))
        rows.append([name, f"{len(x)}x" + "x".join(map(str, x.shape[1:])),
                     len(report.layers), f"{fb:.3f}", f"{ins:.3f}", f"{ins / fb:.2f}",
                     counts.forward, counts.backward, report.verdict["verdict"]])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; medians of "
          f"{args.repeats}")
    print(tabulate(rows, headers=["model", "batch", "weights", "fwd+bwd s", "inspect s",
                                  "ratio", "forwards", "backwards", "verdict"],
                   disable_numparse=True))


if __name__ == "__main__":
    main()
