"""Do TQS plans beat the baselines at every size budget? Measured rollout error of plans from each method.

    python benchmarks/budget_sweep.py [--models NAME ...] [--points P] [--random-seeds R] [--windows N]
                                      [--out benchmarks/results] [--dry-run]
    python benchmarks/budget_sweep.py --quantizers rtn bitsplit [...]   (the quantizer column: TQS plans per
                                      weight quantizer; benchmarks/budget_sweep_quantizers.py)

For every zoo model (benchmarks/zoo/models/*.onnx and tvm_tqs/examples/*.onnx), target "x86" (this host),
P size budgets evenly spaced from the all-int4 model size to the all-int8 model size, plus the all-fp16 size
(whole-model bytes, `plan.totals["size_bytes"]`: quantized weights with their scales plus the float
constants), and at each budget the plan of every method:

- ``TQS``: compile()'s plan: the knapsack minimising the error model's sum of e_g^2 built from one
  weight-mode TQS report (horizon 96, 8 seeds, data-free contexts), reused across budgets;
- ``TQS cross``: the cross-group error model (`tvm_tqs.planning.CrossGroupModel`): the rollout's responses
  to each group's actual quantization residual at each precision (the paper's residual probe; horizon 96,
  8 data-free contexts), their inner products as pairwise terms, plus the activation term from the same TQS
  report; solved by the pairwise-corrected knapsack (`tvm_tqs.solver_pairwise`);
- ``TQS residual``: the same responses without their cross terms (each group's residual response alone,
  the independent model with the residual probe) and the plain knapsack;
- ``1-step``: the SAME solver and error model with the single-step gains (each site's gain over the first
  model call only, ``SiteScore.gain_first_call``, read from the same report);
- ``weight error``: the SAME solver minimising the sum over weight groups of r_w(g, p)^2, the relative
  weight-quantization error (no sensitivity, no activation term; every distinct weight counted once);
- ``SQNR``: the SAME solver minimising the sum over sites of the output noise-to-signal ratio of each site
  quantized alone (AIMET AMP's signal; `tvm_tqs.planning.sqnr_table` on 64 data-free contexts' first call);
- ``random``: R random plans that meet the budget (random maximal fill, `plan_eval.Planner.random_fill`:
  every group starts at its smallest option and random upgrades that still fit are taken until none
  fits); the median over the R seeds is reported;
- ``uniform``: the largest uniform precision that fits the budget (all-int4 below the all-int8 size,
  all-int8 at it, all-fp16 at the last budget).

Plans are solved with compile()'s own helpers (`plan_eval.Planner`; identical to
``compile(model, "x86", Budget(size_bytes=B), tqs_report=report)``), then each distinct plan is compiled
once with ``compile(plan=..., batch=N)`` and rolled out 96 steps from N real test windows. Measures: the
relative rollout error ||y_q - y_fp32|| / ||y_fp32|| against the model's own fp32 compile (the quantity
the error model predicts; used for dominance), and the increase of the rollout MSE against the truth.

TQS (each of the TQS variants) dominates a baseline at a budget when its measured relative error is lower
(ties: same plan, or equal error). The first budget (all-int4 size) mostly admits only the all-int4 plan, so methods tie there;
not always: a weight with very few input channels is smaller in fp16 than in int4 with its group scales
(vic_elec_gru's 2-input W_ih), and the solvers take fp16 for it. The dominance counts leave that budget
out; the list of losses in the results covers every budget.

Writes benchmarks/results/budget_sweep.json and .md, and benchmarks/results/budget_sweep/<model>.png
(size vs rollout error, one line per method) when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from common import card_of, command_line, machine_env, per_model, selected_models, write_results
from plan_eval import HORIZON, SEEDS, TARGET, Evaluator, Planner, gains_of, scored_planner
from tqs_validity import test_windows

from tvm_tqs.contexts import SyntheticContexts
from tvm_tqs.planning import sqnr_table
from tvm_tqs.planning.activations import GRAM_CONTEXTS
from tvm_tqs.solver import InfeasibleBudgetError

HERE = Path(__file__).resolve().parent
# Cost: every distinct plan is one full compile + build (about 1 s for the MLP, 15-20 s for the unrolled
# GRU/LSTM on 2 cores); identical plans (methods agreeing, the shared all-int4 point) are measured once.
POINTS, RANDOM_SEEDS, WINDOWS = 5, 3, 256
SOLVED = ("TQS", "TQS residual", "1-step", "weight error", "SQNR")  # plain knapsack on a table
VARIANTS = ("TQS", "TQS cross")  # the TQS plans compared with every baseline
BASELINES = ("1-step", "weight error", "SQNR", "random", "uniform")
METHODS = ("TQS", "TQS cross", "TQS residual", *BASELINES)
TIE = 1e-9


def plans_for(
    planner: Planner, tables: dict, cross, budgets: list[float], seeds: int, seed: int
) -> list[dict]:
    """Per budget: {method: plan or None (infeasible)}; "random" holds a list of plans."""
    sizes = {p: planner.size(planner.uniform(p)) for p in ("int4", "int8", "fp16")}
    allowed = planner.allowed()
    out = []
    for i, budget in enumerate(budgets):
        entry: dict = {}
        for method in SOLVED:
            try:
                entry[method] = planner.solve(tables[method], budget)
            except InfeasibleBudgetError:
                entry[method] = None
        try:
            entry["TQS cross"] = planner.solve_cross(cross, budget)
        except InfeasibleBudgetError:
            entry["TQS cross"] = None
        rng = np.random.default_rng([seed, i])
        entry["random"] = [planner.random_fill(rng, budget, allowed) for _ in range(seeds)]
        fits = [p for p in ("fp16", "int8", "int4") if sizes[p] <= budget * (1 + TIE)]
        entry["uniform"] = planner.uniform(fits[0]) if fits else None
        entry["uniform_precision"] = fits[0] if fits else None
        out.append(entry)
    return out


def _key(plan: dict) -> tuple:
    return tuple(sorted(plan.items()))


def _point(planner, ev, table, cross, plan) -> dict | None:
    if plan is None:
        return None
    m = ev.measure(planner.site_plan(plan))
    return {
        "plan": plan,
        "size_bytes": planner.size(plan),
        "predicted": planner.predicted(table, plan),
        "predicted_cross": planner.predicted_cross(cross, plan),
        "rel_error": m["rel_error"],
        "mse_increase": m["mse_increase"],
    }


def _compare(tqs: dict | None, other: dict | None, key: str, same_plan: bool) -> str | None:
    """'win' / 'tie' / 'loss' of TQS against a baseline on `key` (None when either is infeasible)."""
    if tqs is None or other is None:
        return None
    a, b = tqs[key], other[key]
    if same_plan or abs(a - b) <= TIE * max(abs(a), abs(b), 1e-12):
        return "tie"
    return "win" if a < b else "loss"


def evaluate(path: Path, points: int, seeds: int, windows: int, seed: int, dry_run: bool) -> dict:
    card = card_of(path)
    report, planner, timings = scored_planner(path)
    t0 = time.perf_counter()
    tables = {
        "TQS": planner.errors2(gains_of(report)),
        "1-step": planner.errors2(gains_of(report, "gain_first_call")),
        "weight error": planner.weight_errors2(),
    }
    timings["error_tables_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cross = planner.cross_model(gains_of(report))
    tables["TQS residual"] = cross.errors2
    timings["residual_responses_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    contexts = SyntheticContexts().make(planner.rollout, GRAM_CONTEXTS, seed=0)
    tables["SQNR"] = sqnr_table(planner.problem, contexts)
    timings["sqnr_s"] = time.perf_counter() - t0
    lo, hi = planner.size(planner.uniform("int4")), planner.size(planner.uniform("int8"))
    fp32_size = planner.size(planner.uniform("fp32"))
    fp16 = planner.size(planner.uniform("fp16"))
    budgets = [float(b) for b in np.linspace(lo, hi, points)] + ([fp16] if fp16 > hi else [])
    plans = plans_for(planner, tables, cross, budgets, seeds, seed)
    distinct = set()
    for entry in plans:
        for method in (*SOLVED, "TQS cross", "uniform"):
            if entry[method] is not None:
                distinct.add(_key(entry[method]))
        distinct.update(_key(p) for p in entry["random"])
    result = {
        "model": path.stem,
        "dataset": card["data"]["dataset"],
        "groups": len(planner.groups),
        "quantizable_sites": sum(len(g.sites) for g in planner.groups),
        "fp32_size_bytes": fp32_size,
        "int4_size_bytes": lo,
        "int8_size_bytes": hi,
        "fp16_size_bytes": fp16,
        "distinct_plans": len(distinct),
        "residual_responses": {
            "executions": cross.responses.executions,
            "probes": len(cross.responses.keys),
            "replicates": cross.responses.replicates,
        },
        "timings_s": timings,
    }
    print(f"   {len(planner.groups)} weight groups; {len(distinct)} distinct plans to measure", flush=True)
    if dry_run:
        return result
    x, y = test_windows(card, HORIZON, windows)
    t0 = time.perf_counter()
    ev = Evaluator(path, x, y, planner.rollout.target_channels)
    timings["fp32_reference_s"] = time.perf_counter() - t0
    table = tables["TQS"]
    rows = []
    for budget, entry in zip(budgets, plans, strict=True):
        row = {
            "budget_bytes": budget,
            "budget_fraction": (budget - lo) / (hi - lo) if hi > lo else 0.0,
            "at": "fp16" if budget == fp16 and budget > hi else None,
            "budget_pct_fp32": 100.0 * budget / fp32_size,
            "uniform_precision": entry["uniform_precision"],
            "methods": {},
        }
        for method in (*SOLVED, "TQS cross", "uniform"):
            row["methods"][method] = _point(planner, ev, table, cross, entry[method])
        randoms = [_point(planner, ev, table, cross, p) for p in entry["random"]]
        row["random_seeds"] = randoms
        row["methods"]["random"] = {
            "size_bytes": float(np.median([r["size_bytes"] for r in randoms])),
            "predicted": float(np.median([r["predicted"] for r in randoms])),
            "predicted_cross": float(np.median([r["predicted_cross"] for r in randoms])),
            "rel_error": float(np.median([r["rel_error"] for r in randoms])),
            "mse_increase": float(np.median([r["mse_increase"] for r in randoms])),
            "rel_error_min": float(np.min([r["rel_error"] for r in randoms])),
            "rel_error_max": float(np.max([r["rel_error"] for r in randoms])),
        }
        row["vs"] = {}
        for variant in VARIANTS:
            tqs = row["methods"][variant]
            row["vs"][variant] = {}
            for base in BASELINES:
                other = row["methods"][base]
                others = randoms if base == "random" else [other]
                same = tqs is not None and all(o is not None and o["plan"] == tqs["plan"] for o in others)
                row["vs"][variant][base] = {
                    "rel_error": _compare(tqs, other, "rel_error", same),
                    "mse_increase": _compare(tqs, other, "mse_increase", same),
                }
        rows.append(row)
        print(
            f"   budget {budget:.0f} B: "
            + ", ".join(f"{m} {_fmt(row['methods'][m], 'rel_error')}" for m in METHODS),
            flush=True,
        )
    timings["plans_s"] = ev.seconds
    result.update(
        test_windows=int(len(x)),
        fp32_rollout_mse=ev.ref_mse,
        compiles=ev.compiles,
        budgets=rows,
        uniform_points={
            p: _point(planner, ev, table, cross, planner.uniform(p)) for p in ("int4", "int8", "fp16")
        },
    )
    return result


def _fmt(point: dict | None, key: str, spec: str = ".3g") -> str:
    return "-" if point is None or point.get(key) is None else format(point[key], spec)


MARK = {"win": "W", "tie": "=", "loss": "L", None: "-"}


def dominance(res: dict, variant: str = "TQS", key: str = "rel_error") -> dict:
    """Per baseline: wins/ties/losses of `variant` over the budgets above the all-int4 point."""
    out = {}
    rows = res["budgets"][1:]
    for base in BASELINES:
        marks = [row["vs"][variant][base][key] for row in rows]
        out[base] = {m: marks.count(m) for m in ("win", "tie", "loss")}
    marks = [all(row["vs"][variant][b][key] in ("win", "tie", None) for b in BASELINES) for row in rows]
    out["all"] = {"dominates": sum(marks), "budgets": len(marks)}
    return out


def calibration(res: dict, method: str) -> list[float]:
    """measured / predicted relative error of every distinct measured plan (the error model of `method`:
    "predicted" = the independent TQS model, "predicted_cross" = the cross-group model)."""
    seen, ratios = set(), []
    points = [p for row in res["budgets"] for p in [*row["methods"].values(), *row["random_seeds"]]]
    for pt in points:
        if not pt or "plan" not in pt or pt[method] <= 0:
            continue
        key = tuple(sorted(pt["plan"].items()))
        if key not in seen:
            seen.add(key)
            ratios.append(pt["rel_error"] / pt[method])
    return ratios


def beats_uniform(res: dict, variant: str, precision: str) -> str | None:
    """'win'/'tie'/'loss' of `variant` against the uniform plan at that plan's size."""
    rows = [
        row
        for row in res["budgets"]
        if (row.get("at") == "fp16") == (precision == "fp16") and row["uniform_precision"] == precision
    ]
    return rows[-1]["vs"][variant]["uniform"]["rel_error"] if rows else None


def _summary(results: list[dict], variant: str, key: str) -> list[str]:
    lines = [
        f"| model | groups (sites) | {variant} best at | "
        + " | ".join(f"vs {b}" for b in BASELINES)
        + " | vs int8 at its size | vs fp16 at its size |",
        "|---|---|---|" + "---|" * len(BASELINES) + "---|---|",
    ]
    for res in results:
        d = dominance(res, variant, key)
        wtl = " | ".join(f"{d[b]['win']}/{d[b]['tie']}/{d[b]['loss']}" for b in BASELINES)
        lines.append(
            f"| {res['model']} | {res['groups']} ({res['quantizable_sites']}) | "
            f"{d['all']['dominates']}/{d['all']['budgets']} | {wtl} | "
            f"{MARK[beats_uniform(res, variant, 'int8')]} | {MARK[beats_uniform(res, variant, 'fp16')]} |"
        )
    pairs = [dominance(r, variant, key) for r in results]
    total, count = sum(d["all"]["dominates"] for d in pairs), sum(d["all"]["budgets"] for d in pairs)
    per_base = []
    for b in BASELINES:
        ok = sum(d[b]["win"] + d[b]["tie"] for d in pairs)
        per_base.append(f"{b} {ok}/{count}")
    lines += [
        "",
        f"{variant} has the lowest measured error of all methods at {total}/{count} (model, budget) pairs; "
        f"no worse than each baseline at: {', '.join(per_base)}. Columns vs X: wins/ties/losses.",
    ]
    return lines


def markdown(results: list[dict], payload: dict) -> str:
    env = payload["environment"]
    lines = [
        "# Budget sweep: measured rollout error of TQS plans vs baselines at equal size",
        "",
        f"Command: `{payload['command']}`",
        "",
        f"Machine: {env['machine']}; {env['load']}. Produced by benchmarks/budget_sweep.py (methods and "
        "measures in its docstring).",
        "",
        f"Settings: target `{TARGET}` (runs on this host); {payload['points']} size budgets from the all-int4 "
        f"to the all-int8 model size, plus the all-fp16 size; TQS weight mode, horizon {HORIZON}, {SEEDS} seeds, "
        "data-free contexts, one report and one set of residual responses per model for every budget; random "
        f"baseline: median of {payload['random_seeds']} random maximal fills (seed {payload['seed']}); measured "
        f"on {payload['windows']} evenly spaced real test windows (fewer where the split has fewer), "
        f"{HORIZON}-step rollouts, all windows in one batch.",
        "",
        "Error = relative rollout error ||y_q - y_fp32|| / ||y_fp32|| of the quantized compile against the "
        "model's fp32 compile (what the error models predict). `dMSE` = increase of the rollout MSE against "
        "the truth. Marks: W = the TQS variant has the lower error, = tie (same plan or same error), L = higher. "
        "The all-int4 budget mostly admits only the all-int4 plan; dominance counts leave it out.",
        "",
        "Methods: `TQS` = compile()'s plan today (Gaussian-probe gains, independent groups); `TQS cross` = "
        "the cross-group model (residual-probe responses with their interactions, pairwise-corrected "
        "knapsack); `TQS residual` = the residual probe without interactions; baselines as in the docstring.",
        "",
    ]
    for variant in VARIANTS:
        lines += [f"## Summary: {variant}", ""] + _summary(results, variant, "rel_error") + [""]
    lines += ["## Calibration: measured / predicted on every distinct measured plan", ""]
    lines += ["| model | independent TQS model: min / median / max | cross-group model: min / median / max |"]
    lines += ["|---|---|---|"]
    for res in results:
        cells = []
        for method in ("predicted", "predicted_cross"):
            r = calibration(res, method)
            cells.append(f"{min(r):.2f} / {np.median(r):.2f} / {max(r):.2f} ({len(r)} plans)" if r else "-")
        lines.append(f"| {res['model']} | {cells[0]} | {cells[1]} |")
    for variant in VARIANTS:
        lines += [
            "",
            f"## Where {variant} loses",
            "",
            "Every (budget, baseline) with a higher measured error, with both plans' predictions "
            "(independent model / cross-group model; random: medians over the seeds).",
            "",
            "| model | budget (bytes) | baseline | measured | predicted, independent | predicted, cross |",
            "|---|---|---|---|---|---|",
        ]
        for res in results:
            for row in res["budgets"]:
                for base in BASELINES:
                    if row["vs"][variant][base]["rel_error"] != "loss":
                        continue
                    t, o = row["methods"][variant], row["methods"][base]
                    lines.append(
                        f"| {res['model']} | {row['budget_bytes']:.0f} | {base} | {t['rel_error']:.3g} / "
                        f"{o['rel_error']:.3g} | {t['predicted']:.3g} / {o['predicted']:.3g} | "
                        f"{t['predicted_cross']:.3g} / {o['predicted_cross']:.3g} |"
                    )
    lines += ["", "## Per model", ""]
    for res in results:
        lines += _per_model(res)
    return "\n".join(lines)


def _per_model(res: dict) -> list[str]:
    rr = res["residual_responses"]
    t = res["timings_s"]
    lines = [
        f"### {res['model']}",
        "",
        f"{res['groups']} weight groups ({res['quantizable_sites']} quantizable sites); fp32 "
        f"{res['fp32_size_bytes']:.0f} B, all-int4 {res['int4_size_bytes']:.0f} B, all-int8 "
        f"{res['int8_size_bytes']:.0f} B, all-fp16 {res['fp16_size_bytes']:.0f} B; "
        f"{res['test_windows']} test windows; fp32 rollout MSE {res['fp32_rollout_mse']:.4f}; "
        f"{res['compiles']} compiles; {res['total_s']:.0f} s (TQS {t['tqs_s']:.0f} s, residual responses "
        f"{t['residual_responses_s']:.0f} s for {rr['probes']} probes x {rr['replicates']} contexts in "
        f"{rr['executions']} executions, SQNR {t['sqnr_s']:.0f} s).",
        "",
        "| budget (bytes, % of int4..int8) | "
        + " | ".join(METHODS)
        + " | marks TQS / TQS cross vs "
        + " / ".join(BASELINES)
        + " |",
        "|---|" + "---|" * len(METHODS) + "---|",
    ]
    for row in res["budgets"]:
        m = row["methods"]
        cells = []
        for k in METHODS:
            if k == "random":
                r = m["random"]
                cells.append(f"{r['rel_error']:.3g} [{r['rel_error_min']:.3g}, {r['rel_error_max']:.3g}]")
            elif k == "uniform":
                cells.append(f"{_fmt(m[k], 'rel_error')} ({row['uniform_precision']})")
            else:
                cells.append(_fmt(m[k], "rel_error"))
        marks = " / ".join("".join(MARK[row["vs"][v][b]["rel_error"]] for b in BASELINES) for v in VARIANTS)
        where = "fp16 size" if row.get("at") == "fp16" else f"{100 * row['budget_fraction']:.0f} %"
        lines.append(f"| {row['budget_bytes']:.0f} ({where}) | " + " | ".join(cells) + f" | {marks} |")
    lines += ["", "Plans (weight group: precision):", ""]
    for row in res["budgets"]:
        for method in ("TQS", "TQS cross", "TQS residual", "SQNR"):
            point = row["methods"][method]
            if point is not None:
                plan = " ".join(f"{k}:{v}" for k, v in point["plan"].items())
                lines.append(
                    f"- {row['budget_bytes']:.0f} B, {method}: {plan} ({point['size_bytes']:.0f} B, "
                    f"predicted {point['predicted']:.3g} / cross {point['predicted_cross']:.3g})"
                )
    lines.append("")
    return lines


def plot(res: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {
        "TQS": ("C0", "o", "-"),
        "TQS cross": ("C4", "P", "-"),
        "SQNR": ("C5", "v", "--"),
        "1-step": ("C1", "s", "--"),
        "weight error": ("C2", "^", "--"),
        "random": ("C7", "x", ":"),
        "uniform": ("C3", "D", "-."),
    }
    for method in (*BASELINES, "TQS", "TQS cross"):
        pts = [row["methods"][method] for row in res["budgets"] if row["methods"][method] is not None]
        if method == "uniform":  # the two uniform plans, not a staircase of repeats
            pts = [p for p in res["uniform_points"].values() if p is not None]
        xs = [p["size_bytes"] / 1024 for p in pts]
        ys = [max(p["rel_error"], 1e-12) for p in pts]
        color, marker, line = styles[method]
        label = "random (median)" if method == "random" else method
        if method == "uniform":  # points: the line between two uniform plans is no plan
            label, line = "uniform (int4, int8)", "none"
        # TQS last and on top: where methods agree their markers coincide.
        ax.plot(
            xs,
            ys,
            color=color,
            marker=marker,
            linestyle=line,
            label=label,
            zorder=4 if method.startswith("TQS") else 3,
            markersize=7 if method.startswith("TQS") else 5,
        )
        if method == "random":
            lo = [row["methods"]["random"]["rel_error_min"] for row in res["budgets"]]
            hi = [row["methods"]["random"]["rel_error_max"] for row in res["budgets"]]
            ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
    for row in res["budgets"]:
        ax.axvline(row["budget_bytes"] / 1024, color="0.6", linewidth=0.8, linestyle=":", zorder=1)
    ax.set_yscale("log")
    ax.set_xlabel("model size (KiB; grey lines: budgets)")
    ax.set_ylabel("relative rollout error vs fp32 (96 steps)")
    ax.set_title(f"{res['model']}: size vs measured rollout error")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{res['model']}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="zoo model names (default: all)")
    parser.add_argument("--points", type=int, default=POINTS, help=f"size budgets (default {POINTS})")
    parser.add_argument(
        "--random-seeds", type=int, default=RANDOM_SEEDS, help=f"random plans per budget ({RANDOM_SEEDS})"
    )
    parser.add_argument("--windows", type=int, default=WINDOWS, help=f"test windows (default {WINDOWS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random plans")
    parser.add_argument("--out", default=str(HERE / "results"), help="output folder")
    parser.add_argument("--dry-run", action="store_true", help="solve and count the plans, measure nothing")
    parser.add_argument(
        "--quantizers",
        nargs="+",
        choices=("rtn", "mse", "bitsplit"),
        help="the quantizer column instead: TQS plans per quantizer (first = reference; "
        "benchmarks/budget_sweep_quantizers.py)",
    )
    args = parser.parse_args(argv)
    if args.points < 2:
        parser.error("--points must be at least 2 (the all-int4 and the all-int8 size)")
    command = command_line("budget_sweep.py")
    paths = selected_models(args.models)
    env = machine_env()
    if args.quantizers:
        if len(args.quantizers) < 2:
            parser.error("--quantizers needs at least two quantizers to compare")
        import budget_sweep_quantizers

        return budget_sweep_quantizers.run(args, command, env, paths, args.out)
    start = time.perf_counter()
    results, failures = per_model(
        paths,
        lambda path: evaluate(path, args.points, args.random_seeds, args.windows, args.seed, args.dry_run),
    )
    if args.dry_run:
        print("dry run: " + ", ".join(f"{r['model']} {r['distinct_plans']}" for r in results))
        return 0
    payload = {
        "command": command,
        "environment": env,
        "target": TARGET,
        "horizon": HORIZON,
        "seeds": SEEDS,
        "points": args.points,
        "random_seeds": args.random_seeds,
        "windows": args.windows,
        "seed": args.seed,
        "wall_s": time.perf_counter() - start,
        "results": results,
        "failures": failures,
    }
    for res in results:
        res["dominance"] = {
            v: {"rel_error": dominance(res, v), "mse_increase": dominance(res, v, "mse_increase")}
            for v in VARIANTS
        }
    md = markdown(results, payload) + f"\nWall time: {payload['wall_s'] / 60:.1f} min.\n"
    write_results(args.out, "budget_sweep", payload, md, failures)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib): Pareto plots skipped, tables written")
        return 0 if results else 1
    for res in results:
        print(f"wrote {plot(res, Path(args.out) / 'budget_sweep')}")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
