"""Epoch time against the hardware's floor: the same epoch's matrix multiplies alone.

For each remedy, in one process and interleaved (floor, remedy, floor, remedy, ...):
(a) the floor: every GEMM one vgbench epoch runs (train forward and backward, validation
    forward, the diagnostics probe's forward and backward and its forward after the step), with the same shapes, the same
    transposes and the same thread count, on preallocated tensors: no autograd, no
    elementwise work, no data movement;
(b) ops alone (CPU): every aten op the epoch calls (recorded during the warm-up epoch with a
    dispatch mode: GEMMs, elementwise, reductions, the batch gather, the optimizer's foreach
    ops, views), each replayed warm on copies of its recorded inputs and timed in a loop,
    times its count: what the epoch's own arithmetic costs with no autograd, no Python module
    calls, nothing between the ops (each call still pays one dispatch, about a microsecond);
(c) one vgbench epoch (train + validation + probe), as Run.step times it;
(d) with --before, the same epoch with this version's CPU speed-ups switched off
    (denormals not flushed, per-tensor optimizer steps): what the loop cost before them,
    measured side by side;
(e) on CUDA, the same epoch without the CUDA graph (eager steps), side by side: what the
    graph saves (--no-eager leaves it out).
(f) with --group K, the session's groups at K seeds (vgbench.batched: the seeds of a remedy
    and the remedies that differ only in init or learning rate, as `--vg-batch-seeds on`
    forms them), each group's epoch against its members' epochs one by one, interleaved
    (group, then each member alone, per epoch): ms per epoch per member, group vs alone.
Prints ms per epoch (medians) and the multiple of the floor; --ops N lists each remedy's N
costliest non-GEMM ops (where the time beyond the floor goes). With --course, also the course
project's own loop (torchvision DataLoader, a `.item()` per batch) for the baseline.

    python benchmarks/speed.py --all [--before] [--epochs 3] [--device auto] [--threads 1]
    python benchmarks/speed.py --all --device cuda     # graph and eager side by side
    python benchmarks/speed.py --remedy baseline --remedy custom_norm --ops 8
    python benchmarks/speed.py --group 5 --device cuda   # the course suite's groups
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import tempfile
import time
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tabulate import tabulate
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.data import DataLoader, random_split

from vgbench import batched, data, machine, model, registry, train
from vgbench.config import option_type
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
        gemms += [("fwd", probe, i, o) for i, o in full]  # its loss after the would-be step
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
        machine.sync(self.device)
        t0 = time.perf_counter()
        for fn, args in self.calls:
            fn(*args)
        machine.sync(self.device)
        return time.perf_counter() - t0


GEMM_OPS = frozenset({"mm", "addmm", "bmm", "baddbmm", "mv", "addmv", "addmm_", "matmul"})
"""aten ops the floor stands for (by overload packet name)."""


def _spec(x) -> object:
    if isinstance(x, torch.Tensor):
        return (tuple(x.shape), x.stride(), x.dtype, x.device.type)
    return repr(x)


class OpsAlone(TorchDispatchMode):
    """Records every aten op run under it (one copy of the inputs per distinct signature:
    op, shapes, strides, dtypes, scalar arguments; and how often it ran); `seconds()` replays
    each warm and returns {op name: seconds for all its calls}."""

    def __init__(self):
        super().__init__()
        self.calls: dict = {}  # signature -> [op, args, kwargs, count]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        key = (func, repr(tree_map(_spec, (args, kwargs))))
        if key in self.calls:
            self.calls[key][3] += 1
        else:
            # inputs copied before the op runs: in-place ops replay on what they saw
            copy = (lambda x: x.detach().clone() if isinstance(x, torch.Tensor) else x)
            self.calls[key] = [func, tree_map(copy, args), tree_map(copy, kwargs), 1]
        return func(*args, **kwargs)

    @property
    def n_calls(self) -> int:
        return sum(c[3] for c in self.calls.values())

    def seconds(self, reps: int = 10, loops: int = 5) -> Counter:
        """{op: seconds}: each signature's median over `loops` loops of `reps` warm calls, times
        its count; views and other metadata-only ops under 'views'."""
        out = Counter()
        with machine.flush_denormals():
            for func, args, kwargs, count in self.calls.values():
                name = func.overloadpacket.__name__
                for _ in range(2):
                    func(*args, **kwargs)
                per_call = []
                for _ in range(loops):
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        func(*args, **kwargs)
                    per_call.append((time.perf_counter() - t0) / reps)
                out["views" if func.is_view or name == "detach" else name] += (
                    statistics.median(per_call) * count)
        return out


@contextmanager
def speedups_off():
    """This version's CPU speed-ups switched off, for a before/after in one process."""
    real_flush, real_opt = machine.flush_denormals, model.make_optimizer

    def per_tensor(params, cfg, parts=model.DEFAULT_PARTS, capturable=False):
        opt = real_opt(params, cfg, parts, capturable)
        opt.defaults["foreach"] = False
        for group in opt.param_groups:
            group["foreach"] = False
        return opt

    machine.flush_denormals = nullcontext
    model.make_optimizer = per_tensor
    try:
        yield
    finally:
        machine.flush_denormals, model.make_optimizer = real_flush, real_opt


@dataclass
class Timing:
    """One remedy's medians, seconds per epoch."""

    ours: float
    floor: float
    ops: float | None = None
    """ops alone (CPU only)"""
    before: float | None = None
    eager: float | None = None
    """CUDA: the epoch with cuda_graph off"""
    graph: str | None = None
    """CUDA: the graphed run's History.cuda_graph ('captured' or why eager)"""
    by_op: Counter = field(default_factory=Counter)
    """ops alone per aten op, averaged over the stages as the medians are"""
    calls: int = 0
    """aten op calls per epoch"""


def remedy_vs_floor(name: str, splits, epochs: int, before: bool = False,
                    eager: bool = False) -> Timing:
    """Medians of the vgbench epoch, the floor, the ops alone (CPU) and, with `before`, the
    epoch with the speed-ups off; floor and epochs interleaved; the first epoch of each is a
    warm-up (each stage's first, layerwise), and the ops are recorded during it."""
    cfg = replace(registry.get(name).config, epochs=epochs + 1, stage_epochs=epochs + 1)
    device = splits.train_x.device
    plan = gemm_plan(cfg, len(splits.train_y), len(splits.val_y), cfg.probe_size)
    floors = [Floor(gemms, device) for _, gemms in plan]
    parts = registry.get(name).parts
    run = train.Run(cfg, splits, name, parts)
    old = plain = None
    if before:
        with speedups_off():
            old = train.Run(cfg, splits, name, parts)
    if eager:
        plain = train.Run(replace(cfg, cuda_graph=False), splits, name, parts)
    ours, floor_times, old_times, plain_times, stages, recorders = [], [], [], [], [], []
    while not run.done:
        stage = min(run.epoch_no // cfg.epochs_per_stage, len(floors) - 1)
        stages.append(stage)
        floor_times.append(floors[stage].epoch())
        warm_up = run.epoch_no % cfg.epochs_per_stage == 0
        if warm_up and device.type == "cpu":
            recorders.append(OpsAlone())
            with recorders[-1]:
                run.step()
        else:
            run.step()
        ours.append(run.history.epoch_time[-1])
        if old is not None:
            with speedups_off():
                old.step()
            old_times.append(old.history.epoch_time[-1])
        if plain is not None:
            plain.step()
            plain_times.append(plain.history.epoch_time[-1])
    kept = [i for i in range(len(ours)) if i % cfg.epochs_per_stage]
    n_stage = stages[-1] + 1

    def median(times):
        """Each stage's median, averaged over the stages (they run as many epochs each)."""
        if not times:
            return None
        return statistics.fmean(statistics.median(times[i] for i in kept if stages[i] == k)
                                for k in range(n_stage))
    t = Timing(median(ours), median(floor_times), before=median(old_times),
               eager=median(plain_times), graph=run.finish().cuda_graph)
    if recorders:
        by_stage = [r.seconds() for r in recorders]
        t.ops = statistics.fmean(sum(ops.values()) for ops in by_stage)
        for ops in by_stage:
            for op, sec in ops.items():
                t.by_op[op] += sec / n_stage
        t.calls = round(statistics.fmean(r.n_calls for r in recorders))
    return t


def groups(names: list[str], seeds: list[int], epochs: int, ds) -> list[list]:
    """The groups `--vg-batch-seeds on` forms over these remedies and seeds (two members at
    least), as lists of batched.Member at epochs + 1 epochs (one warm-up)."""
    by_key: dict[str, list] = {}
    for name in names:
        remedy = registry.get(name)
        for seed in seeds:
            cfg = replace(remedy.config, epochs=epochs + 1, seed=seed)
            key = batched.group_key(cfg, remedy.parts)
            if key is not None:
                splits = data.split(ds, seed, cfg.val_fraction, cfg.limit)
                by_key.setdefault(key, []).append(batched.Member(cfg, splits, name,
                                                                 remedy.parts))
    return [g for g in by_key.values() if len(g) > 1]


def group_vs_alone(members: list) -> tuple[float, list[float], str | None]:
    """Median ms per epoch of the group (every member at once) and of each member trained
    alone, interleaved; the first epoch of each is a warm-up. Also the group's graph status."""
    group = batched.BatchedRun(members)
    alone = [train.Run(m.cfg, m.splits, m.name, m.parts) for m in members]
    together, one_by_one = [], [[] for _ in members]
    while not group.done:
        group.step()
        together.append(group.runs[0].history.epoch_time[-1])
        for run, times in zip(alone, one_by_one):
            run.step()
            times.append(run.history.epoch_time[-1])
    status = group.graphs.status if group.graphs is not None else None
    return (statistics.median(together[1:]) * 1e3,
            [statistics.median(t[1:]) * 1e3 for t in one_by_one], status)


def print_groups(names: list[str], n_seeds: int, epochs: int, ds) -> None:
    seeds = [42 + i for i in range(n_seeds)]
    rows, total_group, total_alone = [], 0.0, 0.0
    for members in groups(names, seeds, epochs, ds):
        g, alone, status = group_vs_alone(members)
        total_group, total_alone = total_group + g, total_alone + sum(alone)
        who = sorted({m.name for m in members}, key=names.index)
        rows.append([", ".join(who), len(members), f"{g:.1f}", f"{g / len(members):.1f}",
                     f"{statistics.mean(alone):.1f}", f"{sum(alone):.1f}",
                     f"{sum(alone) / g:.2f}", status or "-"])
        print(f"  {rows[-1][0]}: group {g:.0f} ms/epoch, alone {sum(alone):.0f} ms in all",
              flush=True)
    print(tabulate(rows, headers=["group", "members", "group ms/epoch", "per member",
                                  "alone ms/epoch (mean)", "alone, all members",
                                  "speed-up", "graph"], disable_numparse=True))
    if total_group:
        print(f"all groups: {total_group:.0f} ms per epoch of every member together, "
              f"{total_alone:.0f} ms one by one ({total_alone / total_group:.2f}x)")


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
        machine.sync(device)
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
        machine.sync(device)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--all", action="store_true", help="every remedy of the registry")
    p.add_argument("--remedy", action="append", default=[], choices=registry.names(),
                   metavar="NAME", help="this remedy (repeatable)")
    p.add_argument("--epochs", type=option_type(lo=1), default=3,
                   help="timed epochs after one warm-up")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=option_type(lo=1), default=SUITE_THREADS,
                   help=f"torch threads (default {SUITE_THREADS}, as in the suite)")
    p.add_argument("--before", action="store_true",
                   help="also time each epoch with this version's CPU speed-ups off")
    p.add_argument("--no-eager", action="store_true",
                   help="on CUDA, leave out the epoch without the CUDA graph")
    p.add_argument("--ops", type=option_type(lo=0), default=0, metavar="N",
                   help="list each remedy's N costliest non-GEMM ops (CPU)")
    p.add_argument("--course", action="store_true",
                   help="also time the course project's own loop (baseline)")
    p.add_argument("--group", type=option_type(lo=1), default=None, metavar="K",
                   help="instead: the groups of the course suite's remedies (or --remedy's, "
                        "--all's) at K seeds, group vs one by one")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = machine.resolve_device(args.device)
    if args.group is not None:
        names = (registry.names() if args.all else args.remedy
                 or registry.names(("course",)))
        print_groups(names, args.group, args.epochs, data.load_cached(device=device))
        print(f"device {device}, torch {torch.__version__}, threads "
              f"{torch.get_num_threads()}, median of {args.epochs} epochs after a warm-up")
        return
    names = registry.names() if args.all else args.remedy or ["baseline"]
    splits = data.split(data.load_cached(device=device), 42)
    rows, timings = [], {}
    for name in names:
        t = timings[name] = remedy_vs_floor(name, splits, args.epochs, args.before,
                                            eager=device.type == "cuda" and not args.no_eager)
        row = [name, f"{t.floor * 1e3:.1f}"]
        if t.ops is not None:
            row += [f"{t.ops * 1e3:.0f}", f"{t.ops / t.floor:.2f}"]
        row += [f"{t.ours * 1e3:.1f}", f"{t.ours / t.floor:.2f}"]
        if t.before is not None:
            row += [f"{t.before * 1e3:.0f}", f"{t.before / t.floor:.2f}"]
        if t.eager is not None:
            row += [f"{t.eager * 1e3:.1f}", f"{t.eager / t.floor:.2f}",
                    f"{t.eager / t.ours:.1f}", t.graph]
        rows.append(row)
        line = f"  {name}: {t.ours * 1e3:.0f} ms, floor {t.floor * 1e3:.0f} ms"
        if t.ops is not None:
            gemm = sum(v for k, v in t.by_op.items() if k in GEMM_OPS)
            line += (f", ops alone {t.ops * 1e3:.0f} ms ({t.calls} calls; GEMMs among them "
                     f"{gemm * 1e3:.0f} ms)")
        print(line, flush=True)
        rest = [(k, v) for k, v in t.by_op.most_common() if k not in GEMM_OPS]
        for op, sec in rest[:args.ops]:
            print(f"      {op:32s} {sec * 1e3:7.1f} ms  {sec / t.floor:.3f} x floor")
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"median of {args.epochs} epochs after a warm-up (train 54,000 + validation 6,000 "
          "+ probe 512)")
    headers = ["remedy", "floor ms/epoch"]
    if device.type == "cpu":
        headers += ["ops alone ms/epoch", "x floor"]
    headers += ["vgbench ms/epoch", "x floor"]
    if args.before:
        headers += ["speed-ups off ms/epoch", "x floor"]
    if any(t.eager is not None for t in timings.values()):
        headers += ["eager (no graph) ms/epoch", "x floor", "graph speed-up", "graph"]
    print(tabulate(rows, headers=headers, disable_numparse=True))
    if args.course:
        with tempfile.TemporaryDirectory() as tmp:
            course = course_epochs(_torchvision_root(Path(tmp)), device, args.epochs)
        c = statistics.median(course)
        base = timings["baseline"].ours * 1e3 if "baseline" in timings else None
        print(f"course loop (baseline) s/epoch: {' '.join(f'{t:.2f}' for t in course)}, "
              f"median {c:.2f}" + (f"; vgbench is {c * 1e3 / base:.1f}x faster"
                                   if base else ""))


if __name__ == "__main__":
    main()
