"""Build kernels and models for a target and export them as shared libraries for a device.

Kernels are built in batches: every single-PrimFunc job of a target goes into ONE module (each under
its own symbol), so that a table of a hundred kernels costs one LLVM run and one link instead of a
hundred, and one upload over RPC. A batch that fails to build is retried kernel by kernel, so one bad
kernel only fails itself.

GPU targets: every PrimFunc is bound to GPU threads before it is built (`jobs.bind_threads`: jobs made by
`KernelJob.create` are bound already; this catches the others), and one that cannot be bound fails its
job with the reason instead of being built for the host, where it would run silently and be timed as
if it were GPU code. The built libraries hold the CUDA C or OpenCL source; the device compiles it when
it loads them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tvm
from tvm import relax

from tvm_tqs.targets.registry import TargetSpec, get_target

from .devices import device_kind
from .jobs import KernelJob, bind_threads

__all__ = ["BuiltKernels", "build_kernels", "device_name", "export_library"]


def device_name(spec: TargetSpec) -> str:
    """TVM device kind the target runs on (`tvm.runtime.device(name)`); see `devices.device_kind`."""
    return device_kind(spec)


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
    """Libraries built for a list of jobs: `located[i] = (library index, symbol)` or an error.

    `mods[n]` is the IRModule `libs[n]` was built from (scheduled: on a GPU target every PrimFunc in it
    is bound to GPU threads).
    """

    libs: list = field(default_factory=list)
    located: dict[int, tuple[int, str]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    mods: list = field(default_factory=list)

    def add(self, mod: tvm.IRModule, lib) -> int:
        self.mods.append(mod)
        self.libs.append(lib)
        return len(self.libs) - 1


def _symbol(i: int) -> str:
    return f"tqs_k{i}"


def _compile(mod: tvm.IRModule, spec: TargetSpec) -> tuple[tvm.IRModule, object]:
    mod = bind_threads(mod, spec)  # GPU targets: raises rather than build host code
    return mod, tvm.compile(mod, target=spec.target())


def _compile_prims(funcs: dict[str, tvm.tirx.PrimFunc], spec: TargetSpec):
    mod = tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in funcs.items()})
    return _compile(mod, spec)


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
                out.located[i] = (out.add(*_compile(_public(job.mod), spec)), job.entry)
            except Exception as err:  # noqa: BLE001 - reported per job
                out.errors[i] = _describe(err)
    if not batch:
        return out
    try:
        n = out.add(*_compile_prims({_symbol(i): job.func for i, job in batch.items()}, spec))
        out.located.update({i: (n, _symbol(i)) for i in batch})
    except Exception:  # noqa: BLE001 - find the culprit(s): build one by one
        for i, job in batch.items():
            try:
                out.located[i] = (out.add(*_compile_prims({_symbol(i): job.func}, spec)), _symbol(i))
            except Exception as err:  # noqa: BLE001
                out.errors[i] = _describe(err)
    return out


def build_model(mod: tvm.IRModule, target: str | TargetSpec) -> relax.VMExecutable:
    """Build a (fused, possibly quantized) Relax module as the artifact is built: what is measured is what ships
    (`targets.build.build`: on GPU targets dlight binds every non-kernel PrimFunc, or the build fails)."""
    from tvm_tqs.targets.build import build

    return build(mod, target)


def _describe(err: Exception) -> str:
    text = str(err).strip().splitlines()
    last = next((line for line in reversed(text) if line.strip()), "")
    return f"build failed: {type(err).__name__}: {last}"[:2000]
