"""One self-contained HTML page per test session (vg-out/report.html).

Everything is read back from the session's folder: summary.json (the table's rows, the
cases, the expectations, the depth sweep, errors, the comparison, the command line) and each
case's history.json. So the page the controller writes at the end of a session and the one
`vgbench report DIR` writes later are the same function of the same files.

Self-contained: one file, no network. The figures are inline SVG drawn here from the numbers
(no matplotlib: a full suite's page takes milliseconds and some hundred KB), the CSS is
inline, there is no script. Readable from file:// at 1280 px and light to print.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from vgbench import files
from vgbench.history import History

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#1b1b1b;
max-width:1240px;margin:16px auto;padding:0 12px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccc}
h3{font-size:15px;margin:0 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{border:1px solid #d0d0d0;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b00020;font-weight:600}.ok{color:#1a7f37}.muted{color:#666}
.banner{border:2px solid #b00020;background:#fff4f4;padding:8px 12px;margin:10px 0}
.case{border:1px solid #d0d0d0;border-radius:4px;padding:10px 12px;margin:12px 0;
break-inside:avoid}
.figs{display:flex;gap:10px;flex-wrap:wrap}.figs svg{border:1px solid #eee;background:#fff}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:12px}
code{font-size:12px}ul{margin:4px 0 4px 18px;padding:0}
@media print{body{max-width:none}.case{page-break-inside:avoid}}
"""

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf")  # matplotlib's tab10


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def anchor(case_id: str) -> str:
    return "case-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in case_id)


# --- figures: small inline SVG charts ---------------------------------------------------

def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _ticks(lo: float, hi: float, log: bool) -> list[tuple[float, str]]:
    """y ticks: whole decades on a log axis (every k-th when many), else 5 even steps with
    as many decimals as their spacing needs."""
    if log:
        first, last = math.ceil(lo), math.floor(hi)
        if last >= first:
            every = max(1, math.ceil((last - first + 1) / 6))
            return [(float(e), f"1e{e}") for e in range(first, last + 1, every)]
        return [(lo, f"{10 ** lo:.2g}"), (hi, f"{10 ** hi:.2g}")]
    step = (hi - lo) / 4
    decimals = max(0, 1 - math.floor(math.log10(step))) if step > 0 else 2
    return [(lo + step * k, f"{lo + step * k:.{min(decimals, 8)}f}") for k in range(5)]


def svg_chart(series: list[tuple[str, list], ...], title: str, x_labels: list[str] | None = None,
              log: bool = False, width: int = 286, height: int = 220, y_label: str = "",
              bars: bool = False, marks: list[tuple[int, str]] = ()) -> str:
    """A line (or bar) chart of series [(label, values)] as an SVG element; None, non-finite
    and (log) non-positive values are gaps. x is the index (x_labels name it)."""
    pad_l, pad_r, pad_t, pad_b = 52, 10, 24, 34
    pts = [(i, v) for _, vals in series for i, v in enumerate(vals)
           if _finite(v) and (v > 0 or not log)]
    out = [f'<svg width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
           f'<text x="{width / 2}" y="15" text-anchor="middle" font-size="12" '
           f'font-weight="600">{esc(title)}</text>']
    n = max((len(vals) for _, vals in series), default=0)
    if not pts or n == 0:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
                   f'font-size="12" fill="#666">no finite values</text></svg>')
        return "".join(out)
    f = (lambda v: math.log10(v)) if log else (lambda v: v)
    lo, hi = min(f(v) for _, v in pts), max(f(v) for _, v in pts)
    if bars and not log:
        lo = min(lo, 0.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    x0, x1, y0, y1 = pad_l, width - pad_r, height - pad_b, pad_t
    step = (x1 - x0) / max(n - (0 if bars else 1), 1)

    def px(i: float) -> float:
        return x0 + (i + (0.5 if bars else 0)) * step

    def py(v: float) -> float:
        return y0 - (f(v) - lo) / (hi - lo) * (y0 - y1)
    out.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" '
               f'stroke="#999" stroke-width="0.6"/>')
    for t, label in _ticks(lo, hi, log):
        y = y0 - (t - lo) / (hi - lo) * (y0 - y1)
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">'
                   f'{label}</text>')
    labels = x_labels or [str(i + 1) for i in range(n)]
    every = max(1, math.ceil(n / 12))
    for i in range(0, n, every):
        out.append(f'<text x="{px(i):.1f}" y="{y0 + 13}" text-anchor="middle" '
                   f'font-size="10">{esc(labels[i] if i < len(labels) else i)}</text>')
    if y_label:
        out.append(f'<text x="{width / 2}" y="{height - 4}" text-anchor="middle" '
                   f'font-size="10" fill="#444">{esc(y_label)}</text>')
    for i, color in marks:
        out.append(f'<line x1="{px(i):.1f}" x2="{px(i):.1f}" y1="{y1}" y2="{y0}" '
                   f'stroke="{color}" stroke-dasharray="3,2"/>')
    for k, (label, vals) in enumerate(series):
        color = COLORS[k % len(COLORS)]
        ok = [(i, v) for i, v in enumerate(vals) if _finite(v) and (v > 0 or not log)]
        if bars:
            base = py(max(lo, 0.0)) if not log else y0
            w = step * 0.7 / len(series)
            for i, v in ok:
                top = py(v)
                out.append(f'<rect x="{px(i) - step * 0.35 + k * w:.1f}" y="{min(top, base):.1f}" '
                           f'width="{w:.1f}" height="{abs(base - top):.1f}" fill="{color}"/>')
        else:
            runs, run = [], []
            for i, v in enumerate(vals):
                if _finite(v) and (v > 0 or not log):
                    run.append(f"{px(i):.1f},{py(v):.1f}")
                elif run:
                    runs.append(run)
                    run = []
            runs.append(run)
            dash = ' stroke-dasharray="5,3"' if label.startswith("theory") else ""
            for r in runs:
                if len(r) > 1:
                    out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6"'
                               f'{dash} points="{" ".join(r)}"/>')
                elif r:
                    x, y = r[0].split(",")
                    out.append(f'<circle cx="{x}" cy="{y}" r="2.2" fill="{color}"/>')
        out.append(f'<text x="{x0 + 6}" y="{y1 + 12 + 12 * k}" font-size="10" '
                   f'fill="{color}">{esc(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def case_figures(h: History) -> str:
    """Learning curves, gradient flow at init and at the end (with mean field's line and the
    diagnosed layer), weight change: inline SVG."""
    figs = [svg_chart([("train loss", h.train_loss), ("val loss", h.val_loss)], "loss",
                      y_label="epoch"),
            svg_chart([("train acc", h.train_acc), ("val acc", h.val_acc)], "accuracy",
                      y_label="epoch")]
    d = h.diagnostics
    if d and d.get("grad_norm"):
        n = len(d["grad_norm"][0])
        names = [f"L{i}" for i in range(1, n)] + ["out"]
        series = [(f"epoch {d['epoch'][0]}", d["grad_norm"][0])]
        if len(d["grad_norm"]) > 1:
            series.append((f"epoch {d['epoch'][-1]}", d["grad_norm"][-1]))
        if h.init_profile and h.init_profile.get("grad_rms"):
            series.append(("init, per-example RMS", h.init_profile["grad_rms"]))
        if h.theory and h.theory.get("grad_rms"):
            series.append(("theory: mean field at init", h.theory["grad_rms"]))
        marks = [(v["layer"] - 1, "#b00020") for m in ("init", "end")
                 if (v := (h.diagnosis or {}).get(m)) and v.get("layer")]
        figs.append(svg_chart(series, "gradient norm per layer (log)", names, log=True,
                              y_label="layer, input -> output", marks=marks))
        if d.get("weight_change"):
            figs.append(svg_chart([("||W-W0||/||W0||", d["weight_change"][-1])],
                                  "weight change at the end", names, bars=True,
                                  y_label="layer, input -> output"))
    return '<div class="figs">' + "".join(figs) + "</div>"


# --- the page ----------------------------------------------------------------------------

def _fmt(v, spec: str = ".4f") -> str:
    return format(v, spec) if _finite(v) else "-"


def verdict_html(v: dict | None) -> str:
    if not v:
        return "-"
    where = f" from layer {v['layer']}" if v.get("layer") else ""
    cls = "ok" if v["verdict"] == "healthy" else "bad"
    evidence = ", ".join(f"{k} {_fmt(x, '.3g') if isinstance(x, float) else esc(x)}"
                         for k, x in (v.get("evidence") or {}).items()
                         if not isinstance(x, (list, dict)))
    return (f'<span class="{cls}">{esc(v["verdict"])}{esc(where)}</span>'
            + (f": {esc(v['why'])}" if v.get("why") else "")
            + (f' <span class="muted">({evidence})</span>' if evidence else ""))


def _case_section(case: dict, h: History | None, figures: bool) -> str:
    cid = case["id"]
    out = [f'<div class="case" id="{anchor(cid)}"><h3>{esc(cid)}</h3>']
    if case.get("crashed"):
        c = case["crashed"]
        out.append(f'<p class="bad">crashed: {esc(c["type"])}: {esc(c["message"])}'
                   + (f" ({esc(c['file'])}:{esc(c['line'])})" if c.get("file") else "")
                   + "</p></div>")
        return "".join(out)
    if h is None:
        out.append('<p class="bad">its history.json is missing or unreadable</p></div>')
        return "".join(out)
    m = case.get("metrics") or {}
    out.append(f"<p>depth {esc(case.get('depth'))}, {len(h.val_acc)} of {h.total_epochs} epochs, "
               f"test accuracy <b>{_fmt(h.test_acc)}</b>, best val accuracy "
               f"{_fmt(max((a for a in h.val_acc if _finite(a)), default=None))}, grad ratio "
               f"init {_fmt(m.get('grad_ratio_init'), '.2e')} -> final "
               f"{_fmt(m.get('grad_ratio_final'), '.2e')}"
               + (f', <span class="bad">diverged at epoch {h.diverged_epoch} '
                  f'({esc(h.diverged_reason)})</span>' if h.diverged else "")
               + f'; device {esc(h.device)}{", cuda graph " + esc(h.cuda_graph) if h.cuda_graph else ""}</p>')
    said = {mo: v for mo in ("init", "epoch1", "end") if (v := (h.diagnosis or {}).get(mo))}
    out.append("<ul>" + "".join(f"<li>{esc(mo)}: {verdict_html(v)}</li>"
                                for mo, v in said.items()) + "</ul>")
    failures = case.get("failures") or []
    checks = case.get("checks") or []
    if checks:
        held = ('<span class="ok">all held</span>' if not failures
                else f'<span class="bad">{len(failures)} failed</span>')
        out.append(f"<p><b>expectations</b> ({held}): {esc('; '.join(checks))}</p>")
    if failures:
        out.append("<ul>" + "".join(f'<li class="bad">{esc(f)}</li>' for f in failures)
                   + "</ul>")
    if figures:
        out.append(case_figures(h))
    out.append("</div>")
    return "".join(out)


def _summary_table(summary: dict, cases: list[dict]) -> str:
    from vgbench.summary import table_cells

    headers, body = table_cells(summary.get("rows") or [])
    by_key: dict[str, list[dict]] = {}
    for c in cases:
        by_key.setdefault(c["key"], []).append(c)
    out = ["<table><tr>" + "".join(f"<th>{esc(x)}</th>" for x in headers) + "<th>cases</th></tr>"]
    for row, cells in zip(summary.get("rows") or [], body):
        links = " ".join(f'<a href="#{anchor(c["id"])}">{esc(c["seed"])}</a>'
                         for c in by_key.get(row["key"], []))
        tds = []
        for i, x in enumerate(cells):
            cls = ' class="bad"' if (i == len(cells) - 1 and str(x).startswith("FAILED")) else ""
            tds.append(f"<td{cls}>{esc(x)}</td>")
        out.append("<tr>" + "".join(tds) + f"<td>{links}</td></tr>")
    out.append("</table>")
    return "".join(out)


def head(title: str) -> str:
    """A page's start, to its <body>: the title, the inline style."""
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>")


def environment(env: dict, extra: str = "") -> str:
    """The page's end: the Environment table (extra: more rows) and the closing tags."""
    return ("<h2>Environment</h2><table>" + "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in env.items())
        + extra + "</table></body></html>\n")


def render(out: str | Path, figures: bool = True) -> str:
    """The page for the session folder out (its summary.json and histories)."""
    out = Path(out)
    summary = json.loads((out / "summary.json").read_text())
    cases = summary.get("cases") or []
    parts = [head(f"vgbench report: {out.name}"), "<h1>vgbench report</h1>",
             f'<p class="muted">{esc(summary.get("header", ""))}</p>']
    errors = summary.get("errors") or []
    if not summary.get("complete", True) or errors:
        items = [f"<li>no result: {esc(m)}</li>" for m in summary.get("missing") or []]
        items += [f"<li>{_error(e)}</li>" for e in errors]
        parts.append('<div class="banner"><b>'
                     + ("INCOMPLETE session" if not summary.get("complete", True)
                        else "Session with errors") + "</b><ul>" + "".join(items)
                     + "</ul></div>")
    parts.append("<h2>Summary</h2>")
    parts.append(_summary_table(summary, cases) if summary.get("rows") else
                 "<p class=\"bad\">no case finished</p>")
    expectations = summary.get("expectations") or []
    if expectations:
        parts.append("<h2>Session expectations</h2><ul>" + "".join(
            f'<li class="{"ok" if e.get("held") else "bad" if e.get("held") is False else ""}">'
            f'{esc(e["text"])}: {esc(e.get("detail", ""))}</li>' for e in expectations)
            + "</ul>")
    if summary.get("depth"):
        parts.append("<h2>Depth sweep</h2>" + _depth_table(summary["depth"])
                     + (_depth_charts(cases) if figures else ""))
    if summary.get("comparison"):
        parts.append("<h2>Comparison with the reference</h2>" + _comparison(summary["comparison"]))
    parts.append("<h2>Cases</h2>")
    for case in cases:
        h = None
        if not case.get("crashed"):
            try:
                h = History.from_json(out / case["id"] / "history.json")
            except (OSError, ValueError, TypeError):
                h = None
        parts.append(_case_section(case, h, figures))
    env = next((c.get("env") for c in cases if c.get("env")), None) or {}
    parts.append(environment(env, f"<tr><th>command</th><td><code>"
                                  f"{esc(summary.get('command', '-'))}</code></td></tr>"))
    return "".join(parts)


def _error(e) -> str:
    if isinstance(e, str):
        return esc(e)
    where = f" ({e['file']}:{e['line']})" if e.get("file") else ""
    link = (f'<a href="#{anchor(e["case"])}">{esc(e["case"])}</a> crashed: '
            if e.get("case") else "")
    return f"{link}{esc(e.get('type', ''))}: {esc(e.get('message', ''))}{esc(where)}"


def _comparison(c: dict) -> str:
    """The diff table, moved cases first (red), and the comparison's notes."""
    rows = "".join("<tr>" + "".join(f'<td{" class=bad" if r[-1] == "MOVED" else ""}>{esc(x)}</td>'
                                    for x in r) + "</tr>" for r in c.get("rows") or [])
    notes = [line for line in (c.get("text") or "").splitlines() if line.startswith("vgbench:")]
    return ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in c.get("columns") or [])
            + f"</tr>{rows}</table>"
            + ("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>" if notes else ""))


def _depth_charts(cases: list[dict]) -> str:
    """Per remedy, over the swept depths: mean test accuracy, and the first/output gradient
    ratio at init (geometric mean over seeds; log axis)."""
    swept = [c for c in cases if "-depth" in c["key"] and c.get("metrics")]
    depths = sorted({c["depth"] for c in swept})
    acc, ratio = [], []
    for name in dict.fromkeys(c["remedy"] for c in swept):
        def mean_at(d, metric, geo=False):
            vals = [c["metrics"].get(metric) for c in swept
                    if c["remedy"] == name and c["depth"] == d]
            vals = [v for v in vals if _finite(v) and (v > 0 or not geo)]
            if not vals:
                return None
            if geo:
                return math.exp(sum(math.log(v) for v in vals) / len(vals))
            return sum(vals) / len(vals)
        acc.append((name, [mean_at(d, "test_acc") for d in depths]))
        ratio.append((name, [mean_at(d, "grad_ratio_init", geo=True) for d in depths]))
    labels = [str(d) for d in depths]
    return ('<div class="figs">'
            + svg_chart(acc, "test accuracy by depth", labels, width=590, height=280,
                        y_label="hidden layers")
            + svg_chart(ratio, "grad ratio first/output at init (log)", labels, log=True,
                        width=590, height=280, y_label="hidden layers")
            + "</div>")


def _depth_table(depth: list[dict]) -> str:
    from vgbench.summary import depth_table

    return "<pre>" + esc(depth_table(depth)) + "</pre>"


def write(out: str | Path, figures: bool = True) -> Path:
    """report.html into the session folder out, atomically; returns its path."""
    path = Path(out) / "report.html"
    files.write_text(path, render(out, figures))
    return path
