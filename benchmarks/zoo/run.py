"""Run the zoo: every (model, twin, seed), verdict at init and ground truth by training.

    python benchmarks/zoo/run.py --seeds 0,1,2 --out vg-out/zoo
    python benchmarks/zoo/run.py --models resnet18,gpt --twins=-,sigmoid --seeds 0

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
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # benchmarks/peers.py
import zoo  # noqa: E402


TOOLS = ("vgbench", "vgbench trial", *zoo.RULES, "torchmortem")
"""vgbench trial: inspect(trial=True), thirty real steps on the batch (zoo.trial_call)."""


def calls(r: dict, tool: str) -> list[str] | None:
    """A tool's calls on a case ([]: healthy; None: not run on it)."""
    if tool == "vgbench":
        return [] if r["verdict"] == "healthy" else [r["verdict"]]
    if tool == "vgbench trial":
        return ([] if r["trial"]["verdict"] == "healthy" else [r["trial"]["verdict"]]
                ) if "trial" in r else None
    if tool == "torchmortem":  # None also where it could not train the model
        return r["torchmortem"]["calls"] if "torchmortem" in r else None
    return r.get("peers", {}).get(tool)


def designs(records: list[dict]) -> dict:
    """{(model, seed): the design's record} of the designs among records."""
    return {(r["model"], r["seed"]): r for r in records if r["twin"] == "-"}


def design_of(r: dict, known: dict) -> dict | None:
    """The record of r's design at r's seed (None: not run)."""
    return known.get((r["model"], r["seed"]))


def table(records: list[dict]) -> str:
    from tabulate import tabulate

    known = designs(records)

    def shown(r, tool):
        if tool == "torchmortem" and r.get("torchmortem", {}).get("error"):
            return "could not train it"
        c = calls(r, tool)
        return "-" if c is None else ", ".join(c) or "healthy"
    rows = [[r["model"], r["twin"], r["seed"], f"{r['acc']:.3f}",
             "yes" if r["learned"] else "no", r["verdict"], zoo.judge(r, design_of(r, known)),
             *(shown(r, t) for t in TOOLS[1:]), r["inspect_s"], r["step_ms"],
             _paired(r)]
            for r in records]
    return tabulate(rows, headers=["model", "twin", "seed", "held-out acc", "learned",
                                   "vgbench", "its call", *TOOLS[1:], "inspect s", "ms/step",
                                   "torchmortem's step x"], tablefmt="github")


def matrix(records: list[dict], tool: str = "vgbench") -> str:
    """One row per model, one column per twin (the design first): each cell the tool's
    verdicts over the seeds run (distinct ones, in seed order), how many of those runs
    learned, and how many of its calls were wrong (false alarm, missed, wrong cause) or had
    no ground truth (the design did not learn at that seed)."""
    from tabulate import tabulate

    known = designs(records)
    twins = ["-", *(t for t in zoo.TWINS if any(r["twin"] == t for r in records))]
    rows = []
    for name in zoo.MODELS:
        mine = [r for r in records if r["model"] == name]
        if not mine:
            continue
        row = [name]
        for twin in twins:
            runs = sorted((r for r in mine if r["twin"] == twin), key=lambda r: r["seed"])
            if not runs:
                row.append("")
                continue
            said = [calls(r, tool) or ["healthy"] for r in runs]
            judged = [zoo.peer_judge(r, calls(r, tool), design_of(r, known)) for r in runs]
            wrong = sum(c not in ("right", zoo.NO_TRUTH) for c in judged)
            lost = judged.count(zoo.NO_TRUTH)
            cell = (" / ".join(dict.fromkeys(", ".join(c) for c in said))
                    + f" ({sum(r['learned'] for r in runs)}/{len(runs)} learned")
            cell += f", {wrong} wrong" if wrong else ""
            cell += f", {lost} no ground truth)" if lost else ")"
            row.append(cell)
        rows.append(row)
    return tabulate(rows, headers=["model", "design", *twins[1:]], tablefmt="github")


def _paired(r: dict) -> str:
    p = (r.get("torchmortem") or {}).get("paired")
    return f"{p['autopsy_ms'] / p['plain_ms']:.2f}" if p else "-"


def rates(records: list[dict], tool: str = "vgbench") -> dict:
    """A tool's false alarms among runs that learned, right causes among runs that did not
    (only the cases it was run on)."""
    known = designs(records)
    records = [r for r in records if calls(r, tool) is not None]
    judged = [(r, zoo.peer_judge(r, calls(r, tool), design_of(r, known))) for r in records]
    learned = [j for r, j in judged if r["learned"]]
    broken = [j for r, j in judged if not r["learned"] and j != zoo.NO_TRUTH]
    return {"learned": len(learned), "false_alarms": learned.count("false alarm"),
            "broken": len(broken), "right_cause": broken.count("right"),
            "missed": broken.count("missed"),
            "no_truth": sum(j == zoo.NO_TRUTH for _, j in judged)}


def summary(records: list[dict]) -> str:
    """Per tool: false alarms on the runs that learned, right causes on the ones that did
    not, and for torchmortem its training step time against the plain run's."""
    from tabulate import tabulate

    rows = []
    for tool in TOOLS:
        r = rates(records, tool)
        if not r["learned"] + r["broken"]:
            continue
        rows.append([tool, f"{r['false_alarms']} / {r['learned']}",
                     f"{r['right_cause']} / {r['broken']}", r["missed"], r["no_truth"]])
    text = tabulate(rows, headers=["tool", "false alarms / runs that learned",
                                   "right cause / runs that did not", "missed",
                                   "no ground truth"],
                    tablefmt="github")
    failed = sorted({r["torchmortem"]["error"] for r in records
                     if r.get("torchmortem", {}).get("error")})
    if failed:
        n = sum(bool(r.get("torchmortem", {}).get("error")) for r in records)
        text += f"\n\ntorchmortem could not train {n} cases: {'; '.join(failed)}"
    both = [r["torchmortem"]["paired"] for r in records if r.get("torchmortem", {}).get("paired")]
    if both:
        ratio = sorted(p["autopsy_ms"] / p["plain_ms"] for p in both)
        same = sum(p["same_losses"] for p in both)
        text += (f"\n\ntorchmortem's cost: a training step inside Autopsy takes "
                 f"{ratio[len(ratio) // 2]:.2f}x the plain step (median over {len(both)} "
                 f"cases, range {ratio[0]:.2f}-{ratio[-1]:.2f}; each case's two copies "
                 f"stepped in turn, {both[0]['steps']} steps, median ms); the losses of the "
                 f"two stayed equal at every step in {same} of {len(both)}")
    return text


def _steps(r: dict) -> int | None:
    """A finished case's budget as run_case was given it (None: the recipe's own)."""
    return r["steps"] if r["steps"] != zoo.MODELS[r["model"]].recipe.steps else None


def _save(path: Path, done: dict) -> None:
    """results.jsonl rewritten whole (records have changed), atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
    tmp.replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated (default: all)")
    ap.add_argument("--twins", default=None,
                    help="comma-separated twin names, '-' for the design itself (default: all)")
    ap.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2")
    ap.add_argument("--steps", type=int, default=None, help="override every recipe's budget")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="vg-out/zoo")
    ap.add_argument("--peers", action="store_true",
                    help="also train every case inside torchmortem's Autopsy (pip install "
                         "torchmortem; doubles the training time) and record its findings")
    ap.add_argument("--reinspect", action="store_true",
                    help="recompute the verdict of every finished case (training's results "
                         "are kept: they do not depend on vgbench), rewrite results.jsonl, and "
                         "run nothing new")
    args = ap.parse_args(argv)
    if args.peers:
        try:
            import torchmortem  # noqa: F401
        except ImportError:
            ap.error("--peers runs torchmortem, which is not installed: "
                     "pip install -e '.[peers]'")
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
            *_, fresh = zoo.verdict(r["model"], None if r["twin"] == "-" else r["twin"],
                                    r["seed"], _steps(r))
            if fresh["verdict"] != r["verdict"]:
                print(f"{' '.join(map(str, key))}: {r['verdict']} -> {fresh['verdict']}")
            r.update({k: fresh[k] for k in ("verdict", "why", "expected", "inspect_s",
                                            "peers", "trial")})
        _save(path, done)
        todo = [(n, t, s) for n, t, s in todo if (n, t or "-", s) in done]
    for name, twin, seed in todo:
        key = (name, twin or "-", seed)
        if key not in done:
            r = zoo.run_case(name, twin, seed, args.steps)
            done[key] = r
            with path.open("a") as f:
                f.write(json.dumps(r) + "\n")
            call = zoo.judge(r, design_of(r, designs(list(done.values()))))
            print(f"{name:20s} {twin or '-':8s} seed {seed}: {r['verdict']:11s} acc "
                  f"{r['acc']:.3f} ({call}; inspect {r['inspect_s']:.1f} s, train "
                  f"{r['train_s']:.0f} s)", flush=True)
        r = done[key]
        if args.peers and ("torchmortem" not in r or "paired" not in r["torchmortem"]):
            if "torchmortem" not in r:
                r["torchmortem"] = zoo.torchmortem_case(name, twin, seed, _steps(r))
            if r["torchmortem"]["calls"] is not None:  # else it could not train this model
                r["torchmortem"]["paired"] = zoo.torchmortem_paired(name, twin, seed)
            else:
                r["torchmortem"]["paired"] = None
            _save(path, done)
            tm = r["torchmortem"]
            print(f"{name:20s} {twin or '-':8s} seed {seed}: torchmortem "
                  f"{tm.get('error') or ', '.join(tm['calls']) or 'healthy'}", flush=True)
    records = [done[(n, t or "-", s)] for n, t, s in todo]
    text = matrix(records) + "\n\n" + table(records) + "\n\n" + summary(records)
    text += f"\n\nwall {time.perf_counter() - t0:.0f} s\n"
    (out / "zoo.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
