"""Kernel-layer additions used by the quantize pass: residual epilogue, N-d ("lead") dense inputs,
weight-only fp16 kernels, the conv absmax/im2col schedule. Bit-exact where the math is integer
("unit" cases: integer activations, static scale 1, unit weight scales, integer residuals), on the
host (VNNI, AVX2) and under qemu (NEON, sdot, smmla)."""

from __future__ import annotations

import numpy as np
import pytest
import qemu_runner
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvm_tqs.targets import arm, x86
from tvm_tqs.targets.kernels import ActQuant, Conv1dSpec, Epilogue, reference
from tvm_tqs.targets.kernels.testing import Case, assert_case, conv1d_case, run_local

FEATURES = x86.host_features()
HOST_ISAS = [
    pytest.param(
        "avx512vnni", marks=pytest.mark.skipif("avx512vnni" not in FEATURES, reason="no AVX-512 VNNI")
    ),
    pytest.param("avx2", marks=pytest.mark.skipif("avx2" not in FEATURES, reason="no AVX2")),
]
HOST_TARGETS = {
    "avx512vnni": {"kind": "llvm", "mcpu": "cascadelake"},
    "avx2": {"kind": "llvm", "mcpu": "haswell"},
}
SETTINGS = dict(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
LEADS = st.sampled_from([None, (1, 1), (1, 0), (0, 1), (1, 1, 0)])  # 0: the dim that carries M


def _lead(spec, m):
    if spec is None or (0 not in spec and m != 1):
        return None
    return tuple(m if d == 0 else 1 for d in spec)


def residual_cases(ks, m, k, n, lead, seed):
    """int8 / int4 unit (exact) and dynamic-float cases with a residual, fp16 weight-only."""
    rng = np.random.default_rng(seed)
    shape_x = (*lead, k) if lead else (m, k)
    shape_y = (*lead, n) if lead else (m, n)
    cases = []
    # int8 / int4, unit: every value an integer below 2**24, so the fp32 epilogue is exact too
    for bits in (8, 4):
        lo, hi = (-127, 128) if bits == 8 else (-8, 8)
        q = rng.integers(lo, hi, (n, k)).astype(np.int8)
        x = rng.integers(-128, 128, shape_x).astype(np.float32)
        r = rng.integers(-1000, 1000, shape_y).astype(np.float32)
        b = rng.integers(-50, 50, n).astype(np.float32)
        epi = Epilogue(bias=True, residual=True, activation="relu")
        one = np.ones(1, np.float32)
        if bits == 8:
            s = np.ones(n, np.float32)
            kern = ks.dense_int8(m, k, n, epi, ActQuant("static"), lead=lead)
            want = reference.dense_int8(ks.isa, x.reshape(m, k), q, s, b, epi, ActQuant("static"), one, r)
            packed = ks.pack_int8(q, s)
        else:
            s = np.ones((n, -(-k // 32)), np.float32)
            kern = ks.dense_int4(m, k, n, epi, ActQuant("static"), lead=lead)
            want = reference.dense_int4(ks.isa, x.reshape(m, k), q, s, 32, b, epi, ActQuant("static"), one, r)
            packed = ks.pack_int4(q, s)
        args = [x, one, r, *kern.const_args(packed, b)]
        cases.append(Case(kern, args, want.reshape(shape_y), exact=True))
    # int8 dynamic, float data
    w = rng.standard_normal((n, k)).astype(np.float32)
    q, s = reference.quantize_weights_int8(w)
    x = rng.standard_normal(shape_x).astype(np.float32)
    r = rng.standard_normal(shape_y).astype(np.float32)
    epi = Epilogue(residual=True, activation="tanh")
    kern = ks.dense_int8(m, k, n, epi, lead=lead)
    want = reference.dense_int8(ks.isa, x.reshape(m, k), q, s, None, epi, ActQuant(), residual=r)
    cases.append(Case(kern, [x, r, *kern.const_args(ks.pack_int8(q, s))], want.reshape(shape_y), exact=False))
    # fp16 weight-only: the weights rounded to half, the math in fp32
    b = rng.standard_normal(n).astype(np.float32)
    epi = Epilogue(bias=True, residual=True)
    kern = ks.dense_fp16(m, k, n, epi, lead=lead)
    want = reference.dense_fp32(w.astype(np.float16), x.reshape(m, k), b, None, r)
    args = [x, r, *kern.const_args(ks.pack_fp16(w), b)]
    cases.append(Case(kern, args, want.reshape(shape_y), exact=False, rtol=1e-4))
    return cases


def _host_ks(isa):
    return x86.KERNEL_SETS[isa].with_target(HOST_TARGETS[isa])


def _check(cases):
    for case, got in zip(cases, run_local(cases), strict=True):
        assert_case(case, got)


@pytest.mark.parametrize("isa", HOST_ISAS)
@pytest.mark.parametrize(
    ("m", "k", "n", "lead"), [(1, 64, 256, (1, 1)), (96, 7, 256, (96, 1)), (5, 70, 40, None)]
)
def test_residual_lead_fp16_fixed(isa, m, k, n, lead):
    _check(residual_cases(_host_ks(isa), m, k, n, lead, seed=m + k + n))


@pytest.mark.parametrize("isa", HOST_ISAS)
@given(
    m=st.integers(1, 40), k=st.integers(1, 160), n=st.integers(1, 120), lead=LEADS, seed=st.integers(0, 2**16)
)
@settings(max_examples=4, **SETTINGS)
def test_residual_lead_fp16_random(isa, m, k, n, lead, seed):
    _check(residual_cases(_host_ks(isa), m, k, n, _lead(lead, m), seed))


CONVS = st.builds(
    lambda b, cin, w, cout, kw, d, causal: Conv1dSpec(
        b, cin, w + (kw - 1) * d, cout, kw, 1, d, ((kw - 1) * d, 0) if causal else (0, 0), "NCW"
    ),
    st.integers(1, 3),
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(1, 4),
    st.integers(1, 4),
    st.booleans(),
)


def _conv_cases(ks, spec, seed):
    """The per-position absmax and the positions-innermost im2col (NCW, unit stride): exact in unit
    cases, and the dynamic scales equal to the reference's (float cases)."""
    return [
        conv1d_case(ks, "int8", spec, "unit", seed, activation="relu"),
        conv1d_case(ks, "int8", spec, "float", seed, bias=True, activation="relu"),
        conv1d_case(ks, "int4", spec, "float", seed),
    ]


@pytest.mark.parametrize("isa", HOST_ISAS)
@given(spec=CONVS, seed=st.integers(0, 2**16))
@settings(max_examples=4, **SETTINGS)
def test_conv_ncw_dynamic_scales(isa, spec, seed):
    _check(_conv_cases(_host_ks(isa), spec, seed))


def test_fp16_kernels_widen_in_registers():
    ks = x86.kernel_set()
    text = x86.asm(x86.build(tvm.IRModule({(k := ks.dense_fp16(4, 64, 64)).name: k.func}), ks))
    assert "vcvtph2ps" in text
    aks = arm.KERNEL_SETS["dotprod"]
    text = arm.asm(arm.build(tvm.IRModule({(k := aks.dense_fp16(4, 64, 64)).name: k.func}), aks))
    assert "fcvtl" in text and "fmla" in text


@pytest.mark.qemu
@pytest.mark.parametrize("isa", ["neon", "dotprod", "i8mm"])
def test_residual_lead_fp16_and_conv_under_qemu(isa, qemu_aarch64_runner, tmp_path):
    ks = arm.KERNEL_SETS[isa]
    cases = residual_cases(ks, 1, 64, 256, (1, 1), 1) + residual_cases(ks, 33, 70, 40, (33, 1), 2)
    cases += _conv_cases(ks, Conv1dSpec(2, 12, 30, 20, 3, 1, 2, (4, 0), "NCW"), 3)
    lib = arm.build(tvm.IRModule({c.kernel.name: c.kernel.func for c in cases}), ks)
    so = arm.export(lib, tmp_path / f"{isa}.so")
    outs = qemu_runner.run_many(so, [(c.kernel.name, c.args, c.outputs) for c in cases])
    for case, (got,) in zip(cases, outs, strict=True):
        assert_case(case, got)
