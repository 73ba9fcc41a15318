"""Build a fused Relax module for a target and run it on numpy arrays (host targets)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tvm
from tvm import relax

from tvm_tqs.targets.registry import TargetSpec


def build(mod: tvm.IRModule, target: str | TargetSpec = "x86") -> relax.VMExecutable:
    """The artifact's build (`targets.build.build`) without its schedules and fast math: TVM's default
    lowering, libm-exact, which TQS rollouts and crest capture use (their committed numbers were measured so)."""
    from tvm_tqs.targets.build import build as build_for_target

    return build_for_target(mod, target, schedule_rest=False)


class VMRunner:
    """Runs `main` of a compiled module on this host: numpy in, list of numpy out."""

    def __init__(self, executable: relax.VMExecutable, device: tvm.runtime.Device | None = None):
        self.device = device or tvm.cpu()
        self.vm = relax.VirtualMachine(executable, self.device)

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        args = [tvm.runtime.tensor(np.ascontiguousarray(x), self.device) for x in inputs]
        return to_numpy(self.vm["main"](*args))


def to_numpy(out) -> list[np.ndarray]:
    if isinstance(out, tvm.runtime.Tensor):
        return [out.numpy()]
    if isinstance(out, Sequence) or hasattr(out, "__len__"):
        return [a for item in out for a in to_numpy(item)]
    raise TypeError(f"unexpected VM output {type(out).__name__}")


def input_names(mod: tvm.IRModule) -> list[str]:
    """Parameter names of `main`, in call order."""
    return [p.name for p in mod["main"].params]
