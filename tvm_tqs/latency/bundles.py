"""Host side of offline bundles: write one, read back its results, run it in subprocesses.

The device side is ``bundle_runner.py``, copied into every bundle. The offline runner hands bundles
to a person; the local runner's isolated mode runs them here, one subprocess per crash.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tvm

from tvm_tqs.errors import MeasurementError, TQSError
from tvm_tqs.targets.registry import get_target

from . import bundle_runner as br
from .build import build_kernels, device_name, export_library
from .jobs import KernelJob, MeasureConfig, Measurement, ModelJob


def write_bundle(
    bundle_dir: str | os.PathLike,
    jobs: Sequence[KernelJob],
    config: MeasureConfig,
    models: Sequence[ModelJob] = (),
) -> tuple[dict, dict[str, str]]:
    """Build and write a bundle for one target: ``libs/*.so``, ``inputs/*.npy``, ``manifest.json`` and
    a copy of ``bundle_runner.py``. Returns the manifest and the build errors by key (not in the bundle)."""
    targets = {j.target for j in jobs} | {m.target for m in models}
    if len(targets) != 1:
        raise ValueError(f"a bundle is for one target (one device); got {sorted(targets) or 'none'}")
    spec = get_target(targets.pop())
    root = Path(bundle_dir)
    if root.exists():
        for sub in ("libs", "inputs"):
            shutil.rmtree(root / sub, ignore_errors=True)
        for name in (br.MANIFEST, br.PARTIAL, br.RESULTS):
            (root / name).unlink(missing_ok=True)
    (root / "libs").mkdir(parents=True, exist_ok=True)
    errors: dict[str, str] = {}
    kernels = []
    if jobs:
        built = build_kernels(jobs, spec)
        for i, err in built.errors.items():
            errors[jobs[i].key(config)] = err
        lib_files = []
        for n, lib in enumerate(built.libs):
            path = export_library(lib, root / "libs" / f"kernels{n}.so", spec)
            lib_files.append(f"libs/{path.name}")
        for i, (lib_index, symbol) in sorted(built.located.items()):
            job = jobs[i]
            kernels.append(
                {
                    "key": job.key(config),
                    "name": job.name,
                    "target": job.target,
                    "code_hash": job.kernel_hash,
                    "args": [a.to_list() for a in job.args],
                    "features": job.features.to_dict() if job.features else None,
                    "lib": lib_files[lib_index],
                    "symbol": symbol,
                }
            )
    model_entries = []
    for n, job in enumerate(models):
        lib = f"libs/model{n}.so"
        if job.library_path is not None:
            shutil.copyfile(job.library_path, root / lib)
        else:
            export_library(job.executable, root / lib, spec)
        (root / "inputs").mkdir(exist_ok=True)
        inputs = []
        for k, arr in enumerate(job.arrays):
            rel = f"inputs/model{n}_in{k}.npy"
            np.save(root / rel, arr)
            inputs.append(rel)
        model_entries.append(
            {
                "key": job.key(config),
                "name": job.name,
                "target": job.target,
                "code_hash": job.model_hash,
                "args": [a.to_list() for a in job.inputs],
                "lib": lib,
                "inputs": inputs,
            }
        )
    manifest = {
        "format": br.FORMAT,
        "version": br.VERSION,
        "bundle_id": uuid.uuid4().hex,
        "created": time.time(),
        "target": spec.name,
        "tvm_target": spec.tvm_target,
        "device": device_name(spec),
        "tvm_version": tvm.__version__,
        "config": config.to_dict(),
        "kernels": kernels,
        "models": model_entries,
    }
    shutil.copyfile(br.__file__, root / "bundle_runner.py")
    tmp = root / (br.MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, root / br.MANIFEST)
    (root / "README.txt").write_text(_readme(spec, len(kernels), len(model_entries)))
    return manifest, errors


_GPU_RUNTIME = {
    "cuda": "a TVM runtime with CUDA (it compiles the CUDA C in the libraries when loading them: "
    "NVRTC, or nvcc with TVM_CUDA_COMPILE_MODE=nvcc)",
    "opencl": "a TVM runtime built with OpenCL (it compiles the OpenCL C in the libraries when loading them)",
}


def _readme(spec, n_kernels: int, n_models: int) -> str:
    kind = device_name(spec)
    needs = f"numpy + the TVM runtime of the same version, {tvm.__version__}"
    if kind in _GPU_RUNTIME:
        needs += f"; {_GPU_RUNTIME[kind]}"
    where, flag = "the device", ""
    if kind != "cpu":
        where, flag = f"the machine with the {kind} device", f" [--device-id N]    # default {kind}:0"
    return (
        f"tvm_tqs latency bundle for target '{spec.name}' on device kind '{kind}' ({n_kernels} kernels, "
        f"{n_models} models).\nOn {where}, with {needs}:\n\n    python3 bundle_runner.py{flag}\n\n"
        "then copy results.json back next to manifest.json on the host.\n"
    )


def read_results(path: str | os.PathLike, runner: str = "offline") -> list[Measurement]:
    """Measurements of a bundle's ``results.json`` (self-describing: no manifest needed)."""
    doc = json.loads(Path(path).read_text())
    if doc.get("format") != br.FORMAT + ".results":
        raise TQSError(f"{path} is not a tvm_tqs latency results file")
    device = json.dumps(doc.get("device", {}), sort_keys=True)
    return measurements_from_records(doc.get("results", []), doc.get("config", {}), device, runner)


def measurements_from_records(records, config: dict, device: str, runner: str) -> list[Measurement]:
    return [
        Measurement.from_dict({**rec, "config": config, "runner": runner, "device": device})
        for rec in records
    ]


def run_bundle_isolated(bundle: Path, timeout_s: float, device_id: int = 0) -> None:
    """Run bundle_runner.py in subprocesses until every entry has a record; an entry whose run kills
    the process (segfault, abort) is recorded as failed and skipped by the next subprocess. A bundle
    whose device is missing raises MeasurementError at once (no entry is to blame)."""
    partial = bundle / br.PARTIAL
    manifest = json.loads((bundle / br.MANIFEST).read_text())
    order = [e["key"] for e in manifest["kernels"]] + [e["key"] for e in manifest["models"]]
    skip: list[str] = []
    while True:
        cmd = [sys.executable, str(bundle / "bundle_runner.py"), str(bundle), "--device-id", str(device_id)]
        for key in skip:
            cmd += ["--skip", key]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            died = proc.returncode != 0
            detail = proc.stderr.strip().splitlines()[-1:] if died else []
            if proc.returncode == br.EXIT_NO_DEVICE:
                raise MeasurementError(" ".join(detail) or "the bundle's device is not on this host")
        except subprocess.TimeoutExpired:
            died, detail = True, [f"timed out after {timeout_s:g} s"]
        if not died:
            return
        done = br.read_partial(str(partial))
        culprit = next((k for k in order if k not in done and k not in skip), None)
        if culprit is None:
            raise MeasurementError(f"bundle runner failed outside any measurement: {' '.join(detail)}")
        skip.append(culprit)
