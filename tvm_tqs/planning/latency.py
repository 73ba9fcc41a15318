"""The per-(site, precision) latency table of a planning problem, measured through a runner."""

from __future__ import annotations

from ..errors import TQSError


def site_latency_table(problem, runner=None, cache=None, progress=None):
    """Measure (or look up) every site's kernel at every offered precision; returns (table, runner).

    Parameters
    ----------
    problem : PlanningProblem
    runner : str or Runner, optional
        Default "local" when the target runs on this host.
    cache : LatencyCache, optional
        Default: the on-disk cache.
    progress : callable(done, total, what), optional
    """
    import tvm

    from ..latency import LatencyCache, build_table, make_runner, site_requests
    from ..latency.jobs import KernelJob
    from ..passes.quantize import site_kernel
    from ..targets.build import schedule

    target = problem.target
    if runner is None:
        if not target.runnable_here:
            raise TQSError(
                f"a latency budget for target '{target.name}' needs a runner on that device: "
                "runner='rpc://HOST:PORT/KEY' (TVM RPC tracker) or 'offline:DIR' (measurement bundle)"
            )
        runner = "local"
    if isinstance(runner, str):
        runner = make_runner(runner)
    options = {s: g.options for g in problem.groups for s in g.sites}

    def kernel_for(op, precision):
        if op.index not in options:
            return None
        kern = site_kernel(problem.analysis, op.index, precision, target)
        if kern is None:
            return None
        return KernelJob.create(kern.func, target, name=kern.name, entry=kern.name, precision=precision)

    def scheduled(func, tvm_target):  # the fp32 sites as the built model runs them
        return schedule(tvm.IRModule({"main": func}), tvm_target)["main"]

    requests = site_requests(
        problem.fused,
        target,
        precisions=lambda op: options.get(op.index, ("fp32",)),
        kernel_for=kernel_for,
        schedule=scheduled,
    )
    table = build_table(
        requests, runner, cache=cache if cache is not None else LatencyCache(), progress=progress
    )
    return table, runner
