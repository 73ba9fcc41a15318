"""Fast-math kernel epilogues: `targets.build.schedule(..., fast_math=True)` (what artifacts are built with)
replaces the activation's libm call in a kernel's epilogue by the vectorizable approximations of
`targets.elementwise`. The integer part stays bit-exact (kernels without a transcendental activation come
back as the very same function), the activation is within a stated tolerance of the libm-built kernel,
and no libm call is left in the kernel's code.

Stated tolerance (``TOL``): ``|fast - libm| <= TOL[act] * max(1, |libm|)``, elementwise, from the
approximations' max abs errors vs float64 (sigmoid 1.2e-7, tanh 3e-7, erf 3e-7) plus fp32 rounding of
the result; GELU ``y / 2 * (1 + erf(y / sqrt 2))`` scales erf's error by ``|y| / 2``, up to |y| = 4 sqrt 2
(beyond, erf's clamp is exact in fp32), so its bound is 1e-6 (measured: 6.7e-7).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvm_tqs.targets import build as tb
from tvm_tqs.targets import x86
from tvm_tqs.targets.kernels import Conv1dSpec
from tvm_tqs.targets.kernels.testing import assert_case, conv1d_case, dense_case

FEATURES = x86.host_features()
ISAS = [
    pytest.param(
        "avx512vnni",
        marks=pytest.mark.skipif("avx512vnni" not in FEATURES, reason="host CPU lacks AVX-512 VNNI"),
    ),
    pytest.param("avx2", marks=pytest.mark.skipif("avx2" not in FEATURES, reason="host CPU lacks AVX2")),
]
HOST_TARGETS = {
    "avx512vnni": {"kind": "llvm", "mcpu": "cascadelake"},
    "avx2": {"kind": "llvm", "mcpu": "haswell"},
}
TOL = {"sigmoid": 2.5e-7, "tanh": 4e-7, "gelu": 1e-6}
LIBM = ("erff", "tanhf", "expf")


def _ks(isa):
    return x86.KERNEL_SETS[isa].with_target(HOST_TARGETS[isa])


def _marked(kernel):
    """The kernel's PrimFunc marked as the quantize pass marks the kernels it inserts."""
    return kernel.func.with_attr(tb.KERNEL_ATTR, "test")


def _fast(kernel, marked=None):
    """The kernel as `targets.build` schedules it for an artifact."""
    marked = _marked(kernel) if marked is None else marked
    return tb.schedule(tvm.IRModule({kernel.name: marked}), "x86", fast_math=True)[kernel.name]


def _run(func, case) -> tuple[np.ndarray, str]:
    """Compile one kernel PrimFunc for its target and call it on the case's arguments: (output, asm)."""
    lib = tvm.compile(tvm.IRModule({case.kernel.name: func}), target=tvm.target.Target(func.attrs["target"]))
    args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in case.args]
    out = tvm.runtime.tensor(np.zeros(case.kernel.output.shape, case.kernel.output.dtype))
    lib[case.kernel.name](*args, out)
    return out.numpy(), lib.mod.inspect_source("asm")


def _check_fast(case, act: str) -> None:
    fast, asm = _run(_fast(case.kernel), case)
    libm, _ = _run(case.kernel.func, case)
    err = np.abs(fast.astype(np.float64) - libm) / np.maximum(1.0, np.abs(libm))
    assert err.max(initial=0) <= TOL[act], (case.kernel.name, float(err.max()))
    assert_case(case, fast)  # and still within the kernel tests' tolerance of the float64 reference
    assert not any(f"{name}@" in asm or f"call\t{name}" in asm for name in LIBM), case.kernel.name


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act", sorted(TOL))
@pytest.mark.parametrize("op", ["int8", "int4", "fp32"])
def test_dense_epilogue_is_fast_and_within_tolerance(isa, act, op):
    # 84 x 32 -> 64: the PatchTST feed-forward GEMM at batch 1 (12 patches x 7 channels)
    _check_fast(dense_case(_ks(isa), op, 84, 32, 64, "float", seed=3, activation=act), act)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act", sorted(TOL))
def test_conv1d_epilogue_is_fast_and_within_tolerance(isa, act):
    spec = Conv1dSpec(2, 32, 96, 32, 3, dilation=4, padding=(8, 0))  # a TCN layer, NCW
    _check_fast(conv1d_case(_ks(isa), "int8", spec, "float", seed=5, activation=act), act)


@pytest.mark.parametrize("isa", ISAS)
@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 200), st.integers(1, 100)),
    seed=st.integers(0, 2**16),
    act=st.sampled_from(sorted(TOL)),
)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_shapes(isa, shape, seed, act):
    m, k, n = shape
    _check_fast(dense_case(_ks(isa), "int8", m, k, n, "float", seed, activation=act), act)


@pytest.mark.parametrize("isa", ISAS)
def test_integer_parts_are_untouched_and_bit_exact(isa):
    ks = _ks(isa)
    cases = [
        dense_case(ks, "int8", 9, 70, 33, "int32", 1),  # raw int32 dot products
        dense_case(ks, "int8", 9, 70, 33, "unit", 2, activation="relu"),  # integer math end to end
        dense_case(ks, "int4", 9, 70, 33, "unit", 3),
        dense_case(ks, "int8", 9, 70, 33, "float", 4, activation=None),
    ]
    for case in cases:
        marked = _marked(case.kernel)
        fast = _fast(case.kernel, marked)
        assert fast.same_as(marked), case.kernel.name  # no transcendental call: the very same function
        got, _ = _run(fast, case)
        assert_case(case, got)
