"""The budget sweep's quantizer column: the same size budgets, TQS's plan solved and measured per weight
quantizer. Does ``compile(quantizer="bitsplit")`` give lower rollout error than rtn at the same size?

    python benchmarks/budget_sweep.py --quantizers rtn bitsplit [--models NAME ...] [--points P] [--windows N]

Per zoo model: one weight-mode TQS report (horizon 96, 8 seeds, data-free, as budget_sweep.py), the budgets
of budget_sweep.py (P sizes from all-int4 to all-int8, plus the all-fp16 size), and per quantizer Q:

- the cross-group error model compile() builds for Q (`CrossGroupModel.measure(..., quantizer=Q)`: the
  residual responses to Q's own quantization residuals, Q's weight error), solved per budget by compile()'s
  pairwise-corrected knapsack (`plan_eval.Planner.solve_cross`): the plan
  ``compile(model, "x86", Budget(size_bytes=B), quantizer=Q, tqs_report=report)`` returns;
- measured as budget_sweep.py measures: ``compile(plan=..., quantizer=Q, batch=N)`` rolled out 96 steps from
  N real test windows, relative error against the fp32 compile. "bitsplit" is compile()'s: Gram matrices
  from 64 data-free contexts (no real data).

The plans may differ per quantizer (Q changes the error model); the sizes are the same budget. Writes
benchmarks/results/budget_sweep_quantizers.{json,md}.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from common import card_of, per_model, write_results
from plan_eval import HORIZON, SEEDS, Evaluator, gains_of, scored_planner
from tqs_validity import test_windows

from tvm_tqs.planning import CrossGroupModel
from tvm_tqs.planning.activations import bitsplit_quantizer
from tvm_tqs.quantizers import mse, rtn
from tvm_tqs.solver import InfeasibleBudgetError


def _quantizer(name: str, problem):
    """compile()'s quantizer object for `name` (data-free)."""
    return bitsplit_quantizer(problem) if name == "bitsplit" else {"rtn": rtn, "mse": mse}[name]


def budgets_of(planner, points: int) -> list[float]:
    """budget_sweep.py's budgets: `points` sizes from all-int4 to all-int8, plus the all-fp16 size."""
    lo, hi = planner.size(planner.uniform("int4")), planner.size(planner.uniform("int8"))
    fp16 = planner.size(planner.uniform("fp16"))
    return [float(b) for b in np.linspace(lo, hi, points)] + ([fp16] if fp16 > hi else [])


def evaluate(path: Path, quantizers: list[str], points: int, windows: int) -> dict:
    card = card_of(path)
    report, planner, timings = scored_planner(path)
    gains = gains_of(report)
    budgets = budgets_of(planner, points)
    x, y = test_windows(card, HORIZON, windows)
    ev = Evaluator(path, x, y, planner.rollout.target_channels)
    rows = [{"budget_bytes": b, "quantizers": {}} for b in budgets]
    for name in quantizers:
        t0 = time.perf_counter()
        quantizer = _quantizer(name, planner.problem)
        cross = CrossGroupModel.measure(
            planner.problem, gains, horizon=HORIZON, seeds=SEEDS, quantizer=quantizer
        )
        timings[f"{name}_model_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for row in rows:
            try:
                plan = planner.solve_cross(cross, row["budget_bytes"])
            except InfeasibleBudgetError:
                row["quantizers"][name] = None
                continue
            measured = ev.measure(planner.site_plan(plan), quantizer=name)
            row["quantizers"][name] = {
                "plan": plan,
                "size_bytes": planner.size(plan),
                "predicted": planner.predicted_cross(cross, plan),
                **measured,
            }
            print(f"   {row['budget_bytes']:.0f} B {name}: {measured['rel_error']:.4g}", flush=True)
        timings[f"{name}_measure_s"] = time.perf_counter() - t0
    return {
        "model": path.stem,
        "groups": len(planner.groups),
        "windows": len(x),
        "rows": rows,
        "timings_s": timings,
    }


def _wins(res: dict, a: str, b: str) -> tuple[int, int, int]:
    """(wins, ties, losses) of quantizer `a` against `b` over the budgets where both are feasible, the
    all-int4 budget included (the quantizer decides there too)."""
    w = t = lo = 0
    for row in res["rows"]:
        pa, pb = row["quantizers"].get(a), row["quantizers"].get(b)
        if pa is None or pb is None:
            continue
        if abs(pa["rel_error"] - pb["rel_error"]) <= 1e-9 * max(pa["rel_error"], pb["rel_error"], 1e-12):
            t += 1
        elif pa["rel_error"] < pb["rel_error"]:
            w += 1
        else:
            lo += 1
    return w, t, lo


def markdown(results: list[dict], payload: dict) -> str:
    qs = payload["quantizers"]
    base, others = qs[0], qs[1:]
    lines = [
        "# Budget sweep, quantizer column: TQS plans per weight quantizer at equal size",
        "",
        f"Command: `{payload['command']}`",
        "",
        f"Machine: {payload['environment']['machine']}; {payload['environment']['load']}. Method in benchmarks/budget_sweep_quantizers.py's docstring "
        f"(TQS cross plans per quantizer, data-free; {payload['points']} budgets from all-int4 to all-int8 "
        f"plus the fp16 size; up to {payload['windows']} real test windows, 96-step rollouts).",
        "",
        "Relative rollout error ||y_q - y_fp32|| / ||y_fp32|| per budget; `W/T/L` = wins / ties / losses of the "
        f"quantizer against {base} over the budgets.",
        "",
        "| model | budget (bytes) | "
        + " | ".join(qs)
        + " | "
        + " | ".join(f"{q} vs {base}" for q in others)
        + " |",
        "|---|---|" + "---|" * (len(qs) + len(others)),
    ]
    better = {q: 0 for q in others}
    reductions = {q: [] for q in others}
    for res in results:
        for i, row in enumerate(res["rows"]):
            cells = [_cell(row["quantizers"].get(q)) for q in qs]
            marks = []
            for q in others:
                pa, pb = row["quantizers"].get(q), row["quantizers"].get(base)
                if pa is None or pb is None:
                    marks.append("-")
                    continue
                reductions[q].append(1.0 - pa["rel_error"] / pb["rel_error"])
                marks.append(f"{100 * (1 - pa['rel_error'] / pb['rel_error']):+.0f}%")
            label = res["model"] if i == 0 else ""
            lines.append(f"| {label} | {row['budget_bytes']:.0f} | " + " | ".join(cells + marks) + " |")
        counts = {q: _wins(res, q, base) for q in others}
        for q, (w, _, lo) in counts.items():
            better[q] += w > lo
        wtl = [f"{w}/{t}/{lo}" for w, t, lo in counts.values()]
        lines.append("| | **W/T/L** | " + " | ".join([""] * len(qs) + wtl) + " |")
    lines.append("")
    for q in others:
        med = 100 * float(np.median(reductions[q])) if reductions[q] else float("nan")
        lines.append(
            f"{q} plans measure lower error than {base} plans (more budget wins than losses) on "
            f"{better[q]}/{len(results)} models; median error reduction over all (model, budget) pairs {med:.1f}%."
        )
    return "\n".join(lines) + "\n"


def _cell(point: dict | None) -> str:
    return "infeasible" if point is None else f"{point['rel_error']:.3g}"


def run(args, command: str, env: str, models: list[Path], out: str) -> int:
    start = time.perf_counter()
    results, failures = per_model(
        models, lambda path: evaluate(path, args.quantizers, args.points, args.windows)
    )
    payload = {
        "command": command,
        "environment": env,
        "quantizers": list(args.quantizers),
        "points": args.points,
        "windows": args.windows,
        "horizon": HORIZON,
        "seeds": SEEDS,
        "wall_s": time.perf_counter() - start,
        "results": results,
        "failures": failures,
    }
    md = markdown(results, payload) + f"\nWall time: {payload['wall_s'] / 60:.1f} min.\n"
    write_results(out, "budget_sweep_quantizers", payload, md, failures)
    return 0 if results and not failures else 1
