"""Do TQS plans beat the baselines at every size budget? Measured rollout error of plans from each method.

    python benchmarks/budget_sweep.py [--models NAME ...] [--points P] [--random-seeds R] [--windows N]
                                      [--out benchmarks/results] [--dry-run]

For every zoo model (benchmarks/zoo/models/*.onnx and tvm_tqs/examples/*.onnx), target "x86" (this host),
P size budgets evenly spaced from the all-int4 model size to the all-int8 model size (whole-model bytes,
`plan.totals["size_bytes"]`: quantized weights with their scales plus the float constants), and at each
budget the plan of every method:

- ``TQS``: compile()'s plan: the knapsack minimising the error model's sum of e_g^2 built from one
  weight-mode TQS report (horizon 96, 8 seeds, data-free contexts), reused across budgets;
- ``1-step``: the SAME solver and error model with the single-step gains (each site's gain over the first
  model call only, ``SiteScore.gain_first_call``, read from the same report);
- ``weight error``: the SAME solver minimising the sum over weight groups of r_w(g, p)^2, the relative
  weight-quantization error (no sensitivity, no activation term; every distinct weight counted once);
- ``random``: R random plans that meet the budget (random maximal fill, `plan_eval.Planner.random_fill`:
  every group starts at its smallest option and random upgrades that still fit are taken until none
  fits); the median over the R seeds is reported;
- ``uniform``: the largest uniform precision that fits the budget (all-int4 below the all-int8 size,
  all-int8 at it; all-fp16 is 2x the int8 size and never fits the range, so it is not measured).

Plans are solved with compile()'s own helpers (`plan_eval.Planner`; identical to
``compile(model, "x86", Budget(size_bytes=B), tqs_report=report)``), then each distinct plan is compiled
once with ``compile(plan=..., batch=N)`` and rolled out 96 steps from N real test windows. Measures: the
relative rollout error ||y_q - y_fp32|| / ||y_fp32|| against the model's own fp32 compile (the quantity
the error model predicts; used for dominance), and the increase of the rollout MSE against the truth.

TQS dominates a baseline at a budget when its measured relative error is lower (ties: same plan, or
equal error). The first budget (all-int4 size) mostly admits only the all-int4 plan, so methods tie there;
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

from tvm_tqs.solver import InfeasibleBudgetError

HERE = Path(__file__).resolve().parent
# Cost: every distinct plan is one full compile + build (about 1 s for the MLP, 15-20 s for the unrolled
# GRU/LSTM on 2 cores); identical plans (methods agreeing, the shared all-int4 point) are measured once.
POINTS, RANDOM_SEEDS, WINDOWS = 4, 3, 256
SOLVED = ("TQS", "1-step", "weight error")
BASELINES = ("1-step", "weight error", "random", "uniform")
METHODS = ("TQS", *BASELINES)
TIE = 1e-9


def plans_for(planner: Planner, tables: dict, budgets: list[float], seeds: int, seed: int) -> list[dict]:
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
        rng = np.random.default_rng([seed, i])
        entry["random"] = [planner.random_fill(rng, budget, allowed) for _ in range(seeds)]
        fits = [p for p in ("fp16", "int8", "int4") if sizes[p] <= budget * (1 + TIE)]
        entry["uniform"] = planner.uniform(fits[0]) if fits else None
        entry["uniform_precision"] = fits[0] if fits else None
        out.append(entry)
    return out


def _key(plan: dict) -> tuple:
    return tuple(sorted(plan.items()))


def _point(planner, ev, table, plan) -> dict | None:
    if plan is None:
        return None
    m = ev.measure(planner.site_plan(plan))
    return {
        "plan": plan,
        "size_bytes": planner.size(plan),
        "predicted": planner.predicted(table, plan),
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
    lo, hi = planner.size(planner.uniform("int4")), planner.size(planner.uniform("int8"))
    fp32_size = planner.size(planner.uniform("fp32"))
    budgets = [float(b) for b in np.linspace(lo, hi, points)]
    plans = plans_for(planner, tables, budgets, seeds, seed)
    distinct = set()
    for entry in plans:
        for method in (*SOLVED, "uniform"):
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
        "fp16_size_bytes": planner.size(planner.uniform("fp16")),
        "distinct_plans": len(distinct),
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
            "budget_pct_fp32": 100.0 * budget / fp32_size,
            "uniform_precision": entry["uniform_precision"],
            "methods": {},
        }
        for method in (*SOLVED, "uniform"):
            row["methods"][method] = _point(planner, ev, table, entry[method])
        randoms = [_point(planner, ev, table, p) for p in entry["random"]]
        row["random_seeds"] = randoms
        row["methods"]["random"] = {
            "size_bytes": float(np.median([r["size_bytes"] for r in randoms])),
            "predicted": float(np.median([r["predicted"] for r in randoms])),
            "rel_error": float(np.median([r["rel_error"] for r in randoms])),
            "mse_increase": float(np.median([r["mse_increase"] for r in randoms])),
            "rel_error_min": float(np.min([r["rel_error"] for r in randoms])),
            "rel_error_max": float(np.max([r["rel_error"] for r in randoms])),
        }
        tqs = row["methods"]["TQS"]
        row["tqs_vs"] = {}
        for base in BASELINES:
            other = row["methods"][base]
            others = randoms if base == "random" else [other]
            same = tqs is not None and all(o is not None and o["plan"] == tqs["plan"] for o in others)
            row["tqs_vs"][base] = {
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
        uniform_points={p: _point(planner, ev, table, planner.uniform(p)) for p in ("int4", "int8")},
    )
    return result


def _fmt(point: dict | None, key: str, spec: str = ".3g") -> str:
    return "-" if point is None or point.get(key) is None else format(point[key], spec)


MARK = {"win": "W", "tie": "=", "loss": "L", None: "-"}


def dominance(res: dict, key: str = "rel_error") -> dict:
    """Per baseline: wins/ties/losses of TQS over the budgets above the all-int4 point."""
    out = {}
    for base in BASELINES:
        marks = [row["tqs_vs"][base][key] for row in res["budgets"][1:]]
        out[base] = {m: marks.count(m) for m in ("win", "tie", "loss")}
    marks = [
        all(row["tqs_vs"][b][key] in ("win", "tie", None) for b in BASELINES) for row in res["budgets"][1:]
    ]
    out["all"] = {"dominates": sum(marks), "budgets": len(marks)}
    return out


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
        f"to the all-int8 model size; TQS weight mode, horizon {HORIZON}, {SEEDS} seeds, data-free contexts, one "
        f"report per model for every budget; random baseline: median of {payload['random_seeds']} random "
        f"maximal fills (seed {payload['seed']}); measured on {payload['windows']} evenly spaced real test "
        f"windows (fewer where the split has fewer), {HORIZON}-step rollouts, all windows in one batch.",
        "",
        "Error = relative rollout error ||y_q - y_fp32|| / ||y_fp32|| of the quantized compile against the "
        "model's fp32 compile (what the error model predicts). `dMSE` = increase of the rollout MSE against "
        "the truth (model units; negative = the quantized model happened to be closer to the truth). "
        "Marks: TQS vs that baseline at that budget: W = TQS lower error, = tie (same plan or same error), "
        "L = TQS higher error. Budget 0 % (all-int4 size) mostly admits only the all-int4 plan (all tie); "
        "a weight with very few input channels is smaller in fp16 than in int4 with its scales, so plans "
        "can differ there.",
        "",
        "## Summary: does TQS dominate?",
        "",
        "Budgets above the all-int4 point where TQS has the lowest measured relative error of all methods "
        "(ties count as dominance), and TQS's wins/ties/losses against each baseline.",
        "",
        "| model | groups (sites) | TQS best at | vs 1-step | vs weight error | vs random (median) | vs uniform |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in results:
        d = dominance(res)
        wtl = {b: f"{d[b]['win']}/{d[b]['tie']}/{d[b]['loss']}" for b in BASELINES}
        lines.append(
            f"| {res['model']} | {res['groups']} ({res['quantizable_sites']}) | "
            f"{d['all']['dominates']}/{d['all']['budgets']} | {wtl['1-step']} | {wtl['weight error']} | "
            f"{wtl['random']} | {wtl['uniform']} |"
        )
    total = sum(dominance(r)["all"]["dominates"] for r in results)
    count = sum(dominance(r)["all"]["budgets"] for r in results)
    models_all = sum(1 for r in results if dominance(r)["all"]["dominates"] == dominance(r)["all"]["budgets"])
    lines += [
        "",
        f"TQS has the lowest measured error at {total}/{count} (model, budget) pairs; at every budget on "
        f"{models_all}/{len(results)} models. Columns vs X: wins/ties/losses of TQS.",
        "",
        "Same on the MSE increase against the truth (a noisier target: quantization noise can move a "
        "forecast towards or away from the truth):",
        "",
        "| model | TQS best at | vs 1-step | vs weight error | vs random (median) | vs uniform |",
        "|---|---|---|---|---|---|",
    ]
    for res in results:
        d = dominance(res, "mse_increase")
        wtl = {b: f"{d[b]['win']}/{d[b]['tie']}/{d[b]['loss']}" for b in BASELINES}
        lines.append(
            f"| {res['model']} | {d['all']['dominates']}/{d['all']['budgets']} | {wtl['1-step']} | "
            f"{wtl['weight error']} | {wtl['random']} | {wtl['uniform']} |"
        )
    lines += [
        "",
        "## Where TQS loses",
        "",
        "Every (budget, baseline) with a higher measured relative error for TQS, the all-int4 point included, with both plans' predicted "
        "errors (the error model's; for random, the median over the seeds): a loss the error model predicted "
        "the other way is a mis-ranking of the error model, not of the solver.",
        "",
        "| model | budget (bytes) | baseline | measured TQS / baseline | predicted TQS / baseline |",
        "|---|---|---|---|---|",
    ]
    for res in results:
        for row in res["budgets"]:
            for base in BASELINES:
                if row["tqs_vs"][base]["rel_error"] != "loss":
                    continue
                t, o = row["methods"]["TQS"], row["methods"][base]
                lines.append(
                    f"| {res['model']} | {row['budget_bytes']:.0f} | {base} | {t['rel_error']:.3g} / "
                    f"{o['rel_error']:.3g} | {t['predicted']:.3g} / {o['predicted']:.3g} |"
                )
    lines += ["", "## Per model", ""]
    for res in results:
        lines += [
            f"### {res['model']}",
            "",
            f"{res['groups']} weight groups ({res['quantizable_sites']} quantizable sites); fp32 "
            f"{res['fp32_size_bytes']:.0f} B, all-int4 {res['int4_size_bytes']:.0f} B, all-int8 "
            f"{res['int8_size_bytes']:.0f} B, all-fp16 {res['fp16_size_bytes']:.0f} B (out of range); "
            f"{res['test_windows']} test windows; fp32 rollout MSE {res['fp32_rollout_mse']:.4f}; "
            f"{res['compiles']} compiles; {res['total_s']:.0f} s.",
            "",
            "| budget (bytes, % of int4..int8) | TQS | 1-step | weight error | random median [min, max] | "
            "uniform | TQS vs 1-step / weight / random / uniform | dMSE: TQS, 1-step, weight, random, uniform |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in res["budgets"]:
            m = row["methods"]
            rnd = m["random"]
            marks = " ".join(MARK[row["tqs_vs"][b]["rel_error"]] for b in BASELINES)
            dmse = ", ".join(_fmt(m[k], "mse_increase", "+.2g") for k in METHODS)
            lines.append(
                f"| {row['budget_bytes']:.0f} ({100 * row['budget_fraction']:.0f} %) | "
                f"{_fmt(m['TQS'], 'rel_error')} | {_fmt(m['1-step'], 'rel_error')} | "
                f"{_fmt(m['weight error'], 'rel_error')} | {rnd['rel_error']:.3g} "
                f"[{rnd['rel_error_min']:.3g}, {rnd['rel_error_max']:.3g}] | "
                f"{_fmt(m['uniform'], 'rel_error')} ({row['uniform_precision']}) | {marks} | {dmse} |"
            )
        lines += ["", "Plans (weight group: precision):", ""]
        for row in res["budgets"]:
            for method in SOLVED:
                point = row["methods"][method]
                if point is not None:
                    plan = " ".join(f"{k}:{v}" for k, v in point["plan"].items())
                    lines.append(
                        f"- {row['budget_bytes']:.0f} B, {method}: {plan} ({point['size_bytes']:.0f} B, "
                        f"predicted {point['predicted']:.3g})"
                    )
        lines.append("")
    return "\n".join(lines)


def plot(res: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {
        "TQS": ("C0", "o", "-"),
        "1-step": ("C1", "s", "--"),
        "weight error": ("C2", "^", "--"),
        "random": ("C7", "x", ":"),
        "uniform": ("C3", "D", "-."),
    }
    for method in (*BASELINES, "TQS"):
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
            zorder=4 if method == "TQS" else 3,
            markersize=7 if method == "TQS" else 5,
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
    args = parser.parse_args(argv)
    if args.points < 2:
        parser.error("--points must be at least 2 (the all-int4 and the all-int8 size)")
    command = command_line("budget_sweep.py")
    paths = selected_models(args.models)
    env = machine_env()
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
        res["dominance"] = {"rel_error": dominance(res), "mse_increase": dominance(res, "mse_increase")}
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
