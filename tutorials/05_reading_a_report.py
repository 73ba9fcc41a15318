"""Tutorial 5: reading a TQS report and a plan.

What it teaches: what every number compile() hands back means, and how to check the plan against it: the
per-site plan (`compiled.plan`, `SitePlan`), the TQS report it was solved from (`compiled.tqs`: ranked
sites, growth rate with its confidence interval, gain, the divergence curve), the Pareto front of other
plans the solver saw (`compiled.pareto`), and the HTML report that puts them on one page
(`compiled.report(path)`; `export()` and `tvm-tqs compile --out DIR` write it as DIR/report.html too).
docs/tqs.md and docs/error_model.md define every quantity.

Time: about 20 s on a 2-core x86 host.

Run: python tutorials/05_reading_a_report.py   (writes ./report_example.html)
"""

import math
import time

import numpy as np

import tvm_tqs
from tvm_tqs.examples import example_model

start = time.perf_counter()
path = example_model()
# 4 seeds: the confidence intervals are bootstrap intervals over seeds, and 2 seeds make poor intervals.
compiled = tvm_tqs.compile(path, target="x86", budget="size=25%", horizon=96, seeds=4)
plan, tqs = compiled.plan, compiled.tqs

# --- 1. The plan: one SitePlan per fused call site ----------------------------------------------------------
# `options` is what the target can run the site at; a site with one option (fp32 only) is not a decision,
# and `reason` says why when a quantized site fell back. `error_share` is the site's part of the predicted
# squared rollout error (shares add up to predicted_error ** 2; with the cross-group error model a share
# can be negative: that site's error partly cancels another's). `size_bytes` counts a weight group once.
print(f"plan by {plan.method}{' (optimal)' if plan.optimal else ''}, budget {plan.budget}")
print(
    f"{'site':>4}  {'kinds':18s} {'options':24s} {'precision':9s} {'error share':>11s} {'size':>8s}  kernel"
)
for s in plan.sites:
    print(
        f"{s.site:>4}  {'+'.join(s.kinds):18s} {','.join(s.options):24s} {s.precision:9s} "
        f"{s.error_share:>11.2e} {s.size_bytes:>8.0f}  {s.kernel or s.reason or '-'}"
    )
shares = sum(s.error_share for s in plan.sites)
print(f"sum of error shares {shares:.4e} = predicted_error^2 {plan.predicted_error**2:.4e}")
t, f = plan.totals, plan.fp32_totals
print(
    f"size {t['size_bytes']:.0f} of {f['size_bytes']:.0f} bytes ({t['size_bytes'] / f['size_bytes']:.1%}), "
    f"avg weight bits {t['avg_bits']:.2f}, BOPs {t['bops'] / f['bops']:.1%} of fp32"
)

# --- 2. The TQS report: which errors grow -------------------------------------------------------------------
# Two numbers per site. TQS (`tqs`) is the growth rate of an injected error along the rollout, natural log per
# time step: positive means an error at this site is amplified step after step by the feedback. The gain
# (`gain`) is the average rollout error per unit of injected relative error: the number the error model
# multiplies by each precision's quantization noise. A site can have a modest TQS and a large gain (its
# error is big at once and stays) or the reverse: the planner uses the gain, and the tables show both.
print(
    f"\nTQS report: {tqs.mode} mode, horizon {tqs.horizon} ({tqs.calls} calls of {tqs.stride}), "
    f"{tqs.seeds} seeds, eps {tqs.eps:g}, path '{tqs.path}'"
)
print(f"contexts (data-free): {tqs.contexts[:90]}...")
for rank, s in enumerate(tqs.ranked("tqs"), 1):
    if s.status != "ok":
        print(f"  -  site {s.site}: {s.status} ({s.reason})")
        continue
    # An interval that straddles 0 means the seeds disagree on whether the error grows at all.
    lo, hi = s.tqs_ci
    verdict = "grows" if lo > 0 else "decays" if hi < 0 else "undecided"
    print(
        f"  {rank}. site {s.site} {'+'.join(s.kinds)}: TQS {s.tqs:+.4f}/step, 95% CI [{lo:+.4f}, {hi:+.4f}] "
        f"({verdict}); gain {s.gain:.3f} [{s.gain_ci[0]:.3f}, {s.gain_ci[1]:.3f}], first call only "
        f"{s.gain_first_call:.3f}; linear: {s.linear} (ratio {s.linearity_ratio:.3f})"
    )
by_gain = [s.site for s in tqs.ranked("gain") if s.status == "ok"]
print("ranked by gain instead:", by_gain)

# --- 3. The divergence curve: the error, step by step -------------------------------------------------------
# `curve` is d(t): the perturbed rollout's distance from the unperturbed one at each time step, relative to
# the forecast's typical size, averaged over seeds. TQS is the slope of log d(t); gain is mean d(t) / eps.
# Comparing its value after the first call with its end shows what a single-step sensitivity misses.
top = tqs.ranked("tqs")[0]
curve = np.asarray(top.curve)
print(f"\ndivergence curve of site {top.site} ({len(curve)} steps), mean per call / eps:")
print("  ", np.round(curve.reshape(-1, tqs.stride).mean(1) / tqs.eps, 3))
slope = np.polyfit(np.arange(1, len(curve) + 1), np.log(curve), 1)[0]
print(
    f"   slope of log d(t) = {slope:+.4f} (TQS {top.tqs:+.4f}); mean d / eps = {curve.mean() / tqs.eps:.3f} "
    f"(gain {top.gain:.3f}); d(H) / d(1) = {curve[-1] / curve[0]:.2f}"
)

# --- 4. The Pareto front: the other plans -------------------------------------------------------------------
# The error-vs-size trade-off, by whole-model size: moving the budget moves along it. Its candidates are
# the exact knapsack of the independent error model at 24 budgets, the cross-group objective's own solution
# at each of those sizes, and the plan compile() returned, all predicted with the plan's own (cross-group)
# error model; the front keeps the non-dominated ones, so the returned plan is on it unless a candidate is
# both smaller and predicted better (the local search is not proven optimal). "uniform" holds the
# one-precision-everywhere baselines.
print("\nPareto front (size -> predicted relative rollout error):")
for point in compiled.pareto["size_bytes"]:
    print(f"  {point['size_bytes'] / 1024:7.1f} KiB  {point['predicted_error']:.3e}  {point['plan']}")
chosen = {str(s.site): s.precision for s in plan.sites if len(s.options) > 1}
on_front = any(point["plan"] == chosen for point in compiled.pareto["size_bytes"])
dominating = [
    point for point in compiled.pareto["size_bytes"]
    if point["size_bytes"] < t["size_bytes"] and point["predicted_error"] <= plan.predicted_error
]  # fmt: skip
print(
    f"this plan: {t['size_bytes'] / 1024:.1f} KiB, {plan.predicted_error:.3e}, {chosen}: "
    f"{'on the front' if on_front else 'not one of the points'}; "
    f"front points smaller and predicted no worse: {len(dominating)}"
)
print("uniform precisions:")
for point in compiled.pareto.get("uniform", []):
    print(f"  {point['precision']:5s} {point['size_bytes'] / 1024:7.1f} KiB  {point['predicted_error']:.3e}")
mixed_better = [
    u["precision"] for u in compiled.pareto.get("uniform", [])
    if u["size_bytes"] >= t["size_bytes"] and u["predicted_error"] > plan.predicted_error
]  # fmt: skip
if mixed_better:
    print(f"this plan is smaller and predicted better than uniform {', '.join(mixed_better)}")

# --- 5. The HTML report -------------------------------------------------------------------------------------
# One self-contained file (no network, no scripts to fetch): open it in a browser. `tvm-tqs report DIR`
# renders it again from an exported artifact's report.json.
html = compiled.report("report_example.html")
print(f"\nHTML report: {html.resolve()} ({html.stat().st_size:,} bytes)")
assert not math.isnan(plan.predicted_error)

print(f"\ntutorial 5 done in {time.perf_counter() - start:.0f} s")
