"""Worst-case group error under distribution shift: data-free TQS plans vs calibration-based PTQ.

    python benchmarks/reliability.py [--models NAME ...] [--windows N] [--budget size=25%] [--out benchmarks/results]

For every zoo model, real TEST windows (the model's own split and z-scoring) grouped by month, season,
volatility tercile, target channel, and 5 input corruptions at 3 severities (`tvm_tqs.reliability`), and these
variants, all at the same size budget, built for this host:

- ``fp32``: the model's own fp32 compile (the reference of every gap);
- ``TQS``: compile()'s default data-free plan (TQS gains, cross-group error model, round-to-nearest);
- ``TQS+bitsplit``: the same planner with Bit-Split weights reconstructed on data-free activations;
- ``cal:calm`` / ``cal:month``: Bit-Split weights reconstructed on REAL calibration windows drawn from ONE
  group of the TRAIN split (the calmest volatility tercile; the first month), as a calibration-based PTQ
  would be, then evaluated on every test group (calibration shift).

One weight-mode TQS report per model serves every variant (``tqs_report=``), so plans differ only where the
quantizer's own weight error changes them. Reports per model the per-group 96-step rollout MSE, each
variant's worst group and its gap to fp32 there, and whether the data-free TQS plan's worst-group MSE is no
worse than each calibrated variant's. Writes benchmarks/results/reliability.{json,md} and one PNG per model
in benchmarks/results/reliability/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS, card_of, command_line, machine_env, per_model, selected_models, write_results

import tvm_tqs
from tvm_tqs.planning import PlanningProblem
from tvm_tqs.reliability import ReliabilityTable, Series, evaluate, standardize, volatility, windows
from tvm_tqs.solver import Budget

HORIZON = 96
BATCH = 32  # rows per compiled call: the test windows run in chunks of it
WINDOWS = 256
CALIBRATION = 64
SPLITS = {"ETTh1": (8640, 11520, 14400)}  # the zoo's protocol (benchmarks/zoo/data.py)
CALIBRATED = ("cal:calm", "cal:month")
DATA_FREE = ("TQS", "TQS+bitsplit")


def series_of(card: dict) -> tuple[Series, tuple[int, int, int]]:
    """The raw series of a zoo model's dataset with its timestamps, and the split's row borders."""
    sys.path.insert(0, str(Path(__file__).parent / "zoo"))
    import data as zdata
    import pandas as pd

    dataset = card["data"]["dataset"]
    if dataset == "ETTh1":
        df = pd.read_csv(zdata.data_dir() / "ETTh1.csv")
        times, borders = df["date"].to_numpy(dtype="datetime64[s]"), SPLITS["ETTh1"]
    else:
        from tsdata.fpp3 import raw as fpp3_raw

        df = fpp3_raw["vic_elec"]
        times = pd.to_datetime(df["Time"], utc=True).dt.tz_convert(None).to_numpy(dtype="datetime64[s]")
        n = len(df)
        borders = (int(n * 0.7), n - int(n * 0.2), n)
    channels = card["channels"]
    return Series(df[channels].to_numpy(np.float64), tuple(channels), times), borders


def calibration_sets(train: np.ndarray, times: np.ndarray, lookback: int) -> dict[str, np.ndarray]:
    """CALIBRATION real train windows from one group each: the calmest volatility tercile; the first month."""
    starts = np.arange(lookback, len(train))
    x = train[starts[:, None] + np.arange(-lookback, 0)[None, :]]
    vol = volatility(x)
    calm = np.flatnonzero(vol <= np.quantile(vol, 1 / 3))
    months = times[starts].astype("datetime64[M]")
    first = np.flatnonzero(months == months[0])
    pick = {"cal:calm": calm, "cal:month": first}
    return {k: x[v[np.linspace(0, len(v) - 1, CALIBRATION).round().astype(int)]] for k, v in pick.items()}


def run_model(path: Path, n_windows: int, budget: str, png_dir: Path) -> dict:
    card = card_of(path)
    spec = tvm_tqs.RolloutSpec.from_dict(card["rollout_spec"])
    series, (train_end, val_end, test_end) = series_of(card)
    values = standardize(series, train_end)[0]
    test = windows(values, series.times, val_end, test_end, spec.lookback, HORIZON, n_windows)
    cal = calibration_sets(values[:train_end], series.times[:train_end], spec.lookback)
    if budget is None:  # halfway between the all-int4 and the all-int8 size: feasible, and a real choice
        problem = PlanningProblem.from_model(str(path), "x86", batch=BATCH)  # folded states scale with it
        sizes = [problem.totals(problem.uniform(p))["size_bytes"] for p in ("int4", "int8")]
        budget = Budget(size_bytes=sum(sizes) / 2)
    t0 = time.perf_counter()
    report = tvm_tqs.score(str(path), horizon=HORIZON, seeds=8, mode="weight")
    timings = {"tqs_s": time.perf_counter() - t0}
    jobs = {
        "fp32": {"uniform": "fp32"},
        "TQS": {"budget": budget},
        "TQS+bitsplit": {"budget": budget, "quantizer": "bitsplit"},
        **{
            name: {"budget": budget, "quantizer": "bitsplit", "calibration": cal[name]} for name in CALIBRATED
        },
    }
    variants, plans = {}, {}
    for name, job in jobs.items():
        t = time.perf_counter()
        compiled = tvm_tqs.compile(str(path), target="x86", batch=BATCH, tqs_report=report, **job)
        timings[f"compile {name}_s"] = time.perf_counter() - t
        plans[name] = {str(s.site): s.precision for s in compiled.plan.sites if len(s.options) > 1}
        variants[name] = (lambda c: lambda x: c.rollout(x, HORIZON))(compiled)
    t = time.perf_counter()
    table = evaluate(
        variants,
        test,
        spec.target_channels,
        HORIZON,
        channel_names=list(series.channels),
        description=f"{path.stem}: {len(test.x)} test windows, {HORIZON}-step rollouts, {_budget_text(budget)}",
    )
    timings["evaluate_s"] = time.perf_counter() - t
    png_dir.mkdir(parents=True, exist_ok=True)
    table.write_png(png_dir / f"{path.stem}.png")
    summary = table.summary()
    return {
        "model": path.stem,
        "windows": int(len(test.x)),
        "budget": _budget_text(budget),
        "table": table.to_dict(),
        "plans": plans,
        "no_worse_than": {
            f"{free} vs {c}": summary[free]["worst_mse"] <= summary[c]["worst_mse"]
            for free in DATA_FREE
            for c in CALIBRATED
        },
        "timings": timings,
    }


def _budget_text(budget) -> str:
    return budget if isinstance(budget, str) else f"size={budget.size_bytes / 1024:.1f}KiB"


def markdown(results: list[dict], command: str, env: dict) -> str:
    lines = [
        "# Reliability: worst-case group error under distribution shift",
        "",
        f"`{command}`; {env['machine']}; {env['load']}.",
        "",
        "Per model: 96-step rollout MSE (model units) on real test windows, groups = months, seasons, volatility "
        "terciles, target channels and 5 corruptions x 3 severities. Worst group = the group of largest MSE; gap = "
        "MSE / fp32's MSE - 1 on that group. `cal:*` = Bit-Split reconstructed on 64 real TRAIN windows from one "
        "group (calibration shift). All quantized variants of a model at the same size budget (default: halfway "
        "between its all-int4 and all-int8 sizes).",
        "",
        "| model | variant | mean MSE | worst group | worst MSE | gap to fp32 there | largest gap (group) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for v, s in r["table"]["summary"].items():
            gap = f"{100 * s['gap_at_worst']:+.2f}%" if "gap_at_worst" in s else "-"
            largest = f"{100 * s['max_gap']:+.2f}% ({s['max_gap_group']})" if "max_gap" in s else "-"
            lines.append(
                f"| {r['model']} | {v} | {s['mean_mse']:.4f} | {s['worst_group']} | {s['worst_mse']:.4f} | {gap} | {largest} |"
            )
    lines += ["", "## Data-free TQS plan vs calibration-based PTQ (worst-group MSE, same size budget)", ""]
    for key in results[0]["no_worse_than"] if results else ():
        wins = [r["model"] for r in results if r["no_worse_than"][key]]
        free, cal = key.split(" vs ")
        lines.append(f"- {free} (data-free) no worse than {cal}: {len(wins)}/{len(results)} models")
    pairs = [(free, cal) for free in DATA_FREE for cal in CALIBRATED]
    lines += [
        "",
        "Worst-group MSE of each data-free plan relative to each calibrated one (negative: the data-free plan is "
        "better), then the same for the largest gap to fp32 over all groups (in points of %):",
        "",
        "| model | "
        + " | ".join(f"{f} vs {c}: worst MSE" for f, c in pairs)
        + " | "
        + " | ".join(f"{f} vs {c}: largest gap" for f, c in pairs)
        + " |",
        "|---|" + "---|" * (2 * len(pairs)),
    ]
    for r in results:
        s = r["table"]["summary"]
        worst = [f"{100 * (s[f]['worst_mse'] / s[c]['worst_mse'] - 1):+.2f}%" for f, c in pairs]
        gaps = [f"{100 * (s[f]['max_gap'] - s[c]['max_gap']):+.2f}" for f, c in pairs]
        lines.append(f"| {r['model']} | " + " | ".join(worst + gaps) + " |")
    lines += [
        "",
        "## Budget and time per model (s)",
        "",
        "| model | budget | TQS | compiles | evaluate |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        t = r["timings"]
        compiles = sum(v for k, v in t.items() if k.startswith("compile"))
        lines.append(
            f"| {r['model']} | {r['budget']} | {t['tqs_s']:.1f} | {compiles:.1f} | {t['evaluate_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="zoo model names (default: every zoo model with real data)")
    ap.add_argument("--windows", type=int, default=WINDOWS, help=f"test windows per model ({WINDOWS})")
    ap.add_argument(
        "--budget",
        help="size budget of every quantized variant (default: halfway between all-int4 and all-int8)",
    )
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--merge", action="store_true", help="keep the results of models not run this time")
    ap.add_argument(
        "--render", action="store_true", help="only rewrite the Markdown and PNGs from the JSON in --out"
    )
    args = ap.parse_args(argv)
    if args.render:
        payload = json.loads((Path(args.out) / "reliability.json").read_text())
        for r in payload["results"]:
            ReliabilityTable.from_dict(r["table"]).write_png(
                Path(args.out) / "reliability" / f"{r['model']}.png"
            )
        md = markdown(payload["results"], payload["command"], payload["env"])
        write_results(args.out, "reliability", payload, md)
        return 0
    paths = [p for p in selected_models(args.models) if p.with_suffix(".json").exists()]
    out = Path(args.out)
    env, command = machine_env(), command_line("reliability.py")

    def save(results, failures):
        payload = {
            "command": command,
            "env": env,
            "horizon": HORIZON,
            "budget": args.budget,
            "results": results,
        }
        results = sorted(results, key=lambda r: r["model"])
        payload["results"] = results
        write_results(out, "reliability", payload, markdown(results, command, env), failures)

    done: list[dict] = []
    if args.merge and (out / "reliability.json").exists():  # keep the other models' results
        names = {p.stem for p in paths}
        previous = json.loads((out / "reliability.json").read_text())
        done = [r for r in previous["results"] if r["model"] not in names]
        command = f"{previous['command']}; then {command}"
    _, failures = per_model(
        paths,
        lambda p: run_model(p, args.windows, args.budget, out / "reliability"),
        lambda r: (done.append(r), save(done, {})),
    )
    save(done, failures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
