"""The zoo's runs under vgbench.watch: false alarms on the runs that learn, and what it says
on those that do not, over the whole run rather than at init.

    python benchmarks/zoo/watched.py --seeds 0 --every 10 --out vg-out/zoo-watch
    python benchmarks/zoo/watched.py --models resnet18,gpt --twins=-,lr_x100
    python benchmarks/zoo/watched.py --after vg-out/zoo/results.jsonl --seeds 1,2

With --after (a zoo results.jsonl from run.py), only the cases whose inspect(trial=True)
call there is healthy are watched, and the two are judged together, as a user who runs
vg_inspect in CI and watch in training would see them: inspect's alarm where it raised
one, else watch's first alarm over the run, else healthy.

Each case (model, twin, seed) is trained as run.py trains it (its recipe, its budget, the
same batches) with watch sampling every `every` optimizer steps; ground truth is the
held-out accuracy (zoo.LEARNED). Per case: every sampled verdict, the onsets, the accuracy.
Then: alarms (a sampled verdict that is not healthy) per 1,000 sampled steps on the runs
that learned, and on those that did not, whether watch raised an alarm and whether one
named the twin's cause. Appended to OUT/watched.jsonl as each case ends (a rerun skips
what is there); OUT/watched.md holds the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402
import zoo  # noqa: E402

import vgbench  # noqa: E402

CASES = ("resnet18", "timm_mixer", "transformer_post", "transformer_pre", "gpt", "lstm",
         "gru", "mobilenet_v3_small", "timm_vit_tiny")
"""The default models: those of the zoo's seed-0 table in RESULTS.md but vgg11_bn (3.7 s a
step here)."""


def case(name: str, twin: str | None, seed: int, every: int, steps: int | None = None,
         dataset=None, keep: Path | None = None) -> dict:
    net, recipe, opt, task = zoo.setup(name, twin, seed, steps, dataset)
    out = None if keep is None else keep / f"{name}-{twin or 'none'}-seed{seed}"
    with vgbench.watch(net, opt, every=every, out=out) as w:
        out = zoo.train(net, recipe, opt, task, each_step=w.step)
    alarms = [r for r in w.timeline if r["verdict"] != "healthy"]
    return {"model": name, "twin": twin or "-", "seed": seed, "every": every,
            "steps": w.step_no, "acc": out["acc"], "learned": out["learned"],
            "sampled": len(w.timeline), "alarms": len(alarms),
            "verdicts": sorted({r["verdict"] for r in alarms}),
            "first_alarm": f"{alarms[0]['verdict']} at {alarms[0]['step']}" if alarms else None,
            "onsets": w.onsets, "end": w.timeline[-1]["verdict"] if w.timeline else None,
            "expected": list(zoo.TWINS[twin].causes) if twin else ["healthy"]}


def tables(records: list[dict]) -> str:
    from tabulate import tabulate

    rows = [[r["model"], r["twin"], r["seed"], f"{r['acc']:.3f}",
             "yes" if r["learned"] else "no", f"{r['alarms']}/{r['sampled']}",
             ", ".join(r["verdicts"]) or "-", r["first_alarm"] or "-", r["end"]]
            for r in records]
    text = tabulate(rows, headers=["model", "twin", "seed", "held-out acc", "learned",
                                   "alarms / sampled", "verdicts", "first alarm",
                                   "at the end"], tablefmt="github")
    learned = [r for r in records if r["learned"]]
    failed = [r for r in records if not r["learned"]]
    sampled = sum(r["sampled"] for r in learned)
    alarms = sum(r["alarms"] for r in learned)
    later = sum(sum(o["verdict"] != "healthy" and o["step"] > 0 for o in r["onsets"]) > 0
                for r in learned)
    quiet = sum(r["alarms"] == 0 for r in learned)
    flagged = sum(r["alarms"] > 0 for r in failed)
    named = sum(bool(set(r["verdicts"]) & set(r["expected"])) for r in failed)
    text += (f"\n\nRuns that learned: {alarms} alarms in {sampled} sampled steps "
             f"({1000 * alarms / max(1, sampled):.0f} per 1,000); {quiet} of {len(learned)} "
             f"runs without any alarm; {later} with an alarm that began after step 0.\n"
             f"Runs that did not learn: {flagged} of {len(failed)} raised an alarm; in "
             f"{named} one named the twin's cause.\n")
    return text


def inspect_alarmed(record: dict) -> bool:
    """Whether inspect(trial=True)'s call in a zoo record (run.py's) is an alarm: where it is
    not, watch has something to add."""
    return run.calls(record, "vgbench trial") != []


def together(records: list[dict], watched: list[dict], every: int) -> str:
    """inspect(trial=True) then watch, judged together on the zoo's records (run.py's) that
    were watched or need not be (inspect alarmed): false alarms and right causes, as
    run.rates counts them, beside inspect's alone on the same cases."""
    seen = {(w["model"], w["twin"], w["seed"]): w for w in watched if w["every"] == every}
    alone, joint = [], []
    for r in records:
        w = seen.get((r["model"], r["twin"], r["seed"]))
        healthy = not inspect_alarmed(r)
        if healthy and w is None:
            continue  # not watched (yet)
        alone.append(r)
        first = next((o["verdict"] for o in w["onsets"] if o["verdict"] != "healthy"),
                     None) if healthy else None  # watch's first alarm
        joint.append({**r, "trial": {"verdict": first}} if first else r)
    lines = [f"\ninspect(trial=True), then watch every {every} where it reads healthy "
             f"({len(joint)} cases):"]
    for name, chosen in (("inspect alone", alone), ("inspect, then watch", joint)):
        x = run.rates(chosen, "vgbench trial")
        lines.append(f"- {name}: false alarms {x['false_alarms']} of {x['learned']} runs that "
                     f"learned, right cause {x['right_cause']} of {x['broken']} that did not "
                     f"({x['missed']} missed, {x['no_truth']} without ground truth)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=None,
                    help=f"comma-separated (default: {','.join(CASES)}; with --after: all)")
    ap.add_argument("--twins", default=None,
                    help="comma-separated, '-' for none; with '=' when the list starts with "
                         "'-' (--twins=-,x10; default: each model's)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--steps", type=int, default=None, help="override every recipe's budget")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="vg-out/zoo-watch")
    ap.add_argument("--keep", action="store_true",
                    help="also write each case's history.json and report.html under "
                         "OUT/MODEL-TWIN-seedS")
    ap.add_argument("--after", default=None, metavar="RESULTS",
                    help="a zoo results.jsonl (run.py): watch only the cases inspect "
                         "(trial=True) reads healthy there, and judge both together")
    args = ap.parse_args(argv)
    after = {}
    if args.after:
        if not Path(args.after).is_file():
            ap.error(f"--after {args.after}: no such file (a results.jsonl of run.py)")
        try:
            after = {(r["model"], r["twin"], r["seed"]): r for r in map(
                json.loads, Path(args.after).read_text().splitlines()) if "trial" in r}
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            ap.error(f"--after {args.after}: not a results.jsonl of run.py ({exc})")
        if not after:
            ap.error(f"--after {args.after}: no case has inspect(trial=True)'s call; "
                     "record it with python benchmarks/zoo/run.py --reinspect")
    args.models = args.models or ",".join(zoo.MODELS if after else CASES)
    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = [m for m in args.models.split(",") if m not in zoo.MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from "
                 f"{', '.join(zoo.MODELS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "watched.jsonl"
    done = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    seen = {(r["model"], r["twin"], r["seed"], r["every"]) for r in done}
    dataset = zoo.data.load_cached()
    for name in args.models.split(","):
        twins = ([None if t == "-" else t for t in args.twins.split(",")] if args.twins
                 else [None, *zoo.MODELS[name].twins])
        for twin in twins:
            if twin is not None and twin not in zoo.MODELS[name].twins:
                continue
            for seed in map(int, args.seeds.split(",")):
                if (name, twin or "-", seed, args.every) in seen:
                    continue
                known = after.get((name, twin or "-", seed))
                if after and (known is None or inspect_alarmed(known)):
                    continue  # not in the results, or inspect alarmed: nothing to watch
                try:
                    r = case(name, twin, seed, args.every, args.steps, dataset,
                             out if args.keep else None)
                except RuntimeError as exc:  # the case cannot train; the others go on
                    print(f"{name} {twin or '-'} seed {seed}: could not train: "
                          f"{str(exc).splitlines()[0]}", flush=True)
                    continue
                done.append(r)
                with path.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                print(f"{name} {twin or '-'} seed {seed}: acc {r['acc']:.3f}, alarms "
                      f"{r['alarms']}/{r['sampled']} {r['first_alarm'] or ''}", flush=True)
    text = tables(done)
    if after:
        seeds, twins = {int(x) for x in args.seeds.split(",")}, args.twins
        chosen = [r for r in after.values() if r["model"] in args.models.split(",")
                  and r["seed"] in seeds and (twins is None or r["twin"] in twins.split(","))]
        text += together(chosen, done, args.every)
    (out / "watched.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
