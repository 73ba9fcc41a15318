"""Self-check cases: a kernel, its arguments and the numpy reference result (tests, bring-up on a board).

Three kinds of case:

* ``"int32"``: int8 activations in, raw int32 dot products out (int8 weights): must be bit-exact.
* ``"unit"``: fp32 activations that are integers in [-128, 127], static scale 1, weight scales 1: the
  whole fp32-in/fp32-out kernel (quantize, integer GEMM, rescale, int4 group sums, relu) then
  computes integers below 2**24 exactly, so it must be bit-exact too.
* ``"float"``: random data, dynamic per-row scales, random weight scales, bias and activation: the
  quantized integers are still identical, the fp32 epilogue may differ from numpy by an FMA
  contraction (about 1 ulp per op), compared with a relative tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import reference as ref
from .config import ActQuant, Conv1dSpec, Epilogue, Kernel
from .kernelset import KernelSet

__all__ = ["Case", "assert_case", "conv1d_case", "dense_case", "run_local"]


@dataclass(frozen=True)
class Case:
    kernel: Kernel
    args: list = field(hash=False, compare=False)  # inputs then constants, in call order
    expected: np.ndarray = field(hash=False, compare=False)
    exact: bool = True
    rtol: float = 2e-5

    @property
    def outputs(self) -> list[tuple[tuple[int, ...], str]]:
        return [(self.kernel.output.shape, self.kernel.output.dtype)]


def _weights(ks: KernelSet, op: str, kind: str, n: int, k: int, rng, group_size: int):
    """(packed, q, scale) for int8 / int4, or (packed, w, None) for fp32."""
    if op == "fp32":
        w = rng.standard_normal((n, k)).astype(np.float32)
        return ks.pack_fp32(w), w, None
    groups = -(-k // group_size)
    if op == "int8":
        q = rng.integers(-127, 128, (n, k)).astype(np.int8)
        s = np.ones(n, np.float32) if kind == "unit" else rng.uniform(0.002, 0.02, n).astype(np.float32)
        return ks.pack_int8(q, s), q, s
    q = rng.integers(-8, 8, (n, k)).astype(np.int8)
    s = (
        np.ones((n, groups), np.float32)
        if kind == "unit"
        else rng.uniform(0.02, 0.2, (n, groups)).astype(np.float32)
    )
    return ks.pack_int4(q, s, group_size), q, s


def _settings(op: str, kind: str, bias: bool, activation: str | None):
    if kind == "int32":
        if op != "int8":
            raise ValueError("int32 cases exist for int8 weights only")
        return Epilogue(out_dtype="int32"), ActQuant("int8")
    if kind == "unit":
        return Epilogue(activation="relu" if activation == "relu" else None), ActQuant("static")
    return Epilogue(bias=bias, activation=activation), ActQuant("dynamic")


def _activations(kind: str, shape, rng):
    if kind == "int32":
        return rng.integers(-128, 128, shape).astype(np.int8), None
    if kind == "unit":
        return rng.integers(-128, 128, shape).astype(np.float32), np.ones(1, np.float32)
    return (rng.standard_normal(shape) * 2).astype(np.float32), None


def dense_case(
    ks: KernelSet,
    op: str,
    m: int,
    k: int,
    n: int,
    kind: str = "float",
    seed: int = 0,
    bias: bool = True,
    activation: str | None = None,
    group_size: int = 32,
) -> Case:
    """A dense case; ``op`` in {"int8", "int4", "fp32"}, ``kind`` in {"int32", "unit", "float"}."""
    rng = np.random.default_rng(seed)
    if op == "fp32":
        x = rng.standard_normal((m, k)).astype(np.float32)
        packed, w, _ = _weights(ks, op, kind, n, k, rng, group_size)
        b = rng.standard_normal(n).astype(np.float32) if bias else None
        kern = ks.dense_fp32(m, k, n, Epilogue(bias=bias, activation=activation))
        want = ref.dense_fp32(w, x, b, activation)
        return Case(kern, [x, *kern.const_args(packed, b)], want, exact=False, rtol=1e-4)
    epi, act = _settings(op, kind, bias, activation)
    packed, q, s = _weights(ks, op, kind, n, k, rng, group_size)
    x, xs = _activations(kind, (m, k), rng)
    b = rng.standard_normal(n).astype(np.float32) if epi.bias else None
    if op == "int8":
        kern = ks.dense_int8(m, k, n, epi, act)
        want = ref.dense_int8(ks.isa, x, q, s, b, epi, act, xs)
    else:
        kern = ks.dense_int4(m, k, n, epi, act, group_size)
        want = ref.dense_int4(ks.isa, x, q, s, group_size, b, epi, act, xs)
    inputs = [x] if xs is None else [x, xs]
    return Case(kern, [*inputs, *kern.const_args(packed, b)], want, exact=kind != "float")


def conv1d_case(
    ks: KernelSet,
    op: str,
    spec: Conv1dSpec,
    kind: str = "float",
    seed: int = 0,
    bias: bool = True,
    activation: str | None = None,
    group_size: int = 32,
) -> Case:
    """A conv1d case (``kind`` "unit" or "float"; "int32" does not apply: conv takes fp32 input)."""
    rng = np.random.default_rng(seed)
    n, k = spec.out_channels, spec.reduction
    if op == "fp32":
        x = rng.standard_normal(spec.input_shape).astype(np.float32)
        w = rng.standard_normal((n, spec.in_channels, spec.kernel_size)).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32) if bias else None
        kern = ks.conv1d_fp32(spec, Epilogue(bias=bias, activation=activation))
        want = ref.conv1d_fp32(spec, x, w, b, activation)
        return Case(kern, [x, *kern.const_args(ks.pack_conv1d_fp32(w), b)], want, exact=False, rtol=1e-4)
    epi, act = _settings(op, kind, bias, activation)
    packed, q, s = _weights(ks, op, kind, n, k, rng, group_size)
    x, xs = _activations(kind, spec.input_shape, rng)
    b = rng.standard_normal(n).astype(np.float32) if epi.bias else None
    cols = ref.im2col(spec, x)
    if op == "int8":
        kern = ks.conv1d_int8(spec, epi, act)
        want = ref.dense_int8(ks.isa, cols, q, s, b, epi, act, xs)
    else:
        kern = ks.conv1d_int4(spec, epi, act, group_size)
        want = ref.dense_int4(ks.isa, cols, q, s, group_size, b, epi, act, xs)
    want = want.reshape(spec.batch, spec.out_width, n)
    want = np.ascontiguousarray(want.transpose(0, 2, 1) if spec.layout == "NCW" else want)
    inputs = [x] if xs is None else [x, xs]
    return Case(kern, [*inputs, *kern.const_args(packed, b)], want, exact=True if kind == "unit" else False)


def assert_case(case: Case, got: np.ndarray) -> None:
    want = case.expected
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    if case.exact:
        if not np.array_equal(got, want):
            bad = np.argwhere(got != want)
            raise AssertionError(
                f"{case.kernel.name}: {len(bad)} of {want.size} values differ (not bit-exact); first at "
                f"{tuple(bad[0])}: got {got[tuple(bad[0])]}, want {want[tuple(bad[0])]}"
            )
        return
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.rtol * scale, err_msg=case.kernel.name)


def run_local(cases: list[Case]) -> list[np.ndarray]:
    """Compile all cases into one host library (their kernels' targets must run here) and call them."""
    import tvm

    funcs = {c.kernel.name: c.kernel.func for c in cases}
    lib = tvm.compile(tvm.IRModule(funcs), target=tvm.target.Target(cases[0].kernel.func.attrs["target"]))
    dev = tvm.cpu()
    outs = []
    for c in cases:
        args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in c.args]
        out = tvm.runtime.tensor(np.zeros(c.kernel.output.shape, c.kernel.output.dtype), dev)
        lib[c.kernel.name](*args, out)
        outs.append(out.numpy())
    return outs
