"""Quantized kernel layer: packed int8/int4 GEMMs (dense, im2col conv1d) and fp32 baselines per ISA.

Public API (see docs/kernels.md)::

    ks = get_kernel_set("x86-avx512-vnni")      # or x86-avx2, aarch64-neon, aarch64-dotprod, aarch64-i8mm
    packed = ks.pack_int8(q, scale)             # offline, numpy
    kern = ks.dense_int8(M, K, N, Epilogue(bias=True), ActQuant("dynamic"))
    kern.func                                    # scheduled PrimFunc, ready for relax.call_tir
    kern.const_args(packed, bias)                # constants in call order
"""

from . import reference
from .config import (
    ACTIVATIONS,
    ActQuant,
    Conv1dSpec,
    Epilogue,
    Isa,
    Kernel,
    PackedWeights,
    TensorSpec,
    Tiling,
)
from .isa import ARM_DOTPROD, ARM_I8MM, ARM_NEON, CUDA_DP4A, ISAS, OPENCL_INT, X86_AVX2, X86_VNNI
from .kernelset import DEFAULT_GROUP_SIZE, KernelSet, get_kernel_set, kernel_set_names

__all__ = [
    "ACTIVATIONS",
    "ARM_DOTPROD",
    "ARM_I8MM",
    "ARM_NEON",
    "CUDA_DP4A",
    "DEFAULT_GROUP_SIZE",
    "ISAS",
    "OPENCL_INT",
    "X86_AVX2",
    "X86_VNNI",
    "ActQuant",
    "Conv1dSpec",
    "Epilogue",
    "Isa",
    "Kernel",
    "KernelSet",
    "PackedWeights",
    "TensorSpec",
    "Tiling",
    "get_kernel_set",
    "kernel_set_names",
    "reference",
]
