"""Matching one fused site: its weighted anchor (matmul / conv1d against a constant) and the epilogue ops
(bias, width crop, residual add, activation) a kernel can absorb."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from tvm import relax

from tvm_tqs.graph import weight_digest
from tvm_tqs.targets.kernels import Conv1dSpec

from .site_graph import Binding, BindingGraph, Constant, dtype_of, scalar_value, static_shape

_ACTIVATIONS = ("relu", "sigmoid", "tanh", "gelu")
_ANCHORS = ("matmul", "conv1d")


@dataclass
class SiteMatch:
    anchor: Binding
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


def match_anchor(g: BindingGraph, site: list[int]) -> SiteMatch | str:
    """The site's weighted anchor as a `SiteMatch`, or the reason it cannot become a kernel."""
    anchors = [g.binds[p] for p in site if g.binds[p].kind in _ANCHORS]
    if not anchors:
        return "unsupported op kind"
    a = anchors[0]
    pre = a.pre
    if pre is None or len(a.args) != 2:
        return f"unsupported op kind: {a.kind} (no Relax op to read its attributes from)"
    lhs, rhs = a.args
    out_shape = static_shape(a.var)
    if out_shape is None or any(static_shape(x) is None for x in a.args):
        return "activation input has dynamic shape"
    if a.kind == "matmul":
        if dtype_of(a.var) != "float32":
            return f"output dtype {dtype_of(a.var)} (float32 sites only)"
        if isinstance(rhs, Constant) and not isinstance(lhs, Constant):
            w = rhs.value.numpy()
            if w.ndim != 2:
                return f"batched constant weight (ndim {w.ndim})"
            if w.dtype != np.float32 or dtype_of(lhs) != "float32":
                return f"dtype {w.dtype} x {dtype_of(lhs)} (float32 sites only)"
            xs = static_shape(lhs)
            m = int(np.prod(xs[:-1], dtype=np.int64)) if len(xs) > 1 else 1
            return SiteMatch(a, "dense", lhs, w, weight_digest(w), 1, m=m, k=w.shape[0], n=w.shape[1])
        if isinstance(lhs, Constant) and not isinstance(rhs, Constant):
            w = lhs.value.numpy()
            xs = static_shape(rhs)
            if w.ndim != 2 or len(xs) < 2:
                return f"batched constant weight (ndim {w.ndim})" if w.ndim != 2 else "vector right operand"
            if w.dtype != np.float32 or dtype_of(rhs) != "float32":
                return f"dtype {w.dtype} x {dtype_of(rhs)} (float32 sites only)"
            m = int(np.prod(xs[:-2], dtype=np.int64)) * xs[-1]
            return SiteMatch(a, "dense_left", rhs, w, weight_digest(w), 0, m=m, k=w.shape[1], n=w.shape[0])
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
    if w.dtype != np.float32 or dtype_of(lhs) != "float32":
        return f"dtype {w.dtype} x {dtype_of(lhs)} (float32 sites only)"
    xs = static_shape(lhs)
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
    return SiteMatch(a, "conv1d", lhs, w, weight_digest(w), 0, conv=spec)


def _out_axis(match: SiteMatch, ndim: int) -> int:
    if match.op == "dense":
        return ndim - 1
    if match.op == "dense_left":
        return ndim - 2
    return 1 if match.conv.layout == "NCW" else 2


def _n(match: SiteMatch) -> int:
    return match.conv.out_channels if match.conv else match.n


def _slice_fold(match: SiteMatch, b: Binding, cur_shape) -> Conv1dSpec | None:
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


def _match_gelu(g: BindingGraph, var, site: set[int]) -> tuple[list[int], relax.Var] | None:
    """``y * 0.5 * (1 + erf(y / sqrt(2)))`` as exported by torch (divide, erf, add 1, multiply y, multiply 0.5)."""
    users = g.users.get(var.__hash__(), [])
    if len(users) != 2 or not all(u in site for u in users):
        return None
    first = [g.binds[u] for u in users]
    div = next((b for b in first if b.kind in ("divide", "multiply") and b.pre is not None), None)
    if div is None:
        return None
    c = scalar_value(div.pre.args[1]) if div.pre.args[0].same_as(var) else None
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
    vals = [scalar_value(a) for a in call.args]
    consts = [v for v in vals if v is not None]
    return consts[0] if len(consts) == 1 and len(call.args) == 2 else None


def match_epilogue(g: BindingGraph, match: SiteMatch, site: list[int]) -> None:
    """Absorb what follows the anchor in the same site: bias add, width crop (conv), activation."""
    site_set = set(site)
    var = match.anchor.var
    shape = static_shape(var)
    axis = _out_axis(match, len(shape))
    match.absorbed = [match.anchor.pos]
    match.fused = [match.anchor.kind]
    while True:
        nxt = g.only_user(var, site_set)
        if nxt is not None and nxt.kind == "add" and match.bias is None and match.activation is None:  # bias
            other = [a for a in nxt.args if not a.same_as(var)]
            if len(other) == 1 and isinstance(other[0], Constant) and static_shape(nxt.var) == shape:
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
                and static_shape(other[0]) == shape
                and static_shape(nxt.var) == shape
                and dtype_of(other[0]) == "float32"
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
                match.conv, var, shape = spec, nxt.var, static_shape(nxt.var)
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
