"""The summary of a gpu_check.sh folder: what docs/speed.md quotes.

    python benchmarks/gpu_summary.py OUT_DIR
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def lines(path: Path, pick) -> list[str]:
    """path's lines for which pick(line) holds ([] when the step left no file)."""
    if not path.is_file():
        return []
    return [line.rstrip() for line in path.read_text().splitlines() if pick(line)]


def suite_rows(folder: Path) -> list[str]:
    """Per remedy: seeds, median epoch over every seed's epochs, batching, graph status,
    the self-checks seen."""
    by: dict[str, list[dict]] = {}
    for f in sorted(folder.glob("*/history.json")):
        h = json.loads(f.read_text())
        by.setdefault(h["name"], []).append(h)
    rows = []
    for name, hs in by.items():
        per = statistics.median(t for h in hs for t in h["epoch_time"])
        checks = sorted({f"{c['what']} {'ok' if c['ok'] else 'FAILED'}" for h in hs
                         for c in h.get("self_checks", [])})
        rows.append(f"{name:14s} {len(hs)} seed(s), median epoch {per * 1e3:7.1f} ms, "
                    f"batched with {hs[0]['batched_with']}, graph {hs[0]['cuda_graph']}; "
                    f"{', '.join(checks) or 'no self-check'}")
    return rows


def main(out: Path) -> None:
    print("# gpu_check summary")
    print(*lines(out / "env.txt", lambda l: l.startswith(("torch ", "cuda available"))),
          sep="\n")
    print("\n## steps (status 124: stopped at its cap)")
    print((out / "times.tsv").read_text().rstrip() if (out / "times.tsv").is_file() else "-")
    print("\n## unit tests")
    print(*lines(out / "unit.log", lambda l: l.startswith(("FAILED", "ERROR"))
                 or (l.startswith("=") and (" passed" in l or " failed" in l)))[-40:],
          sep="\n")
    print("\n## baseline epoch, graph vs eager")
    print(*lines(out / "baseline.log", lambda l: l.startswith(("remedy ", "baseline "))),
          sep="\n")
    print("\n## groups vs one by one")
    text = (out / "group.log").read_text() if (out / "group.log").is_file() else ""
    at = text.find("\ngroup ")
    print(text[at + 1:].rstrip() if at >= 0 else "(no table)")
    for suite in ("suite-batched", "suite"):
        print(f"\n## {suite}")
        print(*lines(out / f"{suite}.log", lambda l: l.startswith(("budget ", "vgbench: error"))
                     or (l.startswith("=") and (" passed" in l or " failed" in l))), sep="\n")
        print(*suite_rows(out / suite), sep="\n")
    print("\n## every remedy")
    text = (out / "speed.log").read_text() if (out / "speed.log").is_file() else ""
    print(text[text.find("remedy "):].rstrip() if "remedy " in text else "(no table)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
