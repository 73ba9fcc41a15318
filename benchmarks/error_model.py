"""Does the error model predict real rollout error? Predicted vs measured error of random precision plans.

    python benchmarks/error_model.py [--models NAME ...] [--plans K] [--windows N] [--out benchmarks/results]

For every zoo model (benchmarks/zoo/models/*.onnx and tvm_tqs/examples/*.onnx), target "x86" (this host):

1. One weight-mode TQS report, ``tvm_tqs.score(model, horizon=96, seeds=8, mode="weight")``, and the error
   model's table e_g(p)^2 per weight group and precision built from it exactly as ``tvm_tqs.compile`` builds
   it (`plan_eval.Planner`, which calls compile()'s own helpers; docs/error_model.md).
2. K random plans: every weight group at a precision drawn uniformly from the options the target offers it
   (fp32, fp16, int8, int4 on x86; options with an infinite predicted error, i.e. sites TQS could not
   score, are left out as the solver leaves them out). Predicted error of a plan = compile()'s
   ``plan.predicted_error`` = sqrt(sum_g e_g^2).
3. Measured error: the plan compiled with ``compile(model, "x86", plan=..., batch=N)`` and rolled out 96
   steps from N evenly spaced real TEST windows (the zoo's split and normalisation), against the model's
   own fp32 compile on the same windows: ||y_q - y_fp32|| / ||y_fp32|| over the whole rollout (windows x
   steps x target channels). Also the increase of the rollout MSE against the truth.
4. Per model: Spearman rank correlation of predicted vs measured relative error over the distinct plans
   (identical draws are measured once and counted once), the calibration ratio measured / predicted
   (median and range over the plans), and the Spearman against the MSE increase. Summary: medians over
   the models.
5. The same for the cross-group model (``compile(error_model="cross")``, `tvm_tqs.planning.CrossGroupModel`:
   the rollout's responses to each group's actual quantization residual, interactions included, on the
   same 8 data-free contexts, plus the activation term), with the time its responses took.

Writes benchmarks/results/error_model.json and .md (with this command line and the settings).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from common import card_of, command_line, machine_env, per_model, selected_models, write_results
from plan_eval import HORIZON, SEEDS, TARGET, Evaluator, gains_of, scored_planner
from tqs_validity import spearman, test_windows

HERE = Path(__file__).resolve().parent
# Cost: every measured plan is one full compile + build of the model (about 1 s for the MLP, 15-20 s for
# the unrolled GRU/LSTM on 2 cores); the windows run as one batch, so their number costs little.
PLANS, WINDOWS = 12, 256


def evaluate(path: Path, plans: int, windows: int, seed: int) -> dict:
    card = card_of(path)
    report, planner, timings = scored_planner(path)
    t0 = time.perf_counter()
    table = planner.errors2(gains_of(report))
    timings["error_table_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cross = planner.cross_model(gains_of(report))
    timings["residual_responses_s"] = time.perf_counter() - t0
    x, y = test_windows(card, HORIZON, windows)
    t0 = time.perf_counter()
    ev = Evaluator(path, x, y, planner.rollout.target_channels)
    timings["fp32_reference_s"] = time.perf_counter() - t0

    allowed = planner.allowed(table)
    rng = np.random.default_rng([seed, sum(path.stem.encode())])
    rows, seen = [], set()
    for _ in range(plans):
        plan = planner.random_plan(rng, allowed)
        key = tuple(sorted(plan.items()))
        if key in seen:
            continue  # the same draw again: measured once, counted once
        seen.add(key)
        measured = ev.measure(planner.site_plan(plan))
        predicted = planner.predicted(table, plan)
        predicted_cross = planner.predicted_cross(cross, plan)
        rows.append(
            {
                "plan": plan,
                "size_bytes": planner.size(plan),
                "predicted": predicted,
                "measured": measured["rel_error"],
                "mse_increase": measured["mse_increase"],
                "ratio": measured["rel_error"] / predicted if predicted > 0 else None,
                "predicted_cross": predicted_cross,
                "ratio_cross": measured["rel_error"] / predicted_cross if predicted_cross > 0 else None,
            }
        )
        print(
            f"   {_counts(plan)}: predicted {predicted:.4g} (cross {predicted_cross:.4g}), measured "
            f"{measured['rel_error']:.4g}",
            flush=True,
        )
    timings["plans_s"] = ev.seconds
    pred = [r["predicted"] for r in rows]
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    cross_ratios = [r["ratio_cross"] for r in rows if r["ratio_cross"] is not None]
    return {
        "model": path.stem,
        "dataset": card["data"]["dataset"],
        "groups": len(planner.groups),
        "quantizable_sites": sum(len(g.sites) for g in planner.groups),
        "test_windows": int(len(x)),
        "plans_drawn": plans,
        "plans_distinct": len(rows),
        "fp32_rollout_mse": ev.ref_mse,
        "spearman": spearman(pred, [r["measured"] for r in rows]),
        "spearman_mse_increase": spearman(pred, [r["mse_increase"] for r in rows]),
        "log_pearson": _log_pearson(pred, [r["measured"] for r in rows]),
        "ratio_median": float(np.median(ratios)) if ratios else None,
        "ratio_min": float(np.min(ratios)) if ratios else None,
        "ratio_max": float(np.max(ratios)) if ratios else None,
        "cross": {
            "spearman": spearman([r["predicted_cross"] for r in rows], [r["measured"] for r in rows]),
            "ratio_median": float(np.median(cross_ratios)) if cross_ratios else None,
            "ratio_min": float(np.min(cross_ratios)) if cross_ratios else None,
            "ratio_max": float(np.max(cross_ratios)) if cross_ratios else None,
            "probes": len(cross.responses.keys),
            "executions": cross.responses.executions,
        },
        "timings_s": timings,
        "plans": rows,
    }


def _log_pearson(a, b) -> float | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = (a > 0) & (b > 0)
    if ok.sum() < 3:
        return None
    return float(np.corrcoef(np.log(a[ok]), np.log(b[ok]))[0, 1])


def _counts(plan: dict) -> str:
    counts: dict[str, int] = {}
    for p in plan.values():
        counts[p] = counts.get(p, 0) + 1
    return " ".join(f"{counts[p]}x{p}" for p in ("fp32", "fp16", "int8", "int4") if p in counts)


def _fmt(v, spec: str = "+.2f") -> str:
    return "-" if v is None else format(v, spec)


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def markdown(results: list[dict], payload: dict) -> str:
    env = payload["environment"]
    lines = [
        "# Error model: predicted vs measured rollout error of random precision plans",
        "",
        f"Command: `{payload['command']}`",
        "",
        f"Machine: {env['machine']}; {env['load']}. Produced by benchmarks/error_model.py (method in its "
        "docstring; the error model in docs/error_model.md).",
        "",
        f"Settings: target `{TARGET}` (runs on this host); {payload['plans']} random plans per model "
        f"(seed {payload['seed']}; each weight group at a precision drawn uniformly from fp32/fp16/int8/int4); "
        f"TQS weight mode, horizon {HORIZON}, {SEEDS} seeds, data-free contexts; measured on "
        f"{payload['windows']} evenly spaced real test windows (fewer where the split has fewer), "
        f"{HORIZON}-step rollouts, all windows in one batch.",
        "",
        "- predicted: compile()'s `plan.predicted_error` = sqrt(sum over weight groups of e_g^2);",
        "- measured: ||y_q - y_fp32|| / ||y_fp32|| over the rollout, y_q the quantized compile and y_fp32 the "
        "same model's fp32 compile on the same windows;",
        "- Spearman over the distinct plans; `log Pearson`: Pearson correlation of log predicted vs log "
        "measured; ratio: measured / predicted (calibration; 1 = exact).",
        "",
        "| model | groups (sites) | windows | plans | Spearman | log Pearson | ratio median | ratio min..max "
        "| Spearman vs MSE increase | time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['groups']} ({r['quantizable_sites']}) | {r['test_windows']} | "
            f"{r['plans_distinct']} | {_fmt(r['spearman'])} | {_fmt(r['log_pearson'])} | "
            f"{_fmt(r['ratio_median'], '.2f')} | {_fmt(r['ratio_min'], '.2f')}..{_fmt(r['ratio_max'], '.2f')} | "
            f"{_fmt(r['spearman_mse_increase'])} | {r['total_s']:.0f} s |"
        )
    lines.append(
        f"| **median** | | | | {_fmt(_median(r['spearman'] for r in results))} | "
        f"{_fmt(_median(r['log_pearson'] for r in results))} | "
        f"{_fmt(_median(r['ratio_median'] for r in results), '.2f')} | | "
        f"{_fmt(_median(r['spearman_mse_increase'] for r in results))} | |"
    )
    lines += _cross_table(results)
    lines += ["", "## Plans", ""]
    for r in results:
        lines += [
            f"### {r['model']}",
            "",
            "| plan (groups) | size (bytes) | predicted | measured | ratio | predicted, cross | ratio, cross |",
        ]
        lines.append("|---|---|---|---|---|---|---|")
        for row in sorted(r["plans"], key=lambda row: row["predicted"]):
            lines.append(
                f"| {_counts(row['plan'])} | {row['size_bytes']:.0f} | {row['predicted']:.3g} | "
                f"{row['measured']:.3g} | {_fmt(row['ratio'], '.2f')} | {row['predicted_cross']:.3g} | "
                f"{_fmt(row['ratio_cross'], '.2f')} |"
            )
        lines.append("")
    return "\n".join(lines)


def _cross_table(results: list[dict]) -> list[str]:
    lines = [
        "",
        '## Cross-group model (`compile(error_model="cross")`)',
        "",
        "Same plans, predicted by the residual responses with their interactions (docs/error_model.md); "
        "`within` = plans whose ratio lies in [0.7, 1.4].",
        "",
        "| model | Spearman | ratio median | ratio min..max | within [0.7, 1.4] | probes | responses time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r["cross"]
        ratios = [row["ratio_cross"] for row in r["plans"] if row["ratio_cross"] is not None]
        within = sum(0.7 <= x <= 1.4 for x in ratios)
        lines.append(
            f"| {r['model']} | {_fmt(c['spearman'])} | {_fmt(c['ratio_median'], '.2f')} | "
            f"{_fmt(c['ratio_min'], '.2f')}..{_fmt(c['ratio_max'], '.2f')} | {within}/{len(ratios)} | "
            f"{c['probes']} | {r['timings_s']['residual_responses_s']:.0f} s |"
        )
    lines.append(
        f"| **median** | {_fmt(_median(r['cross']['spearman'] for r in results))} | "
        f"{_fmt(_median(r['cross']['ratio_median'] for r in results), '.2f')} | | | | |"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="zoo model names (default: all)")
    parser.add_argument("--plans", type=int, default=PLANS, help=f"random plans per model (default {PLANS})")
    parser.add_argument("--windows", type=int, default=WINDOWS, help=f"test windows (default {WINDOWS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random plans")
    parser.add_argument("--out", default=str(HERE / "results"), help="output folder")
    args = parser.parse_args(argv)
    command = command_line("error_model.py")
    paths = selected_models(args.models)
    env = machine_env()
    start = time.perf_counter()
    results, failures = per_model(
        paths,
        lambda path: evaluate(path, args.plans, args.windows, args.seed),
        lambda res: print(
            f"   Spearman {_fmt(res['spearman'])}, ratio median {_fmt(res['ratio_median'], '.2f')} "
            f"({res['total_s']:.0f} s)",
            flush=True,
        ),
    )
    payload = {
        "command": command,
        "environment": env,
        "target": TARGET,
        "horizon": HORIZON,
        "seeds": SEEDS,
        "plans": args.plans,
        "windows": args.windows,
        "seed": args.seed,
        "wall_s": time.perf_counter() - start,
        "median_spearman": _median(r["spearman"] for r in results),
        "median_ratio": _median(r["ratio_median"] for r in results),
        "results": results,
        "failures": failures,
    }
    md = markdown(results, payload) + f"\nWall time: {payload['wall_s'] / 60:.1f} min.\n"
    write_results(args.out, "error_model", payload, md, failures)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
