"""Run cross-compiled aarch64 TVM libraries under qemu-aarch64 (user mode) for the kernel tests.

``setup()`` prepares, once per cache directory (``$TQS_QEMU_CACHE`` or ``~/.cache/tvm_tqs/qemu``):
the aarch64 wheels of the installed apache-tvm / apache-tvm-ffi versions (``pip download
--platform manylinux_2_28_aarch64``), their ``libtvm_runtime.so`` / ``libtvm_ffi.so`` and headers,
and ``runner`` (``runner.cc`` here, cross-compiled with ``aarch64-linux-gnu-g++``). ``run(...)``
writes the inputs as raw files, runs ``qemu-aarch64 -L /usr/aarch64-linux-gnu runner lib.so func
...`` and reads the outputs back. Needs only ``g++-aarch64-linux-gnu`` and ``qemu-user`` from apt
(plus network access the first time, for the two wheels).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["CROSS_CXX", "QEMU", "SYSROOT", "available", "export", "run", "run_many", "run_vm", "setup"]

QEMU = "qemu-aarch64"
CROSS_CXX = "aarch64-linux-gnu-g++"
SYSROOT = "/usr/aarch64-linux-gnu"
PLATFORM = "manylinux_2_28_aarch64"
_HERE = Path(__file__).resolve().parent


def available() -> bool:
    """True when qemu-aarch64, the aarch64 cross compiler and its sysroot are installed."""
    return bool(shutil.which(QEMU) and shutil.which(CROSS_CXX) and Path(SYSROOT).is_dir())


def cache_dir() -> Path:
    return Path(os.environ.get("TQS_QEMU_CACHE", Path.home() / ".cache" / "tvm_tqs" / "qemu"))


def _wheels(cache: Path) -> dict[str, Path]:
    wheels = cache / "wheels"
    pins = {
        "apache_tvm": importlib.metadata.version("apache-tvm"),
        "apache_tvm_ffi": importlib.metadata.version("apache-tvm-ffi"),
    }
    found = {}
    for dist, version in pins.items():
        hits = sorted(wheels.glob(f"{dist}-{version}-*aarch64*.whl"))
        if not hits:
            wheels.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    f"{dist.replace('_', '-')}=={version}",
                    "--platform",
                    PLATFORM,
                    "--only-binary=:all:",
                    "--no-deps",
                    "-d",
                    str(wheels),
                ],
                check=True,
                capture_output=True,
            )
            hits = sorted(wheels.glob(f"{dist}-{version}-*aarch64*.whl"))
        if not hits:
            raise RuntimeError(f"no aarch64 wheel of {dist}=={version} in {wheels}")
        found[dist] = hits[-1]
    return found


def _extract(whl: Path, prefix: str, dest: Path) -> None:
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if name.startswith(prefix) and not name.endswith("/"):
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(name) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)


def setup(cache: Path | None = None) -> Path:
    """Download/extract the aarch64 runtime and build the loader once; returns the runner path."""
    cache = Path(cache) if cache else cache_dir()
    source = _HERE / "runner.cc"
    # Keyed by the source's content: an edited runner.cc never reuses a stale binary.
    runner = cache / f"runner-{hashlib.sha256(source.read_bytes()).hexdigest()[:12]}"
    if runner.exists() and (cache / "lib").is_dir():
        return runner
    wheels = _wheels(cache)
    stage = cache / "stage"
    _extract(wheels["apache_tvm_ffi"], "tvm_ffi/lib/libtvm_ffi.so", stage)
    _extract(wheels["apache_tvm_ffi"], "tvm_ffi/include/", stage)
    _extract(wheels["apache_tvm"], "tvm/lib/libtvm_runtime.so", stage)
    lib = cache / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    shutil.copy2(stage / "tvm_ffi/lib/libtvm_ffi.so", lib / "libtvm_ffi.so")
    shutil.copy2(stage / "tvm/lib/libtvm_runtime.so", lib / "libtvm_runtime.so")
    tmp = cache / f"runner.{os.getpid()}.tmp"
    subprocess.run(
        [
            CROSS_CXX,
            "-std=c++17",
            "-O2",
            "-I",
            str(stage / "tvm_ffi/include"),
            str(source),
            "-o",
            str(tmp),
            "-L",
            str(lib),
            "-ltvm_runtime",
            "-ltvm_ffi",
            "-Wl,-rpath,$ORIGIN/lib",
        ],
        check=True,
        capture_output=True,
    )
    os.replace(tmp, runner)
    return runner


def export(lib, path: str | Path) -> Path:
    """Export a TVM library built for an aarch64 target as a shared object (cross-linked)."""
    from tvm_tqs.targets import arm

    return arm.export(lib, path, CROSS_CXX)


def run_many(
    so_path: str | Path,
    calls: list[tuple[str, list[np.ndarray], list[tuple[tuple[int, ...], str]]]],
    timeout: float = 600.0,
) -> list[list[np.ndarray]]:
    """Run several ``(func, inputs, output specs)`` calls of one exported library in ONE qemu process.

    Each call is ``func(*inputs, *outputs)`` (destination passing); returns the outputs per call.
    """
    runner = setup()
    with tempfile.TemporaryDirectory(prefix="tqs_qemu_") as tmp:
        argv: list[str] = []
        out_paths = []
        for c, (func, inputs, outputs) in enumerate(calls):
            if c:
                argv.append("--")
            argv.append(func)
            for i, arr in enumerate(inputs):
                arr = np.ascontiguousarray(arr)
                p = Path(tmp) / f"c{c}_in{i}.bin"
                arr.tofile(p)
                argv.append(f"i:{arr.dtype}:{'x'.join(map(str, arr.shape)) or '1'}:{p}")
            paths = []
            for i, (shape, dtype) in enumerate(outputs):
                p = Path(tmp) / f"c{c}_out{i}.bin"
                argv.append(f"o:{dtype}:{'x'.join(map(str, shape))}:{p}")
                paths.append((p, shape, dtype))
            out_paths.append(paths)
        proc = subprocess.run(
            [QEMU, "-L", SYSROOT, str(runner), str(so_path), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"qemu runner failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return [[np.fromfile(p, dtype=d).reshape(sh) for p, sh, d in paths] for paths in out_paths]


def run(
    so_path: str | Path,
    func: str,
    inputs: list[np.ndarray],
    outputs: list[tuple[tuple[int, ...], str]],
    timeout: float = 300.0,
) -> list[np.ndarray]:
    """Call ``func(*inputs, *outputs)`` of an exported aarch64 library under qemu; returns the outputs."""
    return run_many(so_path, [(func, inputs, outputs)], timeout)[0]


def run_vm(
    so_path: str | Path,
    inputs: list[np.ndarray],
    outputs: list[tuple[tuple[int, ...], str]],
    func: str = "main",
    timeout: float = 600.0,
) -> list[np.ndarray]:
    """Run ``func`` of an exported Relax VM executable (``tvm.compile(...).export_library``, aarch64)
    under qemu on the CPU: inputs in, the returned tensor(s) out (checked against ``outputs``)."""
    runner = setup()
    with tempfile.TemporaryDirectory(prefix="tqs_qemu_vm_") as tmp:
        argv: list[str] = []
        for i, arr in enumerate(inputs):
            arr = np.ascontiguousarray(arr)
            p = Path(tmp) / f"in{i}.bin"
            arr.tofile(p)
            argv.append(f"i:{arr.dtype}:{'x'.join(map(str, arr.shape)) or '1'}:{p}")
        paths = []
        for i, (shape, dtype) in enumerate(outputs):
            p = Path(tmp) / f"out{i}.bin"
            argv.append(f"o:{dtype}:{'x'.join(map(str, shape))}:{p}")
            paths.append((p, shape, dtype))
        proc = subprocess.run(
            [QEMU, "-L", SYSROOT, str(runner), str(so_path), "--vm", func, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"qemu VM runner failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return [np.fromfile(p, dtype=d).reshape(sh) for p, sh, d in paths]
