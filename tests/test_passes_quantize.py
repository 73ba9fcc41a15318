"""QuantizeSites / quantize(): planned sites become kernel calls, the rest stays; reports and plan checks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from onnx_builders import mlp_forecaster, shared_weight_model
from tvm import relax

from tvm_tqs.graph import call_sites, fuse, fused_ops
from tvm_tqs.passes.fuse import OP_KINDS_ATTR, FuseOpsTagged
from tvm_tqs.passes.legalize_tagged import LegalizeOpsTagged
from tvm_tqs.passes.quantize import PRECISIONS, PlanError, QuantizeResult, kernel_set_for, quantize
from tvm_tqs.quantizers import QuantizedWeight, rtn
from tvm_tqs.runtime import VMRunner
from tvm_tqs.targets.build import KERNEL_ATTR, build
from tvm_tqs.targets.kernels import Epilogue

RNG = np.random.default_rng(0)
W = (RNG.standard_normal((16, 24)) * 0.3).astype(np.float32)  # Relax matmul weight [K, N]
B = (RNG.standard_normal(24) * 0.1).astype(np.float32)


def _dense_relu_module() -> tvm.IRModule:
    """x[1, 6, 16] @ W + b -> relu -> * 2 (the multiply is a leftover op of the same fused site)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape=(1, 6, 16), dtype="float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, relax.const(W)))
            y = bb.emit(relax.op.add(y, relax.const(B)))
            y = bb.emit(relax.op.nn.relu(y))
            z = bb.emit_output(bb.emit(relax.op.multiply(y, relax.const(2.0, "float32"))))
        bb.emit_func_output(z)
    return bb.get()


def _refuse(mod: tvm.IRModule) -> tvm.IRModule:
    return tvm.transform.Sequential(
        [
            LegalizeOpsTagged(),
            relax.transform.AnnotateTIROpPattern(),
            FuseOpsTagged(),
            relax.transform.DeadCodeElimination(),
        ]
    )(mod)


def test_rewrite_is_one_kernel_call_plus_the_leftover_ops():
    before = _dense_relu_module()
    assert [op.kinds for op in fused_ops(fuse(before))] == [("matmul", "add", "relu", "multiply")]
    res = quantize(before, {0: "int8"}, "x86")

    # Expected: the int8 kernel (rescale + bias + relu in its epilogue) on x as it is ([1, 6, K], no
    # reshape), with the RTN-quantized, packed weights as constants; the multiply fused on its own.
    ks = kernel_set_for("x86")
    qw = rtn(W, 8, 1)
    kern = ks.dense_int8(6, 16, 24, Epilogue(bias=True, activation="relu"), lead=(1, 6))
    fused = ["matmul", "add", "relu"]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape=(1, 6, 16), dtype="float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            gv = bb.add_func(kern.func.with_attr(KERNEL_ATTR, fused), kern.name)
            consts = [relax.const(a) for a in kern.const_args(ks.pack_int8(qw.q, qw.scale[:, 0]), B)]
            y = bb.emit(relax.call_tir(gv, [x, *consts], relax.TensorType(shape=(1, 6, 24), dtype="float32")))
            z = bb.emit_output(bb.emit(relax.op.multiply(y, relax.const(2.0, "float32"))))
        bb.emit_func_output(z)
    expected = _refuse(bb.get())
    kgv = expected.get_global_var(kern.name)
    expected[kgv] = expected[kgv].with_attr(OP_KINDS_ATTR, fused)  # a kernel lists the ops folded into it
    tvm.ir.assert_structural_equal(res.mod, expected)
    assert kern.name in [gv.name_hint for gv in res.mod.functions]

    (site,) = res.sites
    assert (site.requested, site.applied, site.kernel) == ("int8", "int8", kern.name)
    assert site.fused == ("matmul", "add", "relu") and site.left == ("multiply",) and site.reason is None
    assert res.kernels == {0: kern.name} and res.plan == {0: "int8"}
    # the result is a fused graph like fuse()'s: inspect reads it, the kernel site shows its ops
    ops = fused_ops(res.mod)
    assert [op.kinds for op in ops] == [("matmul", "add", "relu"), ("multiply",)]

    x_np = RNG.standard_normal((1, 6, 16)).astype(np.float32)
    got = VMRunner(build(res.mod, "x86"))(x_np)[0]
    want = 2 * np.maximum(x_np @ W + B, 0)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.02


def test_fp32_plan_uses_the_scheduled_fp32_kernel_and_keeps_the_numbers():
    mod = _dense_relu_module()
    res = quantize(mod, {}, "x86")
    assert res.sites[0].applied == "fp32" and "dense_f32" in res.sites[0].kernel
    plain = quantize(mod, {}, "x86", fp32_kernels=False)
    assert plain.sites[0].kernel is None and plain.sites[0].reason == "fp32 kept as plain ops"
    x = RNG.standard_normal((1, 6, 16)).astype(np.float32)
    want = VMRunner(tvm.compile(fuse(mod), target=tvm.target.Target("llvm")))(x)[0]
    for r in (res, plain):
        np.testing.assert_allclose(VMRunner(build(r.mod, "x86"))(x)[0], want, rtol=1e-5, atol=1e-6)


def test_report_covers_every_site_of_an_onnx_model():
    model = mlp_forecaster()
    ops = fused_ops(fuse(model, {"batch": 2}))
    res = quantize(model, {op.index: "int8" for op in ops}, "x86", input_shapes={"batch": 2})
    assert isinstance(res, QuantizeResult) and len(res.sites) == len(ops) == 4
    first, fc1, fc2, last = res.sites
    assert first.applied == "fp32" and first.reason == "unsupported op kind: permute_dims"
    assert fc1.applied == "int8" and fc1.fused == ("matmul", "add", "relu") and fc1.weight == "w0"
    assert fc2.applied == "int8" and fc2.fused == ("matmul", "add") and fc2.weight == "w2"
    assert last.reason == "unsupported op kind: permute_dims"
    d = res.to_dict()
    assert d["plan"] == {"1": "int8", "2": "int8"} and d["kernel_set"] in ("x86-avx512-vnni", "x86-avx2")
    assert d["group_size"] == 32 and len(d["sites"]) == 4
    # not requested: no reason to report for a site without weights
    assert quantize(model, {}, "x86", input_shapes={"batch": 2}).sites[0].reason is None


def _model(nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, "t", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _f(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _c(name, array):
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def _unquantizable_model():
    """Attention scores (no constant operand), a grouped conv, a layer norm."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["x", "xt"], ["scores"]),  # [1, 8, 8]
        helper.make_node("Conv", ["scores", "k"], ["c"], group=4, kernel_shape=[1]),  # 8 -> 8 channels
        helper.make_node("LayerNormalization", ["c", "g", "bt"], ["y"], axis=-1),
    ]
    inits = [_c("k", rng.standard_normal((8, 2, 1))), _c("g", np.ones(8)), _c("bt", np.zeros(8))]
    return _model(nodes, [_f("x", [1, 8, 4])], [_f("y", [1, 8, 8])], inits)


def test_unquantizable_sites_stay_fp32_with_the_reason():
    model = _unquantizable_model()
    ops = fused_ops(fuse(model))
    res = quantize(model, {op.index: "int8" for op in ops}, "x86")
    reasons = {s.reason for s in res.sites if s.applied == "fp32"}
    assert "no constant weight" in reasons
    assert "conv groups != 1" in reasons
    assert any(r and r.startswith("unsupported op kind: layer_norm") for r in reasons)
    assert not res.kernels
    x = np.random.default_rng(2).standard_normal((1, 8, 4)).astype(np.float32)
    want = VMRunner(tvm.compile(fuse(model), target=tvm.target.Target("llvm")))(x)[0]
    np.testing.assert_allclose(VMRunner(build(res.mod, "x86"))(x)[0], want, rtol=1e-5, atol=1e-5)


def test_plan_errors_list_every_problem():
    mod = _dense_relu_module()
    with pytest.raises(PlanError) as err:
        quantize(mod, {0: "int3", 5: "int8", "x": "fp32"}, "x86")
    msg = str(err.value)
    assert "unknown precision 'int3'" in msg and "site 5 does not exist" in msg and "'x'" in msg
    assert quantize(mod, {"0": "int4"}, "x86").sites[0].applied == "int4"  # JSON keys are fine
    assert PRECISIONS == ("fp32", "fp16", "int8", "int4")


def test_shared_weight_gets_one_precision_and_one_packed_constant():
    model = shared_weight_model()
    ops = fused_ops(fuse(model))
    assert ops[0].weights[0].id == ops[1].weights[0].id == "w0"
    with pytest.raises(PlanError, match=r"sites 0, 1 share weight w0 .* fp32 at 1, int8 at 0"):
        quantize(model, {0: "int8"}, "x86")

    calls = []

    def counting(w, bits, channel_axis, group_size=None):
        calls.append(w.shape)
        return rtn(w, bits, channel_axis, group_size)

    res = quantize(model, {0: "int8", 1: "int8", 3: "int8"}, "x86", counting)  # 2, 4: the conv's transposes
    assert [s.applied for s in res.sites] == ["int8", "int8", "fp32", "int8", "fp32"]
    # the shared weight was quantized once; the conv weight [O, I, KW] is given tap-major [O, KW, I]
    assert calls == [(8, 8), (3, 2, 1)]
    kernel_calls = [b.value for b in call_sites(res.mod) if b.value.args[0].name_hint.startswith("tqs_dense")]
    assert len(kernel_calls) == 2
    (a, b) = (
        [c for c in call.args[1].fields if isinstance(c, tvm.ir.expr.GenericConst)] for call in kernel_calls
    )
    assert len(a) == len(b) >= 2 and all(x.same_as(y) for x, y in zip(a, b, strict=True))


def test_quantizer_contract_is_checked():
    mod = _dense_relu_module()

    def minus128(w, bits, channel_axis, group_size=None):
        qw = rtn(w, bits, channel_axis, group_size)
        q = qw.q.copy()
        q.flat[0] = -128
        return QuantizedWeight(q, qw.scale, bits, group_size, qw.shape, channel_axis)

    with pytest.raises(ValueError, match=r"outside \[-127, 127\]"):
        quantize(mod, {0: "int8"}, "x86", minus128)

    def wrong_groups(w, bits, channel_axis, group_size=None):
        return rtn(w, bits, channel_axis, 64 if bits == 4 else group_size)

    with pytest.raises(ValueError, match="group_size"):
        quantize(mod, {0: "int4"}, "x86", wrong_groups)


@pytest.mark.parametrize("precision", ["fp16", "int8", "int4"])
def test_each_precision_runs_close_to_fp32(precision):
    model = mlp_forecaster(lookback=64, hidden=48, horizon=24)
    shapes = {"batch": 3}
    ops = fused_ops(fuse(model, shapes))
    res = quantize(model, {op.index: precision for op in ops}, "x86", input_shapes=shapes)
    tag = {"fp16": "_f16w_", "int8": "_w8_", "int4": "_w4_"}[precision]
    assert all(tag in k for k in res.kernels.values()) and len(res.kernels) == 2
    x = np.random.default_rng(3).standard_normal((3, 64, 2)).astype(np.float32)
    want = VMRunner(tvm.compile(fuse(model, shapes), target=tvm.target.Target("llvm")))(x)[0]
    got = VMRunner(build(res.mod, "x86"))(x)[0]
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert err < {"fp16": 1e-3, "int8": 0.03, "int4": 0.25}[precision], err


def _tcn_block():
    """Causal conv (pad both sides, crop the right), bias, relu, then a 1x1 conv with a skip connection."""
    rng = np.random.default_rng(4)
    c, width = 8, 24
    nodes = [
        helper.make_node("Conv", ["x", "k1", "b1"], ["c1"], pads=[2, 2], dilations=[1], kernel_shape=[3]),
        helper.make_node("Slice", ["c1", "st", "en", "ax"], ["s1"]),
        helper.make_node("Relu", ["s1"], ["r1"]),
        helper.make_node("Conv", ["r1", "k2", "b2"], ["c2"], kernel_shape=[1]),
        helper.make_node("Add", ["c2", "x"], ["y"]),
    ]
    inits = [
        _c("k1", rng.standard_normal((c, c, 3)) * 0.3),
        _c("b1", rng.standard_normal(c) * 0.1),
        _c("k2", rng.standard_normal((c, c, 1)) * 0.3),
        _c("b2", rng.standard_normal(c) * 0.1),
        numpy_helper.from_array(np.array([0], np.int64), "st"),
        numpy_helper.from_array(np.array([width], np.int64), "en"),
        numpy_helper.from_array(np.array([2], np.int64), "ax"),
    ]
    return _model(nodes, [_f("x", [2, c, width])], [_f("y", [2, c, width])], inits)


def test_conv_crop_bias_relu_and_skip_connection_fold_into_kernels():
    model = _tcn_block()
    ops = fused_ops(fuse(model))
    x = np.random.default_rng(5).standard_normal((2, 8, 24)).astype(np.float32)
    want = VMRunner(tvm.compile(fuse(model), target=tvm.target.Target("llvm")))(x)[0]
    for precision, tol in (("fp32", 1e-5), ("int8", 0.03)):
        res = quantize(model, {op.index: precision for op in ops}, "x86")
        folded = [s for s in res.sites if s.kernel]
        assert [s.fused for s in folded] == [
            ("conv1d", "add", "strided_slice", "relu"),
            ("conv1d", "add", "add"),
        ]
        assert "p2_0" in folded[0].kernel  # padding (2, 2) + crop = causal padding (2, 0)
        assert "_res" in folded[1].kernel
        got = VMRunner(build(res.mod, "x86"))(x)[0]
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < tol


def test_exported_gelu_pattern_folds_into_the_epilogue():
    rng = np.random.default_rng(6)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["bias", "m"], ["h"]),
        helper.make_node("Div", ["h", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]),
        helper.make_node("Mul", ["h", "a"], ["p"]),
        helper.make_node("Mul", ["p", "half"], ["y"]),
    ]
    inits = [
        _c("w", rng.standard_normal((32, 64)) * 0.2),
        _c("bias", rng.standard_normal(64) * 0.1),
        _c("sqrt2", np.sqrt(2.0)),
        _c("one", 1.0),
        _c("half", 0.5),
    ]
    model = _model(nodes, [_f("x", [4, 32])], [_f("y", [4, 64])], inits)
    res = quantize(model, {0: "int8"}, "x86")
    assert res.sites[0].fused == ("matmul", "add", "gelu") and res.sites[0].left == ()
    x = rng.standard_normal((4, 32)).astype(np.float32)
    want = VMRunner(tvm.compile(fuse(model), target=tvm.target.Target("llvm")))(x)[0]
    got = VMRunner(build(res.mod, "x86"))(x)[0]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.03


def test_a_fused_module_is_refused():
    with pytest.raises(Exception, match="unfused"):
        quantize(fuse(_dense_relu_module()), {0: "int8"}, "x86")


@pytest.mark.parametrize(("target", "isa"), [("cuda/sm_90", "cuda_dp4a"), ("opencl/adreno", "opencl_int")])
def test_gpu_targets_get_gpu_kernels(target, isa):
    res = quantize(_dense_relu_module(), {0: "int8"}, target)
    assert res.kernel_set == isa.replace("_", "-")
    assert isa in res.kernels[0]
