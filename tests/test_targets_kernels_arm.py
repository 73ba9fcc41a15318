"""aarch64 kernels (NEON baseline, +dotprod sdot, +i8mm smmla).

The instruction checks only need LLVM (always run). Execution is cross-compiled with
aarch64-linux-gnu-g++ and run under qemu-aarch64 through tests/qemu_runner (``@pytest.mark.qemu``:
skipped when qemu-aarch64 or the cross compiler is absent); one qemu process runs a whole batch.
"""

from __future__ import annotations

import pytest
import qemu_runner
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvm_tqs.targets import arm
from tvm_tqs.targets.kernels import Conv1dSpec
from tvm_tqs.targets.kernels.testing import assert_case, conv1d_case, dense_case

ISAS = ["neon", "dotprod", "i8mm"]
SETTINGS = dict(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


def _run_on_qemu(isa, cases, tmp_path):
    ks = arm.KERNEL_SETS[isa]
    lib = arm.build(tvm.IRModule({c.kernel.name: c.kernel.func for c in cases}), ks)
    so = arm.export(lib, tmp_path / f"{isa}.so")
    outs = qemu_runner.run_many(so, [(c.kernel.name, c.args, c.outputs) for c in cases])
    for case, (got,) in zip(cases, outs, strict=True):
        assert_case(case, got)


def _cases(isa, shapes, seed):
    ks = arm.KERNEL_SETS[isa]
    cases = []
    for i, (m, k, n) in enumerate(shapes):
        s = seed + i
        cases += [
            dense_case(ks, "int8", m, k, n, "int32", s),
            dense_case(ks, "int8", m, k, n, "unit", s, activation="relu"),
            dense_case(ks, "int8", m, k, n, "float", s, activation="gelu" if i % 2 else None),
            dense_case(ks, "int4", m, k, n, "unit", s),
            dense_case(ks, "int4", m, k, n, "float", s, activation="sigmoid" if i % 2 else "relu"),
            dense_case(ks, "fp32", m, k, n, "float", s),
        ]
    return cases


FIXED = [
    (1, 256, 256),
    (1, 7, 3),
    (64, 384, 344),
    (5, 100, 24),
    (64, 33, 17),
    (3, 48, 130),
]  # 64x384x344: parallel


@pytest.mark.qemu
@pytest.mark.parametrize("isa", ISAS)
def test_dense_bit_exact_under_qemu(isa, qemu_aarch64_runner, tmp_path):
    _run_on_qemu(isa, _cases(isa, FIXED, 0), tmp_path)


@pytest.mark.qemu
@pytest.mark.parametrize("isa", ISAS)
def test_conv1d_under_qemu(isa, qemu_aarch64_runner, tmp_path):
    ks = arm.KERNEL_SETS[isa]
    specs = [
        Conv1dSpec(2, 32, 96, 32, 3, dilation=4, padding=(8, 0)),  # TCN layer, NCW
        Conv1dSpec(1, 5, 19, 7, 2, stride=2, padding=(1, 1), layout="NWC"),
    ]
    cases = []
    for i, spec in enumerate(specs):
        cases += [
            conv1d_case(ks, "int8", spec, "unit", i, activation="relu"),
            conv1d_case(ks, "int8", spec, "float", i, activation="relu"),
            conv1d_case(ks, "int4", spec, "unit", i),
            conv1d_case(ks, "fp32", spec, "float", i),
        ]
    _run_on_qemu(isa, cases, tmp_path)


SHAPE_BATCHES = st.lists(
    st.tuples(st.integers(1, 64), st.integers(1, 300), st.integers(1, 200)), min_size=3, max_size=5
)


@pytest.mark.qemu
@pytest.mark.parametrize("isa", ISAS)
@given(shapes=SHAPE_BATCHES, seed=st.integers(0, 2**16))
@settings(max_examples=2, **SETTINGS)
def test_dense_random_shapes_under_qemu(isa, shapes, seed, qemu_aarch64_runner, tmp_path_factory):
    _run_on_qemu(isa, _cases(isa, shapes, seed), tmp_path_factory.mktemp(isa))


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.parametrize("isa", ISAS)
@given(shapes=SHAPE_BATCHES, seed=st.integers(0, 2**16))
@settings(max_examples=25, **SETTINGS)
def test_dense_random_shapes_under_qemu_sweep(isa, shapes, seed, qemu_aarch64_runner, tmp_path_factory):
    _run_on_qemu(isa, _cases(isa, shapes, seed), tmp_path_factory.mktemp(isa))


@pytest.mark.parametrize(
    ("isa", "needles", "absent"),
    [
        pytest.param("dotprod", ["sdot"], ["smmla"], id="dotprod-sdot"),
        pytest.param("i8mm", ["smmla"], [], id="i8mm-smmla"),
        pytest.param("neon", ["smull", "sadalp"], ["sdot", "smmla"], id="neon-smull-sadalp"),
    ],
)
def test_asm_uses_the_intrinsic(isa, needles, absent):
    ks = arm.KERNEL_SETS[isa]
    for kern in (ks.dense_int8(4, 64, 64), ks.dense_int4(1, 64, 64)):
        text = arm.asm(arm.build(tvm.IRModule({kern.name: kern.func}), ks))
        words = {line.split()[0] for line in text.splitlines() if line.startswith("\t") and line.split()}
        for needle in needles:
            assert needle in words, f"{needle} missing from {kern.name}"
        if isa == "neon":  # the second half of each 16-byte chunk: smlal2 (int8) or smlal (decoded int4)
            assert words & {"smlal", "smlal2"}, kern.name
        for bad in absent:
            assert bad not in words, f"{bad} in {kern.name}"


def test_kernel_set_selection():
    assert arm.kernel_set({"neon", "dotprod", "i8mm"}).isa.name == "aarch64-i8mm"
    assert arm.kernel_set(("neon", "dotprod")).isa.name == "aarch64-dotprod"
    assert arm.kernel_set(("neon",)).isa.name == "aarch64-neon"
    target = {
        "kind": "llvm",
        "mtriple": "aarch64-linux-gnu",
        "mcpu": "neoverse-n1",
        "mattr": ["+neon", "+dotprod"],
    }
    assert arm.kernel_set(("neon", "dotprod"), target).target["mcpu"] == "neoverse-n1"
