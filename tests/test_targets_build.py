"""targets.build: build / export (atomic artifact dir) / load, and the schedule of the non-kernel ops."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tvm
import tvm_ffi
from onnx_builders import mlp_forecaster
from scipy.special import erf
from tvm import relax, te

from tvm_tqs.graph import fuse, fused_ops
from tvm_tqs.passes.quantize import quantize
from tvm_tqs.runtime import VMRunner
from tvm_tqs.targets import build as tb
from tvm_tqs.targets import elementwise, x86

HOST = tvm.target.Target({"kind": "llvm", "mcpu": x86.host_cpu()})


@pytest.fixture(scope="module")
def quantized():
    model = mlp_forecaster(lookback=32, hidden=32, horizon=8)
    ops = fused_ops(fuse(model, {"batch": 2}))
    return model, quantize(model, {op.index: "int8" for op in ops}, "x86", input_shapes={"batch": 2})


def test_export_writes_library_and_plan_and_loads_back(quantized, tmp_path):
    model, res = quantized
    exe = tb.build(res.mod, "x86")
    path = tb.export(exe, tmp_path / "art", "x86", res)
    assert sorted(p.name for p in path.iterdir()) == ["model.so", "plan.json"]
    meta = json.loads((path / "plan.json").read_text())
    assert meta["target_name"] == "x86" and meta["library"] == "model.so"
    assert meta["plan"] == {str(i): "int8" for i in res.kernels}
    assert [s["kernel"] for s in meta["sites"]] == [s.kernel for s in res.sites]
    vm, meta2 = tb.load(path)
    assert meta2 == meta
    x = np.random.default_rng(0).standard_normal((2, 32, 2)).astype(np.float32)
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), VMRunner(exe)(x)[0])


def test_export_is_all_or_nothing(quantized, tmp_path):
    _, res = quantized
    exe = tb.build(res.mod, "x86")
    first = tb.export(exe, tmp_path / "art", "x86", {"plan": {"1": "int8"}})
    with pytest.raises(FileExistsError):
        tb.export(exe, first, "x86", res)

    class Broken:
        def export_library(self, path, **kwargs):
            with open(path, "wb") as f:
                f.write(b"partial")
            raise RuntimeError("linker died")

    with pytest.raises(RuntimeError, match="linker died"):
        tb.export(Broken(), first, "x86", res, overwrite=True)
    # the old artifact is intact and no temporary directory is left behind
    assert json.loads((first / "plan.json").read_text())["plan"] == {"1": "int8"}
    assert sorted(os.listdir(tmp_path)) == ["art"]
    tb.export(exe, first, "x86", res, overwrite=True)
    assert json.loads((first / "plan.json").read_text())["plan"] != {"1": "int8"}
    assert sorted(os.listdir(tmp_path)) == ["art"]


def test_aarch64_export_without_a_cross_linker_ships_object_files(quantized, tmp_path, monkeypatch):
    import tarfile

    model, _ = quantized
    res = quantize(model, {2: "int8"}, "arm_cpu/cortex-a76", input_shapes={"batch": 2})
    exe = tb.build(res.mod, "arm_cpu/cortex-a76")
    monkeypatch.setattr(tb.shutil, "which", lambda name: None)
    path = tb.export(exe, tmp_path / "art", "arm_cpu/cortex-a76", res, extra={"note.json": {"a": 1}})
    assert sorted(p.name for p in path.iterdir()) == ["model.tar", "note.json", "plan.json"]
    assert json.loads((path / "plan.json").read_text())["library"] == "model.tar"
    with tarfile.open(path / "model.tar") as tar:
        objects = [m for m in tar.getmembers() if m.name.endswith(".o")]
        assert objects
        for m in objects:
            head = tar.extractfile(m).read(20)
            assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64


def test_kernels_must_match_the_build_target(quantized):
    model, _ = quantized
    arm = quantize(model, {1: "int8"}, "arm_cpu/cortex-a76", input_shapes={"batch": 2})
    with pytest.raises(ValueError, match="quantize for the target you build for"):
        tb.build(arm.mod, "x86")


def test_schedule_leaves_kernels_alone_and_the_numbers_unchanged():
    model = mlp_forecaster(lookback=32, hidden=32, horizon=8)
    fused = fuse(model, {"batch": 4})
    res = quantize(model, {}, "x86", input_shapes={"batch": 4})
    scheduled = tb.schedule(res.mod, "x86")
    for gv, func in res.mod.functions.items():
        if tb.is_kernel(func):
            assert scheduled[gv].same_as(func)
    x = np.random.default_rng(1).standard_normal((4, 32, 2)).astype(np.float32)
    want = VMRunner(tvm.compile(fused, target=HOST))(x)[0]
    got = VMRunner(tb.build(res.mod, "x86"))(x)[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def _unary(fn, n):
    a = te.placeholder((n,), "float32", name="a")
    b = te.compute((n,), lambda i: fn(a[i]), name="b")
    return te.create_prim_func([a, b]).with_attr("global_symbol", "main")


@pytest.mark.parametrize(
    ("name", "fn", "ref", "tol"),
    [
        ("exp", te.exp, np.exp, 2e-7),  # relative
        ("sigmoid", te.sigmoid, lambda v: 1 / (1 + np.exp(-v)), 2e-7),
        ("tanh", te.tanh, np.tanh, 5e-7),
        ("erf", te.erf, erf, 5e-7),
    ],
)
def test_fast_math_is_accurate_and_vectorized(name, fn, ref, tol):
    x = np.concatenate([np.linspace(-100, 100, 4000), np.linspace(-6, 6, 12000)]).astype(np.float32)
    func = elementwise.vectorize(elementwise.fast_math(_unary(fn, x.size)))
    lib = tvm.compile(tvm.IRModule({"main": func}), target=HOST)
    out = tvm.runtime.tensor(np.zeros_like(x))
    lib["main"](tvm.runtime.tensor(x), out)
    got, want = out.numpy().astype(np.float64), ref(x.astype(np.float64))
    if name == "exp":
        keep = (want > 1e-37) & (want < 1e38)
        err = np.max(np.abs(got[keep] - want[keep]) / want[keep])
    else:
        err = np.max(np.abs(got - want))
    assert err < tol, err
    asm = lib.mod.inspect_source("asm")
    assert "expf" not in asm and "tanhf" not in asm and "erff" not in asm
    if "avx512f" in x86.host_features():
        assert "zmm" in asm


def test_concatenate_is_unrolled_into_straight_copies():
    bb = relax.BlockBuilder()
    xs = [relax.Var(f"x{i}", relax.TensorType(shape=(1, 1, 64), dtype="float32")) for i in range(96)]
    with bb.function("main", xs):
        with bb.dataflow():
            y = bb.emit(relax.op.concat(xs, axis=0))
            out = bb.emit_output(bb.emit(relax.op.tanh(y)))
        bb.emit_func_output(out)
    mod = fuse(bb.get())
    (func,) = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    sched = elementwise.vectorize(func)
    assert not sched.same_as(func)
    args = [np.random.default_rng(i).standard_normal((1, 1, 64)).astype(np.float32) for i in range(96)]
    for f in (func, sched):
        lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=HOST)
        out = tvm.runtime.tensor(np.zeros((96, 1, 64), np.float32))
        lib["main"](*[tvm.runtime.tensor(a) for a in args], out)
        np.testing.assert_allclose(out.numpy(), np.tanh(np.concatenate(args)), rtol=1e-6, atol=1e-6)
    # TVM's concat picks each element through a chain of 96 selects; the selecting loop is unrolled
    # (each copy's conditions fold to constants) and the 64-wide rows vectorized
    kinds = []
    tvm_ffi.structural_walk(sched.body, [(tvm.tirx.For, lambda f: kinds.append(int(f.kind)))])
    assert int(tvm.tirx.ForKind.UNROLLED) in kinds and int(tvm.tirx.ForKind.VECTORIZED) in kinds
