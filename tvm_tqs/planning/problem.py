"""The planning problem of one model for one target: weight groups, what no decision changes, and the
resources and predicted error of any plan. `compile()` solves it; benchmarks and users can too."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..error_model import activation_error, group_error2, weight_error
from ..errors import TQSError
from ..precision import INT4_GROUP, PRECISION_ORDER, PRECISIONS
from ..quantizers import rtn
from ..solver import Budget, Group, Option, pareto_front, parse_budget, solve
from .groups import WeightGroup, fixed_float_bytes, weight_groups

# {group name: {precision: e_g^2}}: the error model's table (docs/error_model.md)
ErrorTable = dict[str, dict[str, float]]


@dataclass(frozen=True)
class PlanSolution:
    """The solver's answer in site terms."""

    precisions: dict[int, str]
    method: str
    optimal: bool


def gains_of(report) -> dict[int, float]:
    """Per-site gains of a weight-mode TQS report as the planner reads them: the gain of a scored site, 0 for
    a site with no effect on the forecast, inf for a site TQS could not perturb (it stays fp32)."""
    return {
        s.site: (s.gain if s.status == "ok" else (0.0 if s.status == "no effect" else math.inf))
        for s in report.sites
    }


class PlanningProblem:
    """Per-fused-op precision choice for one loaded model on one target.

    Parameters
    ----------
    module : tvm.IRModule
        The loaded, unfused Relax module (`tvm_tqs.load`): what the quantize pass rewrites.
    target : str or TargetSpec
        Registered target: which precisions each op kind is offered.
    group_size : int
        int4 group size (storage and weight error).
    source : str, optional
        Where the model came from (for messages).
    model_proto : onnx.ModelProto, optional
        The model as given (TQS re-imports it at the batch its path needs); default `module`.

    Attributes
    ----------
    fused, ops
        The fp32 fused graph and its sites (`fused_ops`).
    analysis
        `passes.quantize.analyze_sites(module)`, reused by quantize and the latency table.
    groups : list of WeightGroup
        The decisions: one per distinct quantizable weight.
    fixed_bytes, fixed_bops
        What lies outside the decision: constants that stay float, the BOPs of sites without a group.
    """

    def __init__(
        self, module, target, group_size: int = INT4_GROUP, source: str | None = None, model_proto=None
    ):
        from ..graph import fused_ops
        from ..passes.fuse import fuse_pipeline
        from ..passes.quantize import analyze_sites, kernel_set_for, quantizable_sites
        from ..targets.registry import get_target

        self.target = get_target(target)
        kernel_set_for(self.target)  # a target without quantized lowering fails here, by name
        self.module = module
        self.source = source
        self.model_proto = model_proto if model_proto is not None else module
        self.group_size = group_size
        self.fused = fuse_pipeline()(module)
        self.ops = fused_ops(self.fused)
        self.analysis = analyze_sites(module)
        self.groups = weight_groups(self.ops, quantizable_sites(self.analysis), self.target)
        _check_weights(self.ops, self.groups, source or "the model")
        self.fixed_bytes = fixed_float_bytes(self.ops, {g.name for g in self.groups})
        grouped = self.grouped_sites
        self.fixed_bops = sum(PRECISIONS["fp32"].bops(op.macs) for op in self.ops if op.index not in grouped)

    @classmethod
    def from_model(cls, model, target="x86", *, input_shapes=None, batch: int = 1, rollout=None, **kw):
        """Load `model` as `compile()` does (symbolic batch dims bound to `batch`) and build its problem."""
        from ..frontend.load import as_rollout_spec, bind_shapes, import_onnx, read_onnx

        proto, source = read_onnx(model)
        mod = import_onnx(
            proto, bind_shapes(proto, input_shapes, batch), source, rollout=as_rollout_spec(rollout)
        )
        return cls(mod, target, source=source, model_proto=proto, **kw)

    @property
    def rollout(self):
        """The module's rollout contract (None when it has none)."""
        from ..frontend.load import rollout_spec_of

        return rollout_spec_of(self.module)

    @property
    def grouped_sites(self) -> set[int]:
        return {s for g in self.groups for s in g.sites}

    # -- plans in site terms ---------------------------------------------------------------------------
    def uniform(self, precision: str) -> dict[int, str]:
        """Every group at `precision` where the target offers it, fp32 elsewhere."""
        if precision not in PRECISIONS:
            raise TQSError(
                f"uniform precision must be one of {', '.join(PRECISION_ORDER)}, got {precision!r}"
            )
        return {s: precision if precision in g.options else "fp32" for g in self.groups for s in g.sites}

    def forced(self, plan: Mapping) -> dict[int, str]:
        """A user's ``{site: precision}``, validated against the model's sites."""
        if not isinstance(plan, Mapping):
            raise TQSError(f"plan must be a mapping {{site: precision}}, not {type(plan).__name__}")
        out = {}
        for key, prec in dict(plan).items():
            site = _site_number(key)
            if site is None:
                raise TQSError(f"plan names site {key!r}: a site is an integer (see `tvm-tqs inspect`)")
            if not 0 <= site < len(self.ops):
                raise TQSError(f"plan names site {key}, but the model has sites 0..{len(self.ops) - 1}")
            if prec not in PRECISIONS:
                raise TQSError(
                    f"plan gives site {key} precision {prec!r}; valid: {', '.join(PRECISION_ORDER)}"
                )
            out[site] = prec
        return out

    # -- resources ---------------------------------------------------------------------------------------
    def totals(self, precisions: Mapping[int, str], table=None) -> dict:
        """Whole-model size (bytes), average weight bits, BOPs and, with a latency table, latency."""
        size, bops = self.fixed_bytes, self.fixed_bops
        bit_elements = elements = 0.0
        for g in self.groups:
            p = PRECISIONS[precisions.get(g.sites[0], "fp32")]
            size += g.storage_bytes(p.name, self.group_size)
            bit_elements += g.weight.size * p.bits
            elements += g.weight.size
            bops += p.bops(sum(self.ops[s].macs for s in g.sites))
        totals = {"size_bytes": size, "avg_bits": bit_elements / elements if elements else 32.0, "bops": bops}
        if table is not None:
            totals["latency_ms"] = table.total_ms(
                {op.index: precisions.get(op.index, "fp32") for op in self.ops}
            )
        return totals

    @property
    def fp32_totals(self) -> dict:
        return self.totals({s: "fp32" for s in self.grouped_sites})

    def budget(self, budget: Budget | str) -> Budget:
        """A `Budget`, with the CLI form's percentages taken of the all-fp32 model."""
        if isinstance(budget, str):
            fp32 = self.fp32_totals
            return parse_budget(budget, size_ref=fp32["size_bytes"], bops_ref=fp32["bops"])
        return budget

    def fixed(self, table=None) -> dict[str, float]:
        """What lies outside the decision: float constants, unquantizable sites' BOPs and latency."""
        grouped = self.grouped_sites
        fixed_ms = 0.0
        if table is not None:
            fixed_ms = sum(table.latency_ms(op.index, "fp32") for op in self.ops if op.index not in grouped)
        return {"size_bytes": self.fixed_bytes, "bops": self.fixed_bops, "latency_ms": fixed_ms}

    # -- error -------------------------------------------------------------------------------------------
    def error_table(
        self,
        gains: Mapping[int, float],
        contexts: np.ndarray | None = None,
        seeds: int = 8,
        quantizer: Callable = rtn,
        weight_term: bool = True,
    ) -> ErrorTable:
        """e_g(p)^2 per group and offered precision, from per-site `gains` (`gains_of`), the quantizer's
        weight error and the activation crests on `contexts` (default: `seeds` data-free contexts).
        ``weight_term=False`` leaves the activation term alone (`cross_model` measures the weight term)."""
        from ..contexts import SyntheticContexts, validate_contexts
        from .activations import activation_crests

        rollout = self.rollout
        if contexts is not None:
            ctx = validate_contexts(rollout, contexts)
        else:
            ctx = SyntheticContexts().make(rollout, max(seeds, 1), seed=0)
        crests = activation_crests(self.fused, rollout, sorted(self.grouped_sites), ctx)
        out: ErrorTable = {}
        for g in self.groups:
            site_gains = [gains.get(s, math.inf) for s in g.sites]
            out[g.name] = {}
            for p in g.options:
                r_w = (
                    weight_error(g.weight, g.channel_axis, p, quantizer, self.group_size)
                    if weight_term
                    else 0.0
                )
                r_a = float(np.sqrt(np.mean([activation_error(crests[s], p) ** 2 for s in g.sites])))
                out[g.name][p] = 0.0 if p == "fp32" else group_error2(site_gains, r_w, r_a)
        return out

    def predicted_error(self, errors2: ErrorTable, precisions: Mapping[int, str]) -> float:
        """sqrt(sum_g e_g^2): the plan's predicted relative rollout error."""
        if not errors2:
            return float("nan")
        return math.sqrt(
            sum(errors2.get(g.name, {}).get(precisions.get(g.sites[0], "fp32"), 0.0) for g in self.groups)
        )

    # -- solving -----------------------------------------------------------------------------------------
    def solver_groups(self, errors2: ErrorTable, table=None) -> list[Group]:
        """The knapsack's view: per weight group, its precisions with predicted error and resources."""
        solver_groups = []
        for g in self.groups:
            options = []
            for name in g.options:
                if not math.isfinite(errors2[g.name][name]):
                    continue  # a site TQS could not score is kept out of quantization, not guessed at
                p = PRECISIONS[name]
                options.append(
                    Option(
                        name,
                        error=errors2[g.name][name],
                        size_bytes=g.storage_bytes(name, self.group_size),
                        bit_elements=g.weight.size * p.bits,
                        bops=p.bops(sum(self.ops[s].macs for s in g.sites)),
                        latency_ms=sum(table.latency_ms(s, name) for s in g.sites)
                        if table is not None
                        else 0.0,
                    )
                )
            solver_groups.append(Group(g.name, tuple(options), float(g.weight.size)))
        return solver_groups

    def solve(
        self,
        errors2: ErrorTable,
        budget: Budget | str,
        table=None,
        method: str = "auto",
        pairs: Callable | None = None,
    ) -> PlanSolution:
        """Least predicted error under `budget` (whole-model terms; errors name whole-model totals).

        `pairs`, given the solver's (group, precision) options in order, returns their pairwise error terms
        (`CrossGroupModel.pair_matrix`); the pairwise-corrected knapsack then replaces `method`."""
        budget = self.budget(budget)
        if budget.latency_ms is not None and table is None:
            raise TQSError("a latency budget needs a latency table: give a runner")
        if not self.groups:
            raise TQSError("the model has no site the quantize pass can lower; nothing to plan")
        solver_groups = self.solver_groups(errors2, table)
        if pairs is None:
            solution = solve(solver_groups, budget, method, fixed=self.fixed(table))
        else:
            from ..solver_pairwise import solve_pairwise

            keys = [(g.name, o.precision) for g in solver_groups for o in g.options]
            solution = solve_pairwise(solver_groups, pairs(keys), budget, fixed=self.fixed(table))
        precisions = {
            s: sg.options[i].precision
            for g, sg, i in zip(self.groups, solver_groups, solution.choice, strict=True)
            for s in g.sites
        }
        return PlanSolution(precisions, solution.method, solution.optimal)

    def pareto(self, errors2: ErrorTable, table=None) -> dict[str, list[dict]]:
        """Predicted error vs whole-model size (and latency, with a table): the non-dominated plans."""
        solver_groups = self.solver_groups(errors2, table)
        fixed = self.fixed(table)
        out = {}
        for resource in ("size_bytes", "latency_ms") if table is not None else ("size_bytes",):
            out[resource] = [
                {
                    resource: sol.totals[resource] + fixed[resource],
                    "predicted_error": math.sqrt(sol.error),
                    "plan": {
                        str(s): sg.options[i].precision
                        for g, sg, i in zip(self.groups, solver_groups, sol.choice, strict=True)
                        for s in g.sites
                    },
                }
                for sol in pareto_front(solver_groups, resource)
            ]
        return out


__all__ = ["ErrorTable", "PlanSolution", "PlanningProblem", "WeightGroup", "gains_of"]


def _site_number(key) -> int | None:
    """A plan key as a site index: an int, or a string of digits (JSON keys); None for anything else."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key)
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key)
    return None


def _check_weights(ops, groups, source: str) -> None:
    """Refuse weights no plan can quantize meaningfully: empty ones (a zero-size layer) and, for the weights
    that get quantized, non-finite values (the scale of an int or fp16 copy would be inf or NaN)."""
    for op in ops:
        for w in op.weights:
            if w.size == 0:
                raise TQSError(
                    f"{source}: weight {w.id} of site {op.index} ({'+'.join(op.kinds)}) is empty "
                    f"(shape {list(w.shape)}): the model has a zero-size layer; fix the export"
                )
    for g in groups:
        bad = int(np.size(g.weight) - np.count_nonzero(np.isfinite(g.weight)))
        if bad:
            raise TQSError(
                f"{source}: weight {g.name} (site(s) {', '.join(map(str, g.sites))}) holds {bad} NaN or "
                "infinite value(s): it cannot be quantized; fix the exported weights"
            )
