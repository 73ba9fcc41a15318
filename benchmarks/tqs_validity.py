"""Does TQS mean something? Rank fused sites by TQS and check the ranking against real quantization damage.

    python benchmarks/tqs_validity.py [--models NAME ...] [--windows N] [--out benchmarks/results]

For every zoo model (benchmarks/zoo/models/*.onnx and tvm_tqs/examples/*.onnx):

1. Score every fused site data-free with `tvm_tqs.score(model, horizon=96, seeds=8)`: in weight mode
   (``w``: the site's weights get relative noise eps) and in output mode (``out``: the site's result gets
   relative noise eps), each with the default synthetic contexts and with a 4-call burn-in on the model's
   own trajectory; plus weight mode from 8 real TRAIN windows (a data-aware reference: what the data-free
   contexts cost).
2. Ground truth: quantize the weights of ONE site at a time (round-to-nearest, symmetric, per output
   channel; 4 and 8 bits; biases and non-reduction constants stay fp32), roll the model out for 96 steps on
   evenly spaced real TEST windows (the zoo's own split and normalisation, `benchmarks/zoo/data.py`), and
   measure (a) the increase of the rollout MSE against the truth over the fp32 model on the same windows,
   and (b) the MSE between the quantized and the fp32 rollouts. The one-site models run as rows of ONE
   compiled weight-mode rollout (`passes.perturb` with the quantization error as the weight delta), so the
   measurement runs the same compiled graph TQS scores.
3. Spearman rank correlation, over the sites with quantizable weights, between the measured damage and:
   - ``TQS w`` / ``TQS out`` (+ ``burn-in``, ``train ctx``): G_k * r_k, TQS's predicted rollout error: the
     gain at H = 96 times the site's relative weight-quantization error r_k = ||Q_b(W) - W|| / ||W||;
   - ``1-step w`` / ``1-step out``: the baseline single-step sensitivity: the same gain over the first
     model call only (horizon 1 call, read from the same rollouts) times r_k;
   - ``weight error``: the baseline r_k alone;
   - ``growth w`` / ``growth out``: the TQS growth rate alone, ``gain w``: G_k alone (quantizer-free).

Writes benchmarks/results/tqs_validity.json and .md (with this command line).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from common import card_of, command_line, machine_env, per_model, selected_models, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE / "zoo"))

HORIZON, SEEDS, BITS = 96, 8, (4, 8)
# The TQS runs per model: default contexts and a 4-call burn-in, in output and in weight mode.
RUNS = {
    "output": {},  # the score() defaults: synthetic contexts + 4 burn-in calls, linearity check
    "output_no_burn_in": {"burn_in_calls": 0, "linearity": False},
    "weight": {"mode": "weight"},
    "weight_no_burn_in": {"mode": "weight", "burn_in_calls": 0, "linearity": False},
}
MAX_BATCH = 128
# Rows (window x site) are the cost of the ground truth: fewer windows for models with many sites.
ROW_BUDGET = 16_384


def test_windows(card: dict, steps: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` evenly spaced (window, future) pairs of the model's test split, in model units."""
    import data as zdata

    splits = zdata.LOADERS[card["data"]["dataset"]](card["lookback"])
    x, y = zdata.windows(splits.test, card["lookback"], steps)
    idx = np.unique(np.linspace(0, len(x) - 1, min(count, len(x))).round().astype(int))
    return x[idx], y[idx]


def train_windows(card: dict, count: int) -> np.ndarray:
    """`count` evenly spaced windows of the model's TRAIN split: the data-aware reference contexts."""
    import data as zdata

    splits = zdata.LOADERS[card["data"]["dataset"]](card["lookback"])
    x, _ = zdata.windows(splits.train, card["lookback"], 1)
    return x[np.linspace(0, len(x) - 1, count).round().astype(int)]


def channel_axis(func, param_index: int) -> int | None:
    """Output-channel axis of a constant PrimFunc argument: the first axis indexed by spatial (not
    reduction) block variables in a reduction block that reads it (None if no reduction reads it)."""
    import tvm
    import tvm_ffi
    from tvm import tirx

    buf = func.params[param_index]  # TVM 0.27: PrimFunc params are the buffers themselves
    blocks: list = []
    tvm_ffi.structural_walk(func.body, [(tvm.s_tir.SBlock, blocks.append)])
    for block in blocks:
        kinds = {iv.var: iv.iter_type for iv in block.iter_vars}
        if tirx.IterVar.CommReduce not in kinds.values():
            continue
        for region in block.reads:
            if not region.source.same_as(buf):
                continue
            axes = []
            for rng in region.region:
                used: list = []
                tvm_ffi.structural_walk(rng.min, [(tirx.Var, used.append)])
                axes.append({kinds[v] for v in used if v in kinds})
            if any(tirx.IterVar.CommReduce in k for k in axes):
                spatial = [a for a, k in enumerate(axes) if k and tirx.IterVar.CommReduce not in k]
                return spatial[0] if spatial else None
    return None


class GroundTruth:
    """One compiled weight-mode rollout that runs "site k quantized" as batch rows."""

    def __init__(self, path: Path, sites: list[int], windows: int):
        from tvm_tqs.frontend.load import read_onnx
        from tvm_tqs.graph import call_sites, fuse
        from tvm_tqs.passes.perturb import PerturbSites, batch_layouts, perturb_plan_of
        from tvm_tqs.rollout import RolloutSpec, compile_rollout

        proto, _ = read_onnx(str(path))
        self.spec = spec = RolloutSpec.from_onnx(proto)
        shape = lambda b: {spec.window_input: [b, spec.lookback, spec.channels]}  # noqa: E731
        probe = fuse(proto, shape(1))
        # Quantizable weights: constants a reduction (matmul, conv) reads, with their output-channel axis.
        # Biases, index constants and broadcast states are not quantized (and sites with only those are
        # not part of the experiment).
        self.axes: dict[int, dict[int, int]] = {}
        calls = call_sites(probe)
        for site in sites:
            call = calls[site].value
            func = probe[call.args[0]]
            args = call.args[1]
            arg_list = list(args.fields) if hasattr(args, "fields") else [args]
            axes = {}
            for position, arg in enumerate(arg_list):
                value = getattr(arg, "value", None)
                if value is None or not hasattr(value, "numpy") or len(value.shape) < 2:
                    continue
                axis = channel_axis(func, position)
                if axis is not None and str(value.dtype).startswith("float"):
                    axes[position] = axis
            if axes:
                self.axes[site] = axes
        self.sites = sorted(self.axes)
        rows = windows * (len(self.sites) + 1)
        self.batch = max(2, min(MAX_BATCH, rows))
        mod = fuse(proto, shape(self.batch))
        pm = PerturbSites(batch_layouts(mod, self.batch, probe, 1), "weight", self.sites)(mod)
        self.plan = perturb_plan_of(pm)
        self.rollout = compile_rollout(pm, spec, HORIZON)
        self.calls = call_sites(mod)

    def quantized_delta(self, bits: int) -> tuple[np.ndarray, dict]:
        """The dweight input holding Q_b(W) - W for every quantized weight; r_k per site."""
        from tvm_tqs.quantizers import rtn

        delta = np.zeros(self.plan.dweight_size, np.float32)
        rel = {}
        for site, slots in self.plan.weights.items():
            call = self.calls[site].value
            args = call.args[1]
            arg_list = list(args.fields) if hasattr(args, "fields") else [args]
            err2 = norm2 = 0.0
            for slot in slots:
                axis = self.axes[site].get(slot.arg)
                if axis is None:
                    continue  # biases and other non-reduction constants stay in float
                w = arg_list[slot.arg].value.numpy()
                dw = rtn(w, bits, axis).dequantize() - w
                delta[slot.offset : slot.offset + slot.size] = dw.ravel()
                err2 += float(np.sum(dw.astype(np.float64) ** 2))
                norm2 += float(np.sum(w.astype(np.float64) ** 2))
            rel[site] = float(np.sqrt(err2 / norm2)) if norm2 > 0 else 0.0
        return delta, rel

    def measure(self, x: np.ndarray, y: np.ndarray, delta: np.ndarray) -> dict:
        """Per site: (increase of rollout MSE vs truth, MSE between quantized and fp32 rollouts)."""
        sites = list(self.plan.perturbable)
        B, n = self.batch, len(x)
        targets = list(self.spec.target_channels)
        truth = y[:, :HORIZON][:, :, targets].astype(np.float64)
        rows = [(w, None) for w in range(n)] + [(w, k) for k in sites for w in range(n)]
        preds: dict = {}
        d_dev = self.rollout.tensor(delta)
        for start in range(0, len(rows), B):
            chunk = rows[start : start + B]
            chunk = chunk + [chunk[0]] * (B - len(chunk))
            ctx = x[[w for w, _ in chunk]]
            scale = np.zeros((B, self.plan.columns), np.float32)
            for i, (_, k) in enumerate(chunk):
                if k is not None:
                    scale[i, k] = 1.0
            out = self.rollout(ctx, scale, d_dev)
            for i, key in enumerate(chunk[: min(B, len(rows) - start)]):
                preds[key] = out[i].astype(np.float64)
        ref = np.stack([preds[(w, None)] for w in range(n)])
        mse_ref = float(np.mean((ref - truth) ** 2))
        result = {}
        for k in sites:
            q = np.stack([preds[(w, k)] for w in range(n)])
            result[k] = (float(np.mean((q - truth) ** 2)) - mse_ref, float(np.mean((q - ref) ** 2)))
        return {"fp32_mse": mse_ref, "sites": result}


def spearman(a, b) -> float | None:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return None
    return float(spearmanr(a[ok], b[ok]).statistic)


def evaluate(path: Path, windows: int | None) -> dict:
    import tvm_tqs

    card = card_of(path)
    timings = {}
    reports = {}
    train = train_windows(card, SEEDS)
    runs = dict(RUNS, weight_train={"mode": "weight", "linearity": False, "contexts": train, "seeds": None})
    for key, kw in runs.items():
        t0 = time.perf_counter()
        reports[key] = tvm_tqs.score(str(path), horizon=HORIZON, **{"seeds": SEEDS, **kw})
        timings[f"tqs_{key}_s"] = time.perf_counter() - t0
    out_rep, w_rep = reports["output"], reports["weight"]
    candidates = [s.site for s in w_rep.sites if s.status == "ok"]
    n_windows = windows or int(max(16, min(256, ROW_BUDGET // max(1, len(candidates) + 1))))
    x, y = test_windows(card, HORIZON, n_windows)
    t0 = time.perf_counter()
    truth = GroundTruth(path, candidates, len(x))
    sites = truth.sites
    per_bits = {}
    for bits in BITS:
        delta, rel = truth.quantized_delta(bits)
        measured = truth.measure(x, y, delta)
        per_bits[bits] = (rel, measured)
    timings["ground_truth_s"] = time.perf_counter() - t0

    def val(report, k, attr):
        s = report.site(k)
        v = getattr(s, attr)
        return np.nan if v is None else float(v)

    result = {
        "model": path.stem,
        "dataset": card["data"]["dataset"],
        "sites_total": len(out_rep.sites),
        "sites_with_weights": len(sites),
        "test_windows": int(len(x)),
        "timings_s": timings,
        "nonlinear_sites_output": sum(1 for s in out_rep.sites if s.linear is False),
        "nonlinear_sites_weight": sum(1 for s in w_rep.sites if s.linear is False),
        "bits": {},
    }
    for bits, (rel, measured) in per_bits.items():
        r = np.array([rel[k] for k in sites])
        dmse = np.array([measured["sites"][k][0] for k in sites])
        dev = np.array([measured["sites"][k][1] for k in sites])
        predictors = {
            "TQS w": np.array([val(w_rep, k, "gain") for k in sites]) * r,
            "TQS w no burn-in": np.array([val(reports["weight_no_burn_in"], k, "gain") for k in sites]) * r,
            "TQS out": np.array([val(out_rep, k, "gain") for k in sites]) * r,
            "TQS out no burn-in": np.array([val(reports["output_no_burn_in"], k, "gain") for k in sites]) * r,
            "TQS w train ctx": np.array([val(reports["weight_train"], k, "gain") for k in sites]) * r,
            "1-step w": np.array([val(w_rep, k, "gain_first_call") for k in sites]) * r,
            "1-step out": np.array([val(out_rep, k, "gain_first_call") for k in sites]) * r,
            "weight error": r,
            "growth w": np.array([val(w_rep, k, "tqs") for k in sites]),
            "growth out": np.array([val(out_rep, k, "tqs") for k in sites]),
            "gain w": np.array([val(w_rep, k, "gain") for k in sites]),
        }
        result["bits"][str(bits)] = {
            "fp32_rollout_mse": measured["fp32_mse"],
            "spearman_vs_mse_increase": {name: spearman(p, dmse) for name, p in predictors.items()},
            "spearman_vs_deviation": {name: spearman(p, dev) for name, p in predictors.items()},
            "per_site": [
                {
                    "site": k,
                    "anchor": out_rep.site(k).anchor,
                    "mse_increase": float(dmse[i]),
                    "deviation_mse": float(dev[i]),
                    "rel_weight_error": float(r[i]),
                    **{name: _clean(p[i]) for name, p in predictors.items()},
                }
                for i, k in enumerate(sites)
            ],
        }
    return result


def _clean(v):
    v = float(v)
    return v if np.isfinite(v) else None


def _fmt(v) -> str:
    return "-" if v is None else f"{v:+.2f}"


PREDICTORS = [
    "TQS w",
    "TQS w no burn-in",
    "TQS out",
    "TQS out no burn-in",
    "TQS w train ctx",
    "1-step w",
    "1-step out",
    "weight error",
    "growth w",
    "growth out",
    "gain w",
]


HEADLINE, BASELINES = "TQS w", ("1-step out", "1-step w", "weight error")


def summary(results: list[dict]) -> list[str]:
    """Goal check: median Spearman of the headline TQS predictor and how often it ranks best."""
    lines = [
        "## Summary",
        "",
        "| ground truth | bits | median TQS w | median 1-step out | median 1-step w | "
        "median weight error | TQS w >= all baselines (models) | median TQS w, models with >= 5 sites |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for target, key in (
        ("rollout MSE increase vs truth", "spearman_vs_mse_increase"),
        ("quantized vs fp32 rollout MSE", "spearman_vs_deviation"),
    ):
        for bits in (str(b) for b in BITS):
            rho = [res["bits"][bits][key] for res in results]
            med = {
                p: float(np.median([r[p] for r in rho if r[p] is not None] or [np.nan]))
                for p in (HEADLINE, *BASELINES)
            }
            wins = sum(
                1
                for r in rho
                if r[HEADLINE] is not None
                and all(r[b] is None or r[HEADLINE] >= r[b] - 1e-9 for b in BASELINES)
            )
            big = [res["bits"][bits][key][HEADLINE] for res in results if res["sites_with_weights"] >= 5]
            big_med = float(np.median([v for v in big if v is not None] or [np.nan]))
            lines.append(
                f"| {target} | {bits} | {_fmt(med[HEADLINE])} | {_fmt(med['1-step out'])} | "
                f"{_fmt(med['1-step w'])} | {_fmt(med['weight error'])} | {wins}/{len(rho)} | {_fmt(big_med)} |"
            )
    return lines + [""]


def markdown(results: list[dict], command: str, env: dict) -> str:
    lines = [
        "# TQS validity: does the TQS ranking predict real quantization damage?",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {env['machine']}; {env['load']}. Produced by benchmarks/tqs_validity.py "
        f"(method in its docstring and in docs/tqs.md).",
        "",
        "Spearman rank correlation, over the sites with quantizable weights, between each predictor and the "
        "damage measured when that ONE site's weights are quantized (RTN, symmetric, per output channel) and the "
        "model is rolled out 96 steps from real test windows. Predictors (all data-free except `train ctx`):",
        "",
        "- `TQS w` / `TQS out`: G_k * r_k, TQS's predicted rollout error: the gain at H = 96 (weight / output "
        "mode, `score()` defaults: synthetic contexts with 4 burn-in calls, 8 seeds) times the site's relative "
        "weight-quantization error r_k = ||Q(W) - W|| / ||W||. `no burn-in`: synthetic contexts only; "
        "`train ctx`: weight mode from 8 real train windows (what the data-free contexts cost).",
        "- baselines: `1-step w` / `1-step out`: single-step sensitivity (the gain over the first model call "
        "only, read from the same rollouts) * r_k; `weight error`: r_k alone.",
        "- `growth w` / `growth out`: the TQS growth rate alone; `gain w`: G_k alone (quantizer-free numbers).",
        "",
        "Two ground truths: the increase of the rollout MSE against the truth (what the issue asks), and the MSE "
        "between the quantized and the fp32 rollouts (the damage itself). Models with 3 weighted sites "
        "(etth1_dlinear, vic_elec_mlp) can only score +-0.5 or +-1.",
        "",
    ]
    lines += summary(results)
    for target, key in (
        ("MSE increase vs truth", "spearman_vs_mse_increase"),
        ("MSE between quantized and fp32 rollouts", "spearman_vs_deviation"),
    ):
        lines += [f"## Against the {target}", ""]
        for bits in (str(b) for b in BITS):
            lines += [f"### {bits}-bit weights", ""]
            lines.append("| model | sites (weighted/all) | windows | " + " | ".join(PREDICTORS) + " | best |")
            lines.append("|---|---|---|" + "---|" * len(PREDICTORS) + "---|")
            col: dict = {p: [] for p in PREDICTORS}
            for res in results:
                rho = res["bits"][bits][key]
                for p in PREDICTORS:
                    if rho[p] is not None:
                        col[p].append(rho[p])
                scored = {p: rho[p] for p in PREDICTORS if rho[p] is not None}
                best = max(scored, key=scored.get) if scored else "-"
                lines.append(
                    f"| {res['model']} | {res['sites_with_weights']}/{res['sites_total']} | {res['test_windows']} | "
                    + " | ".join(_fmt(rho[p]) for p in PREDICTORS)
                    + f" | {best} |"
                )
            lines.append(
                "| **median** | | | "
                + " | ".join(_fmt(float(np.median(col[p])) if col[p] else None) for p in PREDICTORS)
                + " | |"
            )
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="zoo model names (default: all)")
    parser.add_argument(
        "--windows", type=int, default=None, help="test windows per model (default: by budget)"
    )
    parser.add_argument("--out", default=str(HERE / "results"), help="output folder")
    args = parser.parse_args(argv)
    command = command_line("tqs_validity.py")
    paths = selected_models(args.models)
    env = machine_env()

    def done(res):
        for bits in BITS:
            rho = res["bits"][str(bits)]["spearman_vs_mse_increase"]
            print(f"   {bits}-bit: " + ", ".join(f"{p} {_fmt(rho[p])}" for p in PREDICTORS), flush=True)

    results, failures = per_model(paths, lambda path: evaluate(path, args.windows), done)
    payload = {
        "command": command,
        "environment": env,
        "horizon": HORIZON,
        "seeds": SEEDS,
        "bits": list(BITS),
        "results": results,
        "failures": failures,
    }
    write_results(args.out, "tqs_validity", payload, markdown(results, command, env), failures)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
