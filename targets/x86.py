"""x86_64 kernel sets (AVX-512 VNNI, AVX2) and host build helpers.

>>> ks = kernel_set()                       # picks VNNI or AVX2 from this CPU, target = this CPU
>>> lib = build(tvm.IRModule({k.name: k.func}), ks)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tvm

from .host import host_cpu, host_features
from .kernels import X86_AVX2, X86_VNNI, KernelSet

__all__ = ["KERNEL_SETS", "asm", "build", "export", "host_cpu", "host_features", "kernel_set"]

KERNEL_SETS = {"avx512vnni": KernelSet(X86_VNNI), "avx2": KernelSet(X86_AVX2)}


def kernel_set(
    features: frozenset[str] | set[str] | None = None, tvm_target: dict[str, Any] | None = None
) -> KernelSet:
    """VNNI when ``avx512vnni`` is among ``features`` (default: this host's), else AVX2.

    ``tvm_target`` (default: ``{"kind": "llvm", "mcpu": host_cpu()}``) replaces the set's generic
    target so that kernels and the rest of the model compile for the same CPU.
    """
    feats = host_features() if features is None else frozenset(features)
    if "avx512vnni" in feats:
        ks = KERNEL_SETS["avx512vnni"]
    elif "avx2" in feats:
        ks = KERNEL_SETS["avx2"]
    else:
        raise ValueError(f"no x86 int8 kernel set for features {sorted(feats)} (need avx2 or avx512vnni)")
    return ks.with_target(tvm_target or {"kind": "llvm", "mcpu": host_cpu()})


def build(mod: tvm.IRModule, ks: KernelSet):
    """``tvm.compile`` for the kernel set's target (PrimFunc-only or Relax modules)."""
    return tvm.compile(mod, target=tvm.target.Target(ks.target))


def export(lib, path: str | Path) -> Path:
    """Export a host library (``.so``) with the system C++ compiler."""
    path = Path(path)
    lib.export_library(str(path))
    return path


def asm(lib) -> str:
    """Assembly text of every LLVM module in a built library (for instruction checks)."""
    mod = lib.mod if hasattr(lib, "mod") else lib
    seen, out, stack = set(), [], [mod]
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        if m.kind == "llvm":
            out.append(m.inspect_source("asm"))
        stack.extend(m.imports)
    return "\n".join(out)
