"""The instruction-set flavours the kernel layer targets: five CPU, two GPU (see docs/kernels.md)."""

from __future__ import annotations

from .config import Isa

__all__ = ["ARM_DOTPROD", "ARM_I8MM", "ARM_NEON", "CUDA_DP4A", "ISAS", "OPENCL_INT", "X86_AVX2", "X86_VNNI"]

_AARCH64 = "aarch64-linux-gnu"

X86_VNNI = Isa(
    name="x86-avx512-vnni",
    family="bcast",
    nt=16,
    kt=4,
    act_dtype="uint8",
    act_zero_point=128,
    intrin_int8="tqs_vnni_u8s8s32_16x4",
    intrin_int4="tqs_vnni_u8s4s32_16x4",
    fp32_lanes=16,
    vector_bits=512,
    target={"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "cascadelake"},
    max_acc=16,
    description="vpdpbusd zmm (u8 activations + 128, s8 weights, weight-sum correction)",
)

X86_AVX2 = Isa(
    name="x86-avx2",
    family="bcast",
    nt=8,
    kt=4,
    act_dtype="int8",
    act_zero_point=0,
    intrin_int8="tqs_avx2_s8s8s32_8x4",
    intrin_int4="tqs_avx2_s8s4s32_8x4",
    fp32_lanes=8,
    vector_bits=256,
    target={"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"},
    max_acc=8,
    description="vpsignb + vpmaddubsw + vpmaddwd ymm (exact for weights in [-127, 127])",
)

ARM_NEON = Isa(
    name="aarch64-neon",
    family="rowdot",
    nt=1,
    kt=16,
    act_dtype="int8",
    act_zero_point=0,
    intrin_int8="tqs_neon_s8s8s32_rowdot16",
    intrin_int4="tqs_neon_s8s4s32_rowdot16",
    fp32_lanes=16,
    vector_bits=128,
    target={"kind": "llvm", "mtriple": _AARCH64, "mcpu": "cortex-a72", "mattr": ["+neon"]},
    max_acc=16,
    description="smull + smlal2 + sadalp over 16-byte rows (cortex-a72, no dotprod)",
)

ARM_DOTPROD = Isa(
    name="aarch64-dotprod",
    family="bcast",
    nt=4,
    kt=4,
    act_dtype="int8",
    act_zero_point=0,
    intrin_int8="tqs_sdot_s8s8s32_4x4",
    intrin_int4="tqs_sdot_s8s4s32_4x4",
    fp32_lanes=16,
    vector_bits=128,
    target={"kind": "llvm", "mtriple": _AARCH64, "mcpu": "cortex-a76", "mattr": ["+neon", "+dotprod"]},
    max_acc=16,
    description="sdot v.4s (cortex-a76 / neoverse-n1)",
)

ARM_I8MM = Isa(
    name="aarch64-i8mm",
    family="mmla",
    nt=2,
    kt=8,
    act_dtype="int8",
    act_zero_point=0,
    intrin_int8="tqs_smmla_s8s8s32_2x2x8",
    intrin_int4="tqs_smmla_s8s4s32_2x2x8",
    fp32_lanes=16,
    vector_bits=128,
    target={
        "kind": "llvm",
        "mtriple": _AARCH64,
        "mcpu": "neoverse-v1",
        "mattr": ["+neon", "+dotprod", "+i8mm"],
    },
    max_acc=16,
    description="smmla v.4s 2x8 . 8x2 (neoverse-v1)",
)

# GPUs: one output element per thread (K padded to 4), weights [N, K/4, 1, 4] so a thread's 4 weights
# are one aligned word. CUDA sums each word with __dp4a; OpenCL (no portable dp4a) with integer MACs.
CUDA_DP4A = Isa(
    name="cuda-dp4a",
    family="bcast",
    nt=1,
    kt=4,
    act_dtype="int8",
    act_zero_point=0,
    intrin_int8="tqs_dp4a_s8s8s32_1x4",
    intrin_int4="tqs_dp4a_s8s4s32_1x4",
    fp32_lanes=1,
    vector_bits=32,
    target={"kind": "cuda", "arch": "sm_87"},
    max_acc=1,
    description="__dp4a per 4 int8 pairs, one output per thread (sm_61 and later)",
    gpu_threads=128,
)

OPENCL_INT = Isa(
    name="opencl-int",
    family="bcast",
    nt=1,
    kt=4,
    act_dtype="int8",
    act_zero_point=0,
    intrin_int8="",
    intrin_int4="",
    fp32_lanes=1,
    vector_bits=32,
    target={"kind": "opencl"},
    max_acc=1,
    description="int8 x int8 -> int32 multiply-adds, one output per thread (any OpenCL 1.2 device)",
    gpu_threads=64,
)

ISAS = {isa.name: isa for isa in (X86_VNNI, X86_AVX2, ARM_NEON, ARM_DOTPROD, ARM_I8MM, CUDA_DP4A, OPENCL_INT)}
