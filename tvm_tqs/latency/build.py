"""Build kernels and models for a target and export them as shared libraries for a device.

Kernels are built in batches: every single-PrimFunc job of a target goes into ONE module (each under
its own symbol), so that a table of a hundred kernels costs one LLVM run and one link instead of a
hundred, and one upload over RPC. A batch that fails to build is retried kernel by kernel, so one bad
kernel only fails itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tvm
from tvm import relax

from tvm_tqs.targets.registry import TargetSpec, get_target

from .jobs import KernelJob

__all__ = ["BuiltKernels", "build_kernels", "device_name", "export_library"]


def device_name(spec: TargetSpec) -> str:
    """TVM device type the target runs on (`tvm.runtime.device(name)`)."""
    return {"cuda": "cuda", "opencl": "opencl"}.get(spec.kind, "cpu")


def export_library(lib, path: str | os.PathLike, spec: TargetSpec) -> Path:
    """Export a built module (kernel library or VM executable) as a shared object for the target's device,
    linked by its cross compiler (e.g. aarch64-linux-gnu-g++) when it has one."""
    from tvm.support import cc

    path = Path(path)
    if spec.cross_compiler:
        lib.export_library(str(path), fcompile=cc.cross_compiler(spec.cross_compiler))
    else:
        lib.export_library(str(path))
    return path


@dataclass
class BuiltKernels:
    """Libraries built for a list of jobs: `located[i] = (library index, symbol)` or an error."""

    libs: list = field(default_factory=list)
    located: dict[int, tuple[int, str]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)


def _symbol(i: int) -> str:
    return f"tqs_k{i}"


def _compile_prims(funcs: dict[str, tvm.tirx.PrimFunc], spec: TargetSpec):
    mod = tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in funcs.items()})
    return tvm.compile(mod, target=spec.target())


def _public(mod: tvm.IRModule) -> tvm.IRModule:
    """Every PrimFunc exported under its GlobalVar name: a private PrimFunc (as fusion makes them) is not
    lowered to a callable function, so it could neither be timed nor be called by name."""
    funcs = {}
    for gvar, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and not (func.attrs and "global_symbol" in func.attrs):
            func = func.with_attr("global_symbol", gvar.name_hint)
        funcs[gvar] = func  # keyed by the GlobalVar itself: calls between the functions stay bound
    return tvm.IRModule(funcs, attrs=mod.attrs)


def build_kernels(jobs: Sequence[KernelJob], target: str | TargetSpec) -> BuiltKernels:
    """Build `jobs` (all for `target`): batch the single-PrimFunc ones, build the others alone."""
    spec = get_target(target)
    out = BuiltKernels()
    batch = {}
    for i, job in enumerate(jobs):
        if job.target != spec.name:
            raise ValueError(f"job '{job.name}' is for target '{job.target}', not '{spec.name}'")
        if job.single:
            batch[i] = job
        else:
            try:
                out.libs.append(tvm.compile(_public(job.mod), target=spec.target()))
                out.located[i] = (len(out.libs) - 1, job.entry)
            except Exception as err:  # noqa: BLE001 - reported per job
                out.errors[i] = _describe(err)
    if not batch:
        return out
    try:
        out.libs.append(_compile_prims({_symbol(i): job.func for i, job in batch.items()}, spec))
        out.located.update({i: (len(out.libs) - 1, _symbol(i)) for i in batch})
    except Exception:  # noqa: BLE001 - find the culprit(s): build one by one
        for i, job in batch.items():
            try:
                out.libs.append(_compile_prims({_symbol(i): job.func}, spec))
                out.located[i] = (len(out.libs) - 1, _symbol(i))
            except Exception as err:  # noqa: BLE001
                out.errors[i] = _describe(err)
    return out


def build_model(mod: tvm.IRModule, target: str | TargetSpec) -> relax.VMExecutable:
    """Build a (fused, possibly quantized) Relax module as the artifact is built: what is measured is what ships."""
    from tvm_tqs.targets.build import build

    return build(mod, target)


def _describe(err: Exception) -> str:
    text = str(err).strip().splitlines()
    last = next((line for line in reversed(text) if line.strip()), "")
    return f"build failed: {type(err).__name__}: {last}"[:2000]
