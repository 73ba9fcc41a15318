"""Operator fusion that keeps the op kinds of every fused PrimFunc, and the pipeline that uses it."""

from __future__ import annotations

import tvm
from tvm import relax

from .channels_last import ChannelsLastConv
from .legalize_tagged import OP_KIND_ATTR, LegalizeOpsTagged

OP_KINDS_ATTR = "tvm_tqs.op_kinds"


def _called_prim_funcs(func: relax.Function) -> list[str]:
    call_tir = tvm.ir.Op.get("relax.call_tir")
    names: list[str] = []

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
            names.append(expr.args[0].name_hint)

    relax.analysis.post_order_visit(func.body, visit)
    return names


@tvm.transform.module_pass(opt_level=0, name="FuseOpsTagged")
class FuseOpsTagged:
    """Run FuseOps and FuseTIR, tagging each resulting PrimFunc with the op kinds fused inside it.

    FuseTIR drops the attributes of the functions it merges, so the kinds are read from the grouped
    Relax functions between the two passes and attached afterwards as ``tvm_tqs.op_kinds`` (a list of
    operator names in execution order). Unfused PrimFuncs get a one-element list from their own tag.

    Parameters
    ----------
    fuse_opt_level : int
        Forwarded to `relax.transform.FuseOps`.
    """

    def __init__(self, fuse_opt_level: int = -1):
        self.fuse_opt_level = fuse_opt_level

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        grouped = relax.transform.FuseOps(self.fuse_opt_level)(mod)
        tags = {
            gvar.name_hint: str(func.attrs[OP_KIND_ATTR])
            for gvar, func in grouped.functions.items()
            if isinstance(func, tvm.tirx.PrimFunc) and func.attrs and OP_KIND_ATTR in func.attrs
        }
        kinds_of: dict[str, list[str]] = {}
        for gvar, func in grouped.functions.items():
            if isinstance(func, relax.Function) and func.attrs and "Primitive" in func.attrs:
                kinds_of[gvar.name_hint] = [tags.get(name, name) for name in _called_prim_funcs(func)]
        fused = relax.transform.FuseTIR()(grouped)
        for gvar, func in list(fused.functions.items()):
            if not isinstance(func, tvm.tirx.PrimFunc):
                continue
            name = gvar.name_hint
            if name in kinds_of:
                kinds = kinds_of[name]
            elif func.attrs and OP_KIND_ATTR in func.attrs:
                kinds = [str(func.attrs[OP_KIND_ATTR])]
            else:
                continue
            fused[gvar] = func.with_attr(OP_KINDS_ATTR, kinds)
        return fused


def prelegalize() -> tvm.transform.Pass:
    """Training-style ops in their inference form, convolutions channels-last (`ChannelsLastConv`): the
    graph the sites are read from (`fuse_pipeline`, `site_graph.legalize_for_sites`)."""
    return tvm.transform.Sequential(
        [relax.transform.DecomposeOpsForInference(), ChannelsLastConv()], name="tvm_tqs.prelegalize"
    )


def fuse_pipeline() -> tvm.transform.Pass:
    """Imported Relax module -> the compiled, operator-fused graph (one PrimFunc per fused op).

    The same passes as TVM's zero pipeline (LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps,
    FuseTIR), which `tvm.compile` does not run on CPU, with the op kinds carried through.
    `prelegalize` first turns training-style ops (batch norm, layer norm variants) into their inference
    form, as the default pipeline would, and convolutions channels-last.
    """
    return tvm.transform.Sequential(
        [
            prelegalize(),
            LegalizeOpsTagged(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            FuseOpsTagged(),
            relax.transform.DeadCodeElimination(),
        ],
        name="tvm_tqs.fuse",
    )
