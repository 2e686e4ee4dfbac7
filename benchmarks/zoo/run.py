"""Run the zoo: every (model, twin, seed), verdict at init and ground truth by training.

    python benchmarks/zoo/run.py --seeds 0,1,2 --out vg-out/zoo
    python benchmarks/zoo/run.py --models resnet18,gpt --twins -,sigmoid --seeds 0

Each finished case is appended to OUT/results.jsonl at once (an interrupted run keeps what
it finished, and a rerun skips it); at the end OUT/zoo.md holds the table and the rates.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # noqa: E402


def table(records: list[dict]) -> str:
    from tabulate import tabulate

    rows = [[r["model"], r["twin"], r["seed"], r["verdict"], f"{r['acc']:.3f}",
             "yes" if r["learned"] else "no", zoo.judge(r), r["inspect_s"], r["step_ms"]]
            for r in records]
    return tabulate(rows, headers=["model", "twin", "seed", "verdict", "held-out acc",
                                   "learned", "call", "inspect s", "ms/step"],
                    tablefmt="github")


def rates(records: list[dict]) -> dict:
    """False alarms among runs that learned; right causes among runs that did not."""
    learned = [r for r in records if r["learned"]]
    broken = [r for r in records if not r["learned"]]
    return {"learned": len(learned), "false_alarms": sum(zoo.judge(r) == "false alarm"
                                                         for r in learned),
            "broken": len(broken), "right_cause": sum(zoo.judge(r) == "right" for r in broken),
            "missed": sum(zoo.judge(r) == "missed" for r in broken)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated (default: all)")
    ap.add_argument("--twins", default=None,
                    help="comma-separated twin names, '-' for the design itself (default: all)")
    ap.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2")
    ap.add_argument("--steps", type=int, default=None, help="override every recipe's budget")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="vg-out/zoo")
    ap.add_argument("--reinspect", action="store_true",
                    help="recompute the verdict of every finished case (training's results "
                         "are kept: they do not depend on vgbench), rewrite results.jsonl, and "
                         "run nothing new")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    todo = zoo.cases(args.models.split(",") if args.models else None,
                     args.twins.split(",") if args.twins else None, seeds)
    path = out / "results.jsonl"
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            done[(r["model"], r["twin"], r["seed"])] = r
    t0 = time.perf_counter()
    if args.reinspect:
        for key, r in done.items():
            steps = r["steps"] if r["steps"] != zoo.MODELS[r["model"]].recipe.steps else None
            *_, fresh = zoo.verdict(r["model"], None if r["twin"] == "-" else r["twin"],
                                    r["seed"], steps)
            if fresh["verdict"] != r["verdict"]:
                print(f"{' '.join(map(str, key))}: {r['verdict']} -> {fresh['verdict']}")
            r.update({k: fresh[k] for k in ("verdict", "why", "expected", "inspect_s")})
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
        tmp.replace(path)
        todo = [(n, t, s) for n, t, s in todo if (n, t or "-", s) in done]
    for name, twin, seed in todo:
        key = (name, twin or "-", seed)
        if key in done:
            continue
        r = zoo.run_case(name, twin, seed, args.steps)
        done[key] = r
        with path.open("a") as f:
            f.write(json.dumps(r) + "\n")
        print(f"{name:20s} {twin or '-':8s} seed {seed}: {r['verdict']:11s} acc {r['acc']:.3f} "
              f"({zoo.judge(r)}; inspect {r['inspect_s']:.1f} s, train {r['train_s']:.0f} s)",
              flush=True)
    records = [done[(n, t or "-", s)] for n, t, s in todo]
    text = table(records)
    r = rates(records)
    text += (f"\n\nruns that learned: {r['learned']}, false alarms {r['false_alarms']}; "
             f"runs that did not learn: {r['broken']}, right cause {r['right_cause']}, "
             f"missed {r['missed']}; wall {time.perf_counter() - t0:.0f} s\n")
    (out / "zoo.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
