"""Which device a target's code runs on, and finding it on this host; a clear error when it is not there.

A registered target names a device kind: ``cpu`` for the LLVM targets (x86, arm_cpu), ``cuda`` and
``opencl`` for the GPU ones. Every runner picks its device here (`device_kind`), the local runner
opens it with `local_device` (``tvm.cuda(i)``, ``tvm.opencl(i)``, ``tvm.cpu()``), the RPC runner asks
its session for the same kind (`rpc_runner.remote_device`), and an offline bundle records the kind in
its manifest for ``bundle_runner.py``.
"""

from __future__ import annotations

import platform

import tvm

from tvm_tqs.errors import TQSError
from tvm_tqs.targets.registry import TargetSpec, get_target

__all__ = [
    "GPU_KINDS",
    "TargetNotRunnableError",
    "device_kind",
    "host_arch",
    "is_gpu",
    "local_device",
    "local_device_available",
    "measure_elsewhere_hint",
    "why_not_runnable",
]

GPU_KINDS = ("cuda", "opencl")
_LABEL = {"cuda": "CUDA GPU", "opencl": "OpenCL device"}
# platform.machine() and the LLVM triple spell some architectures differently.
_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}


class TargetNotRunnableError(TQSError):
    """A local measurement was asked for a target this host cannot run."""


def device_kind(target: str | TargetSpec) -> str:
    """TVM device kind the target's kernels run on: ``"cuda"``, ``"opencl"`` or ``"cpu"``."""
    spec = get_target(target)
    return spec.kind if spec.kind in GPU_KINDS else "cpu"


def is_gpu(target: str | TargetSpec) -> bool:
    """Whether the target's kernels run on a GPU (they must then be bound to GPU threads)."""
    return device_kind(target) in GPU_KINDS


def _arch(name: str) -> str:
    name = name.lower()
    return _ARCH_ALIASES.get(name, name)


def host_arch(target: str | TargetSpec) -> str:
    """CPU architecture of the code that runs on the host: the target itself for CPU targets, the
    target's ``host`` for GPU ones (``aarch64`` for a Jetson, this machine's for ``cuda/sm_90``)."""
    tvm_target = get_target(target).target()
    host = tvm_target.host if tvm_target.host is not None else tvm_target
    triple = str(host.attrs.get("mtriple", "")) if host.attrs else ""
    return _arch(triple.split("-", 1)[0]) if triple else _arch(platform.machine())


def measure_elsewhere_hint(target: str | TargetSpec) -> str:
    """How to measure a target that this host cannot run (one line, for error messages)."""
    spec = get_target(target)
    where = f"the {_LABEL[spec.kind]}'s machine" if is_gpu(spec) else "the device"
    return (
        f"measure it on {where} through an RPC runner (runner='rpc://TRACKER_HOST:PORT/KEY', with "
        "`python -m tvm.exec.rpc_server --tracker TRACKER_HOST:PORT --key KEY` running there) or an "
        "offline bundle (runner='offline:DIR', then run `python3 bundle_runner.py` inside DIR there)"
    )


def why_not_runnable(target: str | TargetSpec, device_id: int = 0) -> str | None:
    """None when this host can run the target's code on device `device_id`, else the reason (a clause)."""
    spec = get_target(target)
    here = _arch(platform.machine())
    if not is_gpu(spec):
        if spec.runnable_here:
            return None
        return f"its code is for {host_arch(spec)} ({spec.description or spec.name}), not this {here} host"
    if host_arch(spec) != here:
        return f"its host code is for {host_arch(spec)}, and this host is {here}"
    kind = spec.kind
    if not tvm.runtime.enabled(kind):
        return (
            f"it runs on a {_LABEL[kind]}, and TVM's {kind} runtime is not available here "
            f"(tvm.runtime.enabled('{kind}') is False: no {kind} driver, or a TVM built without {kind})"
        )
    if not tvm.runtime.device(kind, device_id).exist:
        return f"it runs on a {_LABEL[kind]}, and this host has no {kind}:{device_id}"
    return None


def local_device_available(target: str | TargetSpec, device_id: int = 0) -> bool:
    """Whether the local runner can measure `target` here (a CPU target of this host, or a GPU target
    whose device exists here and whose host code is for this machine)."""
    return why_not_runnable(target, device_id) is None


def local_device(target: str | TargetSpec, device_id: int = 0):
    """The device of this host that runs `target`'s code: ``tvm.cuda(i)``, ``tvm.opencl(i)`` or ``tvm.cpu(i)``.

    Raises
    ------
    TargetNotRunnableError
        When this host cannot run it; the message names the target, the reason and how to measure it.
    """
    spec = get_target(target)
    reason = why_not_runnable(spec, device_id)
    if reason is not None:
        raise TargetNotRunnableError(
            f"target '{spec.name}' cannot run on this host: {reason}; " + measure_elsewhere_hint(spec)
        )
    return tvm.runtime.device(device_kind(spec), device_id)
