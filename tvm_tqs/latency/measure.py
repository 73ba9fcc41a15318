"""Measure through any runner with the cache in front: nothing already measured is measured again.

`measure_kernels` for kernel tables, `measure_model` for the end-to-end latency of a compiled model
(the whole VM ``main``), which the compile loop compares with the latency budget.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from tvm_tqs.targets.registry import TargetSpec, get_target

from . import bundle_runner as br
from .build import build_model
from .cache import LatencyCache
from .devices import device_kind, is_gpu
from .jobs import ArgSpec, KernelJob, MeasureConfig, Measurement, ModelJob, kernel_hash
from .runners import MeasurementPending, Runner, make_runner

__all__ = ["measure_kernels", "measure_model", "model_job"]


def measure_kernels(
    jobs: Sequence[KernelJob],
    runner: Runner | str | None = None,
    config: MeasureConfig | None = None,
    cache: LatencyCache | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[Measurement]:
    """One Measurement per job (in order): from the cache when there, else measured (and cached).

    `progress(done, total, "measuring")` is called as each new measurement arrives.

    Jobs with equal keys (sites sharing a kernel) are measured once. Failed measurements come back
    with `error` set and are not cached. With an `OfflineRunner`, results already imported are cached
    before `MeasurementPending` propagates.
    """
    config = config or MeasureConfig()
    runner = make_runner(runner)
    keys = [job.key(config) for job in jobs]
    found: dict[str, Measurement] = {}
    if cache is not None:
        cache.reload()  # pick up what other processes measured meanwhile
        found = {k: cache.get(k) for k in keys if k in cache}
    todo: dict[str, KernelJob] = {}
    for key, job in zip(keys, jobs, strict=True):
        if key not in found and key not in todo:
            todo[key] = job
    if todo:
        streamed: set[str] = set()

        def persist(m: Measurement) -> None:
            # Each result is on disk as soon as it exists: a crash loses at most the kernel being timed.
            if m.key in streamed:
                return
            streamed.add(m.key)
            if cache is not None and m.ok:
                cache.append(m)
            if progress is not None:
                progress(len(streamed), len(todo), "measuring")

        try:
            measured = runner.measure(list(todo.values()), config, on_result=persist)
        except MeasurementPending as pending:
            for m in pending.done:
                persist(m)
            raise
        for m in measured:
            persist(m)  # runners that do not stream
            found[m.key] = m
    return [found[k] for k in keys]


def _input_specs(mod: tvm.IRModule) -> list[ArgSpec]:
    specs = []
    for p in mod["main"].params:
        ty = p.ty
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            raise ValueError(f"input '{p.name}' of main is not a tensor of static shape: pass `inputs`")
        specs.append(ArgSpec(tuple(int(d) for d in ty.shape.values), str(ty.dtype)))
    return specs


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def model_job(
    model: tvm.IRModule | relax.VMExecutable | str | os.PathLike,
    target: str | TargetSpec = "x86",
    inputs: Sequence[np.ndarray] | None = None,
    *,
    seed: int = 0,
    name: str = "model",
) -> ModelJob:
    """Describe a whole-model measurement.

    Parameters
    ----------
    model : IRModule, VMExecutable, or path of an exported library
        An IRModule (fused or not) is built for `target` as the artifact is (`targets.build.build`:
        dlight on GPU targets); an executable is used as built (for a GPU target it must hold GPU code:
        one built without GPU schedules is refused); a path is a library already exported for the
        target's device.
    inputs : sequence of numpy arrays, optional
        Arguments of ``main``. Default: seeded random arrays from ``main``'s parameter types (needs an
        IRModule).
    """
    spec = get_target(target)
    executable = library_path = None
    specs = None
    if isinstance(model, tvm.IRModule):
        model_hash = kernel_hash(model)
        specs = _input_specs(model)
        executable = build_model(model, spec)
    elif isinstance(model, (str, os.PathLike)):
        library_path = Path(model)
        model_hash = _file_hash(library_path)
    else:
        executable = model
        _check_device_code(executable, spec)
        model_hash = _executable_hash(executable, spec)
    if inputs is None:
        if specs is None:
            raise ValueError(
                "pass `inputs` when measuring a built executable or library (its input types are unknown)"
            )
        arrays = tuple(br.random_arrays([s.to_list() for s in specs], seed))
        input_hash = f"random:{seed}"
    else:
        arrays = tuple(br.contiguous(np.asarray(a)) for a in inputs)
        h = hashlib.sha256()
        for a in arrays:
            h.update(str((a.shape, a.dtype.str)).encode() + a.tobytes())
        input_hash = h.hexdigest()[:16]
    return ModelJob(
        name=name,
        target=spec.name,
        model_hash=model_hash,
        inputs=tuple(ArgSpec(tuple(a.shape), str(a.dtype)) for a in arrays),
        input_hash=input_hash,
        arrays=arrays,
        executable=executable,
        library_path=library_path,
    )


def _device_code_kinds(module) -> set[str]:
    kinds, todo = set(), [module]
    while todo:
        m = todo.pop()
        kinds.add(str(m.kind))
        todo.extend(m.imports)
    return kinds


def _check_device_code(executable, spec: TargetSpec) -> None:
    """A GPU target's executable must hold code for the GPU: one built without GPU schedules compiles
    every PrimFunc for the host, and timing it would report host latency under the GPU target's name."""
    if not is_gpu(spec):
        return
    module = getattr(executable, "mod", executable)
    kind = device_kind(spec)
    if kind not in _device_code_kinds(module):
        raise ValueError(
            f"the executable holds no {kind} code, so it would run on the host, not on target '{spec.name}': "
            "build it with tvm_tqs.targets.build.build (GPU schedules), or pass the Relax module instead"
        )


def _executable_hash(executable: relax.VMExecutable, spec: TargetSpec) -> str:
    # The executable's identity is its code: hash the library exported for the device.
    import tempfile

    from .build import export_library

    with tempfile.TemporaryDirectory(prefix="tqs-hash-") as tmp:
        return _file_hash(export_library(executable, Path(tmp) / "model.so", spec))


def measure_model(
    model: tvm.IRModule | relax.VMExecutable | str | os.PathLike | ModelJob,
    runner: Runner | str | None = None,
    inputs: Sequence[np.ndarray] | None = None,
    *,
    target: str | TargetSpec = "x86",
    config: MeasureConfig | None = None,
    cache: LatencyCache | None = None,
    seed: int = 0,
) -> Measurement:
    """End-to-end latency of a compiled model: the whole VM ``main`` timed through `runner`.

    `median_ms` is what the compile loop compares with the budget; the spread (``q1_ms``/``q3_ms``,
    ``std_ms``) says how far to trust it. Cached like kernels when `cache` is given (keyed by the
    model's structural hash or library bytes, and the inputs).
    """
    config = config or MeasureConfig()
    runner = make_runner(runner)
    job = model if isinstance(model, ModelJob) else model_job(model, target, inputs, seed=seed)
    key = job.key(config)
    if cache is not None:
        cache.reload()
        hit = cache.get(key)
        if hit is not None:
            return hit
    result = runner.measure_model(job, config)
    if cache is not None:
        cache.append(result)
    return result
