"""Build a fused (quantized) Relax module for a registered target, and export it as an artifact.

>>> res = quantize(load(model, {"batch": 1}), plan, "arm_cpu/cortex-a76")
>>> exe = build(res.mod, "arm_cpu/cortex-a76")
>>> export(exe, "out/model-a76", "arm_cpu/cortex-a76", res)      # out/model-a76/{model.so, plan.json}

The kernels the quantize pass inserted are already scheduled (and compiled for the target's exact
cpu); every other PrimFunc gets the host reduction schedule (`ReductionLoopOrder`: the default CPU
pipeline applies none), then `tvm.compile` builds the VM executable. `export` links the library with
the target's cross compiler when it has one (``aarch64-linux-gnu-g++`` for ``arm_cpu/*``) and writes
``model.so`` + ``plan.json`` into a directory atomically (a temporary directory renamed into place).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tvm
from tvm import relax

from . import nvcc
from .registry import TargetSpec, get_target

__all__ = ["KERNEL_ATTR", "LIBRARY", "OBJECTS", "PLAN", "build", "export", "is_kernel", "load", "schedule"]

LIBRARY = "model.so"
OBJECTS = "model.tar"  # the target's object files, when its cross linker is not installed here
PLAN = "plan.json"
KERNEL_ATTR = "tvm_tqs.kernel"  # set by the quantize pass on every kernel it inserts (the ops fused in it)


def is_kernel(func) -> bool:
    """A PrimFunc inserted by the quantize pass (already scheduled: no further schedule applies)."""
    return isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None and KERNEL_ATTR in func.attrs


def schedule(mod: tvm.IRModule, target: str | TargetSpec = "x86", *, fast_math: bool = True) -> tvm.IRModule:
    """Schedule the PrimFuncs that are not kernels (GPU targets: dlight, `targets.gpu.schedule`).

    Reductions get `ReductionLoopOrder` (a vectorizable loop order, bit-identical results); purely
    spatial functions (elementwise, gates of recurrent cells, layout changes) get their producers
    inlined and their loops vectorized (`targets.elementwise.vectorize`); with ``fast_math``,
    float32 exp / sigmoid / tanh / erf become vectorizable approximations (max abs error 3.3e-7,
    `targets.elementwise.fast_math`) instead of scalar libm calls.

    Kernels keep their schedule, but with ``fast_math`` the same approximations replace the
    activation in their epilogue (GELU's erf, sigmoid, tanh): the ``out`` loop is already vectorized,
    and a libm call there is scalarized per element, which made the PatchTST feed-forward kernels
    cost more than their GEMMs. Only the fp32 epilogue changes (the integer stages have no such
    call, so they stay bit-exact); a kernel without one is returned as it was.
    """
    spec = get_target(target)
    if spec.kind in ("cuda", "opencl"):
        from . import gpu

        return gpu.schedule(mod, spec)
    if spec.kind not in ("x86", "arm_cpu"):
        return mod
    from tvm_tqs.passes.reduction_loop_order import ReductionLoopOrder

    from . import elementwise

    out = mod.clone()
    reorder = ReductionLoopOrder()
    for gvar, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        if is_kernel(func):  # kernels keep their own schedule; only their epilogue's math changes
            if fast_math:
                out[gvar] = elementwise.fast_math(func)
            continue
        try:  # one function at a time: a schedule error leaves that function as it was
            new = reorder(tvm.IRModule({"main": func}))["main"]
        except Exception:  # noqa: BLE001
            new = func
        if fast_math:
            new = elementwise.fast_math(new)
        out[gvar] = elementwise.vectorize(new)
    return out


def _check_kernels(mod: tvm.IRModule, spec: TargetSpec) -> None:
    want = spec.target()
    triple = str(want.attrs.get("mtriple", "")) if want.attrs else ""
    for gvar, func in mod.functions.items():
        if not is_kernel(func) or "target" not in func.attrs:
            continue
        got = func.attrs["target"]
        got_triple = str(got.attrs.get("mtriple", "")) if got.attrs else ""
        if (triple.startswith("aarch64")) != (got_triple.startswith("aarch64")):
            raise ValueError(
                f"kernel {gvar.name_hint} was built for {got_triple or 'the host'}, not for target "
                f"'{spec.name}': quantize for the target you build for"
            )


def build(
    mod: tvm.IRModule, target: str | TargetSpec = "x86", *, schedule_rest: bool = True, fast_math: bool = True
):
    """Compile a fused (and possibly quantized) module for a registered target.

    Parameters
    ----------
    mod : tvm.IRModule
        Output of `tvm_tqs.passes.quantize.quantize` (``result.mod``) or of `fuse`.
    target : str or TargetSpec
        Registered target name; the kernels in ``mod`` must have been made for it.
    schedule_rest : bool
        Apply `schedule` to the non-kernel PrimFuncs (default). False builds them as TVM's default
        pipeline would (unscheduled).
    fast_math : bool
        Vectorizable approximations of exp / sigmoid / tanh / erf in the non-kernel functions and in
        the kernels' epilogues (see `schedule`); False keeps the libm calls (scalar, bit-identical to
        TVM's default build).

    Returns
    -------
    relax.VMExecutable
        Run it on this host with ``relax.VirtualMachine(exe, tvm.cpu())`` when the target runs here;
        `export` it otherwise.
    """
    spec = get_target(target)
    _check_kernels(mod, spec)
    if schedule_rest:
        mod = schedule(mod, spec, fast_math=fast_math)
    with nvcc.embed(spec):  # CUDA compiled here (hosts with the driver): nvcc for the exact arch
        return tvm.compile(mod, target=spec.target())


def _plan_dict(plan: Any) -> dict:
    if plan is None:
        return {"plan": {}}
    if hasattr(plan, "to_dict"):
        return plan.to_dict()
    if isinstance(plan, Mapping):
        return json.loads(json.dumps(dict(plan)))
    raise TypeError(f"plan must be a QuantizeResult, a mapping or None, got {type(plan).__name__}")


def export(
    executable,
    path: str | os.PathLike,
    target: str | TargetSpec = "x86",
    plan: Any = None,
    *,
    overwrite: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the artifact directory ``path/`` = ``model.so`` + ``plan.json``, all or nothing.

    Parameters
    ----------
    executable
        What `build` returned.
    path : path
        The artifact directory to create.
    target : str or TargetSpec
        The target it was built for: its cross compiler links ``model.so``
        (``aarch64-linux-gnu-g++`` for ``arm_cpu/*``; install ``g++-aarch64-linux-gnu``). Without
        it the directory holds ``model.tar`` (the compiled object files) instead, which
        ``tvm.runtime.load_module`` links on the device (it needs a C++ compiler there);
        ``plan.json``'s ``library`` names the file.
    plan : QuantizeResult or mapping, optional
        Stored as ``plan.json`` with the target (``QuantizeResult.to_dict()``: per-site precision,
        kernel and fallback reasons).
    overwrite : bool
        Replace an existing artifact at ``path`` (the old one is removed only after the new one is
        in place). Only an artifact directory (with ``plan.json``) or an empty directory is replaced;
        a file or another directory raises FileExistsError.
    extra : mapping, optional
        More files for the directory, ``{file name: JSON-able object, or str for a text file}`` (written
        with the rest, so they are part of the all-or-nothing artifact).
    """
    from tvm.support import cc

    spec = get_target(target)
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    if overwrite and path.exists() and not _replaceable(path):
        # overwrite= replaces an artifact; it never deletes a user's file or directory of other things
        raise FileExistsError(
            f"{path} exists and is not an artifact directory (a file, or a non-empty directory without "
            f"{PLAN}): not replacing it"
        )
    library, kwargs = LIBRARY, {}
    if spec.cross_compiler:
        if shutil.which(spec.cross_compiler):
            kwargs = {"fcompile": cc.cross_compiler(spec.cross_compiler)}
        else:
            # No linker for the target here: ship the object files; the device links them itself.
            library = OBJECTS
    kwargs.update(nvcc.export_options(spec))  # CUDA: PTX for the target's arch instead of CUDA C source
    meta = {
        **_plan_dict(plan),
        "library": library,
        "target_name": spec.name,
        "tvm_target": spec.tvm_target,
        "tvm_version": tvm.__version__,
    }
    created = _missing_ancestors(path.parent)
    tmp = old = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        executable.export_library(str(tmp / library), **kwargs)
        for name, content in {PLAN: meta, **(extra or {})}.items():
            with open(tmp / name, "w") as f:
                if isinstance(content, str):
                    f.write(content)
                    continue
                json.dump(content, f, indent=1, sort_keys=True)
                f.write("\n")
        os.chmod(tmp, 0o755)
        if path.exists() or path.is_symlink():
            old = path.parent / f".{path.name}.old.{os.getpid()}"
            os.replace(path, old)
        os.replace(tmp, path)
        tmp = None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None:  # the new artifact did not land: put the old one back
                try:
                    os.replace(old, path)
                except OSError:
                    pass  # keep it beside the path rather than lose it
                old = None
        for d in reversed(created):  # directories made for this artifact, if still empty
            try:
                d.rmdir()
            except OSError:
                break
        raise
    finally:
        if old is not None:
            _remove(old)
    return path


def _replaceable(path: Path) -> bool:
    """An earlier artifact (a directory with plan.json) or an empty directory."""
    return path.is_dir() and not path.is_symlink() and ((path / PLAN).is_file() or not any(path.iterdir()))


def _missing_ancestors(directory: Path) -> list[Path]:
    """`directory` and its parents that do not exist yet, outermost first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing[::-1]


def _remove(path: Path) -> None:
    """Remove a replaced artifact: a directory, or a file or link that stood at the path."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def load(path: str | os.PathLike, device: Any = None) -> tuple[relax.VirtualMachine, dict]:
    """Load a host artifact written by `export`: (VirtualMachine, plan.json contents)."""
    path = Path(path)
    with open(path / PLAN) as f:
        meta = json.load(f)
    lib = tvm.runtime.load_module(str(path / meta.get("library", LIBRARY)))
    return relax.VirtualMachine(lib, device or tvm.cpu()), meta
