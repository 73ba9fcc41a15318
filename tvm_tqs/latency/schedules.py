"""Schedule hooks for kernel jobs (`jobs.Schedule`): which code of a site is built and measured.

A hook takes a site's PrimFunc and the target and returns the PrimFunc to build. `target_schedule` gives
what `targets.build.build` deploys; `loop_order_schedule` only the CPU reduction loop order;
`gpu_schedule` / `bind_threads` bind GPU kernels to threads (dlight), without which a CUDA or OpenCL
build compiles the PrimFunc for the host, where it would run silently.
"""

from __future__ import annotations

import tvm
from tvm import tirx

from tvm_tqs.targets.registry import TargetSpec

from .devices import is_gpu

__all__ = ["bind_threads", "gpu_schedule", "loop_order_schedule", "target_schedule"]


def loop_order_schedule(func: tirx.PrimFunc, spec: TargetSpec) -> tirx.PrimFunc:
    """Schedule hook applying `tvm_tqs.passes.reduction_loop_order.ReductionLoopOrder` to one kernel.

    Use it when the deployed model is built with that pass (as the compiled rollout is), so that the
    kernels measured are the kernels deployed. CPU targets only; other kernels are returned unchanged
    (GPU targets: `gpu_schedule`, or `target_schedule` for what `targets.build.build` deploys).
    """
    if spec.kind not in ("x86", "arm_cpu"):
        return func
    from tvm_tqs.passes.reduction_loop_order import ReductionLoopOrder

    return ReductionLoopOrder()(tvm.IRModule({"main": func}))["main"]


def bind_threads(mod: tvm.IRModule, spec: TargetSpec) -> tvm.IRModule:
    """For a GPU target, `mod` with dlight's default GPU schedule (`targets.gpu.schedule`) on every
    PrimFunc that has no thread binding; bound ones (the GPU kernel sets' kernels, hand-scheduled code)
    are kept as they are. CPU targets: `mod` unchanged.

    Raises ValueError naming the PrimFuncs that are still unbound (they would run on the host).
    """
    if not is_gpu(spec):
        return mod
    from tvm_tqs.targets import gpu

    unbound = set(gpu.unbound_functions(mod))
    if not unbound:
        return mod
    # Only the unbound functions go through dlight: an already-bound PrimFunc without the
    # "tirx.is_scheduled" mark would otherwise be scheduled a second time.
    todo = {gv: f for gv, f in mod.functions.items() if gv.name_hint in unbound}
    try:
        done = gpu.schedule(tvm.IRModule(todo), spec)
    except Exception as err:
        if isinstance(err, ValueError) and "would run on the host" in str(err):
            raise
        # dlight itself refused (e.g. a PrimFunc without blocks): say what that means here, in one line.
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"dlight cannot schedule {', '.join(sorted(unbound))} for '{spec.name}' ({first}); unbound, "
            "it would run on the host"
        ) from err
    out = mod.clone()
    for gv in todo:
        out[gv] = done[gv.name_hint]
    return out


def gpu_schedule(func: tirx.PrimFunc, spec: TargetSpec) -> tirx.PrimFunc:
    """Schedule hook binding one kernel to GPU threads (`bind_threads`) on GPU targets; CPU targets get
    `func` unchanged. `KernelJob.create` applies it to GPU jobs in any case; as a hook it lets a caller
    see (or replace) the bound code before the job is made."""
    return bind_threads(tvm.IRModule({"main": func}), spec)["main"]


def target_schedule(func: tirx.PrimFunc, spec: TargetSpec) -> tirx.PrimFunc:
    """Schedule hook giving one site the schedule `targets.build.build` gives it in the deployed model
    (`targets.build.schedule`): reduction loop order, vectorized elementwise code and fast math on CPU
    targets, dlight on GPU targets. Use it so that the kernels measured are the kernels that ship."""
    from tvm_tqs.targets.build import schedule

    return schedule(tvm.IRModule({"main": func}), spec)["main"]
