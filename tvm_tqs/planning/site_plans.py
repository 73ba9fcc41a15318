"""Per-site rows of a solved plan: what runs, why, and what it is predicted to cost."""

from __future__ import annotations

import math

from ..plan import SitePlan
from ..precision import PRECISIONS


def site_plans(
    problem, applied, quantized, report=None, errors2=None, gains=None, table=None, group_shares=None
) -> list[SitePlan]:
    """One `SitePlan` per fused site.

    Parameters
    ----------
    problem : PlanningProblem
    applied : dict
        Site -> precision that runs (the quantize pass's plan, after fallbacks).
    quantized : QuantizeResult
        The quantize pass's per-site report (kernel, reason).
    report : TQSReport, optional
    errors2, gains
        The error table and per-site gains the plan was solved with (empty for forced plans).
    table : LatencyTable, optional
    group_shares : mapping, optional
        Group -> its part of the plan's e^2 where groups interact (`CrossGroupModel.group_shares`);
        default: the table's e_g^2 of the applied precision.
    """
    errors2, gains = errors2 or {}, gains or {}
    group_of = {s: g for g in problem.groups for s in g.sites}
    reports = {s.index: s for s in quantized.sites}
    scores = {s.site: s for s in report.sites} if report is not None else {}
    plans = []
    for op in problem.ops:
        g = group_of.get(op.index)
        p = applied.get(op.index, "fp32")
        share = 0.0
        if g is not None and errors2:
            e2 = group_shares[g.name] if group_shares is not None else errors2[g.name][p]
            gsum = sum(gains.get(s, 0.0) for s in g.sites) or 1.0
            share = e2 * gains.get(op.index, 0.0) / gsum if math.isfinite(gsum) else e2 / len(g.sites)
        first = g is None or g.sites[0] == op.index
        size = g.storage_bytes(p, problem.group_size) if g is not None and first else 0.0
        entry = table.entry(op.index, p) if table is not None else None
        sc = scores.get(op.index)
        rep = reports.get(op.index)
        plans.append(
            SitePlan(
                site=op.index,
                name=op.name,
                kinds=op.kinds,
                anchor=op.anchor,
                precision=p,
                options=g.options if g is not None else ("fp32",),
                group=g.name if g is not None and len(g.sites) > 1 else None,
                tqs=None if sc is None else sc.tqs,
                gain=None if sc is None else sc.gain,
                error_share=share,
                size_bytes=size,
                bops=PRECISIONS[p].bops(op.macs),
                latency_ms=None if entry is None else entry.latency_ms,
                latency_source=None if entry is None else entry.source,
                kernel=None if rep is None else rep.kernel,
                reason=None if rep is None else rep.reason,
            )
        )
    return plans
