"""`tvm_tqs.compile`: model + target + budget -> a per-fused-op precision plan and a built artifact.

Wiring only: every step lives in its own room.

    load                        the fp32 Relax module (frontend.load)
    PlanningProblem             fused sites, weight groups, resources, error table, solver (planning/)
    score (TQS, weight mode)    gain G_k per site                      [skipped for forced plans]
    residual responses          group interactions (error_model="cross")
    latency table               per (site, precision), measured through a runner [latency budgets]
    quantize + build            the artifact; for latency budgets its end-to-end latency is measured and,
                                while over budget, the table is corrected and the plan re-solved
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from .artifact import CompiledModel
from .errors import MeasurementError
from .frontend.load import ModelLike
from .graph import site_edges
from .options import CompileOptions, Progress
from .plan import Plan
from .planning import CrossGroupModel, PlanningProblem, gains_of, site_latency_table, site_plans
from .precision import INT4_GROUP, PRECISION_ORDER
from .quantizers import rtn
from .solver import Budget

__all__ = ["CompileOptions", "compile", "compile_with"]


def compile(  # noqa: A001 - the product's entry point is tvm_tqs.compile
    model: ModelLike,
    target: str = "arm_cpu",
    budget: Budget | str | None = None,
    *,
    plan: Mapping[int, str] | None = None,
    uniform: str | None = None,
    input_shapes: Mapping | None = None,
    batch: int = 1,
    rollout=None,
    horizon: int = 96,
    seeds: int = 8,
    contexts: np.ndarray | None = None,
    tqs_report=None,
    runner=None,
    quantizer: Callable | str = rtn,
    calibration: np.ndarray | None = None,
    group_size: int = INT4_GROUP,
    solver: str = "auto",
    error_model: str = "cross",
    max_rounds: int = 3,
    latency_cache=None,
    progress: Progress | None = None,
) -> CompiledModel:
    """Plan per-fused-op precisions for `target` under `budget`, quantize, build.

    Parameters
    ----------
    model : path, bytes or onnx.ModelProto
        A forecaster with a rollout contract (`RolloutSpec`, attached or inferable).
    target : str
        Registered target (`tvm-tqs targets`).
    budget : Budget or str
        Limits (``Budget(size_bytes=, avg_bits=, bops=, latency_ms=)``, any combination) or the CLI form
        (``"size=25%"``, ``"avg-bits=5"``, ``"latency=2ms"``; percentages of the all-fp32 model).
        Not needed with `plan` or `uniform`.
    plan : mapping, optional
        Forced precisions ``{site: precision}`` (others fp32); skips TQS and the solver.
    uniform : str, optional
        The same precision for every quantizable site (a baseline).
    input_shapes, batch
        Static shapes (see `load`); symbolic leading (batch) dims not given default to `batch`.
    rollout : RolloutSpec, dict or path, optional
        The rollout contract, overriding the model's own (see `load`).
    horizon, seeds, contexts
        TQS settings (`tvm_tqs.score`); `tqs_report` reuses an earlier weight-mode report instead.
    runner : str or Runner, optional
        Where latency is measured: "local", "rpc://HOST:PORT/KEY", "offline:DIR" or a runner object.
        Default: "local" when the budget has a latency limit and the target runs on this host.
    quantizer : {"rtn", "mse", "bitsplit", "modcap"} or callable
        Weight quantizer (`tvm_tqs.quantizers`); the error model uses its own weight error. "bitsplit"
        reconstructs each weight's output on its inputs, captured through the compiled graph on data-free
        contexts, or on `calibration` windows (``[N, lookback, channels]``) when given. "modcap" is
        bitsplit plus the joint reconstruction of the adjacent weight pairs with the largest capacity
        gap (ModCap); it needs `calibration` windows (on synthetic contexts it made plans worse).
    calibration : ndarray, optional
        Real windows for "bitsplit"'s or "modcap"'s activations; the quantize report says which were used.
    group_size : int
        int4 group size.
    solver : {"auto", "exact", "greedy"}
        How the knapsack of the independent error model is solved (error_model="independent").
    error_model : {"cross", "independent"}
        "cross" (default): the rollout's responses to each group's actual quantization residual, with
        their interactions, plus the activation term from the TQS gains (`tvm_tqs.planning.CrossGroupModel`;
        one more compiled-rollout run, about the cost of TQS), solved by the pairwise-corrected knapsack
        (`solver_pairwise`, a local search). "independent": groups add in variance (TQS gains x weight
        error), solved exactly by `solver` (docs/error_model.md).
    max_rounds : int
        Solve-build-measure rounds for a latency budget.
    latency_cache : LatencyCache, optional
        Default: the on-disk cache (``$TVM_TQS_LATENCY_CACHE`` or ``~/.cache/tvm_tqs/latency.jsonl``).
    progress : callable(done, total, what), optional
    """
    options = {k: v for k, v in locals().items() if k != "model"}
    return compile_with(model, CompileOptions(**options))


def compile_with(model: ModelLike, options: CompileOptions) -> CompiledModel:
    """`compile` with its options as one validated object."""
    from .frontend.load import require_rollout_spec
    from .passes.quantize import kernel_set_for

    kernel_set_for(options.target)  # before any work: a target without quantized lowering fails here, by name
    _stage(options, "importing and fusing")
    problem = PlanningProblem.from_model(
        model,
        options.target,
        input_shapes=options.input_shapes,
        batch=options.batch,
        rollout=options.rollout,
        group_size=options.group_size,
    )
    budget = None if options.budget is None else problem.budget(options.budget)
    quantizer = _weight_quantizer(problem, options)
    report, gains, table, runner = options.tqs_report, {}, None, options.runner
    objective = None
    if options.forced:
        if options.plan is not None:
            precisions, method = problem.forced(options.plan), "forced"
        else:
            precisions, method = problem.uniform(options.uniform), f"uniform-{options.uniform}"
        optimal = False
    else:
        rollout = require_rollout_spec(problem.module, problem.source)
        if report is None:
            report = _score(problem, rollout, options)
        gains = gains_of(report)
        objective = _Objective.of(problem, gains, quantizer, options)
        if budget.latency_ms is not None or runner is not None:
            table, runner = site_latency_table(problem, runner, options.latency_cache, options.progress)
        _stage(options, "solving")
        solution = objective.solve(budget, table)
        precisions, method, optimal = solution.precisions, solution.method, solution.optimal

    loop = _BuildLoop(problem, budget, table, runner, objective, quantizer, options)
    result, executable, table, method, optimal = loop.run(precisions, method, optimal)
    return _compiled(
        problem,
        options,
        budget,
        report,
        gains,
        objective,
        table,
        result,
        executable,
        loop.trace,
        method,
        optimal,
    )


def _stage(options, what: str) -> None:
    """Announce a one-shot step (the progress protocol's ``(0, 1, what)``)."""
    if options.progress is not None:
        options.progress(0, 1, what)


def _weight_quantizer(problem, options):
    """The quantizer object for `options.quantizer`; "bitsplit" with its inputs' Gram matrices."""
    from .planning.activations import bitsplit_quantizer
    from .quantizers import mse

    chosen = options.quantizer
    if not isinstance(chosen, str):
        return chosen
    if chosen == "bitsplit":
        _stage(options, "capturing activations for bitsplit")
        return bitsplit_quantizer(problem, options.calibration)
    if chosen == "modcap":
        from .quantizers import modcap_quantizer

        _stage(options, "capturing activations for modcap")
        return modcap_quantizer(problem, options.calibration)
    return {"rtn": rtn, "mse": mse}[chosen]


class _Objective:
    """What the solver minimises: the independent error table, or the cross-group model around it."""

    def __init__(self, problem, errors2, cross: CrossGroupModel | None, solver: str):
        self.problem, self.errors2, self.cross, self.solver = problem, errors2, cross, solver

    @classmethod
    def of(cls, problem, gains, quantizer, options) -> _Objective:
        if options.error_model == "independent":
            errors2 = problem.error_table(gains, options.contexts, options.seeds, quantizer)
            return cls(problem, errors2, None, options.solver)
        cross = CrossGroupModel.measure(
            problem,
            gains,
            horizon=options.horizon,
            seeds=options.seeds,
            contexts=options.contexts,
            quantizer=quantizer,
            progress=options.progress,
            input_shapes=options.input_shapes,
        )
        return cls(problem, cross.errors2, cross, options.solver)

    def solve(self, budget, table):
        pairs = None if self.cross is None else self.cross.pair_matrix
        return self.problem.solve(self.errors2, budget, table, self.solver, pairs=pairs)

    def predicted_error(self, precisions) -> float:
        if self.cross is None:
            return self.problem.predicted_error(self.errors2, precisions)
        return self.cross.predicted_error(self.problem, precisions)

    def group_shares(self, precisions) -> dict[str, float] | None:
        return None if self.cross is None else self.cross.group_shares(self.problem, precisions)


def _score(problem, rollout, options):
    from .tqs import score

    return score(
        problem.model_proto,
        horizon=options.horizon,
        seeds=options.seeds,
        mode="weight",
        contexts=options.contexts,
        progress=options.progress,
        input_shapes=options.input_shapes,
        rollout=rollout,
    )


class _BuildLoop:
    """Quantize and build a plan; with a latency budget, measure it and, while over budget, correct the table
    with what the whole model took and re-solve (at most `max_rounds` builds)."""

    def __init__(self, problem, budget, table, runner, objective, quantizer, options):
        self.problem, self.budget, self.table, self.runner = problem, budget, table, runner
        self.objective, self.quantizer, self.options = objective, quantizer, options
        self.measuring = budget is not None and budget.latency_ms is not None and runner is not None
        self.trace: list[dict] = []
        self.observations: list = []

    def run(self, precisions, method, optimal):
        from .passes.quantize import quantize
        from .targets.build import build

        problem, options = self.problem, self.options
        inputs = _example_inputs(problem.module) if self.measuring else None
        for round_ in range(options.max_rounds):
            _stage(options, "quantizing and building" + (f" (round {round_ + 1})" if round_ else ""))
            result = quantize(
                problem.analysis, precisions, problem.target, self.quantizer, group_size=problem.group_size
            )
            if hasattr(self.quantizer, "activations"):
                result.info["quantizer_activations"] = self.quantizer.activations
            executable = build(result.mod, problem.target)
            entry = {
                "round": round_,
                "plan": {str(k): v for k, v in sorted(result.plan.items()) if v != "fp32"},
            }
            if self.table is not None:
                entry["predicted_ms"] = self.table.total_ms(result.plan)
            if self.measuring:
                entry.update(self._measure(executable, result.plan, inputs))
            self.trace.append(entry)
            # A forced plan has nothing to re-solve: its measurement is reported as it is.
            if not self.measuring or entry["met"] or options.forced or round_ + 1 == options.max_rounds:
                break
            from .latency import fit_correction

            # Over budget as measured: correct the per-site costs with what the whole model really took.
            self.table = self.table.corrected(fit_correction(self.table, self.observations))
            solution = self.objective.solve(self.budget, self.table)
            precisions, method, optimal = solution.precisions, solution.method, solution.optimal
        return result, executable, self.table, method, optimal

    def _measure(self, executable, plan, inputs) -> dict:
        from .latency import Observation, measure_model

        _stage(self.options, "measuring the built model")
        m = measure_model(executable, self.runner, target=self.problem.target, inputs=inputs)
        if not m.ok:
            raise MeasurementError(f"measuring the compiled model through {m.runner} failed: {m.error}")
        if self.table is not None:
            self.observations.append(
                Observation(dict(plan), m.median_ms, self.table.total_ms(plan, raw=True))
            )
        return {"measured_ms": m.median_ms, "met": m.median_ms <= self.budget.latency_ms}


def _compiled(
    problem, options, budget, report, gains, objective, table, result, executable, trace, method, optimal
):
    from .frontend.load import model_signatures
    from .rollout import io_names

    _, outputs = io_names(problem.module)
    inputs, _ = model_signatures(problem.module, outputs)
    applied = result.plan
    errors2 = {} if objective is None else objective.errors2
    the_plan = Plan(
        sites=tuple(
            site_plans(
                problem,
                applied,
                result,
                report,
                errors2,
                gains,
                table,
                None if objective is None else objective.group_shares(applied),
            )
        ),
        budget={} if budget is None else {k: v for k, v in vars(budget).items() if v is not None},
        totals=problem.totals(applied, table),
        fp32_totals=problem.fp32_totals,
        predicted_error=float("nan") if objective is None else objective.predicted_error(applied),
        method=method,
        optimal=optimal,
    )
    return CompiledModel(
        plan=the_plan,
        target=problem.target,
        rollout_spec=problem.rollout,
        executable=executable,
        quantize_report=result.to_dict(),
        tqs=report,
        latency=None if table is None else table.to_dict(),
        trace=tuple(trace),
        pareto=_fronts(problem, objective, table, applied),
        edges=tuple(site_edges(problem.fused)),
        source=problem.source,
        inputs=tuple((n, list(s), d) for n, (s, d) in inputs.items()),
        outputs=tuple(outputs),
    )


def _fronts(problem, objective, table, chosen: Mapping[int, str]) -> dict | None:
    """The Pareto fronts of the objective that chose the plan (pairwise terms included with the cross model),
    the chosen plan among their candidates, plus the uniform plans at each precision the target offers."""
    if objective is None:
        return None
    fronts = problem.pareto(objective.errors2, table)
    fronts = {r: _front(problem, objective, table, r, points, chosen) for r, points in fronts.items()}
    offered = {p for g in problem.groups for p in g.options}
    fronts["uniform"] = [
        {
            "precision": name,
            **{
                k: v
                for k, v in problem.totals(precisions, table).items()
                if k in ("size_bytes", "latency_ms")
            },
            "predicted_error": objective.predicted_error(precisions),
        }
        for name in PRECISION_ORDER
        if name in offered
        for precisions in [problem.uniform(name)]
    ]
    return fronts


def _front(problem, objective, table, resource: str, points: list[dict], chosen) -> list[dict]:
    """The non-dominated plans among the independent front's, the chosen plan and (cross model) the objective's
    own solution at each of the front's resource levels, every error as the objective predicts it."""
    plans = [{int(k): v for k, v in point["plan"].items()} for point in points] + [dict(chosen)]
    if objective.cross is not None:  # the independent front is not the cross objective's: re-solve there
        plans += [objective.solve(Budget(**{resource: p[resource]}), table).precisions for p in points]
    grouped = problem.grouped_sites
    candidates = [
        {
            resource: problem.totals(precisions, table)[resource],
            "predicted_error": objective.predicted_error(precisions),
            "plan": {str(k): v for k, v in sorted(precisions.items()) if k in grouped},
        }
        for precisions in plans
    ]
    front, best = [], math.inf
    for c in sorted(candidates, key=lambda c: (c[resource], c["predicted_error"])):
        if c["predicted_error"] < best:
            front.append(c)
            best = c["predicted_error"]
    return front


def _example_inputs(mod) -> list[np.ndarray]:
    """Seeded inputs of `main`'s (static) parameter shapes, for end-to-end latency measurement."""
    rng = np.random.default_rng(0)
    out = []
    for p in mod["main"].params:
        shape = tuple(int(d) for d in p.ty.shape.values)
        out.append(rng.standard_normal(shape).astype(str(p.ty.dtype)))
    return out
