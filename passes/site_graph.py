"""The legalized graph of a loaded module, and which of its bindings make up each fused site.

The quantize pass rewrites bindings of the legalized (not yet fused) graph, but plans name the sites of the
fused fp32 graph: `site_positions` recovers, for every fused site, the legalized bindings it holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax

from .fuse import prelegalize
from .legalize_tagged import OP_KIND_ATTR, LegalizeOpsTagged

Constant = tvm.ir.expr.GenericConst


@dataclass
class Binding:
    pos: int
    var: relax.Var
    value: relax.Expr
    kind: str | None = None  # op kind of a call_tir callee (its LegalizeOpsTagged tag)
    args: tuple = ()  # call_tir arguments
    pre: relax.Call | None = None  # the Relax op call before legalization (attributes live there)


def with_main(mod: tvm.IRModule, main: relax.Function) -> tvm.IRModule:
    """A new module (never one a BlockBuilder still holds) with ``main`` replaced."""
    funcs = {gv: (main if gv.name_hint == "main" else f) for gv, f in mod.functions.items()}
    return tvm.IRModule(funcs, attrs=mod.attrs)


def flat_bindings(func: relax.Function) -> list:
    return [b for block in func.body.blocks for b in block.bindings]


def legalize_for_sites(mod: tvm.IRModule) -> tuple[tvm.IRModule, dict[int, relax.Call]]:
    """The first half of `fuse_pipeline` (up to FuseOps), and each binding var's pre-legalization op call."""
    pre = prelegalize()(mod)
    pre_calls = {
        b.var.__hash__(): b.value
        for b in flat_bindings(pre["main"])
        if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)
    }
    legal = tvm.transform.Sequential(
        [LegalizeOpsTagged(), relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant()]
    )(pre)
    return legal, pre_calls


def read_bindings(legal: tvm.IRModule, pre_calls: dict) -> list[Binding]:
    call_tir = tvm.ir.Op.get("relax.call_tir")
    out = []
    for pos, b in enumerate(flat_bindings(legal["main"])):
        item = Binding(pos, b.var, b.value, pre=pre_calls.get(b.var.__hash__()))
        v = b.value
        if isinstance(v, relax.Call) and v.op.same_as(call_tir):
            func = legal[v.args[0]]
            attrs = func.attrs or {}
            item.kind = str(attrs[OP_KIND_ATTR]) if OP_KIND_ATTR in attrs else v.args[0].name_hint
            args = v.args[1]
            item.args = tuple(args.fields) if isinstance(args, relax.Tuple) else (args,)
        out.append(item)
    return out


def site_positions(legal: tvm.IRModule, binds: list[Binding]) -> list[list[int]]:
    """Positions of the legalized bindings inside each fused site, in site order.

    Every call_tir of main gets its own copy of its PrimFunc (distinguished by an attribute), FuseOps
    runs as in `fuse_pipeline`, and each grouped call then names the bindings it holds. FuseOps decides
    from op patterns and dataflow only, so the grouping is the one the fp32 graph has (checked by the
    caller against the real fused graph).
    """
    call_tir = tvm.ir.Op.get("relax.call_tir")
    bb = relax.BlockBuilder(legal)
    replaced = {}
    for b in binds:
        if b.kind is None:
            continue
        func = legal[b.value.args[0]].with_attr("tvm_tqs.binding", b.pos)
        gv = bb.add_func(func, f"tqs_b{b.pos}")
        replaced[b.pos] = bb.normalize(
            relax.Call(b.value.op, [gv, *b.value.args[1:]], b.value.attrs, b.value.ty_args)
        )
    tagged = bb.get()
    main = tagged["main"]
    pos = 0
    blocks = []
    for block in main.body.blocks:
        new = []
        for binding in block.bindings:
            value = replaced.get(pos, binding.value)
            new.append(relax.VarBinding(binding.var, value) if pos in replaced else binding)
            pos += 1
        blocks.append(
            relax.DataflowBlock(new) if isinstance(block, relax.DataflowBlock) else relax.BindingBlock(new)
        )
    tagged = with_main(
        tagged,
        relax.Function(
            main.params, relax.SeqExpr(blocks, main.body.body), main.ret_ty, main.is_pure, main.attrs
        ),
    )
    grouped = relax.transform.DeadCodeElimination()(relax.transform.FuseOps(-1)(tagged))

    def positions_of(func_body) -> list[int]:
        found: list[int] = []

        def visit(expr):
            if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
                found.append(int(grouped[expr.args[0]].attrs["tvm_tqs.binding"]))

        relax.analysis.post_order_visit(func_body, visit)
        return found

    groups = []
    for binding in flat_bindings(grouped["main"]):
        v = binding.value
        if not isinstance(v, relax.Call):
            continue
        if v.op.same_as(call_tir):
            groups.append([int(grouped[v.args[0]].attrs["tvm_tqs.binding"])])
        elif isinstance(v.op, tvm.ir.GlobalVar):
            func = grouped[v.op]
            if isinstance(func, relax.Function) and func.attrs and "Primitive" in func.attrs:
                groups.append(positions_of(func.body))
    return groups


def static_shape(expr) -> tuple[int, ...] | None:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(d) for d in ty.shape.values)
    except (TypeError, AttributeError):
        return None


def dtype_of(expr) -> str:
    return str(expr.ty.dtype)


def scalar_value(expr) -> float | None:
    if isinstance(expr, Constant):
        v = expr.value.numpy()
        if v.size == 1:
            return float(v.reshape(()))
    return None


class BindingGraph:
    """The legalized main: bindings, their users, and the fused site each belongs to."""

    def __init__(self, binds: list[Binding], groups: list[list[int]], main: relax.Function):
        self.binds = binds
        self.groups = groups
        self.by_var = {b.var.__hash__(): b for b in binds}
        self.users: dict[int, list[int]] = {}
        for b in binds:
            for v in free_vars(b.value):
                self.users.setdefault(v.__hash__(), []).append(b.pos)
        for v in free_vars(main.body.body):
            self.users.setdefault(v.__hash__(), []).append(-1)  # the function's result

    def only_user(self, var, site: set[int]) -> Binding | None:
        users = self.users.get(var.__hash__(), [])
        if len(users) == 1 and users[0] in site:
            return self.binds[users[0]]
        return None


def free_vars(expr) -> list:
    out = []

    def visit(e):
        if isinstance(e, relax.Var):
            out.append(e)

    relax.analysis.post_order_visit(expr, visit)
    return out
