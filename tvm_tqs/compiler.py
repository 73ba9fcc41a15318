"""`tvm_tqs.compile`: model + target + budget -> a per-fused-op precision plan and a built artifact.

Orchestration only: every step lives in its own room.

    load + fuse                 the fp32 fused graph and its FusedOp table (the sites)
    quantizable_sites           which sites have a weight the quantize pass can lower, and that weight
    score (TQS, weight mode)    gain G_k per site                      [skipped for forced plans]
    error model                 e_g^2 per (weight group, precision)   [docs/error_model.md]
    latency table               per (site, precision), measured through a runner [latency budgets]
    solve                       multiple-choice knapsack under the budget
    quantize + build            the artifact; for latency budgets its end-to-end latency is measured and,
                                while over budget, the table is corrected and the plan re-solved
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from .artifact import CompiledModel
from .error_model import BITS, INT4_GROUP, activation_error, crest_factor, group_error2, weight_error
from .errors import TQSError
from .frontend.load import ModelLike, bind_shapes, read_onnx
from .plan import Plan, SitePlan
from .quantizers import rtn
from .solver import Budget, Group, Option, solve

Progress = Callable[[int, int, str], None]
# Activation bits per precision for BOPs: int8/int4 kernels quantize activations to int8; fp16 is
# weight-only (fp32 arithmetic) on CPUs.
_ACT_BITS = {"fp32": 32, "fp16": 32, "int8": 8, "int4": 8}
PRECISION_ORDER = ("fp32", "fp16", "int8", "int4")


@dataclass(frozen=True)
class _Group:
    """Sites that read one quantizable weight: decided together."""

    name: str
    sites: tuple[int, ...]
    weight: np.ndarray
    channel_axis: int
    options: tuple[str, ...]

    def storage_bytes(self, precision: str, group_size: int) -> float:
        n = self.weight.shape[self.channel_axis]
        k = self.weight.size // n
        if precision == "int4":
            return self.weight.size * 0.5 + n * math.ceil(k / group_size) * 4
        if precision == "int8":
            return self.weight.size + n * 4
        return self.weight.size * BITS[precision] / 8


def _fixed_float_bytes(ops, quantizable_ids: set[str]) -> float:
    seen: dict[str, float] = {}
    for op in ops:
        for w in op.weights:
            if w.id not in quantizable_ids:
                seen[w.id] = w.nbytes
    return float(sum(seen.values()))


def _model_feeds(mod, spec, windows: np.ndarray) -> list[np.ndarray]:
    """`main`'s inputs for canonical `windows` (one chunk of the module's batch): the window in the model's
    layout and dtype, the auxiliary inputs at their data-free values."""
    from .frontend.load import model_signatures
    from .rollout import io_names

    names, outputs = io_names(mod)
    inputs, _ = model_signatures(mod, outputs)
    feeds = spec.default_aux(inputs, len(windows))
    feeds[spec.window_input] = spec.to_model_window(windows, inputs[spec.window_input][1])
    return [feeds[n] for n in names]


def _activation_crests(fused, spec, sites: list[int], contexts: np.ndarray) -> dict[int, float]:
    """Crest factor of each site's input over data-free contexts (run in chunks of the module's batch)."""
    from .graph import expose_site_inputs
    from .rollout import _MainIO
    from .runtime import Runner, build

    if not sites:
        return {}
    batch = _MainIO(fused, spec).batch
    runner = Runner(build(expose_site_inputs(fused, sites)))
    captured: dict[int, list[np.ndarray]] = {s: [] for s in sites}
    for start in range(0, len(contexts), batch):
        chunk = contexts[start : start + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch - real, axis=0)])
        outs = runner(*_model_feeds(fused, spec, chunk.astype(np.float32)))
        tail = outs[len(outs) - len(sites) :]
        for s, x in zip(sites, tail, strict=True):
            # Padding rows would weigh context 0 in the crest (plans changed with compile's batch=).
            captured[s].append(x[:real] if real < batch and x.shape[0] == batch else x)
    return {
        s: crest_factor(np.concatenate([x.reshape(-1, x.shape[-1]) for x in xs]))
        for s, xs in captured.items()
    }


def _resolve_plan(
    plan: Mapping | None, uniform: str | None, groups: list[_Group], n_sites: int
) -> dict[int, str]:
    if plan is not None and uniform is not None:
        raise TQSError("compile() takes either plan= or uniform=, not both")
    if uniform is not None:
        if uniform not in PRECISION_ORDER:
            raise TQSError(f"uniform precision must be one of {', '.join(PRECISION_ORDER)}, got {uniform!r}")
        return {s: uniform if uniform in g.options else "fp32" for g in groups for s in g.sites}
    out = {}
    for key, prec in dict(plan).items():
        site = int(key)
        if not 0 <= site < n_sites:
            raise TQSError(f"plan names site {key}, but the model has sites 0..{n_sites - 1}")
        if prec not in PRECISION_ORDER:
            raise TQSError(f"plan gives site {key} precision {prec!r}; valid: {', '.join(PRECISION_ORDER)}")
        out[site] = prec
    return out


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
    quantizer: Callable = rtn,
    group_size: int = INT4_GROUP,
    solver: str = "auto",
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
    quantizer, group_size
        Weight quantizer (`tvm_tqs.quantizers.rtn`) and int4 group size.
    solver : {"auto", "exact", "greedy"}
    max_rounds : int
        Solve-build-measure rounds for a latency budget.
    latency_cache : LatencyCache, optional
        Default: the on-disk cache (``$TVM_TQS_LATENCY_CACHE`` or ``~/.cache/tvm_tqs/latency.jsonl``).
    progress : callable(done, total, what), optional
    """
    from .frontend.load import (
        as_rollout_spec,
        import_onnx,
        model_signatures,
        require_rollout_spec,
        rollout_spec_of,
    )
    from .graph import fused_ops
    from .passes.fuse import fuse_pipeline
    from .passes.quantize import kernel_set_for, quantizable_sites
    from .rollout import io_names
    from .solver import parse_budget
    from .targets.registry import get_target

    spec = get_target(target)
    kernel_set_for(spec)  # before any scoring: a target without quantized lowering fails here, by name
    if plan is None and uniform is None and budget is None:
        raise TQSError("compile() needs a budget (or a forced plan= / uniform= precision)")
    proto, source = read_onnx(model)
    given_rollout = as_rollout_spec(rollout)
    mod = import_onnx(proto, bind_shapes(proto, input_shapes, batch), source, rollout=given_rollout)
    rollout = rollout_spec_of(mod)
    fused = fuse_pipeline()(mod)
    ops = fused_ops(fused)
    weighted = quantizable_sites(mod)  # {site: SiteWeight} for the sites the quantize pass can lower

    groups = _groups(ops, weighted, spec)
    quantizable_ids = {g.name for g in groups}
    fixed_bytes = _fixed_float_bytes(ops, quantizable_ids)
    grouped_sites = {s for g in groups for s in g.sites}
    fixed_bops = float(sum(op.macs * 32 * 32 for op in ops if op.index not in grouped_sites))
    fp32_choice = {s: "fp32" for g in groups for s in g.sites}
    fp32_totals = _totals(groups, ops, fp32_choice, fixed_bytes, fixed_bops, group_size, None)

    if isinstance(budget, str):
        budget = parse_budget(budget, size_ref=fp32_totals["size_bytes"], bops_ref=fp32_totals["bops"])
    trace: list[dict] = []
    report = tqs_report
    gains: dict[int, float] = {}
    table = None
    if plan is not None or uniform is not None:
        precisions = _resolve_plan(plan, uniform, groups, len(ops))
        method, optimal = ("forced" if plan is not None else f"uniform-{uniform}"), False
        errors2 = {}
    else:
        rollout = require_rollout_spec(mod, source)
        if report is None:
            from .tqs import score

            report = score(
                proto,
                horizon=horizon,
                seeds=seeds,
                mode="weight",
                contexts=contexts,
                progress=progress,
                input_shapes=input_shapes,
                rollout=rollout,
            )
        gains = {
            s.site: (s.gain if s.status == "ok" else (0.0 if s.status == "no effect" else math.inf))
            for s in report.sites
        }
        errors2 = _group_errors(groups, gains, fused, rollout, contexts, seeds, quantizer, group_size)
        if budget.latency_ms is not None or runner is not None:
            table, runner = _latency_table(fused, mod, spec, groups, runner, latency_cache, progress)
        precisions, method, optimal = _solve(
            groups, ops, errors2, budget, fixed_bytes, fixed_bops, table, group_size, solver
        )

    from .passes.quantize import quantize
    from .targets.build import build

    measuring = budget is not None and budget.latency_ms is not None and runner is not None
    inputs = _example_inputs(mod) if measuring else None
    observations = []
    for round_ in range(max_rounds):
        result = quantize(mod, precisions, spec, quantizer, group_size=group_size)
        executable = build(result.mod, spec)
        entry = {"round": round_, "plan": {str(k): v for k, v in sorted(result.plan.items()) if v != "fp32"}}
        if table is not None:
            entry["predicted_ms"] = table.total_ms(result.plan)
        if measuring:
            from .latency import Observation, fit_correction, measure_model

            m = measure_model(executable, runner, target=spec, inputs=inputs)
            if not m.ok:
                raise TQSError(f"measuring the compiled model through {m.runner} failed: {m.error}")
            measured = m.median_ms
            entry.update(measured_ms=measured, met=measured <= budget.latency_ms)
            observations.append(
                Observation(dict(result.plan), measured, table.total_ms(result.plan, raw=True))
            )
        trace.append(entry)
        if not measuring or entry["met"] or round_ + 1 == max_rounds:
            break
        # Over budget as measured: correct the per-site costs with what the whole model really took.
        table = table.corrected(fit_correction(table, observations))
        precisions, method, optimal = _solve(
            groups, ops, errors2, budget, fixed_bytes, fixed_bops, table, group_size, solver
        )

    _, output_names = io_names(mod)
    inputs, _ = model_signatures(mod, output_names)
    outputs = output_names
    pareto = None
    if errors2:
        pareto = _pareto(groups, ops, errors2, fixed_bytes, fixed_bops, table, group_size)
    applied = result.plan
    totals = _totals(groups, ops, applied, fixed_bytes, fixed_bops, group_size, table)
    site_plans = _site_plans(ops, groups, applied, result, report, errors2, gains, table, group_size)
    total_error2 = sum(errors2.get(g.name, {}).get(applied[g.sites[0]], 0.0) for g in groups)
    the_plan = Plan(
        sites=tuple(site_plans),
        budget={} if budget is None else {k: v for k, v in vars(budget).items() if v is not None},
        totals=totals,
        fp32_totals=fp32_totals,
        predicted_error=math.sqrt(total_error2) if errors2 else float("nan"),
        method=method,
        optimal=optimal,
    )
    return CompiledModel(
        plan=the_plan,
        target=spec,
        rollout_spec=rollout,
        executable=executable,
        quantize_report=result.to_dict(),
        tqs=report,
        latency=None if table is None else table.to_dict(),
        trace=tuple(trace),
        pareto=pareto,
        source=source,
        inputs=tuple((n, list(s), d) for n, (s, d) in inputs.items()),
        outputs=tuple(outputs),
    )


def _example_inputs(mod) -> list[np.ndarray]:
    """Seeded inputs of `main`'s (static) parameter shapes, for end-to-end latency measurement."""
    rng = np.random.default_rng(0)
    out = []
    for p in mod["main"].params:
        shape = tuple(int(d) for d in p.ty.shape.values)
        out.append(rng.standard_normal(shape).astype(str(p.ty.dtype)))
    return out


def _groups(ops, weighted: Mapping, spec) -> list[_Group]:
    """One group per distinct quantizable weight, with the precisions the target offers its op kind."""
    by_digest: dict[str, list[int]] = {}
    first: dict[str, object] = {}
    for site, sw in sorted(weighted.items()):
        by_digest.setdefault(sw.digest, []).append(site)
        first.setdefault(sw.digest, sw)
    ids = {w.digest: w.id for op in ops for w in op.weights}
    groups = []
    for digest, sites in by_digest.items():
        sw = first[digest]
        kind = ops[sites[0]].anchor
        offered = spec.precisions.get(kind, ("fp32",))
        options = tuple(p for p in PRECISION_ORDER if p in offered)
        groups.append(
            _Group(ids.get(digest, f"site{sites[0]}"), tuple(sites), sw.weight, sw.channel_axis, options)
        )
    return groups


def _group_errors(groups, gains, fused, rollout, contexts, seeds, quantizer, group_size):
    from .contexts import SyntheticContexts

    ctx = contexts if contexts is not None else SyntheticContexts().make(rollout, max(seeds, 1), seed=0)
    crests = _activation_crests(fused, rollout, sorted({s for g in groups for s in g.sites}), ctx)
    out = {}
    for g in groups:
        site_gains = [gains.get(s, math.inf) for s in g.sites]
        out[g.name] = {}
        for p in g.options:
            r_w = weight_error(g.weight, g.channel_axis, p, quantizer, group_size)
            r_a = float(np.sqrt(np.mean([activation_error(crests[s], p) ** 2 for s in g.sites])))
            out[g.name][p] = 0.0 if p == "fp32" else group_error2(site_gains, r_w, r_a)
    return out


def _totals(groups, ops, precisions: Mapping[int, str], fixed_bytes, fixed_bops, group_size, table) -> dict:
    size = fixed_bytes
    bit_elements = elements = 0.0
    bops = fixed_bops
    for g in groups:
        p = precisions.get(g.sites[0], "fp32")
        size += g.storage_bytes(p, group_size)
        bit_elements += g.weight.size * BITS[p]
        elements += g.weight.size
        bops += sum(ops[s].macs for s in g.sites) * BITS[p] * _ACT_BITS[p]
    totals = {"size_bytes": size, "avg_bits": bit_elements / elements if elements else 32.0, "bops": bops}
    if table is not None:
        totals["latency_ms"] = table.total_ms({op.index: precisions.get(op.index, "fp32") for op in ops})
    return totals


def _solver_groups(groups, ops, errors2, table, group_size) -> list[Group]:
    """The knapsack's view: per weight group, its precisions with predicted error and resources."""
    solver_groups = []
    for g in groups:
        options = []
        for p in g.options:
            if not math.isfinite(errors2[g.name][p]):
                continue  # a site TQS could not score is kept out of quantization, not guessed at
            lat = sum(table.latency_ms(s, p) for s in g.sites) if table is not None else 0.0
            options.append(
                Option(
                    p,
                    error=errors2[g.name][p],
                    size_bytes=g.storage_bytes(p, group_size),
                    bit_elements=g.weight.size * BITS[p],
                    bops=sum(ops[s].macs for s in g.sites) * BITS[p] * _ACT_BITS[p],
                    latency_ms=lat,
                )
            )
        solver_groups.append(Group(g.name, tuple(options), float(g.weight.size)))
    return solver_groups


def _fixed(groups, ops, fixed_bytes, fixed_bops, table) -> dict[str, float]:
    """What lies outside the decision: float constants, unquantizable sites' BOPs and latency."""
    grouped = {s for g in groups for s in g.sites}
    fixed_ms = 0.0
    if table is not None:
        fixed_ms = sum(table.latency_ms(op.index, "fp32") for op in ops if op.index not in grouped)
    return {"size_bytes": fixed_bytes, "bops": fixed_bops, "latency_ms": fixed_ms}


def _solve(groups, ops, errors2, budget: Budget, fixed_bytes, fixed_bops, table, group_size, method):
    """Budget minus what no decision can change, then the knapsack; errors name the whole model's totals."""
    if budget.latency_ms is not None and table is None:
        raise TQSError("a latency budget needs a latency table: give a runner")
    if not groups:
        raise TQSError("the model has no site the quantize pass can lower; nothing to plan")
    solver_groups = _solver_groups(groups, ops, errors2, table, group_size)
    fixed = _fixed(groups, ops, fixed_bytes, fixed_bops, table)
    solution = solve(solver_groups, budget, method, fixed=fixed)
    precisions = {
        s: sg.options[i].precision
        for g, sg, i in zip(groups, solver_groups, solution.choice, strict=True)
        for s in g.sites
    }
    return precisions, solution.method, solution.optimal


def _pareto(groups, ops, errors2, fixed_bytes, fixed_bops, table, group_size) -> dict[str, list[dict]]:
    """Predicted error vs whole-model size (and latency, with a table): the non-dominated plans."""
    from .solver import pareto_front

    solver_groups = _solver_groups(groups, ops, errors2, table, group_size)
    fixed = _fixed(groups, ops, fixed_bytes, fixed_bops, table)
    out = {}
    for resource in ("size_bytes", "latency_ms") if table is not None else ("size_bytes",):
        out[resource] = [
            {
                resource: sol.totals[resource] + fixed[resource],
                "predicted_error": math.sqrt(sol.error),
                "plan": {
                    str(s): sg.options[i].precision
                    for g, sg, i in zip(groups, solver_groups, sol.choice, strict=True)
                    for s in g.sites
                },
            }
            for sol in pareto_front(solver_groups, resource)
        ]
    return out


def _latency_table(fused, mod, spec, groups, runner, cache, progress):
    import tvm

    from .latency import LatencyCache, build_table, make_runner, site_requests
    from .passes.quantize import site_kernel

    if runner is None:
        if not spec.runnable_here:
            raise TQSError(
                f"a latency budget for target '{spec.name}' needs a runner on that device: "
                "runner='rpc://HOST:PORT/KEY' (TVM RPC tracker) or 'offline:DIR' (measurement bundle)"
            )
        runner = "local"
    if isinstance(runner, str):
        runner = make_runner(runner)
    from .targets.build import schedule

    options = {s: g.options for g in groups for s in g.sites}

    def kernel_for(op, precision):
        return site_kernel(mod, op.index, precision, spec) if op.index in options else None

    def scheduled(func, target):  # the fp32 sites as the built model runs them
        return schedule(tvm.IRModule({"main": func}), target)["main"]

    requests = site_requests(
        fused,
        spec,
        precisions=lambda op: options.get(op.index, ("fp32",)),
        kernel_for=kernel_for,
        schedule=scheduled,
    )
    cache = cache if cache is not None else LatencyCache()
    table = build_table(requests, runner, cache=cache, progress=progress)
    return table, runner


def _site_plans(ops, groups, applied, result, report, errors2, gains, table, group_size) -> list[SitePlan]:
    group_of = {s: g for g in groups for s in g.sites}
    reports = {s.index: s for s in result.sites}
    scores = {s.site: s for s in report.sites} if report is not None else {}
    plans = []
    for op in ops:
        g = group_of.get(op.index)
        p = applied.get(op.index, "fp32")
        share = 0.0
        if g is not None and errors2:
            e2 = errors2[g.name][p]
            gsum = sum(gains.get(s, 0.0) for s in g.sites) or 1.0
            share = e2 * gains.get(op.index, 0.0) / gsum if math.isfinite(gsum) else e2 / len(g.sites)
        first = g is None or g.sites[0] == op.index
        size = g.storage_bytes(p, group_size) if g is not None and first else 0.0
        entry = table.entry(op.index, p) if table is not None else None
        sc = scores.get(op.index)
        rep = reports.get(op.index)
        plans.append(
            SitePlan(
                site=op.index,
                name=op.name,
                kinds=op.kinds,
                anchor=op.anchor,
                precision=p,
                options=g.options if g is not None else ("fp32",),
                group=g.name if g is not None and len(g.sites) > 1 else None,
                tqs=None if sc is None else sc.tqs,
                gain=None if sc is None else sc.gain,
                error_share=share,
                size_bytes=size,
                bops=float(op.macs * BITS[p] * _ACT_BITS[p]),
                latency_ms=None if entry is None else entry.latency_ms,
                latency_source=None if entry is None else entry.source,
                kernel=None if rep is None else rep.kernel,
                reason=None if rep is None else rep.reason,
            )
        )
    return plans
