"""x86 kernels (AVX-512 VNNI, AVX2) run on this host: bit-exact integer parts, tight fp32 epilogues."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tvm import relax

from tvm_tqs.targets import x86
from tvm_tqs.targets.kernels import ActQuant, Conv1dSpec, Epilogue, reference
from tvm_tqs.targets.kernels.testing import assert_case, conv1d_case, dense_case, run_local

FEATURES = x86.host_features()
VNNI = pytest.param(
    "avx512vnni", marks=pytest.mark.skipif("avx512vnni" not in FEATURES, reason="host CPU lacks AVX-512 VNNI")
)
AVX2 = pytest.param("avx2", marks=pytest.mark.skipif("avx2" not in FEATURES, reason="host CPU lacks AVX2"))
ISAS = [VNNI, AVX2]

HOST_TARGETS = {
    "avx512vnni": {"kind": "llvm", "mcpu": "cascadelake"},
    "avx2": {"kind": "llvm", "mcpu": "haswell"},
}
SHAPES = st.tuples(st.integers(1, 64), st.integers(1, 300), st.integers(1, 200))
ACTS = st.sampled_from([None, "relu", "gelu", "sigmoid", "tanh"])
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _ks(isa):
    return x86.KERNEL_SETS[isa].with_target(HOST_TARGETS[isa])


def _check(cases):
    for case, got in zip(cases, run_local(cases), strict=True):
        assert_case(case, got)


def _dense_cases(isa, shape, seed, activation):
    m, k, n = shape
    ks = _ks(isa)
    return [
        dense_case(ks, "int8", m, k, n, "int32", seed),
        dense_case(ks, "int8", m, k, n, "unit", seed, activation="relu"),
        dense_case(ks, "int8", m, k, n, "float", seed, bias=True, activation=activation),
        dense_case(ks, "int4", m, k, n, "unit", seed),
        dense_case(ks, "int4", m, k, n, "float", seed, bias=bool(seed % 2), activation=activation),
        dense_case(ks, "fp32", m, k, n, "float", seed, activation=activation),
    ]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "shape", [(1, 256, 256), (1, 7, 3), (32, 512, 96), (5, 100, 24), (64, 33, 17), (256, 128, 300)]
)
def test_dense_fixed_shapes(isa, shape):
    _check(_dense_cases(isa, shape, 0, "relu"))


@pytest.mark.parametrize("isa", ISAS)
@given(shape=SHAPES, seed=st.integers(0, 2**16), activation=ACTS)
@settings(max_examples=6, **SETTINGS)
def test_dense_random_shapes(isa, shape, seed, activation):
    _check(_dense_cases(isa, shape, seed, activation))


@pytest.mark.slow
@pytest.mark.parametrize("isa", ISAS)
@given(shape=SHAPES, seed=st.integers(0, 2**16), activation=ACTS)
@settings(max_examples=120, **SETTINGS)
def test_dense_random_shapes_sweep(isa, shape, seed, activation):
    _check(_dense_cases(isa, shape, seed, activation))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("group_size", [64, 128])
def test_dense_int4_other_group_sizes(isa, group_size):
    ks = _ks(isa)
    _check(
        [
            dense_case(ks, "int4", 3, 200, 40, "unit", 1, group_size=group_size),
            dense_case(ks, "int4", 1, 300, 33, "float", 2, group_size=group_size, activation="gelu"),
        ]
    )


CONVS = st.builds(
    lambda b, c, w, o, kw, s, d, causal, layout: Conv1dSpec(
        b, c, w + (kw - 1) * d, o, kw, s, d, ((kw - 1) * d, 0) if causal else (d, d), layout
    ),
    st.integers(1, 3),
    st.integers(1, 40),
    st.integers(1, 60),
    st.integers(1, 50),
    st.integers(1, 4),
    st.integers(1, 2),
    st.integers(1, 4),
    st.booleans(),
    st.sampled_from(["NCW", "NWC"]),
)


def _conv_cases(isa, spec, seed):
    ks = _ks(isa)
    return [
        conv1d_case(ks, "int8", spec, "unit", seed, activation="relu"),
        conv1d_case(ks, "int8", spec, "float", seed, activation="relu"),
        conv1d_case(ks, "int4", spec, "unit", seed),
        conv1d_case(ks, "fp32", spec, "float", seed),
    ]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "spec",
    [
        Conv1dSpec(2, 32, 96, 32, 3, dilation=4, padding=(8, 0)),  # TCN layer, NCW as exported from PyTorch
        Conv1dSpec(4, 96, 256, 64, 3, dilation=2, padding=(4, 0), layout="NWC"),  # >= 2**23 MACs: parallel
    ],
    ids=["tcn-ncw", "parallel-nwc"],
)
def test_conv1d_tcn_layer(isa, spec):
    _check(_conv_cases(isa, spec, 0))


@pytest.mark.parametrize("isa", ISAS)
@given(spec=CONVS, seed=st.integers(0, 2**16))
@settings(max_examples=5, **SETTINGS)
def test_conv1d_random(isa, spec, seed):
    _check(_conv_cases(isa, spec, seed))


@pytest.mark.slow
@pytest.mark.parametrize("isa", ISAS)
@given(spec=CONVS, seed=st.integers(0, 2**16))
@settings(max_examples=80, **SETTINGS)
def test_conv1d_random_sweep(isa, spec, seed):
    _check(_conv_cases(isa, spec, seed))


@pytest.mark.parametrize(
    ("isa", "needle", "absent"),
    [
        pytest.param("avx512vnni", "vpdpbusd", None, id="vnni"),
        pytest.param("avx2", "vpmaddubsw", "vpdpbusd", id="avx2"),
    ],
)
def test_asm_uses_the_intrinsic(isa, needle, absent):
    ks = _ks(isa)
    for kern in (ks.dense_int8(4, 64, 64), ks.dense_int4(1, 64, 64)):
        text = x86.asm(x86.build(tvm.IRModule({kern.name: kern.func}), ks))
        assert needle in text
        if absent:
            assert absent not in text


@pytest.mark.parametrize("isa", ISAS)
def test_relax_call_tir_with_packed_constants(isa, tmp_path):
    """The quantize pass's usage: call_tir(kernel, [x, *consts]) in Relax, re-fused, built, exported."""
    ks = _ks(isa)
    m, k, n = 4, 96, 40
    rng = np.random.default_rng(0)
    w = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    q, s = reference.quantize_weights_int8(w)
    kern = ks.dense_int8(m, k, n, Epilogue(bias=True, activation="relu"))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape=(m, k), dtype="float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            gv = bb.add_func(kern.func, kern.name)
            consts = [relax.const(a) for a in kern.const_args(ks.pack_int8(q, s), b)]
            y = bb.emit(
                relax.call_tir(gv, [x, *consts], relax.TensorType(shape=kern.output.shape, dtype="float32"))
            )
            z = bb.emit_output(bb.emit(relax.op.multiply(y, relax.const(2.0, "float32"))))
        bb.emit_func_output(z)
    mod = tvm.transform.Sequential(
        [
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
        ]
    )(bb.get())
    assert kern.name in [gv.name_hint for gv in mod.functions]  # not fused away (op_pattern opaque)
    path = x86.export(x86.build(mod, ks), tmp_path / "model.so")
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    xv = rng.standard_normal((m, k)).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(xv, tvm.cpu())).numpy()
    want = 2 * reference.dense_int8(ks.isa, xv, q, s, b, Epilogue(bias=True, activation="relu"))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_const_args_checks_shapes_and_bias():
    ks = _ks("avx2")
    kern = ks.dense_int8(2, 64, 16, Epilogue(bias=True))
    q = np.zeros((16, 64), np.int8)
    with pytest.raises(ValueError, match="pass bias"):
        kern.const_args(ks.pack_int8(q, np.ones(16, np.float32)))
    with pytest.raises(ValueError, match="expected"):
        kern.const_args(ks.pack_int8(np.zeros((16, 32), np.int8), np.ones(16, np.float32)), np.zeros(16))
    plain = ks.dense_int8(2, 64, 16)
    with pytest.raises(ValueError, match="no bias"):
        plain.const_args(ks.pack_int8(q, np.ones(16, np.float32)), np.zeros(16))
    with pytest.raises(ValueError, match="int32 epilogue"):
        ks.dense_int8(2, 64, 16, Epilogue(out_dtype="int32"), ActQuant("dynamic"))


def test_kernel_set_selection():
    assert x86.kernel_set({"avx2", "avx512vnni"}).isa.name == "x86-avx512-vnni"
    assert x86.kernel_set({"avx2"}, {"kind": "llvm", "mcpu": "haswell"}).target["mcpu"] == "haswell"
    with pytest.raises(ValueError):
        x86.kernel_set(set())
