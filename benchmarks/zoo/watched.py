"""The zoo's runs under vgbench.watch: false alarms on the runs that learn, and what it says
on those that do not, over the whole run rather than at init.

    python benchmarks/zoo/watched.py --seeds 0 --every 10 --out vg-out/zoo-watch
    python benchmarks/zoo/watched.py --models resnet18,gpt --twins=-,lr_x100

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(CASES))
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
    args = ap.parse_args(argv)
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
    (out / "watched.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
