"""Weight quantizers on the zoo: rtn vs mse vs Bit-Split (data-free and calibrated) at W4A8 and W8A8.

    python benchmarks/quantizers.py [--models NAME ...] [--windows N] [--calibration N] [--out benchmarks/results]
    python benchmarks/quantizers.py --weights-only [--bits 3 4] [--k 2] [--capacity data-free] ...

For every zoo model (benchmarks/zoo/models/*.onnx and tvm_tqs/examples/*.onnx), each weighted site at the
same precision (``compile(uniform=P)``, P = int4 then int8: every weight through the real integer kernels,
activations int8) with each quantizer:

- ``rtn``: round-to-nearest, scale = max|w| / qmax;
- ``mse``: the clipped scale minimising the weight error;
- ``bitsplit``: Bit-Split and stitching with the Gram matrices of the sites' inputs captured data-free
  (64 synthetic contexts, each run free through the compiled graph: its first calls are burn-in, the
  anchors' inputs are read on the calls after, `planning.activations.activation_capture`), compile()'s
  default for ``quantizer="bitsplit"``;
- ``bitsplit-cal``: the same with N real TRAIN windows as calibration (``calibration=``).

Measures, against the model's own fp32 compile on the same windows:
- rollout: ||y_q - y_fp32|| / ||y_fp32|| over 96-step rollouts from real TEST windows (all windows in
  one batch);
- reconstruction, per weight group: sqrt(tr(E H E^T) / tr(W H W^T)), E the weight error and H the Gram
  matrix of the group's inputs on the TEST windows (1% damped); the table gives the median over groups and
  the number of groups where bitsplit's is below rtn's.

Writes benchmarks/results/quantizers.json and .md.

``--weights-only`` isolates the weight quantizer: every group's weight is quantized at W3 / W4 (int3 on the
symmetric grid [-3, 3], one scale per `group_size` reduction elements, as int4), dequantized and put back
into the fp32 fused graph in place of the original constant (activations stay fp32, no integer kernels);
the reference is the same fused graph with the original constants. Variants add ModCap (``modcap``: top-k
capacity differentials between adjacent groups, pairs reconstructed jointly; ``modcap-cal`` on the real
calibration windows), and the report gives each ModCap plan (capacities, differentials, chosen pairs,
the pair objective per-site vs joint on the capture data). Writes quantizers_weights.json and .md.
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
from tvm_tqs.graph import replace_constants, weight_digest
from tvm_tqs.planning import PlanningProblem
from tvm_tqs.planning.activations import bitsplit_quantizer, constant_table, input_grams
from tvm_tqs.precision import PRECISIONS
from tvm_tqs.quantizers import as_matrix, modcap_quantizer, mse, rtn

HERE = Path(__file__).resolve().parent
TARGET, HORIZON = "x86", 96
WINDOWS, CALIBRATION = 128, 64
VARIANTS = ("rtn", "mse", "bitsplit", "bitsplit-cal")
PRECISIONS_RUN = ("int4", "int8")
WEIGHT_BITS = (3, 4)
WEIGHT_VARIANTS = ("rtn", "mse", "bitsplit", "bitsplit-cal", "modcap", "modcap-cal")


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


def _windows(path: Path, windows: int, calibration: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The model's real TEST windows, its TRAIN calibration windows, and the batch (= test windows)."""
    card = card_of(path)
    x, _ = test_windows(card, HORIZON, windows)
    return x, train_windows(card, calibration), len(x)


def evaluate(path: Path, windows: int, calibration: int) -> dict:
    x, cal, batch = _windows(path, windows, calibration)
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


# -- weights only: dequantized weights in the fp32 graph ---------------------------------------------------
def _fake_quant_model(problem, quantizer, bits: int):
    """A `CompiledModel` (for its `rollout`) running the fp32 fused graph with every group's weight replaced
    by its `bits`-bit dequantization (`quantizer` None: the original weights). Built from the fused graph
    directly: no quantize pass, no integer or fp32 weight kernels, only the constants differ."""
    from tvm_tqs.artifact import CompiledModel
    from tvm_tqs.frontend.load import model_signatures
    from tvm_tqs.rollout import io_names
    from tvm_tqs.targets.build import build

    weights = {}
    for g in problem.groups:
        w = np.asarray(g.weight, np.float32)
        weights[g.name] = (
            w if quantizer is None else quantizer(w, bits, g.channel_axis, problem.group_size).dequantize()
        )
    mod = replace_constants(problem.fused, constant_table(problem, weights))
    _, outputs = io_names(problem.module)
    inputs, _ = model_signatures(problem.module, outputs)
    return CompiledModel(
        plan=None,
        target=problem.target,
        rollout_spec=problem.rollout,
        executable=build(mod, problem.target),
        quantize_report={},
        inputs=tuple((n, list(shape), dtype) for n, (shape, dtype) in inputs.items()),
        outputs=tuple(outputs),
    )


def _reconstruction_bits(problem, quantizer, bits: int, grams: dict) -> dict[str, float]:
    out = {}
    for g in problem.groups:
        h = grams.get(weight_digest(np.asarray(g.weight, np.float32)))
        if h is None:
            continue
        qw = quantizer(np.asarray(g.weight, np.float32), bits, g.channel_axis, problem.group_size)
        w = as_matrix(np.asarray(g.weight, np.float64), g.channel_axis)
        e = as_matrix(qw.dequantize().astype(np.float64), g.channel_axis) - w
        out[g.name] = float(np.sqrt(np.trace(e @ h @ e.T) / np.trace(w @ h @ w.T)))
    return out


def _modcap_plan(quantizer, bits: int, group_size: int) -> dict:
    plan = quantizer.plan(bits, group_size)
    joint = {}
    for pair in plan["chosen"]:
        r = quantizer.joint(pair, bits, group_size)
        joint["->".join(pair)] = {
            "per_site": r.per_site,
            "joint": r.joint,
            "accepted": [f"{rnd}:{step}" for rnd, step, _, ok in r.history if ok],
        }
    return {
        "capacity": plan["capacity"],
        "differentials": [[d, a, b] for d, a, b in plan["differentials"]],
        "eligible": ["->".join(p) for p in plan["eligible"]],
        "chosen": ["->".join(p) for p in plan["chosen"]],
        "pair_objective": joint,
        "links": {"->".join(p): link.kind for p, link in quantizer.links.items()},
    }


def evaluate_weights(path: Path, windows: int, calibration: int, k: int, capacity: str) -> dict:
    x, cal, batch = _windows(path, windows, calibration)
    timings = {}
    t0 = time.perf_counter()
    problem = PlanningProblem.from_model(str(path), TARGET, batch=batch)
    # The reference runs the very graph the variants run, with the original constants.
    ref = _fake_quant_model(problem, None, 32).rollout(x, HORIZON).astype(np.float64)
    timings["fp32_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    test_grams = input_grams(problem, x)
    quantizers = {
        "rtn": rtn,
        "mse": mse,
        "bitsplit": bitsplit_quantizer(problem),
        "bitsplit-cal": bitsplit_quantizer(problem, cal),
        "modcap": modcap_quantizer(problem, k=k, capacity=capacity),
        "modcap-cal": modcap_quantizer(problem, cal, k=k, capacity=capacity),
    }
    timings["capture_s"] = time.perf_counter() - t0
    activations = {name: q.activations for name, q in quantizers.items() if hasattr(q, "activations")}
    rows, plans = {}, {}
    for bits in WEIGHT_BITS:
        rows[bits], plans[bits] = {}, {}
        for name, quantizer in quantizers.items():
            t0 = time.perf_counter()
            y = _fake_quant_model(problem, quantizer, bits).rollout(x, HORIZON).astype(np.float64)
            rec = _reconstruction_bits(problem, quantizer, bits, test_grams)
            rows[bits][name] = {
                "rel_error": float(np.linalg.norm(y - ref) / np.linalg.norm(ref)),
                "reconstruction": rec,
                "reconstruction_median": float(np.median(list(rec.values()))) if rec else None,
                "seconds": time.perf_counter() - t0,
            }
            if name.startswith("modcap"):
                plans[bits][name] = _modcap_plan(quantizer, bits, problem.group_size)
            print(f"   W{bits} {name}: rollout {rows[bits][name]['rel_error']:.4g}", flush=True)
    return {
        "model": path.stem,
        "groups": len(problem.groups),
        "test_windows": batch,
        "calibration_windows": len(cal),
        "group_size": problem.group_size,
        "results": {f"W{b}": r for b, r in rows.items()},
        "modcap": {f"W{b}": p for b, p in plans.items()},
        "activations": activations,
        "timings_s": timings,
    }


def markdown_weights(results: list[dict], payload: dict) -> str:
    lines = [
        "# Weight quantizers, weights only (W3 / W4, activations fp32)",
        "",
        f"Command: `{payload['command']}`. Every weight group quantized at the bits (one scale per "
        f"{results[0]['group_size'] if results else '?'} reduction elements; int3 on [-3, 3]), dequantized "
        f"into the fp32 fused graph on x86; {HORIZON}-step rollouts from up to {payload['windows']} real test "
        f"windows against the same graph with the original weights; `-cal` variants capture activations on "
        f"{payload['calibration']} train windows, the others on {_data_free(results)}. ModCap: "
        f"top-{payload['k']} {payload['capacity']} capacity differentials among adjacent groups, jointly "
        "reconstructed.",
        "",
        "Rollout error ||y_q - y_fp32|| / ||y_fp32||; in brackets the median over weight groups of the per-group "
        "reconstruction error on the test windows' inputs.",
        "",
    ]
    for bits in WEIGHT_BITS:
        key = f"W{bits}"
        lines += [
            f"## {key}",
            "",
            "| model | "
            + " | ".join(WEIGHT_VARIANTS)
            + " | bitsplit vs rtn | groups below rtn | data-free share of the calibrated gain"
            + " | modcap vs bitsplit (data-free / cal) |",
            "|---|" + "---|" * (len(WEIGHT_VARIANTS) + 4),
        ]
        summary = {"reduction": [], "below": [0, 0], "share": [], "modcap": 0}
        for r in results:
            row = r["results"][key]
            err = {v: row[v]["rel_error"] for v in WEIGHT_VARIANTS}
            cells = [f"{_fmt(err[v])} ({_fmt(row[v]['reconstruction_median'])})" for v in WEIGHT_VARIANTS]
            gains = [
                1 - err[m] / err[b] if err[b] else None
                for m, b in (("modcap", "bitsplit"), ("modcap-cal", "bitsplit-cal"))
            ]
            reduction = 1 - err["bitsplit"] / err["rtn"]
            rec = (row["bitsplit"]["reconstruction"], row["rtn"]["reconstruction"])
            below = sum(rec[0][g] < rec[1][g] for g in rec[1])
            # How much of what real calibration gains over rtn the data-free contexts gain (goal >= 80%).
            cal_gain = err["rtn"] - err["bitsplit-cal"]
            share = (err["rtn"] - err["bitsplit"]) / cal_gain if cal_gain > 0 else None
            summary["reduction"].append(reduction)
            summary["below"] = [summary["below"][0] + below, summary["below"][1] + len(rec[1])]
            summary["share"] += [share] if share is not None else []
            summary["modcap"] += err["modcap-cal"] < err["bitsplit-cal"] * (1 - 1e-9)
            lines.append(
                f"| {r['model']} | "
                + " | ".join(cells)
                + f" | {_fmt(reduction, '.1%')} | {below}/{len(rec[1])} | {_fmt(share, '.0%')}"
                + f" | {_fmt(gains[0], '.1%')} / {_fmt(gains[1], '.1%')} |"
            )
        if results:
            lines += [
                "",
                f"At {key}: bitsplit (data-free) lowers the rollout error vs rtn by "
                f"{_fmt(float(np.median(summary['reduction'])), '.1%')} (median over models; goal >= 25%) and "
                f"the reconstruction error on {summary['below'][0]}/{summary['below'][1]} groups; data-free "
                f"contexts reach a median {_fmt(float(np.median(summary['share'])) if summary['share'] else None, '.0%')} "
                f"of the calibrated gain (goal >= 80%); calibrated ModCap lowers the rollout error vs calibrated "
                f"per-site Bit-Split on {summary['modcap']}/{len(results)} models.",
            ]
        lines += ["", f"ModCap plans at {key} (pair objective on the capture data, per-site -> joint):", ""]
        for r in results:
            for name, plan in r["modcap"][key].items():
                objective = "; ".join(
                    f"{pair}: {_fmt(v['per_site'])} -> {_fmt(v['joint'])}"
                    for pair, v in plan["pair_objective"].items()
                )
                ranked = ", ".join(f"{a}->{b} {_fmt(d)}" for d, a, b in plan["differentials"][:4])
                lines.append(
                    f"- {r['model']} {name}: differentials {ranked or 'none'}; eligible "
                    f"{', '.join(plan['eligible']) or 'none'}; chosen {', '.join(plan['chosen']) or 'none'}"
                    + (f"; {objective}" if objective else "")
                )
        lines.append("")
    return "\n".join(lines)


def _data_free(results: list[dict]) -> str:
    sources = {r.get("activations", {}).get("bitsplit") for r in results} - {None}
    return "; ".join(sorted(sources)) or "data-free contexts"


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
    parser.add_argument(
        "--weights-only", action="store_true", help="W3 / W4 dequantized into the fp32 graph (with ModCap)"
    )
    parser.add_argument("--k", type=int, default=2, help="ModCap: pairs reconstructed jointly (default 2)")
    parser.add_argument(
        "--capacity", choices=("data-free", "data-dependent"), default="data-free", help="ModCap's capacity"
    )
    args = parser.parse_args(argv)
    if args.weights_only:
        return _main_weights(args)
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


def _main_weights(args) -> int:
    start = time.perf_counter()
    payload = {"command": command_line("quantizers.py"), "environment": machine_env()}
    results, failures = per_model(
        selected_models(args.models),
        lambda path: evaluate_weights(path, args.windows, args.calibration, args.k, args.capacity),
    )
    payload.update(
        target=TARGET,
        horizon=HORIZON,
        windows=args.windows,
        calibration=args.calibration,
        k=args.k,
        capacity=args.capacity,
        bits=list(WEIGHT_BITS),
        wall_s=time.perf_counter() - start,
        results=results,
        failures=failures,
    )
    md = markdown_weights(results, payload) + f"\nWall time: {payload['wall_s'] / 60:.1f} min.\n"
    write_results(args.out, "quantizers_weights", payload, md, failures)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
