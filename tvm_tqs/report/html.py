"""The HTML report: one self-contained file (inline SVG and CSS, no network) rendered from ``report.json``.

Rendered only from the JSON an exported artifact carries (`CompiledModel.report_data`), so any artifact
directory can be reported again (`tvm-tqs report DIR`). Sections: summary, TQS ranking with confidence
intervals, divergence curves, the fused graph coloured by precision, Pareto fronts, latency, fp32
fallbacks, and the reliability table when the report has one.
"""

from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path

from ..errors import TQSError
from ..io import write_text_atomic
from .graph_svg import PRECISION_COLORS, graph_svg
from .svg import Bar, Series, bars, chart, fmt

CURVES = 6  # divergence curves drawn: the most sensitive sites
RANKED = 30  # TQS bars drawn
SOURCE_COLORS = {"measured": "#59a14f", "cached": "#76b7b2", "predicted": "#f28e2b", "corrected": "#e15759"}
CURVE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:16px 24px;color:#222}
h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
td{max-width:360px;overflow-wrap:anywhere;vertical-align:top}td.n{white-space:nowrap;overflow-wrap:normal}
th{cursor:pointer;background:#f6f6f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#666}.chip{display:inline-block;width:12px;height:12px;border-radius:2px;margin:0 4px 0 10px}
.figs{display:flex;flex-wrap:wrap;gap:16px}.scroll{overflow:auto;max-height:760px;border:1px solid #eee}
"""

# Click a header to sort its table; marks the page as loaded (the browser test reads it).
SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th, col) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.dataset.asc !== "1"; th.dataset.asc = asc ? "1" : "0";
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v || a.cells[col].textContent;
      var y = b.cells[col].dataset.v || b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
document.documentElement.dataset.ready = "1";
"""


def _table(head: list[str], rows: list[list], sortable: bool = True) -> str:
    cls = ' class="sortable"' if sortable else ""
    out = [f"<table{cls}><thead><tr>", *(f"<th>{escape(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>")
        for cell in row:
            if isinstance(cell, (int, float)) and not isinstance(cell, bool):
                out.append(f'<td class="n" data-v="{cell!r}">{escape(fmt(cell))}</td>')
            else:
                out.append(f"<td>{escape('-' if cell is None else str(cell))}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _legend() -> str:
    chips = "".join(
        f'<span class="chip" style="background:{c}"></span>{p}' for p, c in PRECISION_COLORS.items()
    )
    return (
        chips + '<span class="chip" style="background:#eeeeee;border:1px dashed #444"></span>not quantizable'
    )


def _model_name(r: dict) -> str:
    return (r.get("source") or "model").strip("'\"")


def _kib(b: float) -> str:
    return f"{b / 1024:.1f} KiB"


def _summary(r: dict) -> str:
    plan = r["plan"]
    t, f = plan["totals"], plan["fp32_totals"]
    counts: dict[str, int] = {}
    for s in plan["sites"]:
        if len(s["options"]) > 1:
            counts[s["precision"]] = counts.get(s["precision"], 0) + 1
    rows = [
        ["model", _model_name(r)],
        ["target", r["target"]],
        ["budget", ", ".join(f"{k}={v}" for k, v in sorted(plan["budget"].items())) or "none (forced plan)"],
        [
            "plan",
            f"{plan['method']}{' (optimal)' if plan['optimal'] else ''}: "
            + ", ".join(f"{n} {p}" for p, n in sorted(counts.items())),
        ],
        [
            "size",
            f"{_kib(t['size_bytes'])} ({100 * t['size_bytes'] / f['size_bytes']:.1f}% of fp32 {_kib(f['size_bytes'])})",
        ],
        ["avg weight bits", f"{t['avg_bits']:.2f}"],
        ["BOPs", f"{t['bops']:.3g} ({100 * t['bops'] / f['bops']:.1f}% of fp32)"],
        [
            "predicted relative rollout error",
            "not predicted (forced plan)"
            if plan["predicted_error"] is None
            else f"{plan['predicted_error']:.3e}",
        ],
    ]
    if "latency_ms" in t:
        rows.append(["latency (table)", f"{t['latency_ms']:.4g} ms"])
    if r.get("trace") and "measured_ms" in r["trace"][-1]:
        last = r["trace"][-1]
        rows.append(
            [
                "latency (measured)",
                f"{last['measured_ms']:.4g} ms ({'met' if last['met'] else 'over budget'})",
            ]
        )
    if r.get("quantizer_activations"):
        rows.append(["quantizer activations", r["quantizer_activations"]])
    if r.get("tqs"):
        q = r["tqs"]
        rows.append(
            [
                "TQS",
                f"{q['mode']} mode, horizon {q['horizon']}, {q['seeds']} seeds, {q['contexts']}, {q['path']} path",
            ]
        )
    return '<section id="summary"><h2>Summary</h2>' + _table(["", ""], rows, sortable=False) + "</section>"


def _tqs(r: dict) -> str:
    q = r.get("tqs")
    if not q:
        return '<section id="tqs"><h2>TQS per fused op</h2><p class="muted">A forced plan: no TQS was computed.</p></section>'
    precision = {s["site"]: s["precision"] for s in r["plan"]["sites"]}
    scored = sorted(
        (s for s in q["sites"] if s["tqs"] is not None),
        key=lambda s: (-s["tqs"], -(s["gain"] or 0), s["site"]),
    )
    rows = [
        Bar(
            f"{s['site']} {s['anchor']}",
            s["tqs"],
            PRECISION_COLORS.get(precision.get(s["site"]), "#bbb"),
            *(s["tqs_ci"] or (None, None)),
            title=f"site {s['site']} ({'+'.join(s['kinds'])}): TQS {fmt(s['tqs'])}"
            + (f" [{fmt(s['tqs_ci'][0])}, {fmt(s['tqs_ci'][1])}]" if s["tqs_ci"] else ""),
        )
        for s in scored[:RANKED]
    ]
    fig = bars(
        rows, xlabel="TQS: growth rate of the divergence (log per step), bar colour = planned precision"
    )
    table = _table(
        [
            "rank",
            "site",
            "fused ops",
            "precision",
            "TQS",
            "TQS 95% CI",
            "gain",
            "gain 95% CI",
            "linear",
            "status",
        ],
        [
            [
                i + 1 if s["tqs"] is not None else None,
                s["site"],
                "+".join(s["kinds"]),
                precision.get(s["site"], "-"),
                s["tqs"],
                None if not s["tqs_ci"] else f"[{fmt(s['tqs_ci'][0])}, {fmt(s['tqs_ci'][1])}]",
                s["gain"],
                None if not s["gain_ci"] else f"[{fmt(s['gain_ci'][0])}, {fmt(s['gain_ci'][1])}]",
                s["linear"],
                s["status"] if not s["reason"] else f"{s['status']}: {s['reason']}",
            ]
            for i, s in enumerate(scored + [s for s in q["sites"] if s["tqs"] is None])
        ],
    )
    note = f"<p class='muted'>{len(scored)} of {len(q['sites'])} sites scored; intervals are bootstrap over {q['seeds']} seeds.</p>"
    return (
        f'<section id="tqs"><h2>TQS per fused op</h2>{note}{fig}<div class="scroll">{table}</div></section>'
    )


def _curves(r: dict) -> str:
    q = r.get("tqs")
    head = '<section id="curves"><h2>Divergence curves of the most sensitive sites</h2>'
    if not q:
        return head + '<p class="muted">A forced plan: no TQS was computed.</p></section>'
    top = sorted((s for s in q["sites"] if s["tqs"] is not None and s["curve"]), key=lambda s: -s["tqs"])[
        :CURVES
    ]
    series = [
        Series(
            f"site {s['site']} {s['anchor']}",
            list(range(1, len(s["curve"]) + 1)),
            s["curve"],
            CURVE_COLORS[i],
        )
        for i, s in enumerate(top)
    ]
    fig = chart(
        series, xlabel="rollout step t", ylabel="divergence d_k(t) per unit error", logy=True, width=760
    )
    return (
        head
        + "<p class='muted'>Seed-averaged divergence after a perturbation at each site (docs/tqs.md).</p>"
        + fig
        + "</section>"
    )


def _graph(r: dict) -> str:
    sites = r["plan"]["sites"]
    edges = (r.get("graph") or {}).get("edges", [])
    note = (
        "Boxes are fused call sites coloured by precision; dashed ones cannot be quantized; a thick outline and "
        "a tag w<i>n</i> mark sites that read one shared weight (decided together). Hover for details."
    )
    return f'<section id="graph"><h2>Fused graph</h2><p class="muted">{note}</p><p>{_legend()}</p><div class="scroll">{graph_svg(sites, edges)}</div></section>'


def _pareto(r: dict) -> str:
    head = '<section id="pareto"><h2>Pareto fronts</h2>'
    fronts = r.get("pareto")
    if not fronts:
        return head + '<p class="muted">A forced plan: no fronts were solved.</p></section>'
    plan, figs = r["plan"], []
    for resource, label, scale in (
        ("size_bytes", "model size (KiB)", 1 / 1024),
        ("latency_ms", "latency (ms, table)", 1.0),
    ):
        if resource not in fronts:
            continue
        pts = sorted(fronts[resource], key=lambda p: p[resource])
        uni = [u for u in fronts.get("uniform", []) if resource in u]
        chosen = plan["totals"].get(resource)
        series = [
            Series(
                "front",
                [p[resource] * scale for p in pts],
                [p["predicted_error"] for p in pts],
                "#4e79a7",
                marker="circle",
                step=True,
                titles=[f"{fmt(p[resource] * scale)}: error {fmt(p['predicted_error'])}" for p in pts],
            ),
            *(
                Series(
                    f"uniform {u['precision']}",
                    [u[resource] * scale],
                    [u["predicted_error"]],
                    PRECISION_COLORS[u["precision"]],
                    line=False,
                    marker="square",
                    titles=[f"all {u['precision']}: error {fmt(u['predicted_error'])}"],
                )
                for u in uni
            ),
        ]
        if chosen is not None and plan["predicted_error"] is not None:
            series.append(
                Series(
                    "chosen plan",
                    [chosen * scale],
                    [plan["predicted_error"]],
                    "#d62728",
                    line=False,
                    marker="star",
                    titles=[f"chosen: error {fmt(plan['predicted_error'])}"],
                )
            )
        figs.append(chart(series, xlabel=label, ylabel="predicted relative rollout error", logy=True))
    note = "<p class='muted'>Every point's error as the plan's error model predicts it; fp32 predicts 0 and sits on the axis.</p>"
    return head + note + f'<div class="figs">{"".join(figs)}</div></section>'


def _latency(r: dict) -> str:
    head = '<section id="latency"><h2>Latency</h2>'
    sites = [s for s in r["plan"]["sites"] if s.get("latency_ms") is not None]
    if not sites:
        return (
            head
            + '<p class="muted">Latency was not part of this job (no latency budget or runner).</p></section>'
        )
    sites.sort(key=lambda s: -s["latency_ms"])
    rows = [
        Bar(
            f"{s['site']} {s['anchor']} {s['precision']}",
            s["latency_ms"],
            SOURCE_COLORS.get(s["latency_source"], "#999"),
            title=f"site {s['site']}: {s['latency_ms']:.4g} ms ({s['latency_source']})",
        )
        for s in sites[:RANKED]
    ]
    legend = [(k, c) for k, c in SOURCE_COLORS.items() if any(s["latency_source"] == k for s in sites)]
    fig = bars(rows, xlabel="per-site latency (ms) by source", legend=legend)
    trace = _table(
        ["round", "predicted ms", "measured ms", "met", "non-fp32 sites"],
        [
            [t["round"], t.get("predicted_ms"), t.get("measured_ms"), t.get("met"), len(t["plan"])]
            for t in r.get("trace", [])
        ],
    )
    return head + fig + "<h3>Solve-build-measure trace</h3>" + trace + "</section>"


def _site_ranges(sites: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7"."""
    out, start = [], None
    for i, s in enumerate(sites):
        if start is None:
            start = s
        if i + 1 == len(sites) or sites[i + 1] != s + 1:
            out.append(str(start) if start == s else f"{start}-{s}")
            start = None
    return ", ".join(out)


def _fallbacks(r: dict) -> str:
    groups: dict[tuple[str, str], list[int]] = {}
    for s in r["plan"]["sites"]:
        if s["precision"] == "fp32" and (len(s["options"]) <= 1 or s.get("reason")):
            groups.setdefault(("+".join(s["kinds"]), s["reason"] or "-"), []).append(s["site"])
    rows = [[_site_ranges(sites), len(sites), kinds, reason] for (kinds, reason), sites in groups.items()]
    body = (
        _table(["sites", "count", "fused ops", "why it stays fp32"], rows)
        if rows
        else "<p>None: every site runs as planned.</p>"
    )
    return (
        f'<section id="fallbacks"><h2>What stays fp32, and why</h2><div class="scroll">{body}</div></section>'
    )


def _reliability(r: dict) -> str:
    rel = r.get("reliability")
    if not rel:
        return ""
    variants = rel["variants"]
    rows = [[x["group"], x["kind"], x["windows"], *(x[f"{v} MSE"] for v in variants)] for x in rel["rows"]]
    table = _table(["group", "kind", "windows", *(f"{v} MSE" for v in variants)], rows)
    summary = _table(
        ["variant", "mean MSE", "worst group", "worst MSE", "gap to fp32 there", "largest gap", "at"],
        [
            [
                v,
                s["mean_mse"],
                s["worst_group"],
                s["worst_mse"],
                s.get("gap_at_worst"),
                s.get("max_gap"),
                s.get("max_gap_group"),
            ]
            for v, s in rel["summary"].items()
        ],
    )
    note = f"<p class='muted'>{escape(rel.get('description', ''))}; gaps are MSE / fp32's MSE - 1.</p>"
    return f'<section id="reliability"><h2>Reliability</h2>{note}{summary}<div class="scroll">{table}</div></section>'


SECTIONS = (_summary, _tqs, _curves, _graph, _pareto, _latency, _fallbacks, _reliability)


def render(report: dict) -> str:
    """The report as one HTML document (``report`` is `CompiledModel.report_data()` / report.json)."""
    name = Path(_model_name(report)).name
    body = "".join(section(report) for section in SECTIONS)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>tvm_tqs report: {escape(name)}</title><style>{STYLE}</style></head><body>"
        f"<h1>tvm_tqs report: {escape(name)}</h1>{body}<script>{SCRIPT}</script></body></html>\n"
    )


def write_html(report: dict, path: str | os.PathLike) -> Path:
    """Render `report` and write it to `path` atomically; returns the path."""
    path = Path(path)
    write_text_atomic(path, render(report))
    return path


def read_artifact_report(directory: str | os.PathLike) -> dict:
    """The ``report.json`` of an exported artifact directory, checked to render, with an error that names
    what is wrong."""
    path = Path(directory) / "report.json"
    if not Path(directory).is_dir():
        raise TQSError(
            f"'{directory}' is not a directory (give an artifact directory written by compile --out)"
        )
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise TQSError(
            f"'{directory}' has no report.json: it is not an artifact written by compile --out"
        ) from None
    except (OSError, ValueError) as err:  # ValueError: not UTF-8, not JSON
        raise TQSError(f"cannot read '{path}': {err}") from None
    if not isinstance(report, dict) or any(k not in report for k in ("target", "plan")):
        raise TQSError(f"'{path}' is not a tvm_tqs report (a JSON object with 'target' and 'plan')")
    try:
        render(report)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise TQSError(f"'{path}' is malformed: {type(err).__name__}: {err}") from None
    return report
