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
        return self.call.run(*inputs)


class LeanCall:
    """One VM function called on numpy arrays with little more than the VM's own time.

    The function is looked up once; each input is copied into a 64-byte aligned buffer of its dtype that a
    TVM tensor wraps without a copy (made on the first call of each shape), and the outputs come back as
    numpy arrays sharing the VM's result memory (DLPack; each result is its own allocation, so later
    calls do not change it). An output that is a view of an input (a model returning a reshaped input)
    is copied, since the next call refills the input buffers. Not thread-safe: one call at a time per
    object, like the VM.

    `run` is the hot path, a closure remade for each binding of input shapes: a shape compare, a numpy
    copy per input, the VM call and one DLPack wrap per output, and no other Python frame. cProfile of
    1e5 calls on vic_elec_mlp put the rest of the old method-based call in a generator for the shape
    check, a recursive walk of the result and a per-call alias test (3.3 -> 1.7 us over the VM). Each
    frame counts more than its warm cost after a long call, when the interpreter runs from cold caches:
    on etth1_lstm (ABBA pairs, same VM, loaded machine) the old call measured 8-14 us over the VM, this
    one 5-6 us.

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
        self.run = self._rebound  # replaced by the bound hot path on the first call of each shape

    def __call__(self, *inputs) -> list[np.ndarray]:
        return self.run(*inputs)

    def _bind(self, inputs: list[np.ndarray]) -> None:
        """(Re)make the buffers and their tensors for these inputs' shapes."""
        self.buffers, self.tensors = [], []
        for i, x in enumerate(inputs):
            dtype = x.dtype if self.dtypes is None else self.dtypes[i]
            count = int(np.prod(x.shape))
            raw = np.empty(max(count * dtype.itemsize, 1) + 64, np.uint8)
            start = (-raw.ctypes.data) % 64
            buf = raw[start : start + count * dtype.itemsize].view(dtype).reshape(x.shape)
            self.buffers.append(buf)
            self.tensors.append(tvm.runtime.from_dlpack(buf))

    def _rebound(self, *inputs) -> list[np.ndarray]:
        """The slow path (first call, new shapes, wrong count): bind, call, and make `run` for this binding."""
        if self.dtypes is not None and len(inputs) != len(self.dtypes):
            raise TypeError(f"the function takes {len(self.dtypes)} inputs, got {len(inputs)}")
        arrays = [np.asarray(x) for x in inputs]
        self._bind(arrays)
        for buf, x in zip(self.buffers, arrays):  # noqa: B905 - equal lengths
            buf[...] = x
        out = self.fn(*self.tensors)
        outs = _numpy_outputs(out)
        aliased = [any(np.may_share_memory(o, b) for b in self.buffers) for o in outs]
        self.run = _hot_path(self.fn, self.buffers, self.tensors, out, aliased, self._rebound)
        return [o.copy() if alias else o for o, alias in zip(outs, aliased, strict=True)]


def _hot_path(fn, buffers, tensors, out, aliased, slow):
    """The per-call closure for one binding: the common form (one input, one tensor out, not aliased) inlined,
    others through a loop and a flatten."""
    from_dlpack = np.from_dlpack
    if len(buffers) == 1 and isinstance(out, tvm.runtime.Tensor) and not aliased[0]:
        buf, tensor = buffers[0], tensors[0]
        shape = buf.shape

        def run_one(*inputs) -> list[np.ndarray]:
            if len(inputs) != 1 or getattr(inputs[0], "shape", None) != shape:
                return slow(*inputs)
            buf[...] = inputs[0]  # numpy assignment: converts to the buffer's dtype
            return [from_dlpack(fn(tensor))]

        return run_one
    pairs = [(b, b.shape) for b in buffers]
    copy = True in aliased

    def run(*inputs) -> list[np.ndarray]:
        if len(inputs) != len(pairs):
            return slow(*inputs)
        for (buf, shape), x in zip(pairs, inputs):  # noqa: B905 - equal lengths
            if getattr(x, "shape", None) != shape:
                return slow(*inputs)
            buf[...] = x
        outs = _numpy_outputs(fn(*tensors))
        if copy:
            outs = [o.copy() if alias else o for o, alias in zip(outs, aliased, strict=True)]
        return outs

    return run


def _numpy_outputs(out) -> list[np.ndarray]:
    if isinstance(out, tvm.runtime.Tensor):
        return [np.from_dlpack(out)]
    return [a for item in out for a in _numpy_outputs(item)]


def input_names(mod: tvm.IRModule) -> list[str]:
    """Parameter names of `main`, in call order."""
    return [p.name for p in mod["main"].params]
