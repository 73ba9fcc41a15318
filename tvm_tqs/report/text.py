"""Plain-text tables for the CLI."""

from __future__ import annotations

from collections.abc import Sequence

from ..graph import FusedOp


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A fixed-width table; `align` has one 'l' or 'r' per column (default: numbers right, text left)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if align is None:
        align = "".join("r" if rows and isinstance(rows[0][i], (int, float)) else "l" for i in range(len(headers)))

    def line(values):
        return "  ".join(v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(values, widths, align)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule] + [line(r) for r in cells])


def _shapes(infos) -> str:
    return " ".join("x".join(map(str, t.shape)) + ("" if t.dtype == "float32" else f":{t.dtype}") for t in infos)


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
    table = format_table(["site", "prim_func", "fused ops", "inputs", "outputs", "weights", "MACs"], rows, "rllllllr")
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
    headers = ["rank", "site", "anchor", "fused ops", "TQS/step", "95% CI", "gain", "95% CI", "gain(1 call)",
               "d(e)/d(e/2)", "status"]
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
