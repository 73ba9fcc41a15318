"""Weight quantizers on the zoo: rtn vs mse vs Bit-Split (data-free and calibrated) at W4A8 and W8A8.

    python benchmarks/quantizers.py [--models NAME ...] [--windows N] [--calibration N] [--out benchmarks/results]

For every zoo model (benchmarks/zoo/models/*.onnx and tvm_tqs/examples/*.onnx), each weighted site at the
same precision (``compile(uniform=P)``, P = int4 then int8: every weight through the real integer kernels,
activations int8) with each quantizer:

- ``rtn``: round-to-nearest, scale = max|w| / qmax;
- ``mse``: the clipped scale minimising the weight error;
- ``bitsplit``: Bit-Split and stitching with the Gram matrices of the sites' inputs captured data-free
  (64 synthetic contexts through the compiled graph), compile()'s default for ``quantizer="bitsplit"``;
- ``bitsplit-cal``: the same with N real TRAIN windows as calibration (``calibration=``).

Measures, against the model's own fp32 compile on the same windows:
- rollout: ||y_q - y_fp32|| / ||y_fp32|| over 96-step rollouts from real TEST windows (all windows in
  one batch);
- reconstruction, per weight group: sqrt(tr(E H E^T) / tr(W H W^T)), E the weight error and H the Gram
  matrix of the group's inputs on the TEST windows (1% damped); the table gives the median over groups and
  the number of groups where bitsplit's is below rtn's.

Writes benchmarks/results/quantizers.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from common import card_of, command_line, machine_env, per_model, selected_models, write_results
from tqs_validity import test_windows, train_windows

import tvm_tqs
from tvm_tqs.graph import weight_digest
from tvm_tqs.planning import PlanningProblem
from tvm_tqs.planning.activations import bitsplit_quantizer, input_grams
from tvm_tqs.precision import PRECISIONS
from tvm_tqs.quantizers import as_matrix, mse, rtn

HERE = Path(__file__).resolve().parent
TARGET, HORIZON = "x86", 96
WINDOWS, CALIBRATION = 128, 64
VARIANTS = ("rtn", "mse", "bitsplit", "bitsplit-cal")
PRECISIONS_RUN = ("int4", "int8")


def _reconstruction(problem, quantizer, precision: str, grams: dict) -> dict[str, float]:
    p = PRECISIONS[precision]
    out = {}
    for g in problem.groups:
        h = grams.get(weight_digest(np.asarray(g.weight, np.float32)))
        if h is None or precision not in g.options:
            continue
        group = problem.group_size if p.group_size else None
        qw = quantizer(g.weight, p.bits, g.channel_axis, group)
        w = as_matrix(np.asarray(g.weight, np.float64), g.channel_axis)
        e = as_matrix(qw.dequantize().astype(np.float64), g.channel_axis) - w
        out[g.name] = float(np.sqrt(np.trace(e @ h @ e.T) / np.trace(w @ h @ w.T)))
    return out


def evaluate(path: Path, windows: int, calibration: int) -> dict:
    card = card_of(path)
    x, _ = test_windows(card, HORIZON, windows)
    cal = train_windows(card, calibration)
    batch = len(x)
    timings = {}
    t0 = time.perf_counter()
    fp32 = tvm_tqs.compile(str(path), target=TARGET, uniform="fp32", batch=batch)
    ref = fp32.rollout(x, HORIZON).astype(np.float64)
    timings["fp32_s"] = time.perf_counter() - t0
    problem = PlanningProblem.from_model(str(path), TARGET, batch=batch)
    test_grams = input_grams(problem, x)
    quantizers = {
        "rtn": rtn,
        "mse": mse,
        "bitsplit": bitsplit_quantizer(problem),  # what compile(quantizer="bitsplit") uses
        "bitsplit-cal": bitsplit_quantizer(problem, cal),
    }
    rows = {}
    for precision in PRECISIONS_RUN:
        rows[precision] = {}
        for name, quantizer in quantizers.items():
            t0 = time.perf_counter()
            compiled = tvm_tqs.compile(
                str(path), target=TARGET, uniform=precision, batch=batch, quantizer=quantizer
            )
            y = compiled.rollout(x, HORIZON).astype(np.float64)
            rec = _reconstruction(problem, quantizer, precision, test_grams)
            rows[precision][name] = {
                "rel_error": float(np.linalg.norm(y - ref) / np.linalg.norm(ref)),
                "reconstruction": rec,
                "reconstruction_median": float(np.median(list(rec.values()))) if rec else None,
                "seconds": time.perf_counter() - t0,
            }
            print(f"   {precision} {name}: rollout {rows[precision][name]['rel_error']:.4g}", flush=True)
        base = rows[precision]["rtn"]["reconstruction"]
        for name in ("bitsplit", "bitsplit-cal"):
            mine = rows[precision][name]["reconstruction"]
            rows[precision][name]["groups_below_rtn"] = sum(mine[k] < base[k] for k in base)
            rows[precision][name]["groups"] = len(base)
    return {
        "model": path.stem,
        "groups": len(problem.groups),
        "test_windows": batch,
        "calibration_windows": len(cal),
        "results": rows,
        "timings_s": timings,
    }


def _fmt(v, spec=".3g") -> str:
    return "n/a" if v is None else format(v, spec)


def markdown(results: list[dict], payload: dict) -> str:
    lines = [
        "# Weight quantizers: rtn, mse, Bit-Split (data-free / calibrated)",
        "",
        f"Command: `{payload['command']}`. Target x86 (this host), every weighted site at the precision "
        f"(real integer kernels, int8 activations), {HORIZON}-step rollouts from up to {payload['windows']} "
        f"real test windows; bitsplit-cal calibrated on {payload['calibration']} train windows.",
        "",
        "Rollout error ||y_q - y_fp32|| / ||y_fp32||; in brackets the median over weight groups of the "
        "reconstruction error on the test windows' inputs; `below rtn`: groups where bitsplit's "
        "reconstruction error is lower than rtn's.",
        "",
    ]
    for precision in PRECISIONS_RUN:
        lines += [
            f"## {precision}",
            "",
            "| model | "
            + " | ".join(VARIANTS)
            + " | rollout error reduction, bitsplit vs rtn | groups below rtn (data-free / cal) |",
            "|---|" + "---|" * (len(VARIANTS) + 2),
        ]
        gains = []
        for r in results:
            row = r["results"][precision]
            cells = [
                f"{_fmt(row[v]['rel_error'])} ({_fmt(row[v]['reconstruction_median'])})" for v in VARIANTS
            ]
            gain = (
                1 - row["bitsplit"]["rel_error"] / row["rtn"]["rel_error"]
                if row["rtn"]["rel_error"]
                else None
            )
            gains.append(gain)
            below = (
                f"{row['bitsplit']['groups_below_rtn']}/{row['bitsplit']['groups']} / "
                f"{row['bitsplit-cal']['groups_below_rtn']}/{row['bitsplit-cal']['groups']}"
            )
            lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {_fmt(gain, '.1%')} | {below} |")
        valid = [g for g in gains if g is not None]
        lines += [
            "",
            f"Median rollout-error reduction of bitsplit vs rtn: {_fmt(float(np.median(valid)), '.1%')}.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="zoo model names (default: all)")
    parser.add_argument("--windows", type=int, default=WINDOWS, help=f"test windows (default {WINDOWS})")
    parser.add_argument(
        "--calibration", type=int, default=CALIBRATION, help=f"train windows for bitsplit-cal ({CALIBRATION})"
    )
    parser.add_argument("--out", default=str(HERE / "results"), help="output folder")
    args = parser.parse_args(argv)
    command = command_line("quantizers.py")
    env = machine_env()
    start = time.perf_counter()
    results, failures = per_model(
        selected_models(args.models), lambda path: evaluate(path, args.windows, args.calibration)
    )
    payload = {
        "command": command,
        "environment": env,
        "target": TARGET,
        "horizon": HORIZON,
        "windows": args.windows,
        "calibration": args.calibration,
        "wall_s": time.perf_counter() - start,
        "results": results,
        "failures": failures,
    }
    md = markdown(results, payload) + f"\nWall time: {payload['wall_s'] / 60:.1f} min.\n"
    write_results(args.out, "quantizers", payload, md, failures)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
