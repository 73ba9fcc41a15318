"""LegalizeOpsTagged and FuseOpsTagged: TVM's passes plus the op-kind tags, nothing else changed."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_tqs.passes.fuse import OP_KINDS_ATTR, FuseOpsTagged, fuse_pipeline
from tvm_tqs.passes.legalize_tagged import OP_KIND_ATTR, LegalizeOpsTagged


@I.ir_module
class Before:
    @R.function
    def main(
        x: R.Tensor((1, 8), "float32"), w: R.Tensor((8, 4), "float32"), b: R.Tensor((4,), "float32")
    ) -> R.Tensor((1, 4), "float32"):
        with R.dataflow():
            y = R.matmul(x, w)
            z = R.add(y, b)
            r = R.nn.relu(z)
            s = R.nn.softmax(r, axis=-1)
            R.output(s)
        return s


def _with_attr(mod: tvm.IRModule, name: str, value) -> tvm.IRModule:
    mod = tvm.IRModule(dict(mod.functions.items()), attrs=mod.attrs)
    for gvar, func in list(mod.functions.items()):
        if gvar.name_hint == name:
            mod[gvar] = func.with_attr(*value)
    return mod


def test_legalize_tagged_is_legalize_plus_one_attr_per_primfunc():
    after = LegalizeOpsTagged()(Before)
    expected = relax.transform.LegalizeOps()(Before)
    for name, kind in [("matmul", "matmul"), ("add", "add"), ("relu", "relu"), ("softmax", "softmax")]:
        expected = _with_attr(expected, name, (OP_KIND_ATTR, kind))
    tvm.ir.assert_structural_equal(after, expected)


def test_fuse_tagged_is_fuseops_fusetir_plus_kinds():
    before = relax.transform.AnnotateTIROpPattern()(LegalizeOpsTagged()(Before))
    after = FuseOpsTagged()(before)
    expected = relax.transform.FuseTIR()(relax.transform.FuseOps()(before))
    expected = _with_attr(expected, "fused_matmul_add_relu", (OP_KINDS_ATTR, ["matmul", "add", "relu"]))
    expected = _with_attr(expected, "softmax", (OP_KINDS_ATTR, ["softmax"]))
    tvm.ir.assert_structural_equal(after, expected)


def test_pipeline_gives_one_call_tir_per_fused_op():
    fused = fuse_pipeline()(Before)
    call_tir = tvm.ir.Op.get("relax.call_tir")
    callees = [
        b.value.args[0].name_hint
        for block in fused["main"].body.blocks
        for b in block.bindings
        if isinstance(b.value, relax.Call) and b.value.op.same_as(call_tir)
    ]
    assert callees == ["fused_matmul_add_relu", "softmax"]
    kinds = {name: [str(k) for k in fused[name].attrs[OP_KINDS_ATTR]] for name in callees}
    assert kinds == {"fused_matmul_add_relu": ["matmul", "add", "relu"], "softmax": ["softmax"]}
