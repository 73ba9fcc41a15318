"""Shared by benchmarks/error_model.py and benchmarks/budget_sweep.py: the planning problem compile() solves,
laid open (weight groups, their sizes and predicted errors), and the measurement of a plan's real rollout.

`Planner` builds, once per model, what `tvm_tqs.compile` builds on every call before it solves: the fused
graph's weight groups, their storage per precision and the error model's e_g(p)^2 table (for any gains: the
TQS gains of a report, its single-step gains, or none). It is a thin layer over compile()'s own
`tvm_tqs.planning.PlanningProblem` (tests/test_planning.py checks they agree), so a plan solved here is the plan
``compile(model, "x86", Budget(size_bytes=...), tqs_report=report)`` returns, and the predicted error of any
plan is compile()'s ``plan.predicted_error`` formula, sqrt(sum_g e_g^2). This lets one TQS report and one
activation pass serve every budget and every random plan; a plan is then built with
``compile(plan={site: precision})`` only when it is measured, and identical plans are measured once.

`Evaluator` measures a plan the way the issue asks: the quantized model compiled for the host ("x86") with
the batch = number of test windows, rolled out from real test windows, against the same model's fp32
compile on the same windows (cached per model): relative rollout error ||y_q - y_fp32|| / ||y_fp32|| over
the whole rollout (all windows, steps and target channels), and the increase of the MSE against the truth.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

import tvm_tqs
from tvm_tqs.error_model import weight_error
from tvm_tqs.planning import CrossGroupModel, PlanningProblem, solve_cross
from tvm_tqs.planning import gains_of as planning_gains
from tvm_tqs.precision import INT4_GROUP
from tvm_tqs.quantizers import rtn
from tvm_tqs.solver import Budget

TARGET = "x86"
HORIZON = 96
SEEDS = 8


def scored_planner(path: Path) -> tuple[object, Planner, dict[str, float]]:
    """One weight-mode TQS report (horizon HORIZON, SEEDS seeds, data-free) and the model's Planner, timed."""
    t0 = time.perf_counter()
    report = tvm_tqs.score(str(path), horizon=HORIZON, seeds=SEEDS, mode="weight")
    t1 = time.perf_counter()
    planner = Planner(path)
    return report, planner, {"tqs_s": t1 - t0, "planner_s": time.perf_counter() - t1}


def gains_of(report, attr: str = "gain") -> dict[int, float]:
    """Per-site gains as compile() reads them (`tvm_tqs.planning.gains_of`), from `attr` of each scored site
    ("gain", or "gain_first_call" for the single-step baseline)."""
    if attr == "gain":
        return planning_gains(report)
    out = {}
    for s in report.sites:
        value = getattr(s, attr)
        if s.status == "ok" and value is not None:
            out[s.site] = float(value)
        else:
            out[s.site] = 0.0 if s.status == "no effect" else math.inf
    return out


class Planner:
    """A model's `tvm_tqs.planning.PlanningProblem` for the host target, with plans keyed by weight group."""

    def __init__(self, path: Path | str, target: str = TARGET, group_size: int = INT4_GROUP):
        # compile()'s own problem, loaded as compile() loads it (batch 1).
        self.problem = PlanningProblem.from_model(str(path), target, group_size=group_size)
        self.path = str(path)
        self.group_size = group_size
        self.groups = self.problem.groups
        self.rollout = self.problem.rollout

    # -- plans are {group name: precision} here; `site_plan` turns them into compile(plan=) form ---------
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    def site_plan(self, plan: dict[str, str]) -> dict[int, str]:
        return {s: plan[g.name] for g in self.groups for s in g.sites}

    def group_plan(self, site_precisions: dict[int, str]) -> dict[str, str]:
        return {g.name: site_precisions.get(g.sites[0], "fp32") for g in self.groups}

    def uniform(self, precision: str) -> dict[str, str]:
        """compile(uniform=) semantics: groups that do not offer `precision` stay fp32."""
        return self.group_plan(self.problem.uniform(precision))

    def size(self, plan: dict[str, str]) -> float:
        """Total constant bytes of the model under `plan` (compile()'s ``plan.totals["size_bytes"]``)."""
        return self.problem.totals(self.site_plan(plan))["size_bytes"]

    # -- error tables: {group: {precision: e_g^2}} ---------------------------------------------------
    def errors2(self, gains: dict[int, float], seeds: int = 8) -> dict[str, dict[str, float]]:
        """compile()'s error model table for these per-site gains (one data-free activation pass)."""
        return self.problem.error_table(gains, None, seeds, rtn)

    def weight_errors2(self) -> dict[str, dict[str, float]]:
        """The weight-error baseline: e_g^2 = r_w(g, p)^2, every distinct weight once (no gains, no
        activation term): a plan solved on it minimises the sum of relative weight-quantization errors."""
        return {
            g.name: {
                p: weight_error(g.weight, g.channel_axis, p, rtn, self.group_size) ** 2 for p in g.options
            }
            for g in self.groups
        }

    @staticmethod
    def predicted(errors2: dict, plan: dict[str, str]) -> float:
        """sqrt(sum_g e_g^2): compile()'s ``plan.predicted_error`` for this plan."""
        return math.sqrt(sum(errors2[name][p] for name, p in plan.items()))

    def allowed(self, errors2: dict | None = None) -> dict[str, tuple[str, ...]]:
        """Options per group; with a table, only those with a finite predicted error (as the solver)."""
        return {
            g.name: tuple(p for p in g.options if errors2 is None or math.isfinite(errors2[g.name][p]))
            for g in self.groups
        }

    def solve(self, errors2: dict, size_bytes: float) -> dict[str, str]:
        """compile()'s knapsack under a size budget (whole-model bytes)."""
        return self.group_plan(self.problem.solve(errors2, Budget(size_bytes=size_bytes)).precisions)

    # -- the cross-group error model -------------------------------------------------------------------
    def cross_model(self, gains: dict[int, float], seeds: int = SEEDS) -> CrossGroupModel:
        """Residual responses (horizon HORIZON, `seeds` data-free contexts) + the activation term."""
        return CrossGroupModel.measure(self.problem, gains, horizon=HORIZON, seeds=seeds)

    def solve_cross(self, model: CrossGroupModel, size_bytes: float) -> dict[str, str]:
        """The pairwise-corrected knapsack on `model` under a size budget."""
        return self.group_plan(solve_cross(self.problem, model, Budget(size_bytes=size_bytes)).precisions)

    def predicted_cross(self, model: CrossGroupModel, plan: dict[str, str]) -> float:
        return model.predicted_error(self.problem, self.site_plan(plan))

    # -- random plans ----------------------------------------------------------------------------------
    def random_plan(self, rng: np.random.Generator, allowed: dict[str, tuple[str, ...]]) -> dict[str, str]:
        """Each group at a precision drawn uniformly from its options."""
        return {name: str(rng.choice(opts)) for name, opts in allowed.items()}

    def random_fill(
        self, rng: np.random.Generator, size_bytes: float, allowed: dict[str, tuple[str, ...]]
    ) -> dict[str, str]:
        """A random plan that meets a size budget and uses it up: start from every group at its smallest
        option; then, while some group can move to a larger option that still fits, pick one such
        (group, option) move uniformly at random and take it. Stops at a plan no single upgrade fits
        (a random maximal fill: the random counterpart of a solved plan, which also fills the budget)."""
        sizes = {
            g.name: {p: g.storage_bytes(p, self.group_size) for p in allowed[g.name]} for g in self.groups
        }
        plan = {name: min(opts, key=opts.get) for name, opts in sizes.items()}
        slack = size_bytes - self.size(plan)
        if slack < -1e-6 * size_bytes:
            raise ValueError(
                f"budget {size_bytes:.0f} B is below the smallest plan ({size_bytes - slack:.0f} B)"
            )
        while True:
            moves = [
                (name, p)
                for name, opts in sizes.items()
                for p, b in opts.items()
                if b > opts[plan[name]] and b - opts[plan[name]] <= slack + 1e-9 * size_bytes
            ]
            if not moves:
                return plan
            name, p = moves[rng.integers(len(moves))]
            slack -= sizes[name][p] - sizes[name][plan[name]]
            plan[name] = p


class Evaluator:
    """Compile plans for the host and measure their rollouts on fixed real test windows."""

    def __init__(self, path: Path | str, x: np.ndarray, y: np.ndarray, targets, horizon: int = HORIZON):
        self.path = str(path)
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.truth = np.asarray(y[:, :horizon][:, :, list(targets)], dtype=np.float64)
        self.horizon = horizon
        self.cache: dict[tuple, dict] = {}
        self.compiles = 0
        self.seconds = 0.0
        t0 = time.perf_counter()
        self.ref = self._rollout({})  # fp32: every site at fp32, the same compile path
        self.ref_mse = float(np.mean((self.ref - self.truth) ** 2))
        self.ref_norm = float(np.linalg.norm(self.ref))
        self.ref_seconds = time.perf_counter() - t0

    def _rollout(self, site_plan: dict[int, str], quantizer: str = "rtn") -> np.ndarray:
        t0 = time.perf_counter()
        compiled = tvm_tqs.compile(
            self.path, target=TARGET, plan=site_plan, batch=len(self.x), quantizer=quantizer
        )
        out = compiled.rollout(self.x, self.horizon).astype(np.float64)
        self.compiles += 1
        self.seconds += time.perf_counter() - t0
        return out

    def measure(self, site_plan: dict[int, str], quantizer: str = "rtn") -> dict:
        """{"rel_error": ||y_q - y_fp32|| / ||y_fp32||, "mse_increase": MSE(y_q, truth) - MSE(y_fp32, truth)}
        with the weights quantized by compile()'s `quantizer`; a plan already measured is not compiled again."""
        sites = tuple(sorted((s, p) for s, p in site_plan.items() if p != "fp32"))
        key = (quantizer, sites) if quantizer != "rtn" and sites else sites
        if key not in self.cache:
            if not sites:
                out = self.ref
            else:
                out = self._rollout(dict(sites), quantizer)
            self.cache[key] = {
                "rel_error": float(np.linalg.norm(out - self.ref) / self.ref_norm),
                "mse_increase": float(np.mean((out - self.truth) ** 2)) - self.ref_mse,
            }
        return self.cache[key]
