"""GPU targets (CUDA, OpenCL): their kernel sets and the schedule of every non-kernel PrimFunc.

>>> ks = kernel_set(get_target("cuda/jetson-orin"))      # __dp4a kernels, sm_87
>>> mod = schedule(quantized_mod, get_target("cuda/jetson-orin"))   # dlight for the rest

The quantize pass inserts kernels that are already bound to GPU threads (`kernels.schedule`); the
graph's other PrimFuncs (norms, gates, reshapes, fp32 matmuls) get dlight's default GPU rules. A
PrimFunc left without a thread binding would be compiled for the host and run there, silently:
`unbound_functions` finds them and `schedule` refuses to return one.
"""

from __future__ import annotations

import tvm

from .kernels import CUDA_DP4A, OPENCL_INT, KernelSet
from .registry import TargetSpec, get_target

__all__ = ["kernel_set", "schedule", "unbound_functions"]


def kernel_set(target: str | TargetSpec) -> KernelSet:
    """``cuda-dp4a`` for CUDA targets, ``opencl-int`` for OpenCL ones, compiled for the target's dict."""
    spec = get_target(target)
    if spec.kind == "cuda":
        return KernelSet(CUDA_DP4A).with_target(spec.tvm_target)
    if spec.kind == "opencl":
        return KernelSet(OPENCL_INT).with_target(spec.tvm_target)
    raise ValueError(f"target '{spec.name}' is not a GPU target (kind {spec.kind})")


def _unbound_blocks(func: tvm.tirx.PrimFunc) -> list[str]:
    """Blocks of ``func`` under no GPU thread binding (their own loops or an enclosing block's)."""
    sch = tvm.s_tir.Schedule(func)
    left = []

    def walk(block, bound: bool) -> None:
        for child in sch.get_child_blocks(block):
            here = bound or any(sch.get(lp).thread_binding is not None for lp in sch.get_loops(child))
            if not here and not sch.get_child_blocks(child):
                left.append(sch.get(child).name_hint)
            walk(child, here)

    try:
        root = sch.get_sblock("root")
    except Exception:  # noqa: BLE001 - no root block (already lowered TIR): read the printed form
        return [] if '"blockIdx.' in func.script() else ["<body>"]
    walk(root, False)
    return left


def unbound_functions(mod: tvm.IRModule) -> list[str]:
    """Names of the PrimFuncs in ``mod`` with a block under no GPU thread binding (it would run on the host)."""
    return sorted(
        gv.name_hint
        for gv, f in mod.functions.items()
        if isinstance(f, tvm.tirx.PrimFunc) and _unbound_blocks(f)
    )


def schedule(mod: tvm.IRModule, target: str | TargetSpec) -> tvm.IRModule:
    """dlight's default GPU rules on every PrimFunc that is not a scheduled kernel.

    Raises ValueError naming the functions that still have no thread binding afterwards.
    """
    from tvm.s_tir import dlight as dl

    from .build import is_kernel

    spec = get_target(target)
    rest = {gv: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc) and not is_kernel(f)}
    rules = dl.ApplyDefaultSchedule(
        dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()
    )
    with spec.target():
        done = rules(tvm.IRModule({gv.name_hint: f for gv, f in rest.items()}))
    mod = mod.clone()
    for gv in rest:
        mod[gv] = done[gv.name_hint]
    left = unbound_functions(mod)
    if left:
        raise ValueError(
            f"{len(left)} PrimFunc(s) have no GPU schedule for '{spec.name}' and would run on the host: "
            + ", ".join(left[:8])
        )
    return mod
