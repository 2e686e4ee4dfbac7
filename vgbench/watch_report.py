"""The page of one watched training run (out/report.html of vgbench.watch), drawn from its
history.json: the verdict timeline with each verdict's onset and evidence, the loss, the
gradient norm and the update ratio of each layer over the run, the activations' dead and
saturated shares, and the gradient flow across the layers at the moments that matter.

The same page as the suite's (report.py): one file, inline SVG from the numbers, the same
style, no script, no network. `vgbench report DIR` rebuilds it from DIR/history.json.
"""

from __future__ import annotations

import math
from pathlib import Path

from vgbench import files
from vgbench.diagnose import BY_ACTIVATION, VERDICTS
from vgbench.history import History
from vgbench.report import environment, esc, head, svg_chart, verdict_html

SHOWN_LAYERS = 8
"""The time charts draw at most this many layers (the first, the last, evenly between, and
every layer a verdict named); the flow charts show all."""
VERDICT_COLORS = dict(zip(VERDICTS, ("#1a7f37", "#1f77b4", "#d62728", "#ff7f0e", "#7f7f7f",
                                     "#9467bd", "#000000")))


def _shown(n: int, named: set[int]) -> list[int]:
    """Indices of at most SHOWN_LAYERS of n layers: the first, the last, evenly between,
    and the named ones (named first when there are too many)."""
    if n <= SHOWN_LAYERS:
        return list(range(n))
    even = {round(k * (n - 1) / (SHOWN_LAYERS - 1)) for k in range(SHOWN_LAYERS)}
    keep = sorted(named)[:SHOWN_LAYERS]
    for i in sorted(even, key=lambda i: (i not in (0, n - 1), i)):
        if len(keep) < SHOWN_LAYERS and i not in keep:
            keep.append(i)
    return sorted(keep)


def verdict_strip(timeline: list[dict], width: int = 1180) -> str:
    """One coloured cell per sampled step, by verdict, with a legend."""
    n = len(timeline)
    if n == 0:
        return '<p class="muted">no step was sampled</p>'
    x0, x1, top, h = 52, width - 10, 22, 26
    cell = (x1 - x0) / n
    out = [f'<svg width="{width}" height="78" viewBox="0 0 {width} 78" role="img" '
           f'aria-label="verdict per sampled step"><text x="{width / 2}" y="14" '
           f'text-anchor="middle" font-size="12" font-weight="600">verdict per sampled '
           f'step</text>']
    for k, r in enumerate(timeline):
        color = VERDICT_COLORS.get(r["verdict"], "#000")
        out.append(f'<rect x="{x0 + k * cell:.2f}" y="{top}" width="{max(cell, 0.5):.2f}" '
                   f'height="{h}" fill="{color}"><title>step {r["step"]}: '
                   f'{esc(r["verdict"])}</title></rect>')
    every = max(1, math.ceil(n / 12))
    for k in range(0, n, every):
        out.append(f'<text x="{x0 + (k + 0.5) * cell:.1f}" y="{top + h + 12}" '
                   f'text-anchor="middle" font-size="10">{timeline[k]["step"]}</text>')
    x = x0
    for v in dict.fromkeys(r["verdict"] for r in timeline):
        out.append(f'<rect x="{x}" y="66" width="10" height="10" '
                   f'fill="{VERDICT_COLORS.get(v, "#000")}"/><text x="{x + 14}" y="75" '
                   f'font-size="10">{esc(v)}</text>')
        x += 24 + 7 * len(v)
    out.append("</svg>")
    return "".join(out)


def _onsets_table(h: History) -> str:
    w = h.watch
    at = {r["step"]: r for r in w["timeline"]}
    rows = []
    for o in w["onsets"]:  # the record of each onset, with its evidence
        r = at.get(o["step"], {})
        where = r.get("layer_name") or "-"
        said = verdict_html({"verdict": r.get("verdict", o["verdict"]), "why": r.get("why"),
                             "evidence": r.get("evidence")})
        lr = r.get("lr")
        rows.append(f"<tr><td class=\"num\">{o['step']}</td><td>{esc(where)}</td>"
                    f"<td class=\"num\">{'-' if lr is None else format(lr, '.3g')}</td>"
                    f"<td>{said}</td></tr>")
    return ("<table><tr><th>from step</th><th>where</th><th>lr</th>"
            "<th>verdict, why (evidence)</th></tr>"
            + "".join(rows) + "</table>")


def _flow_moments(h: History) -> list[int]:
    """Sampled-step indices for the flow charts: the first, each onset (at most three),
    the last."""
    steps = h.diagnostics["epoch"]
    picks = [0] + [steps.index(o["step"]) for o in h.watch["onsets"][1:4]
                   if o["step"] in steps] + [len(steps) - 1]
    return list(dict.fromkeys(picks))


def figures(h: History) -> str:
    """The time charts and the flow charts, inline SVG."""
    d, w = h.diagnostics, h.watch
    steps = d["epoch"]
    labels = [str(s) for s in steps]
    chain = w.get("chain") or list(range(len(w["layers"])))
    names = [w["layers"][i] for i in chain]
    named = {r["layer"] - 1 for r in w["timeline"]  # a position in the chain, 1-based
             if r.get("layer") and r["verdict"] not in BY_ACTIVATION}
    shown = _shown(len(chain), named)
    wide = dict(width=590, height=260, y_label="optimizer step")
    loss_steps = [s for s, _ in w["losses"]]
    figs = [svg_chart([("train loss (the batch's)", [v for _, v in w["losses"]])], "loss",
                      [str(s) for s in loss_steps], **wide)]

    def per_layer(metric):
        return [(names[j], [row[chain[j]] if chain[j] < len(row) else None
                            for row in d[metric]]) for j in shown]
    figs.append(svg_chart(per_layer("grad_norm"), "gradient norm per layer (log)", labels,
                          log=True, **wide))
    figs.append(svg_chart(per_layer("update_ratio"), "update ratio ||dW||/||W|| of the "
                          "step (log)", labels, log=True, **wide))
    if d.get("dead") and any(d["dead"]):
        worst = [("dead (worst activation)", [max(row, default=None) for row in d["dead"]]),
                 ("saturated (worst activation)",
                  [max(row, default=None) for row in d["saturated"]])]
        figs.append(svg_chart(worst, "share of dead and saturated units", labels, **wide))
    flow = []
    for k in _flow_moments(h):
        row = d["grad_norm"][k]
        flow.append((f"step {steps[k]}", [row[i] if i < len(row) else None for i in chain]))
    marks = [(r["layer"] - 1, "#b00020") for r in w["timeline"][-1:]
             if r.get("layer") and r["verdict"] not in BY_ACTIVATION]
    figs.append(svg_chart(flow, "gradient flow across the layers (log)",
                          [f"{i + 1}" for i in range(len(chain))], log=True, width=1180,
                          height=280, y_label="weight, input -> output (see the table)",
                          marks=marks))
    return '<div class="figs">' + "".join(figs) + "</div>"


def _layers_table(h: History) -> str:
    w = h.watch
    chain = w.get("chain") or list(range(len(w["layers"])))
    return ("<details><summary>the weights, input first</summary><table><tr><th>#</th>"
            "<th>weight</th></tr>" + "".join(
                f"<tr><td class=\"num\">{k + 1}</td><td>{esc(w['layers'][i])}</td></tr>"
                for k, i in enumerate(chain)) + "</table></details>")


def render(h: History, figures_too: bool = True) -> str:
    """The page of a watched run's history."""
    w = h.watch
    if not w:
        raise ValueError(f"history {h.name!r} is not a watched run's (no 'watch' part)")
    end = w["timeline"][-1] if w["timeline"] else None
    cfg = ", ".join(f"{k} {v}" for k, v in h.config.items())
    parts = [head(f"vgbench watch: {h.name}"),
             f"<h1>vgbench watch: {esc(h.name)}</h1>",
             f'<p class="muted">{w["steps"]} optimizer steps, every {w["every"]}-th sampled '
             f'({len(w["timeline"])} sampled); {esc(cfg)}; device {esc(h.device)}</p>']
    if end is not None:
        cls = "ok" if end["verdict"] == "healthy" else "bad"
        where = f" from {end['layer_name']}" if end.get("layer_name") else ""
        parts.append(f'<p>At the last sampled step ({end["step"]}): <span class="{cls}">'
                     f'<b>{esc(end["verdict"])}</b>{esc(where)}</span></p>')
    parts.append("<h2>Verdict timeline</h2>" + verdict_strip(w["timeline"]))
    parts.append(_onsets_table(h))
    if w.get("notes"):
        parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in w["notes"]) + "</ul>")
    if figures_too and h.diagnostics and h.diagnostics.get("epoch"):
        parts.append("<h2>Over the run</h2>" + figures(h) + _layers_table(h))
    parts.append(environment(h.env))
    return "".join(parts)


def write(out: str | Path, figures_too: bool = True) -> Path:
    """out/report.html from out/history.json, atomically; returns its path."""
    out = Path(out)
    h = History.from_json(out / "history.json")
    return files.write_text(out / "report.html", render(h, figures_too))
