"""aarch64 kernel sets (NEON, +dotprod, +i8mm) and cross-compilation helpers.

Build here, link with ``aarch64-linux-gnu-g++`` (``apt-get install g++-aarch64-linux-gnu``), run on
the board or under ``qemu-aarch64 -L /usr/aarch64-linux-gnu`` (see tests/qemu_runner).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import tvm

from .kernels import ARM_DOTPROD, ARM_I8MM, ARM_NEON, KernelSet
from .x86 import asm

__all__ = ["CROSS_CXX", "KERNEL_SETS", "asm", "build", "cross_compiler_available", "export", "kernel_set"]

CROSS_CXX = "aarch64-linux-gnu-g++"
KERNEL_SETS = {"neon": KernelSet(ARM_NEON), "dotprod": KernelSet(ARM_DOTPROD), "i8mm": KernelSet(ARM_I8MM)}


def kernel_set(
    features: frozenset[str] | set[str] | tuple[str, ...], tvm_target: dict[str, Any] | None = None
) -> KernelSet:
    """smmla when ``i8mm`` is in ``features``, else sdot with ``dotprod``, else the NEON baseline.

    ``tvm_target`` (e.g. a registry entry's dict) replaces the set's default cpu/mattr.
    """
    feats = frozenset(features)
    ks = KERNEL_SETS["i8mm" if "i8mm" in feats else "dotprod" if "dotprod" in feats else "neon"]
    return ks.with_target(tvm_target) if tvm_target else ks


def build(mod: tvm.IRModule, ks: KernelSet):
    """``tvm.compile`` for the (aarch64) target of the kernel set; nothing is linked yet."""
    return tvm.compile(mod, target=tvm.target.Target(ks.target))


def cross_compiler_available(cxx: str = CROSS_CXX) -> bool:
    return shutil.which(cxx) is not None


def export(lib, path: str | Path, cxx: str = CROSS_CXX) -> Path:
    """Export an aarch64 library as a shared object linked by the cross compiler."""
    from tvm.support import cc

    if not cross_compiler_available(cxx):
        raise RuntimeError(f"{cxx} not found: apt-get install g++-aarch64-linux-gnu")
    path = Path(path)
    lib.export_library(str(path), fcompile=cc.cross_compiler(cxx))
    return path
