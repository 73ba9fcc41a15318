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
    """Runs `main` of a compiled module on this host: numpy in, list of numpy out (`LeanCall`)."""

    def __init__(self, executable: relax.VMExecutable, device: tvm.runtime.Device | None = None):
        self.device = device or tvm.cpu()
        self.vm = relax.VirtualMachine(executable, self.device)
        self.call = LeanCall(self.vm["main"])

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        return self.call(*inputs)


class LeanCall:
    """One VM function called on numpy arrays with little more than the VM's own time.

    The function is looked up once; each input is copied into a 64-byte aligned buffer of its dtype that a
    TVM tensor wraps without a copy (made on the first call of each shape), and the outputs come back as
    numpy arrays sharing the VM's result memory (DLPack; each result is its own allocation, so later
    calls do not change it). An output that is a view of an input (a model returning a reshaped input)
    is copied, since the next call refills the input buffers. Not thread-safe: one call at a time per
    object, like the VM.

    Parameters
    ----------
    fn : tvm.runtime.PackedFunc
        ``vm["main"]`` of a VM on a CPU device (the buffers live in host memory).
    dtypes : sequence of str, optional
        The inputs' dtypes (default: each input's own).
    """

    def __init__(self, fn, dtypes: Sequence[str] | None = None):
        self.fn = fn
        self.dtypes = None if dtypes is None else [np.dtype(d) for d in dtypes]
        self.buffers: list[np.ndarray] = []
        self.tensors: list = []
        self.aliased: list[bool] | None = None  # per output: a view of an input buffer (checked once)

    def _bind(self, inputs: list[np.ndarray]) -> None:
        """(Re)make the buffers and their tensors for these inputs' shapes."""
        self.buffers, self.tensors, self.aliased = [], [], None
        for i, x in enumerate(inputs):
            dtype = x.dtype if self.dtypes is None else self.dtypes[i]
            count = int(np.prod(x.shape))
            raw = np.empty(max(count * dtype.itemsize, 1) + 64, np.uint8)
            start = (-raw.ctypes.data) % 64
            buf = raw[start : start + count * dtype.itemsize].view(dtype).reshape(x.shape)
            self.buffers.append(buf)
            self.tensors.append(tvm.runtime.from_dlpack(buf))

    def __call__(self, *inputs) -> list[np.ndarray]:
        buffers = self.buffers
        if len(inputs) != len(buffers) or any(
            getattr(x, "shape", None) != b.shape
            for x, b in zip(inputs, buffers)  # noqa: B905 - equal lengths
        ):
            self._bind([np.asarray(x) for x in inputs])
            buffers = self.buffers
        for buf, x in zip(buffers, inputs):  # noqa: B905 - equal lengths
            buf[...] = x  # numpy assignment: converts to the buffer's dtype
        outs = _numpy_outputs(self.fn(*self.tensors))
        if self.aliased is None:
            self.aliased = [any(np.may_share_memory(o, b) for b in buffers) for o in outs]
        if True in self.aliased:
            outs = [o.copy() if alias else o for o, alias in zip(outs, self.aliased, strict=True)]
        return outs


def _numpy_outputs(out) -> list[np.ndarray]:
    if isinstance(out, tvm.runtime.Tensor):
        return [np.from_dlpack(out)]
    return [a for item in out for a in _numpy_outputs(item)]


def input_names(mod: tvm.IRModule) -> list[str]:
    """Parameter names of `main`, in call order."""
    return [p.name for p in mod["main"].params]
