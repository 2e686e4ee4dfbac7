"""What vgbench.watch costs a training run, side by side with plain training and with
torchmortem's Autopsy (if installed), on the zoo's resnet18 and pre-norm transformer (CPU,
Fashion-MNIST batches of the zoo, its recipes).

    python benchmarks/watch_cost.py [--steps 150] [--every 50] [--models resnet18 transformer_pre]

Three copies of each model (the same init, optimizer and batches) are stepped in turn, one
plain, one under watch, one under torchmortem, so that the machine's drift hits all alike.
The overhead is the total time over all steps (the sampled steps included: a median would
hide them) against the plain copy's; the losses of the watched copy must equal the plain
one's at every step (watch changes nothing in training).
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent / "zoo"))
import zoo  # noqa: E402

import vgbench  # noqa: E402


def run(name: str, steps: int, every: int, peers: bool) -> dict:
    kinds = ["plain", "watch"] + (["torchmortem"] if peers else [])
    runs = {k: zoo.setup(name, None, 0, steps) for k in kinds}
    monitors = {}
    w = vgbench.watch(runs["watch"][0], runs["watch"][2], every=every)
    w.__enter__()
    if peers:
        from torchmortem import Autopsy

        monitors["torchmortem"] = Autopsy(runs["torchmortem"][0],
                                          optimizer=runs["torchmortem"][2])
        monitors["torchmortem"].attach()
    seconds = {k: 0.0 for k in kinds}
    losses = {k: [] for k in kinds}
    rng = {k: torch.get_rng_state() for k in kinds}
    try:
        for net, *_ in runs.values():
            net.train()
        for step in range(steps):
            for k in kinds:
                net, _, opt, task = runs[k]
                xb, yb = task.batch(step)
                torch.set_rng_state(rng[k])
                t0 = time.perf_counter()
                loss = F.cross_entropy(net(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                value = loss.item()
                if k == "watch":
                    w.step(value)
                elif k == "torchmortem":
                    monitors[k].step(loss=value)
                seconds[k] += time.perf_counter() - t0
                losses[k].append(value)
                rng[k] = torch.get_rng_state()
    finally:
        w.close(write=False)
        if peers:
            monitors["torchmortem"].detach()
    out = {"model": name, "steps": steps, "every": every,
           "plain_ms": 1000 * seconds["plain"] / steps,
           "watch_ms": 1000 * seconds["watch"] / steps,
           "watch_same_losses": losses["watch"] == losses["plain"],
           "sampled": len(w.timeline), "verdicts": sorted({r["verdict"] for r in w.timeline})}
    if peers:
        out["torchmortem_ms"] = 1000 * seconds["torchmortem"] / steps
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--every", type=int, default=vgbench.monitor.DEFAULT_EVERY)
    p.add_argument("--models", nargs="+", default=["resnet18", "transformer_pre"])
    p.add_argument("--no-peers", action="store_true", help="without torchmortem")
    args = p.parse_args(argv)
    peers = not args.no_peers
    if peers:
        try:
            import torchmortem  # noqa: F401
        except ImportError:
            print("watch_cost.py: torchmortem is not installed (pip install "
                  "'vgbench[peers]'), or pass --no-peers", file=sys.stderr)
            return 2
    print(f"| model | plain ms/step | watch every {args.every} | overhead |"
          + (" torchmortem | overhead |" if peers else "") + " losses equal | sampled |")
    print("|---|---:|---:|---:|" + ("---:|---:|" if peers else "") + "---|---:|")
    for name in args.models:
        try:
            r = run(name, args.steps, args.every, peers)
        except RuntimeError as exc:  # torchmortem's full backward hooks, in-place ReLUs
            if not peers:
                raise
            r = run(name, args.steps, args.every, False)
            r["torchmortem_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:60]}"
        row = (f"| {name} | {r['plain_ms']:.1f} | {r['watch_ms']:.1f} | "
               f"{r['watch_ms'] / r['plain_ms'] - 1:+.1%} |")
        if peers and "torchmortem_ms" in r:
            row += (f" {r['torchmortem_ms']:.1f} | "
                    f"{r['torchmortem_ms'] / r['plain_ms'] - 1:+.1%} |")
        elif peers:
            row += f" crashed: {r['torchmortem_error']} | - |"
        print(row + f" {r['watch_same_losses']} | {r['sampled']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
