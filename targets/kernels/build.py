"""Public builders of the integer and fp32 GEMM kernels (dense and im2col conv1d): one PrimFunc per site.

Stages (names are the TIR block names):

``x_amax_part``/``x_amax``/``x_scale`` (dynamic mode: per-row absmax and scale) -> ``x_q`` (quantize
+ pad to the register tile, uint8 + 128 on VNNI; im2col for conv1d) -> ``acc`` (int32 GEMM,
tensorized; int4: ``acc`` per K-group and ``acc_f`` = fp32 sum over groups of ``scale * int32``) ->
``out`` (rescale, bias, activation, layout). Computes: `compute_int`, `compute_fp32`, `epilogue`;
row sources: `sources`; register tiles: `tiling`; schedules: `schedule`.
"""

from __future__ import annotations

import tvm
from tvm import te

from ..intrin import arm as _arm_intrin  # noqa: F401  (registers the aarch64 intrinsics)
from ..intrin import gpu as _gpu_intrin  # noqa: F401  (registers the CUDA intrinsics)
from ..intrin import x86 as _x86_intrin  # noqa: F401  (registers the x86 intrinsics)
from .compute_fp32 import fp32_compute
from .compute_int import int_compute
from .config import ActQuant, Conv1dSpec, Epilogue, Isa, Kernel, TensorSpec, Tiling
from .packing import check_group_size
from .schedule import act_free, schedule_fp32, schedule_int
from .sources import Source, check_lead, conv_source, dense_source
from .tiling import PARALLEL_MIN_MACS, choose_tiling, fp32_tiling

__all__ = [
    "PARALLEL_MIN_MACS",
    "act_free",
    "check_lead",
    "choose_tiling",
    "conv1d_fp32",
    "conv1d_int",
    "dense_fp32",
    "dense_int",
]


def _finish(name: str, inputs, consts, out, schedule_fn, target: dict, tiling: Tiling | None) -> Kernel:
    """Create the PrimFunc ``(*inputs, *consts, out)``, schedule it and describe its parameters."""
    func = te.create_prim_func([*inputs, *consts, out])
    func = func.with_attr("global_symbol", name)
    sch = tvm.s_tir.Schedule(func)
    schedule_fn(sch)
    func = sch.mod["main"].with_attr("global_symbol", name).with_attr("target", tvm.target.Target(target))
    func = func.with_attr("op_pattern", 8)  # kOpaque: a later FuseOps must not fuse into a scheduled kernel
    func = func.with_attr("tirx.is_scheduled", True)  # dlight (Relax's GPU pipeline) must leave it alone

    def spec(t):
        return TensorSpec(t.op.name, tuple(int(d) for d in t.shape), str(t.dtype))

    return Kernel(
        name=name,
        func=func,
        inputs=tuple(spec(t) for t in inputs),
        consts=tuple(spec(t) for t in consts),
        output=spec(out),
        tiling=tiling,
    )


def _check_int(isa: Isa, bits: int, act: ActQuant, epi: Epilogue, group: int | None) -> None:
    if bits not in (8, 4):
        raise ValueError(f"bits must be 8 or 4, got {bits}")
    if epi.out_dtype == "int32" and (bits != 8 or act.mode != "int8"):
        raise ValueError("an int32 epilogue needs int8 weights and ActQuant('int8') inputs")
    if bits == 4:
        check_group_size(isa, group)


def _int_kernel(
    isa: Isa,
    bits: int,
    src: Source,
    n: int,
    group_size: int,
    act: ActQuant,
    epi: Epilogue,
    til: Tiling,
    name: str,
) -> Kernel:
    inputs, consts, out = int_compute(isa, bits, src, n, group_size, act, epi, til)
    intrin = isa.intrin_int8 if bits == 8 else isa.intrin_int4
    return _finish(
        name, inputs, consts, out, lambda s: schedule_int(s, isa, bits, til, src, intrin), isa.target, til
    )


def _fp32_kernel(isa: Isa, src: Source, n: int, epi: Epilogue, wdtype: str, til: Tiling, name: str) -> Kernel:
    inputs, consts, out = fp32_compute(isa, src, n, epi, wdtype)
    return _finish(name, inputs, consts, out, lambda s: schedule_fp32(s, isa, til, src), isa.target, til)


def dense_int(
    isa: Isa,
    bits: int,
    m: int,
    k: int,
    n: int,
    epilogue: Epilogue,
    act: ActQuant,
    group_size: int,
    name: str,
    lead: tuple[int, ...] | None = None,
) -> Kernel:
    """``out[M, N]`` (or ``[*lead, N]``) of ``x[M, K]`` and ``bits``-bit packed weights."""
    _check_int(isa, bits, act, epilogue, group_size)
    til = choose_tiling(isa, 1, m, n, k)
    src = dense_source(m, k, n, "int8" if act.mode == "int8" else "float32", check_lead(m, lead))
    return _int_kernel(isa, bits, src, n, group_size, act, epilogue, til, name)


def conv1d_int(
    isa: Isa, bits: int, spec: Conv1dSpec, epilogue: Epilogue, act: ActQuant, group_size: int, name: str
) -> Kernel:
    """conv1d of fp32 activations and ``bits``-bit packed weights, as an im2col GEMM."""
    if act.mode == "int8":
        raise ValueError("conv1d takes fp32 activations: ActQuant('dynamic') or ActQuant('static')")
    _check_int(isa, bits, act, epilogue, group_size)
    til = choose_tiling(isa, spec.batch, spec.out_width, spec.out_channels, spec.reduction)
    return _int_kernel(isa, bits, conv_source(spec), spec.out_channels, group_size, act, epilogue, til, name)


def dense_fp32(
    isa: Isa,
    m: int,
    k: int,
    n: int,
    epilogue: Epilogue,
    name: str,
    wdtype: str = "float32",
    lead: tuple[int, ...] | None = None,
) -> Kernel:
    """fp32 ``out[M, N]`` (or ``[*lead, N]``) of ``x[M, K]`` and packed fp32 (or fp16) weights."""
    til = fp32_tiling(isa, 1, m, n, k)
    src = dense_source(m, k, n, "float32", check_lead(m, lead))
    return _fp32_kernel(isa, src, n, epilogue, wdtype, til, name)


def conv1d_fp32(isa: Isa, spec: Conv1dSpec, epilogue: Epilogue, name: str, wdtype: str = "float32") -> Kernel:
    """fp32 conv1d (fp32 or fp16 weights), as an im2col GEMM."""
    til = fp32_tiling(isa, spec.batch, spec.out_width, spec.out_channels, spec.reduction)
    # no x_t transpose: the fp32 kernels broadcast one input value at a time
    return _fp32_kernel(
        isa, conv_source(spec, transpose=False), spec.out_channels, epilogue, wdtype, til, name
    )
