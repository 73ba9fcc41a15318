"""How long does TQS take? The batched compiled rollout against the naive loop, side by side.

    python benchmarks/tqs_speed.py [--models NAME ...] [--out benchmarks/results]

For every zoo model, horizon 96 and 8 seeds (output mode, with the default eps/2 linearity check on 2
seeds, i.e. the `tvm_tqs.score` defaults):

- **batched**: `tvm_tqs.score(model, horizon=96, seeds=8)`: every (seed, site) row and its reference rows
  packed into executions of one compiled rollout function (the whole horizon in one Relax call).
- **naive**: the same perturbed model compiled once (batch = the 10 rows a site needs: 8 seeds + 2
  linearity rows) and one rollout per site driven from Python, one model call at a time, feeding the
  forecast back with numpy (plus one reference rollout). It computes the same divergence curves; the
  benchmark checks they agree with the batched ones.

Both include their own fusion and compilation; the table gives total wall time, the setup part (fusion,
compilation, contexts) and the scoring part (rollouts and statistics).

    python benchmarks/tqs_speed.py --paths [--models etth1_lstm]

instead compares TQS's two paths (`tvm_tqs.tqs_paths`) on one model exported both ways: the zoo model
(dynamic batch: the rows path, batch rows of one call) against its fixed-batch twin (the same graph with
the batch dimension fixed to 1, as a `dynamic_axes`-free export has it: the calls path, one call per row),
same `score()` settings; it checks the two give the same scores and writes tqs_paths.json / .md.
Runs single-process on this host (TVM's thread pool uses every core it finds). Writes
benchmarks/results/tqs_speed.json and .md with this command line and the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from common import command_line, machine_env, write_results, zoo_models  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HORIZON, SEEDS, LIN_SEEDS = 96, 8, 2
GOAL_SPEEDUP, GOAL_SECONDS = 10.0, 60.0


def batched(path: Path) -> tuple[dict, object]:
    import tvm_tqs

    marks: dict = {}
    t0 = time.perf_counter()

    def progress(done, total, what):
        marks.setdefault(what, time.perf_counter() - t0)

    report = tvm_tqs.score(str(path), horizon=HORIZON, seeds=SEEDS, progress=progress)
    total = time.perf_counter() - t0
    compile_s = marks.get("scoring", total)
    return {
        "total_s": total,
        "compile_s": compile_s,
        "score_s": total - compile_s,
        "executions": report.executions,
        "batch": report.batch,
    }, report


def naive(path: Path, report) -> tuple[dict, np.ndarray]:
    """One rollout per site from Python; returns timings and the divergence curves [S, K, H]."""
    from tvm_tqs.contexts import SyntheticContexts, burn_in
    from tvm_tqs.frontend.load import read_onnx
    from tvm_tqs.graph import fuse
    from tvm_tqs.passes.perturb import PerturbSites, batch_layouts, perturb_plan_of, site_noise
    from tvm_tqs.passes.reduction_loop_order import ReductionLoopOrder
    from tvm_tqs.rollout import RolloutSpec
    from tvm_tqs.runtime import VMRunner, build
    from tvm_tqs.tqs import divergence, site_scores

    t0 = time.perf_counter()
    proto, _ = read_onnx(str(path))
    spec = RolloutSpec.from_onnx(proto)
    rows = SEEDS + LIN_SEEDS
    shape = lambda b: {spec.window_input: [b, spec.lookback, spec.channels]}  # noqa: E731
    mod, probe = fuse(proto, shape(rows)), fuse(proto, shape(1))
    pm = PerturbSites(batch_layouts(mod, rows, probe, 1), "output")(mod)
    plan = perturb_plan_of(pm)
    run = VMRunner(build(ReductionLoopOrder()(pm)))  # the same kernels as the batched rollout
    compile_s = time.perf_counter() - t0

    eps = report.eps
    contexts = SyntheticContexts().make(spec, SEEDS, report.seed)
    ctx = np.concatenate([contexts, contexts[:LIN_SEEDS]])  # rows: 8 seeds at eps, 2 at eps / 2
    scale0 = np.zeros((rows, plan.columns), np.float32)
    noise0 = np.zeros((rows, plan.noise_width), np.float32)

    def rollout(scale, noise, steps=HORIZON):
        window, pieces = ctx, []
        for _ in range(spec.calls(steps)):
            forecast = run(window, scale, noise)[0]
            pieces.append(forecast[:, : spec.stride])
            window = spec.next_window(window, forecast)
        return np.concatenate(pieces, axis=1)[:, :steps]

    t1 = time.perf_counter()
    if report.burn_in_calls:  # the same data-free contexts as score(): synthetic, then free-running calls
        traj = rollout(scale0, noise0, steps=report.burn_in_calls * spec.stride)
        ctx = burn_in(spec, ctx, traj)
    ref = rollout(scale0, noise0)
    curves = np.zeros((SEEDS, plan.columns, HORIZON))
    half = np.zeros((LIN_SEEDS, plan.columns, HORIZON))
    for k in plan.perturbable:
        scale, noise = scale0.copy(), noise0.copy()
        size = plan.row_sizes[k]
        for row in range(rows):
            r = row if row < SEEDS else row - SEEDS
            scale[row, k] = eps if row < SEEDS else eps / 2
            noise[row, :size] = site_noise(report.seed, r, k, size)
        y = rollout(scale, noise)
        curves[:, k] = divergence(y[:SEEDS], ref[:SEEDS])
        half[:, k] = divergence(y[SEEDS:], ref[SEEDS:])
    # The same statistics as score() (bootstrap intervals, linearity), so both sides do the same work.
    site_scores(report.ops, plan.perturbable, plan.skipped, curves, half, eps, report.seed, spec.stride)
    score_s = time.perf_counter() - t1
    return {
        "total_s": compile_s + score_s,
        "compile_s": compile_s,
        "score_s": score_s,
        "rollouts": len(plan.perturbable) + 1,
        "batch": rows,
    }, curves


def fixed_batch_twin(path: Path, out: Path) -> Path:
    """The zoo model with its symbolic batch dimension fixed to 1 (inputs and outputs)."""
    import onnx

    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_value = 1
    onnx.save(model, str(out))
    return out


def two_paths(path: Path, tmp: Path) -> dict:
    """Rows path on the zoo model vs calls path on its fixed-batch twin: time and score agreement."""
    import tvm_tqs

    runs = {}
    for name, model in (("rows", path), ("calls", fixed_batch_twin(path, tmp / f"{path.stem}_fixed1.onnx"))):
        t0 = time.perf_counter()
        report = tvm_tqs.score(str(model), horizon=HORIZON, seeds=SEEDS)
        runs[name] = (time.perf_counter() - t0, report)
    (t_rows, rows), (t_calls, calls) = runs["rows"], runs["calls"]
    assert (rows.path, calls.path) == ("rows", "calls"), (rows.path, calls.path)
    both = [s.site for s in rows.sites if s.status == "ok" and calls.site(s.site).status == "ok"]
    from scipy.stats import spearmanr

    a = np.array([rows.site(k).gain for k in both])
    b = np.array([calls.site(k).gain for k in both])
    rel = np.abs(a - b) / np.maximum(np.abs(a), 1e-30)
    # Sites whose perturbation barely reaches the forecast have divergences near float32 round-off, where
    # the batch-128 and batch-1 kernels' last-bit differences show; the sites a plan cares about are the
    # others.
    big = a >= 1e-2 * a.max()
    tqs_a = np.array([rows.site(k).tqs for k in both])
    tqs_b = np.array([calls.site(k).tqs for k in both])
    return {
        "model": path.stem,
        "sites": len(rows.sites),
        "scored_both": len(both),
        "rows": {"total_s": t_rows, "executions": rows.executions, "batch": rows.batch},
        "calls": {"total_s": t_calls, "rollout_calls": calls.executions * calls.batch, "batch": 1},
        "gain_spearman": float(spearmanr(a, b).statistic),
        "gain_rel_diff_median": float(np.median(rel)),
        "gain_rel_diff_max": float(rel.max()),
        "sites_gain_ge_1pct_of_max": int(big.sum()),
        "gain_rel_diff_max_ge_1pct": float(rel[big].max()),
        "tqs_abs_diff_max": float(np.abs(tqs_a - tqs_b).max()),
        "tqs_range": [float(tqs_a.min()), float(tqs_a.max())],
        "cost_ratio": t_calls / t_rows,
    }


def paths_markdown(results: list[dict], command: str, env: dict) -> str:
    lines = [
        "# TQS's two paths: batch rows of one call vs one call per row",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {env['machine']}; {env['load']}.",
        "",
        f"Horizon {HORIZON}, {SEEDS} seeds, output mode (the `score` defaults). `rows`: the zoo model (dynamic "
        "batch), every row a batch row of one compiled-rollout call. `calls`: the same model with its batch "
        "fixed to 1 (a fixed-batch export), every row its own call. Times in seconds, fusion and compilation "
        "included.",
        "",
        "| model | sites (scored by both) | rows path s (executions x batch) | calls path s (rollout calls) "
        "| calls / rows | gain Spearman | gain rel. diff median / max | max over sites with gain >= 1% of max "
        "| TQS max abs diff (TQS range) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['sites']} ({r['scored_both']}) | {r['rows']['total_s']:.1f} "
            f"({r['rows']['executions']} x {r['rows']['batch']}) | {r['calls']['total_s']:.1f} "
            f"(<= {r['calls']['rollout_calls']}) | {r['cost_ratio']:.2f}x | {r['gain_spearman']:.4f} | "
            f"{r['gain_rel_diff_median']:.1e} / {r['gain_rel_diff_max']:.1e} | "
            f"{r['gain_rel_diff_max_ge_1pct']:.1e} ({r['sites_gain_ge_1pct_of_max']} sites) | "
            f"{r['tqs_abs_diff_max']:.1e} ({r['tqs_range'][0]:.3g} .. {r['tqs_range'][1]:.3g}) |"
        )
    lines += [
        "",
        "Both paths compute the same rollouts; they differ only in the batch the kernels run at (128 rows "
        "vs 1), whose float32 results can differ in the last bit. Where a site's perturbation barely reaches "
        "the forecast its divergence is near that round-off, so its gain and growth rate differ most there; "
        "the ranking and the gains of the sites that matter agree.",
    ]
    return "\n".join(lines) + "\n"


def markdown(results: list[dict], command: str, env: dict) -> str:
    lines = [
        "# TQS speed: batched compiled rollout vs naive per-site loop",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {env['machine']}; {env['load']}.",
        "",
        f"Horizon {HORIZON}, {SEEDS} seeds, output mode, linearity check on {LIN_SEEDS} seeds (the `score` "
        "defaults). Times in seconds; `setup` = fusion, compilation and contexts, `score` = rollouts and "
        "statistics. `naive` = one "
        "rollout per site driven from Python one model call at a time (its seeds as batch rows). Goals: "
        f">= {GOAL_SPEEDUP:g}x faster than naive, < {GOAL_SECONDS:g} s per model on 2 cores.",
        "",
        "| model | sites | batched total | (setup / score) | executions x batch | naive total | (setup / score) "
        "| speedup total | speedup scoring | < 60 s | curves agree |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b, n = r["batched"], r["naive"]
        lines.append(
            f"| {r['model']} | {r['sites']} | {b['total_s']:.1f} | {b['compile_s']:.1f} / {b['score_s']:.1f} | "
            f"{b['executions']} x {b['batch']} | {n['total_s']:.1f} | {n['compile_s']:.1f} / {n['score_s']:.1f} | "
            f"{r['speedup_total']:.1f}x | {r['speedup_scoring']:.1f}x | {'yes' if b['total_s'] < GOAL_SECONDS else 'no'} | "
            f"{'yes' if r['curves_agree'] else 'NO'} (max rel. diff {r['curve_max_rel_diff']:.1e}) |"
        )
    lines += [
        "",
        "Reading the table: the `score` columns compare the two ways of running the same rollouts (same "
        "compiled kernels, same rows, identical curves). The batched rollout needs about N * 10 / 128 executions "
        "instead of N Python-driven rollouts, but on this zoo the per-row compute of the compiled kernels "
        "dominates (the recurrent models) or there is almost nothing to score (the small ones), so removing the "
        "per-call Python and VM overhead saves little: scoring is 0.8x-1.3x, and the 10x goal is missed. The "
        "`setup` gap is real but incidental: LLVM compiles the naive module's static batch of 10 about 2.5x "
        "slower than a batch of 128 (vic_elec_gru: 10.7 s vs 4.0 s for the same perturbed graph, measured "
        "alternately), which is where the 1.5x-1.9x total speedups of the recurrent models come from. Every "
        "model scores in under 60 s on this 2-core host.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="zoo model names (default: all)")
    parser.add_argument("--out", default=str(HERE / "results"), help="output folder")
    parser.add_argument("--paths", action="store_true", help="compare the rows and calls paths instead")
    args = parser.parse_args(argv)
    command = command_line("tqs_speed.py")
    if args.paths:
        import tempfile

        env = machine_env()
        names = args.models or ["etth1_lstm"]
        results = []
        with tempfile.TemporaryDirectory() as tmp:
            for path in [p for p in zoo_models() if p.stem in names]:
                print(f"== {path.stem}: rows vs calls", flush=True)
                results.append(two_paths(path, Path(tmp)))
                print(f"   {results[-1]}", flush=True)
        payload = {
            "command": command,
            "environment": env,
            "horizon": HORIZON,
            "seeds": SEEDS,
            "results": results,
        }
        write_results(args.out, "tqs_paths", payload, paths_markdown(results, command, env), {})
        return 0 if results else 1
    paths = [p for p in zoo_models() if not args.models or p.stem in args.models]
    env = machine_env()
    results, failures = [], {}
    for path in paths:
        print(f"== {path.stem}", flush=True)
        try:
            b, report = batched(path)
            n, curves = naive(path, report)
        except Exception as err:  # noqa: BLE001 - one model failing must not hide the others
            failures[path.stem] = f"{type(err).__name__}: {err}"
            print(f"   FAILED: {failures[path.stem]}", flush=True)
            continue
        scored = [s.site for s in report.sites if s.status == "ok"]
        mine = np.array([report.site(k).curve for k in scored])
        theirs = curves[:, scored].mean(axis=0)
        rel = float(np.max(np.abs(mine - theirs) / np.maximum(np.abs(theirs), 1e-30))) if scored else 0.0
        res = {
            "model": path.stem,
            "sites": len(report.sites),
            "batched": b,
            "naive": n,
            "speedup_total": n["total_s"] / b["total_s"],
            "speedup_scoring": n["score_s"] / max(b["score_s"], 1e-9),
            "curve_max_rel_diff": rel,
            "curves_agree": rel < 1e-3,
            "load_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        }
        results.append(res)
        print(
            f"   batched {b['total_s']:.1f}s (score {b['score_s']:.1f}s), naive {n['total_s']:.1f}s "
            f"(score {n['score_s']:.1f}s): {res['speedup_total']:.1f}x total, {res['speedup_scoring']:.1f}x "
            f"scoring; curves max rel diff {rel:.1e}",
            flush=True,
        )
    payload = {
        "command": command,
        "environment": env,
        "horizon": HORIZON,
        "seeds": SEEDS,
        "linearity_seeds": LIN_SEEDS,
        "results": results,
        "failures": failures,
    }
    write_results(args.out, "tqs_speed", payload, markdown(results, command, env), failures)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
