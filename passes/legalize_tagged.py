"""LegalizeOps that remembers which Relax operator each PrimFunc came from."""

from __future__ import annotations

import tvm
from tvm import relax

OP_KIND_ATTR = "tvm_tqs.op_kind"


def _bindings(func: relax.Function):
    body = func.body
    if not isinstance(body, relax.SeqExpr):
        return []
    return [b for block in body.blocks for b in block.bindings]


def _kind(op_name: str) -> str:
    # "relax.nn.conv1d" -> "conv1d": the op's own name, stable across shapes and dedup suffixes.
    return op_name.rsplit(".", 1)[-1]


@tvm.transform.module_pass(opt_level=0, name="LegalizeOpsTagged")
class LegalizeOpsTagged:
    """Legalize Relax operators to TIR and tag each produced PrimFunc with its operator kind.

    TVM names legalized PrimFuncs after the operator plus a dedup suffix ("matmul1", "conv1d2"), which
    cannot be parsed back reliably; the tag (function attribute ``tvm_tqs.op_kind``) carries the
    operator name through fusion so `inspect` can list the op kinds inside each fused op.

    Parameters
    ----------
    enable_warning : bool
        Forwarded to `relax.transform.LegalizeOps`.
    """

    def __init__(self, enable_warning: bool = False):
        self.enable_warning = enable_warning

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        op_of_var: dict[int, str] = {}
        for _, func in mod.functions.items():
            if isinstance(func, relax.Function):
                for binding in _bindings(func):
                    value = binding.value
                    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
                        op_of_var[binding.var.__hash__()] = value.op.name
        legalized = relax.transform.LegalizeOps(enable_warning=self.enable_warning)(mod)
        call_tir = tvm.ir.Op.get("relax.call_tir")
        kinds: dict[str, str] = {}
        for _, func in legalized.functions.items():
            if not isinstance(func, relax.Function):
                continue
            for binding in _bindings(func):
                value = binding.value
                op_name = op_of_var.get(binding.var.__hash__())
                if op_name and isinstance(value, relax.Call) and value.op.same_as(call_tir):
                    kinds.setdefault(value.args[0].name_hint, _kind(op_name))
        for gvar, func in list(legalized.functions.items()):
            kind = kinds.get(gvar.name_hint)
            if (
                kind is not None
                and isinstance(func, tvm.tirx.PrimFunc)
                and OP_KIND_ATTR not in (func.attrs or {})
            ):
                legalized[gvar] = func.with_attr(OP_KIND_ATTR, kind)
        return legalized
