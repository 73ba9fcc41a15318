"""Quantized lowering: rewrite the planned fused sites of a model into integer (or scheduled float) kernels.

A plan maps fused call sites (their index in ``tvm_tqs.graph.fused_ops(fuse(model))``) to a precision.
Each weighted site (matmul / conv1d against a constant) becomes ONE ``call_tir`` of a kernel from
``tvm_tqs.targets.kernels``: weights quantized offline by the chosen quantizer and packed for the
target's ISA, activations quantized to int8 inside the kernel, int32 accumulation, and the rescale,
bias and activation of the site fused into the kernel's epilogue. The site's other ops (residual
adds, reshapes, norms, recurrent gate math) stay ordinary ops and are fused again around the kernel.
Sites that cannot be quantized keep fp32 and the report says why. See docs/quantize.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import relax

from tvm_tqs.errors import TQSError
from tvm_tqs.quantizers import QuantizedWeight, rtn
from tvm_tqs.targets.build import KERNEL_ATTR
from tvm_tqs.targets.kernels import DEFAULT_GROUP_SIZE, ActQuant, Conv1dSpec, Epilogue, KernelSet
from tvm_tqs.targets.registry import TargetSpec, get_target

from .fuse import OP_KINDS_ATTR, FuseOpsTagged
from .legalize_tagged import OP_KIND_ATTR, LegalizeOpsTagged

__all__ = [
    "PRECISIONS",
    "PlanError",
    "QuantizeResult",
    "QuantizeSites",
    "SiteReport",
    "SiteWeight",
    "kernel_set_for",
    "quantizable_sites",
    "quantize",
    "site_kernel",
]

PRECISIONS = ("fp32", "fp16", "int8", "int4")
_BITS = {"int8": 8, "int4": 4}
_ACTIVATIONS = ("relu", "sigmoid", "tanh", "gelu")
_ANCHORS = ("matmul", "conv1d")
Constant = tvm.ir.expr.GenericConst


class PlanError(TQSError):
    """A plan that cannot be applied: unknown sites or precisions, or shared weights split across precisions."""


@dataclass(frozen=True)
class SiteReport:
    """What the pass did with one fused site of the fp32 graph.

    ``requested`` is the plan's precision (``fp32`` when the site is not in the plan), ``applied`` what
    runs. ``kernel`` names the kernel PrimFunc the site now calls (None: the site kept its plain ops).
    ``reason`` says why ``applied`` differs from ``requested`` (or why a weighted fp32 site has no
    kernel). ``fused`` lists the site's ops inside the kernel, ``left`` the ones that stay ordinary ops.
    ``weight`` is the `WeightInfo.id` of the site's quantized weight; sites with one weight share it.
    """

    index: int
    kinds: tuple[str, ...]
    requested: str
    applied: str
    kernel: str | None = None
    reason: str | None = None
    weight: str | None = None
    fused: tuple[str, ...] = ()
    left: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass
class QuantizeResult:
    """The rewritten, fused module and the per-site report (`sites[i]` is fp32 site `i`)."""

    mod: tvm.IRModule
    sites: list[SiteReport]
    target: str
    kernel_set: str
    quantizer: str
    group_size: int
    act_quant: str = "dynamic"
    info: dict = field(default_factory=dict)

    @property
    def plan(self) -> dict[int, str]:
        """The precision each site runs at (after fallbacks)."""
        return {s.index: s.applied for s in self.sites}

    @property
    def kernels(self) -> dict[int, str]:
        """Site index -> kernel name, for the sites that call a kernel."""
        return {s.index: s.kernel for s in self.sites if s.kernel}

    def to_dict(self) -> dict:
        """JSON-ready summary (the module itself is not included): what ``plan.json`` holds."""
        return {
            "format": 1,
            "target": self.target,
            "kernel_set": self.kernel_set,
            "quantizer": self.quantizer,
            "group_size": self.group_size,
            "act_quant": self.act_quant,
            "plan": {str(s.index): s.applied for s in self.sites if s.applied != "fp32"},
            "sites": [s.to_dict() for s in self.sites],
            **self.info,
        }


# ---------------------------------------------------------------------------------------------------
# the legalized graph and its sites


@dataclass
class _Binding:
    pos: int
    var: relax.Var
    value: relax.Expr
    kind: str | None = None  # op kind of a call_tir callee (its LegalizeOpsTagged tag)
    args: tuple = ()  # call_tir arguments
    pre: relax.Call | None = None  # the Relax op call before legalization (attributes live there)


def _with_main(mod: tvm.IRModule, main: relax.Function) -> tvm.IRModule:
    """A new module (never one a BlockBuilder still holds) with ``main`` replaced."""
    funcs = {gv: (main if gv.name_hint == "main" else f) for gv, f in mod.functions.items()}
    return tvm.IRModule(funcs, attrs=mod.attrs)


def _flat_bindings(func: relax.Function) -> list:
    return [b for block in func.body.blocks for b in block.bindings]


def _legalize(mod: tvm.IRModule) -> tuple[tvm.IRModule, dict[int, relax.Call]]:
    """The first half of `fuse_pipeline` (up to FuseOps), and each binding var's pre-legalization op call."""
    pre = relax.transform.DecomposeOpsForInference()(mod)
    pre_calls = {
        b.var.__hash__(): b.value
        for b in _flat_bindings(pre["main"])
        if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)
    }
    legal = tvm.transform.Sequential(
        [LegalizeOpsTagged(), relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant()]
    )(pre)
    return legal, pre_calls


def _bindings(legal: tvm.IRModule, pre_calls: dict) -> list[_Binding]:
    call_tir = tvm.ir.Op.get("relax.call_tir")
    out = []
    for pos, b in enumerate(_flat_bindings(legal["main"])):
        item = _Binding(pos, b.var, b.value, pre=pre_calls.get(b.var.__hash__()))
        v = b.value
        if isinstance(v, relax.Call) and v.op.same_as(call_tir):
            func = legal[v.args[0]]
            attrs = func.attrs or {}
            item.kind = str(attrs[OP_KIND_ATTR]) if OP_KIND_ATTR in attrs else v.args[0].name_hint
            args = v.args[1]
            item.args = tuple(args.fields) if isinstance(args, relax.Tuple) else (args,)
        out.append(item)
    return out


def _site_groups(legal: tvm.IRModule, binds: list[_Binding]) -> list[list[int]]:
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
    tagged = _with_main(
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
    for binding in _flat_bindings(grouped["main"]):
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


# ---------------------------------------------------------------------------------------------------
# matching one site: anchor op, constant weight, fusable epilogue ops


@dataclass
class _Match:
    anchor: _Binding
    op: str  # "dense" (x @ W), "dense_left" (W @ x) or "conv1d"
    x: relax.Expr
    weight: np.ndarray  # in graph layout
    weight_digest: str
    channel_axis: int
    m: int = 0
    k: int = 0
    n: int = 0
    conv: Conv1dSpec | None = None
    bias: np.ndarray | None = None
    residual: relax.Expr | None = None  # a tensor added to the output (skip connection, LSTM input term)
    activation: str | None = None
    absorbed: list[int] = field(default_factory=list)  # positions replaced by the kernel call
    out_var: relax.Var | None = None
    fused: list[str] = field(default_factory=list)


def _static_shape(expr) -> tuple[int, ...] | None:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(d) for d in ty.shape.values)
    except (TypeError, AttributeError):
        return None


def _dtype(expr) -> str:
    return str(expr.ty.dtype)


def _digest(array: np.ndarray) -> str:
    # the same digest as tvm_tqs.graph._WeightTable, so that ids can be looked up
    return hashlib.sha1(str((array.shape, array.dtype.str)).encode() + array.tobytes()).hexdigest()[:16]


def _scalar(expr) -> float | None:
    if isinstance(expr, Constant):
        v = expr.value.numpy()
        if v.size == 1:
            return float(v.reshape(()))
    return None


class _Graph:
    """The legalized main: bindings, their users, and the fused site each belongs to."""

    def __init__(self, binds: list[_Binding], groups: list[list[int]], main: relax.Function):
        self.binds = binds
        self.groups = groups
        self.by_var = {b.var.__hash__(): b for b in binds}
        self.users: dict[int, list[int]] = {}
        for b in binds:
            for v in _free_vars(b.value):
                self.users.setdefault(v.__hash__(), []).append(b.pos)
        for v in _free_vars(main.body.body):
            self.users.setdefault(v.__hash__(), []).append(-1)  # the function's result

    def only_user(self, var, site: set[int]) -> _Binding | None:
        users = self.users.get(var.__hash__(), [])
        if len(users) == 1 and users[0] in site:
            return self.binds[users[0]]
        return None


def _free_vars(expr) -> list:
    out = []

    def visit(e):
        if isinstance(e, relax.Var):
            out.append(e)

    relax.analysis.post_order_visit(expr, visit)
    return out


def _bias_vector(const: np.ndarray, out_shape: tuple[int, ...], axis: int, n: int) -> np.ndarray | None:
    """The per-channel vector a constant add amounts to, or None if it varies along other axes."""
    if const.ndim > len(out_shape) or const.dtype != np.float32:
        return None
    full = (1,) * (len(out_shape) - const.ndim) + const.shape
    for i, d in enumerate(full):
        if d != 1 and not (i == axis % len(out_shape) and d == n):
            return None
    flat = const.reshape(-1)
    return np.full(n, flat[0], np.float32) if flat.size == 1 else np.ascontiguousarray(flat, np.float32)


def _match_anchor(g: _Graph, site: list[int]) -> _Match | str:
    """The site's weighted anchor as a `_Match`, or the reason it cannot become a kernel."""
    anchors = [g.binds[p] for p in site if g.binds[p].kind in _ANCHORS]
    if not anchors:
        return "unsupported op kind"
    a = anchors[0]
    pre = a.pre
    if pre is None or len(a.args) != 2:
        return f"unsupported op kind: {a.kind} (no Relax op to read its attributes from)"
    lhs, rhs = a.args
    out_shape = _static_shape(a.var)
    if out_shape is None or any(_static_shape(x) is None for x in a.args):
        return "activation input has dynamic shape"
    if a.kind == "matmul":
        if _dtype(a.var) != "float32":
            return f"output dtype {_dtype(a.var)} (float32 sites only)"
        if isinstance(rhs, Constant) and not isinstance(lhs, Constant):
            w = rhs.value.numpy()
            if w.ndim != 2:
                return f"batched constant weight (ndim {w.ndim})"
            if w.dtype != np.float32 or _dtype(lhs) != "float32":
                return f"dtype {w.dtype} x {_dtype(lhs)} (float32 sites only)"
            xs = _static_shape(lhs)
            m = int(np.prod(xs[:-1], dtype=np.int64)) if len(xs) > 1 else 1
            return _Match(a, "dense", lhs, w, _digest(w), 1, m=m, k=w.shape[0], n=w.shape[1])
        if isinstance(lhs, Constant) and not isinstance(rhs, Constant):
            w = lhs.value.numpy()
            xs = _static_shape(rhs)
            if w.ndim != 2 or len(xs) < 2:
                return f"batched constant weight (ndim {w.ndim})" if w.ndim != 2 else "vector right operand"
            if w.dtype != np.float32 or _dtype(rhs) != "float32":
                return f"dtype {w.dtype} x {_dtype(rhs)} (float32 sites only)"
            m = int(np.prod(xs[:-2], dtype=np.int64)) * xs[-1]
            return _Match(a, "dense_left", rhs, w, _digest(w), 0, m=m, k=w.shape[1], n=w.shape[0])
        return "no constant weight"
    # conv1d
    attrs = pre.attrs
    if not isinstance(rhs, Constant) or isinstance(lhs, Constant):
        return "no constant weight"
    if int(attrs.groups) != 1:
        return "conv groups != 1"
    layout = str(attrs.data_layout)
    if layout not in ("NCW", "NWC") or str(attrs.kernel_layout) != "OIW" or str(attrs.out_layout) != layout:
        return f"conv layout {layout}/{attrs.kernel_layout}->{attrs.out_layout} (NCW or NWC with OIW only)"
    w = rhs.value.numpy()
    if w.dtype != np.float32 or _dtype(lhs) != "float32":
        return f"dtype {w.dtype} x {_dtype(lhs)} (float32 sites only)"
    xs = _static_shape(lhs)
    batch, width, cin = (xs[0], xs[2], xs[1]) if layout == "NCW" else (xs[0], xs[1], xs[2])
    pad = [int(p) for p in attrs.padding]
    spec = Conv1dSpec(
        batch=batch,
        in_channels=cin,
        width=width,
        out_channels=w.shape[0],
        kernel_size=w.shape[2],
        stride=int(attrs.strides[0]),
        dilation=int(attrs.dilation[0]),
        padding=(pad[0], pad[-1]),
        layout=layout,
    )
    if spec.output_shape != out_shape:
        return f"conv output shape {out_shape} does not match its attributes"
    return _Match(a, "conv1d", lhs, w, _digest(w), 0, conv=spec)


def _out_axis(match: _Match, ndim: int) -> int:
    if match.op == "dense":
        return ndim - 1
    if match.op == "dense_left":
        return ndim - 2
    return 1 if match.conv.layout == "NCW" else 2


def _n(match: _Match) -> int:
    return match.conv.out_channels if match.conv else match.n


def _slice_fold(match: _Match, b: _Binding, cur_shape) -> Conv1dSpec | None:
    """A conv's output cropped along width with unit strides == the same conv with less padding."""
    spec = match.conv
    if spec is None or spec.stride != 1 or b.pre is None or len(b.pre.args) < 5:
        return None
    try:
        axes, begin, end, strides = ([int(v.value) for v in arg.fields] for arg in b.pre.args[1:5])
    except (AttributeError, TypeError):
        return None
    waxis = 2 if spec.layout == "NCW" else 1
    if len(axes) != 1 or axes[0] % 3 != waxis or strides != [1]:
        return None
    width = cur_shape[waxis]
    lo = max(0, begin[0] + width if begin[0] < 0 else begin[0])
    hi = min(width, end[0] + width if end[0] < 0 else end[0])
    pl, pr = spec.padding[0] - lo, spec.padding[1] - (width - hi)
    if hi <= lo or pl < 0 or pr < 0:
        return None
    new = dataclasses.replace(spec, padding=(pl, pr))
    return new if new.out_width == hi - lo else None


def _match_gelu(g: _Graph, var, site: set[int]) -> tuple[list[int], relax.Var] | None:
    """``y * 0.5 * (1 + erf(y / sqrt(2)))`` as exported by torch (divide, erf, add 1, multiply y, multiply 0.5)."""
    users = g.users.get(var.__hash__(), [])
    if len(users) != 2 or not all(u in site for u in users):
        return None
    first = [g.binds[u] for u in users]
    div = next((b for b in first if b.kind in ("divide", "multiply") and b.pre is not None), None)
    if div is None:
        return None
    c = _scalar(div.pre.args[1]) if div.pre.args[0].same_as(var) else None
    if c is None or not np.isclose(c if div.kind == "divide" else 1.0 / c, np.sqrt(2.0), rtol=1e-6):
        return None
    erf = g.only_user(div.var, site)
    if erf is None or erf.kind != "erf":
        return None
    add = g.only_user(erf.var, site)
    if add is None or add.kind != "add" or add.pre is None or _one_scalar(add.pre) != 1.0:
        return None
    mul = g.only_user(add.var, site)
    other = next((b for b in first if b is not div), None)
    if mul is None or other is None or mul.pos != other.pos or mul.kind != "multiply":
        return None
    half = g.only_user(mul.var, site)
    if half is None or half.kind != "multiply" or half.pre is None or _one_scalar(half.pre) != 0.5:
        return None
    return [div.pos, erf.pos, add.pos, mul.pos, half.pos], half.var


def _one_scalar(call: relax.Call) -> float | None:
    vals = [_scalar(a) for a in call.args]
    consts = [v for v in vals if v is not None]
    return consts[0] if len(consts) == 1 and len(call.args) == 2 else None


def _match_epilogue(g: _Graph, match: _Match, site: list[int]) -> None:
    """Absorb what follows the anchor in the same site: bias add, width crop (conv), activation."""
    site_set = set(site)
    var = match.anchor.var
    shape = _static_shape(var)
    axis = _out_axis(match, len(shape))
    match.absorbed = [match.anchor.pos]
    match.fused = [match.anchor.kind]
    while True:
        nxt = g.only_user(var, site_set)
        if nxt is not None and nxt.kind == "add" and match.bias is None and match.activation is None:  # bias
            other = [a for a in nxt.args if not a.same_as(var)]
            if len(other) == 1 and isinstance(other[0], Constant) and _static_shape(nxt.var) == shape:
                bias = _bias_vector(other[0].value.numpy(), shape, axis, _n(match))
                if bias is not None:
                    match.bias, var = bias, nxt.var
                    match.absorbed.append(nxt.pos)
                    match.fused.append("add")
                    continue
        if (
            nxt is not None
            and nxt.kind == "add"
            and match.residual is None
            and match.activation is None
            and match.op != "dense_left"
        ):
            other = [a for a in nxt.args if not a.same_as(var)]
            if (
                len(other) == 1
                and len(nxt.args) == 2
                and not isinstance(other[0], Constant)
                and isinstance(other[0], relax.Var)
                and _static_shape(other[0]) == shape
                and _static_shape(nxt.var) == shape
                and _dtype(other[0]) == "float32"
            ):
                match.residual, var = other[0], nxt.var
                match.absorbed.append(nxt.pos)
                match.fused.append("add")
                continue
        if (
            nxt is not None
            and nxt.kind == "strided_slice"
            and match.activation is None
            and match.residual is None
        ):
            spec = _slice_fold(match, nxt, shape)
            if spec is not None and "strided_slice" not in match.fused:
                match.conv, var, shape = spec, nxt.var, _static_shape(nxt.var)
                match.absorbed.append(nxt.pos)
                match.fused.append("strided_slice")
                continue
        if match.activation is None:
            if nxt is not None and nxt.kind in ("relu", "sigmoid", "tanh", "gelu"):
                match.activation, var = nxt.kind, nxt.var
                match.absorbed.append(nxt.pos)
                match.fused.append(nxt.kind)
                continue
            gelu = _match_gelu(g, var, site_set)
            if gelu is not None:
                positions, var = gelu
                match.activation = "gelu"
                match.absorbed.extend(positions)
                match.fused.append("gelu")
                continue
        break
    match.out_var = var


# ---------------------------------------------------------------------------------------------------
# kernels and weights


def kernel_set_for(target: str | TargetSpec) -> KernelSet:
    """The kernel set of a registered target (its ISA features; kernels compiled for its exact cpu)."""
    spec = get_target(target)
    if spec.kind == "x86":
        from tvm_tqs.targets import x86

        return x86.kernel_set(frozenset(spec.features), spec.tvm_target)
    if spec.kind == "arm_cpu":
        from tvm_tqs.targets import arm

        return arm.kernel_set(spec.features, spec.tvm_target)
    raise PlanError(
        f"target '{spec.name}' ({spec.kind}) has no CPU kernel set; quantized lowering supports x86 and arm_cpu"
    )


def _quantize_weight(quantizer, w, bits: int, channel_axis: int, group_size: int | None) -> QuantizedWeight:
    qw = quantizer(w, bits, channel_axis, group_size)
    if not isinstance(qw, QuantizedWeight):
        raise TypeError(f"quantizer must return a QuantizedWeight, got {type(qw).__name__}")
    if qw.bits != bits or (bits == 4 and qw.group_size != group_size):
        raise ValueError(
            f"quantizer returned bits={qw.bits}, group_size={qw.group_size}; asked for bits={bits}, "
            f"group_size={group_size} (int4 groups must match the kernel's)"
        )
    lo = -127 if bits == 8 else -8
    hi = 127 if bits == 8 else 7
    q = np.asarray(qw.q)
    if q.size and (q.min() < lo or q.max() > hi):
        raise ValueError(f"quantizer produced {bits}-bit values outside [{lo}, {hi}] (the kernels' contract)")
    return qw


def _quantizer_view(match: _Match) -> np.ndarray:
    """The weight handed to the quantizer: graph layout, except conv1d ``[O, I, KW]`` -> ``[O, KW, I]``
    (channel axis still 0), the conv kernels' tap-major reduction order, so that int4 groups of
    consecutive reduction elements are the kernels' groups."""
    return np.ascontiguousarray(match.weight.transpose(0, 2, 1)) if match.op == "conv1d" else match.weight


class _Packer:
    """Packs each (weight, precision) once: sites sharing a weight get the very same constants."""

    def __init__(self, ks: KernelSet, quantizer, group_size: int):
        self.ks, self.quantizer, self.group_size = ks, quantizer, group_size
        self.cache: dict[tuple, tuple] = {}

    def packed(self, match: _Match, precision: str):
        key = (match.weight_digest, match.op, precision)
        if key not in self.cache:
            w = _quantizer_view(match)  # what the quantizer sees: the kernel's reduction order
            wmat = np.ascontiguousarray(w.reshape(w.shape[0], -1) if match.op != "dense" else w.T)  # [N, K]
            if precision in _BITS:
                bits = _BITS[precision]
                qw = _quantize_weight(
                    self.quantizer, w, bits, match.channel_axis, self.group_size if bits == 4 else None
                )
                q = np.ascontiguousarray(qw.q.reshape(qw.q.shape[0], -1), np.int8)
                if bits == 8:
                    packed = self.ks.pack_int8(q, np.asarray(qw.scale, np.float32).reshape(-1))
                else:
                    packed = self.ks.pack_int4(q, np.asarray(qw.scale, np.float32), self.group_size)
            elif precision == "fp16":
                packed = self.ks.pack_fp16(wmat)
            else:
                packed = self.ks.pack_fp32(wmat)
            self.cache[key] = (packed, {})
        return self.cache[key]

    def consts(self, match: _Match, precision: str, kern) -> list:
        packed, made = self.packed(match, precision)
        arrays = kern.const_args(packed, match.bias)
        out = []
        for spec, arr in zip(kern.consts, arrays, strict=True):
            if spec.name == "bias":
                out.append(relax.const(arr))
                continue
            if spec.name not in made:  # one constant object per packed array, reused by every site
                made[spec.name] = relax.const(arr)
            out.append(made[spec.name])
        return out


def _kernel(ks: KernelSet, match: _Match, precision: str, act: ActQuant, group_size: int):
    epi = Epilogue(
        bias=match.bias is not None, activation=match.activation, residual=match.residual is not None
    )
    if match.conv is not None:
        spec = match.conv
        if precision == "int8":
            return ks.conv1d_int8(spec, epi, act)
        if precision == "int4":
            return ks.conv1d_int4(spec, epi, act, group_size)
        if precision == "fp16":
            return ks.conv1d_fp16(spec, epi)
        return ks.conv1d_fp32(spec, epi)
    m, k, n = match.m, match.k, match.n
    lead = _lead(match)
    if precision == "int8":
        return ks.dense_int8(m, k, n, epi, act, lead=lead)
    if precision == "int4":
        return ks.dense_int4(m, k, n, epi, act, group_size, lead=lead)
    if precision == "fp16":
        return ks.dense_fp16(m, k, n, epi, lead=lead)
    return ks.dense_fp32(m, k, n, epi, lead=lead)


def _lead(match: _Match) -> tuple[int, ...] | None:
    """Leading dims the kernel takes as they are (no reshape around it): x = [*lead, K], one dim > 1."""
    if match.op != "dense":
        return None
    xs = _static_shape(match.x)
    if len(xs) <= 2 or sum(d > 1 for d in xs[:-1]) > 1:
        return None
    return tuple(xs[:-1])


# ---------------------------------------------------------------------------------------------------
# the pass


def _normalize_plan(plan: Mapping, n_sites: int) -> dict[int, str]:
    out, problems = {}, []
    for key, value in dict(plan or {}).items():
        try:
            idx = int(key)
        except (TypeError, ValueError):
            problems.append(f"site key {key!r} is not an integer")
            continue
        if not 0 <= idx < n_sites:
            problems.append(f"site {idx} does not exist (the fused graph has sites 0..{n_sites - 1})")
        prec = str(value)
        if prec not in PRECISIONS:
            problems.append(f"site {idx}: unknown precision {value!r} (one of {', '.join(PRECISIONS)})")
        out[idx] = prec
    if problems:
        raise PlanError("invalid plan: " + "; ".join(problems))
    return out


@dataclass
class _Analysis:
    """The legalized graph, its fused sites (as in the fp32 fused graph) and what each site can become."""

    legal: tvm.IRModule
    table: list  # FusedOp of every fp32 site
    matches: dict  # site -> _Match, or the reason it cannot be lowered
    weight_ids: dict  # weight digest -> WeightInfo.id


_ANALYSES: list[tuple[tvm.IRModule, _Analysis]] = []  # last few analyses (compile() asks per site)


def _analyze(mod: tvm.IRModule) -> _Analysis:
    from tvm_tqs.graph import _is_fused, fused_ops

    for seen, an in _ANALYSES:
        if seen.same_as(mod):
            return an
    if _is_fused(mod):
        raise TQSError(
            "quantize takes the loaded (unfused) Relax module, e.g. tvm_tqs.load(model, shapes), "
            "not the output of fuse(): the fused PrimFuncs no longer show their ops"
        )
    legal, pre_calls = _legalize(mod)
    fp32 = relax.transform.DeadCodeElimination()(FuseOpsTagged()(legal))
    table = fused_ops(fp32)
    binds = _bindings(legal, pre_calls)
    groups = _site_groups(legal, binds)
    kinds = [tuple(binds[p].kind for p in grp) for grp in groups]
    if kinds != [op.kinds for op in table]:
        raise RuntimeError("internal error: the re-derived fused sites differ from the fp32 fused graph")
    graph = _Graph(binds, groups, legal["main"])
    matches: dict[int, _Match | str] = {}
    for i, grp in enumerate(groups):
        m = _match_anchor(graph, grp)
        if isinstance(m, _Match):
            _match_epilogue(graph, m, grp)
        matches[i] = m
    an = _Analysis(legal, table, matches, {w.digest: w.id for op in table for w in op.weights})
    _ANALYSES.append((mod, an))
    del _ANALYSES[:-4]
    return an


@dataclass(frozen=True)
class SiteWeight:
    """The constant weight of a site the pass can lower, as the quantizer sees it.

    ``weight`` is what the quantizer is given: the graph layout (a Relax matmul weight is [K, N],
    channel_axis 1; a left operand ``W @ x`` is [N, K], channel_axis 0), except conv1d weights, given
    as ``[O, KW, I]`` (channel_axis 0: the conv kernels' tap-major reduction order, so int4 groups
    match the kernel's).
    ``digest`` equals the `WeightInfo.digest` of the fused graph (sites with one digest share it).
    ``fused`` lists the site's ops its kernel would compute (anchor, bias, crop, residual, activation).
    """

    site: int
    weight: np.ndarray = field(repr=False, compare=False)
    channel_axis: int
    digest: str
    op: str
    fused: tuple[str, ...]


def quantizable_sites(mod: tvm.IRModule) -> dict[int, SiteWeight]:
    """The sites of a loaded (unfused) module that the pass can lower to a kernel, with their weight.

    Site indices are those of ``fused_ops(fuse(model))``. Sites missing here stay fp32 whatever the
    plan says (`quantize` reports why).
    """
    an = _analyze(mod)
    return {
        i: SiteWeight(i, _quantizer_view(m), m.channel_axis, m.weight_digest, m.op, tuple(m.fused))
        for i, m in an.matches.items()
        if isinstance(m, _Match)
    }


def site_kernel(
    mod: tvm.IRModule,
    site: int,
    precision: str,
    target: str | TargetSpec = "x86",
    *,
    group_size: int = DEFAULT_GROUP_SIZE,
):
    """The kernel `quantize` would insert for ``site`` at ``precision``, as a latency `KernelJob`
    (None when the site cannot be lowered). Same shapes, epilogue and ISA as in the built model."""
    from tvm_tqs.latency.jobs import KernelJob

    if precision not in PRECISIONS:
        raise PlanError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")
    match = _analyze(mod).matches.get(int(site))
    if not isinstance(match, _Match):
        return None
    spec = get_target(target)
    kern = _kernel(kernel_set_for(spec), match, precision, ActQuant("dynamic"), group_size)
    return KernelJob.create(kern.func, spec, name=kern.name, entry=kern.name, precision=precision)


@tvm.transform.module_pass(opt_level=0, name="QuantizeSites")
class QuantizeSites:
    """Rewrite the planned sites of a loaded (unfused) Relax module into kernel calls, then fuse.

    The module is legalized as `fuse_pipeline` does (the fp32 fused graph's sites are defined there);
    each site's bindings are found by re-running FuseOps on the legalized graph. For a weighted site
    (``matmul`` with one constant operand, ``conv1d`` with a constant weight) the anchor op and the
    ops of the same site that directly follow it, if present (a constant per-channel bias add, a
    width crop of a conv, then relu / sigmoid / tanh / gelu), become ONE ``call_tir`` of the kernel
    (``targets.kernels``) for the site's precision; inputs with leading dims are flattened to
    ``M = prod(leading)`` around it. The remaining ops of the site stay ordinary ops. Finally
    FuseOps/FuseTIR run again: kernels are opaque (``op_pattern`` 8), the leftovers fuse among
    themselves. The result is a fused module like `fuse_pipeline`'s, ready for `targets.build`.

    After the pass ran, ``self.sites`` holds one `SiteReport` per fp32 site.

    Parameters
    ----------
    plan : mapping
        Fused-site index (of ``fused_ops(fuse(model))``) -> ``"fp32" | "fp16" | "int8" | "int4"``;
        missing sites are fp32. Sites sharing one weight must share one precision (`PlanError`).
    kernel_set : KernelSet
        Kernels of the target (`kernel_set_for(target)`).
    quantizer : callable
        ``quantizer(w, bits, channel_axis, group_size) -> QuantizedWeight`` (`tvm_tqs.quantizers.rtn`).
    group_size : int
        int4 group size along the reduction (the kernels' default, 32).
    fp32_kernels : bool
        Weighted sites left at fp32 call the scheduled fp32 kernel (default); False keeps them as the
        plain legalized ops.
    """

    def __init__(
        self,
        plan: Mapping,
        kernel_set: KernelSet,
        quantizer: Callable = rtn,
        group_size: int = DEFAULT_GROUP_SIZE,
        fp32_kernels: bool = True,
    ):
        self.plan = plan
        self.ks = kernel_set
        self.quantizer = quantizer
        self.group_size = group_size
        self.fp32_kernels = fp32_kernels
        self.act = ActQuant("dynamic")
        self.sites: list[SiteReport] = []
        self.error: Exception | None = None

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        self.error = None
        try:
            return self._run(mod)
        except Exception as e:  # kept: TVM's pass machinery re-raises it as a plain RuntimeError
            self.error = e
            raise

    def _run(self, mod: tvm.IRModule) -> tvm.IRModule:
        an = _analyze(mod)
        legal, table, matches = an.legal, an.table, an.matches
        plan = _normalize_plan(self.plan, len(table))
        self._check_shared(plan, matches, an.weight_ids)
        weight_ids = an.weight_ids

        packer = _Packer(self.ks, self.quantizer, self.group_size)
        dataflow = [
            isinstance(block, relax.DataflowBlock)
            for block in legal["main"].body.blocks
            for _ in block.bindings
        ]
        bb = relax.BlockBuilder(legal)
        rewrites: dict[int, list] = {}  # position of a chain's last op -> new bindings
        kernels: dict[tuple, Any] = {}
        dropped: set[int] = set()
        reports = []
        for i, op in enumerate(table):
            requested = plan.get(i, "fp32")
            match = matches[i]
            base = {"index": i, "kinds": op.kinds, "requested": requested}
            if not isinstance(match, _Match):
                reason = match if match != "unsupported op kind" else f"unsupported op kind: {op.anchor}"
                if requested == "fp32" and match == "unsupported op kind":
                    reason = None  # nothing to quantize, nothing asked
                reports.append(SiteReport(**base, applied="fp32", reason=reason, left=op.kinds))
                continue
            wid = weight_ids.get(match.weight_digest)
            if requested == "fp32" and not self.fp32_kernels:
                reports.append(
                    SiteReport(
                        **base, applied="fp32", weight=wid, reason="fp32 kept as plain ops", left=op.kinds
                    )
                )
                continue
            key = (
                requested,
                match.conv,
                match.m,
                match.k,
                match.n,
                _lead(match),
                match.bias is not None,
                match.residual is not None,
                match.activation,
            )
            if key not in kernels:  # equal sites (every step of an unrolled RNN) share one kernel
                kernels[key] = _kernel(self.ks, match, requested, self.act, self.group_size)
            kern = kernels[key]
            gv = bb.add_func(kern.func.with_attr(KERNEL_ATTR, list(match.fused)), kern.name)
            consts = packer.consts(match, requested, kern)
            at = max(match.absorbed)  # every input (x, a residual) is defined before the chain's last op
            rewrites[at] = self._emit(bb, match, gv, kern, consts, dataflow[at])
            dropped.update(p for p in match.absorbed if p != at)
            left = list(op.kinds)
            for kind in (
                match.fused
                if "gelu" not in match.fused
                else [*match.fused[:-1], "divide", "erf", "add", "multiply", "multiply"]
            ):
                if kind in left:
                    left.remove(kind)
            reports.append(
                SiteReport(
                    **base,
                    applied=requested,
                    kernel=kern.name,
                    weight=wid,
                    fused=tuple(match.fused),
                    left=tuple(left),
                )
            )
        self.sites = reports
        out = _with_main(bb.get(), _rebuild_main(legal["main"], rewrites, dropped))
        fused = tvm.transform.Sequential(
            [
                LegalizeOpsTagged(),
                relax.transform.AnnotateTIROpPattern(),
                FuseOpsTagged(),
                relax.transform.DeadCodeElimination(),
            ]
        )(out)
        for gvar, func in list(fused.functions.items()):  # a kernel's kinds: the ops folded into it
            if isinstance(func, tvm.tirx.PrimFunc) and func.attrs and KERNEL_ATTR in func.attrs:
                fused[gvar] = func.with_attr(OP_KINDS_ATTR, list(func.attrs[KERNEL_ATTR]))
        return fused

    def _check_shared(self, plan: dict[int, str], matches: dict, weight_ids: dict[str, str]) -> None:
        by_weight: dict[str, list[int]] = {}
        for i, m in matches.items():
            if isinstance(m, _Match):
                by_weight.setdefault(m.weight_digest, []).append(i)
        problems = []
        for digest, sites in by_weight.items():
            precs = {i: plan.get(i, "fp32") for i in sites}
            if len(set(precs.values())) > 1:
                groups: dict[str, list[int]] = {}
                for i, p in precs.items():
                    groups.setdefault(p, []).append(i)
                parts = ", ".join(f"{p} at {_ranges(v)}" for p, v in sorted(groups.items()))
                problems.append(
                    f"sites {_ranges(sites)} share weight {weight_ids.get(digest, digest)} and must get one "
                    f"precision, but the plan gives {parts}"
                )
        if problems:
            raise PlanError("invalid plan: " + "; ".join(problems))

    def _emit(self, bb, match: _Match, gv, kern, consts, dataflow: bool) -> list:
        """New bindings replacing the anchor: [reshape/permute in], kernel call, [reshape/permute out]."""
        new = []

        def bind(expr, var=None):
            expr = bb.normalize(expr)
            if var is None:
                make = relax.DataflowVar if dataflow else relax.Var
                var = make(f"tqs{match.anchor.pos}_{len(new)}", expr.ty)
            new.append(relax.VarBinding(var, expr))
            return var

        x = match.x
        xs = _static_shape(x)
        out_shape = _static_shape(match.out_var)
        if match.op == "dense" and tuple(xs) != (match.m, match.k) and _lead(match) is None:
            x = bind(relax.op.reshape(x, (match.m, match.k)))
        elif match.op == "dense_left":
            axes = [*range(len(xs) - 2), len(xs) - 1, len(xs) - 2]
            x = bind(relax.op.reshape(bind(relax.op.permute_dims(x, axes)), (match.m, match.k)))
        inputs = [x]
        if match.residual is not None:
            r = match.residual
            if tuple(_static_shape(r)) != tuple(kern.output.shape):
                r = bind(relax.op.reshape(r, kern.output.shape))
            inputs.append(r)
        call = relax.call_tir(
            gv,
            relax.Tuple([*inputs, *consts]),
            relax.TensorType(shape=kern.output.shape, dtype=kern.output.dtype),
        )
        if match.op == "dense" and tuple(kern.output.shape) != tuple(out_shape):
            bind(relax.op.reshape(bind(call), out_shape), match.out_var)
        elif match.op == "dense_left":
            lead = out_shape[:-2]
            y = bind(relax.op.reshape(bind(call), (*lead, out_shape[-1], out_shape[-2])))
            axes = [*range(len(out_shape) - 2), len(out_shape) - 1, len(out_shape) - 2]
            bind(relax.op.permute_dims(y, axes), match.out_var)
        else:
            bind(call, match.out_var)
        return new


def _ranges(values: list[int]) -> str:
    values = sorted(values)
    if len(values) > 6:
        return f"{', '.join(map(str, values[:3]))}, ..., {values[-1]} ({len(values)} sites)"
    return ", ".join(map(str, values))


def _rebuild_main(main: relax.Function, rewrites: dict[int, list], dropped: set[int]) -> relax.Function:
    pos = 0
    blocks = []
    for block in main.body.blocks:
        dataflow = isinstance(block, relax.DataflowBlock)
        new = []
        for binding in block.bindings:
            if pos in rewrites:
                new.extend(rewrites[pos])
            elif pos not in dropped:
                new.append(binding)
            pos += 1
        blocks.append(relax.DataflowBlock(new) if dataflow else relax.BindingBlock(new))
    return relax.Function(
        main.params, relax.SeqExpr(blocks, main.body.body), main.ret_ty, main.is_pure, main.attrs
    )


def quantize(
    mod: Any,
    plan: Mapping,
    target: str | TargetSpec = "x86",
    quantizer: Callable = rtn,
    *,
    input_shapes: Mapping | None = None,
    group_size: int = DEFAULT_GROUP_SIZE,
    fp32_kernels: bool = True,
) -> QuantizeResult:
    """Apply a precision plan to a model for a target: `QuantizeSites` plus its report.

    Parameters
    ----------
    mod : tvm.IRModule or model
        The loaded, unfused Relax module (`tvm_tqs.load`), or anything `load` accepts (then
        ``input_shapes`` fixes its dynamic dims).
    plan : mapping
        ``{site index: "fp32" | "fp16" | "int8" | "int4"}`` over ``fused_ops(fuse(model))``.
    target : str or TargetSpec
        Registered target (``x86``, ``arm_cpu/cortex-a76``, ...): selects the kernel set.
    quantizer : callable
        Weight quantizer with the signature of `tvm_tqs.quantizers.rtn`.
    group_size : int
        int4 group size (multiple of 16; 32 by default, as the kernels').
    fp32_kernels : bool
        Weighted fp32 sites use the scheduled fp32 kernel (True) or stay plain ops.
    """
    if not isinstance(mod, tvm.IRModule):
        from tvm_tqs.frontend.load import load

        mod = load(mod, input_shapes)
    spec = get_target(target)
    ks = kernel_set_for(spec)
    qpass = QuantizeSites(plan, ks, quantizer, group_size, fp32_kernels)
    try:
        out = qpass(mod)
    except Exception:
        if qpass.error is not None:  # the original exception (PlanError, ValueError, ...)
            raise qpass.error from None
        raise
    return QuantizeResult(
        mod=out,
        sites=qpass.sites,
        target=spec.name,
        kernel_set=ks.name,
        quantizer=getattr(quantizer, "__name__", type(quantizer).__name__),
        group_size=group_size,
    )
