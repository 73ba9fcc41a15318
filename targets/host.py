"""This machine as a build target: LLVM's name for its CPU and the SIMD features our kernels use."""

from __future__ import annotations

import functools

import tvm

# /proc/cpuinfo flag -> our feature name
_FLAGS = {
    "avx2": "avx2",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512_vnni": "avx512vnni",
    "avx_vnni": "avxvnni",
}


@functools.cache
def host_cpu() -> str:
    """LLVM's name for this CPU (e.g. ``emeraldrapids``); ``mcpu="native"`` is NOT understood by 0.27."""
    try:
        return str(tvm.target.codegen.llvm_get_system_cpu())
    except Exception:  # noqa: BLE001 - old LLVMs lack the query; generic x86-64 still builds
        return "x86-64"


@functools.cache
def host_features() -> frozenset[str]:
    """The x86 SIMD features of this machine that our kernels care about (empty when unreadable)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return frozenset(name for flag, name in _FLAGS.items() if flag in flags)
