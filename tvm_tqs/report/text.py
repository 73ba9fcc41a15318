"""Plain-text tables for the CLI."""

from __future__ import annotations

from collections.abc import Sequence

from ..graph import FusedOp


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A fixed-width table; `align` has one 'l' or 'r' per column (default: numbers right, text left)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if align is None:
        align = "".join(
            "r" if rows and isinstance(rows[0][i], (int, float)) else "l" for i in range(len(headers))
        )

    def line(values):
        return "  ".join(
            v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(values, widths, align, strict=False)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule] + [line(r) for r in cells])


def _shapes(infos) -> str:
    return " ".join(
        "x".join(map(str, t.shape)) + ("" if t.dtype == "float32" else f":{t.dtype}") for t in infos
    )


def fused_op_table(ops: Sequence[FusedOp]) -> str:
    """The `tvm-tqs inspect` table plus a one-line summary."""
    rows = [
        (
            op.index,
            op.func,
            "+".join(op.kinds),
            _shapes(op.inputs) or "-",
            _shapes(op.outputs),
            " ".join(f"{w.id}[{'x'.join(map(str, w.shape))}]" for w in op.weights) or "-",
            op.macs,
        )
        for op in ops
    ]
    table = format_table(
        ["site", "prim_func", "fused ops", "inputs", "outputs", "weights", "MACs"], rows, "rllllllr"
    )
    unique = {w.id: w for op in ops for w in op.weights}
    summary = (
        f"{len(ops)} fused call sites, {len({op.func for op in ops})} distinct PrimFuncs, "
        f"{sum(op.macs for op in ops):,} MACs, {len(unique)} distinct constants "
        f"({sum(w.size for w in unique.values()):,} elements)"
    )
    return table + "\n" + summary


def _num(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _interval(ci, digits: int = 3) -> str:
    return "-" if ci is None else f"[{ci[0]:.{digits}g}, {ci[1]:.{digits}g}]"


def tqs_table(report, top: int | None = None, by: str = "tqs") -> str:
    """The `tvm-tqs score` table: sites ranked by TQS (or gain), with intervals and the linearity check."""
    ranked = report.ranked(by)
    shown = ranked if top is None else ranked[:top]
    rows = []
    for rank, s in enumerate(shown, 1):
        ratio = "-" if s.linearity_ratio is None else f"{s.linearity_ratio:.3f}" + ("" if s.linear else " !")
        rows.append(
            (
                rank if s.status == "ok" else "-",
                s.site,
                s.anchor,
                "+".join(s.kinds) if len("+".join(s.kinds)) <= 40 else "+".join(s.kinds)[:37] + "...",
                _num(s.tqs),
                _interval(s.tqs_ci),
                _num(s.gain),
                _interval(s.gain_ci),
                _num(s.gain_first_call),
                ratio,
                s.status if s.status == "ok" else f"{s.status}: {s.reason}",
            )
        )
    headers = [
        "rank",
        "site",
        "anchor",
        "fused ops",
        "TQS/step",
        "95% CI",
        "gain",
        "95% CI",
        "gain(1 call)",
        "d(e)/d(e/2)",
        "status",
    ]
    table = format_table(headers, rows, "rrllrlrlrrl")
    scored = sum(1 for s in report.sites if s.status == "ok")
    summary = (
        f"{scored}/{len(report.sites)} sites scored ({report.mode} mode), horizon {report.horizon} "
        f"({report.calls} calls of stride {report.stride}), {report.seeds} seeds, eps {report.eps:g}, "
        f"{report.executions} compiled-rollout executions of batch {report.batch} ({report.method})"
    )
    if top is not None and top < len(ranked):
        summary += f"; top {top} of {len(ranked)} shown"
    lines = [table, summary] + [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def _bytes(n: float) -> str:
    for unit, size in (("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def plan_summary(compiled) -> str:
    """The `tvm-tqs compile` summary: the planned sites, then totals against fp32 and the budget."""
    plan = compiled.plan
    rows = []
    for s in plan.sites:
        if len(s.options) <= 1:
            continue
        rows.append(
            (
                s.site,
                "+".join(s.kinds),
                s.precision,
                s.group or "-",
                _num(s.gain, 3),
                _num(s.tqs, 3),
                f"{s.error_share:.2e}",
                _bytes(s.size_bytes) if s.size_bytes else "-",
                "-" if s.latency_ms is None else f"{s.latency_ms * 1000:.1f} us ({s.latency_source})",
            )
        )
    table = format_table(
        ["site", "fused ops", "precision", "shared", "gain", "TQS", "err share", "size", "latency"],
        rows,
        "rllllllll",
    )
    t, f = plan.totals, plan.fp32_totals
    counts = ", ".join(f"{n} {p}" for p, n in sorted(plan.counts().items()))
    lines = [
        table,
        "",
        f"target {compiled.target.name}; plan by {plan.method}{' (optimal)' if plan.optimal else ''}; {counts}",
        f"size {_bytes(t['size_bytes'])} ({100 * t['size_bytes'] / f['size_bytes']:.1f}% of fp32 "
        f"{_bytes(f['size_bytes'])}); avg weight bits {t['avg_bits']:.2f}; BOPs {t['bops']:.3g} "
        f"({100 * t['bops'] / f['bops']:.1f}% of fp32)",
    ]
    if "latency_ms" in t:
        lines.append(f"latency (sum of per-site kernels) {t['latency_ms']:.3f} ms")
    for entry in compiled.trace:
        if "measured_ms" in entry:
            lines.append(f"round {entry['round']}: measured end-to-end {entry['measured_ms']:.3f} ms")
    if plan.budget:
        lines.append("budget: " + ", ".join(f"{k}={v:.6g}" for k, v in plan.budget.items()))
    if plan.predicted_error == plan.predicted_error:  # not NaN
        lines.append(f"predicted relative rollout error {plan.predicted_error:.3e}")
    return "\n".join(lines)
