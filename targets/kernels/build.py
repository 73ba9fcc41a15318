"""TE computes and schedules of the integer and fp32 GEMM kernels (dense and im2col conv1d).

One PrimFunc per site, in stages (names are the TIR block names):

``x_amax_part``/``x_amax``/``x_scale`` (dynamic mode: per-row absmax and scale) -> ``x_q`` (quantize
+ pad to the register tile, uint8 + 128 on VNNI; im2col for conv1d) -> ``acc`` (int32 GEMM,
tensorized; int4: ``acc`` per K-group and ``acc_f`` = fp32 sum over groups of ``scale * int32``) ->
``out`` (rescale, bias, activation, layout). ``out`` is tiled and ``acc``/``acc_f`` are computed at
each tile in ``local`` scope (``mr`` x ``nr`` intrinsic tiles, kept in registers by LLVM), so the
epilogue reads the accumulators straight from registers; the tile loop over (batch, M, N) is
parallel when the problem is big enough.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import tvm
from tvm import te, tirx

from ..intrin import arm as _arm_intrin  # noqa: F401  (registers the aarch64 intrinsics)
from ..intrin import x86 as _x86_intrin  # noqa: F401  (registers the x86 intrinsics)
from ..intrin.common import decode_int4
from .config import ActQuant, Conv1dSpec, Epilogue, Isa, Kernel, TensorSpec, Tiling
from .packing import check_group_size, padded_k, padded_n, tile_shape

__all__ = ["choose_tiling", "conv1d_int", "dense_fp32", "dense_int", "conv1d_fp32"]

# Below this many multiply-accumulates a parallel launch costs more than it saves. Measured on the
# 2-vCPU host with TVM_NUM_THREADS=2: 16x512x512 (4M MACs) is 1.26x SLOWER in parallel, 32x512x512
# (8M) 1.26x faster; GEMVs up to 1x1024x1024 are faster serial. (TVM's default pool there is 1 thread.)
PARALLEL_MIN_MACS = 1 << 23


def _ceil(a: int, b: int) -> int:
    return -(-a // b) * b


def _divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def choose_tiling(isa: Isa, batch: int, m: int, n: int, k: int) -> Tiling:
    """Register tile: ``mr`` row tiles x ``nr`` n-blocks, at most ``isa.max_acc`` accumulators.

    Row tiles are ``isa.mt`` rows (2 for smmla). One row tile (batch-1 GEMV) -> ``mr = 1`` and all
    accumulators go along N. Otherwise (mr in {4, 3, 2}, nr a divisor of the n-block count, so no
    tail tiles) maximise ``accumulators used * useful rows / padded rows``, then prefer larger mr.
    """
    rows = -(-m // isa.mt)
    nblocks = padded_n(isa, n) // isa.nt
    if rows == 1:
        mr, nr = 1, _divisor_at_most(nblocks, isa.max_acc)
    else:

        def score(cand):
            r, c = cand
            return (r * c / isa.max_acc) * (rows / _ceil(rows, r)), r

        cands = [
            (r, c)
            for r in (4, 3, 2)
            for c in range(1, nblocks + 1)
            if nblocks % c == 0 and r * c <= isa.max_acc
        ]
        mr, nr = max(cands, key=score)
    tiles = batch * (_ceil(rows, mr) // mr) * (nblocks // nr)
    return Tiling(mr=mr, nr=nr, parallel=tiles > 1 and batch * m * n * k >= PARALLEL_MIN_MACS)


def _activation(y, name: str | None):
    if name is None:
        return y
    if name == "relu":
        return tirx.max(y, tirx.const(0.0, "float32"))
    if name == "sigmoid":
        return tirx.sigmoid(y)
    if name == "tanh":
        return tirx.tanh(y)
    if name == "gelu":
        half = tirx.const(0.5, "float32")
        return (
            half * y * (tirx.const(1.0, "float32") + tirx.erf(y * tirx.const(1 / math.sqrt(2.0), "float32")))
        )
    raise ValueError(name)


@dataclass(frozen=True)
class _Source:
    """Where the GEMM rows come from: ``load(b, i, kk)`` for i < m, kk < k; how ``out`` maps back."""

    tensor: te.Tensor
    batch: int
    m: int
    k: int
    load: Callable
    out_shape: tuple[int, ...]
    out_index: Callable  # out iteration vars -> (b, i, n)
    out_roles: tuple[str, ...]  # role of each out axis: "b" batch, "m" GEMM row, "n" GEMM column
    contiguous_k: bool = False  # load(b, i, k) is a plain unit-stride read along k
    conv: Conv1dSpec | None = None  # im2col source: its spec (for the per-position absmax)


def check_lead(m: int, lead: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """Validate the leading dims of an N-d dense input (prod = M, at most one of them > 1)."""
    if lead is None:
        return None
    lead = tuple(int(d) for d in lead)
    if not lead or math.prod(lead) != m or sum(d > 1 for d in lead) > 1:
        raise ValueError(f"lead {lead} must multiply to M={m} with at most one dim > 1")
    return lead


def _dense_source(m: int, k: int, n: int, dtype: str, lead: tuple[int, ...] | None = None) -> _Source:
    """``x[M, K]`` -> ``out[M, N]``; with ``lead`` (e.g. ``(1, 1)`` or ``(96, 1)``) x is ``[*lead, K]`` and
    out ``[*lead, N]``: the same memory, so a caller needs no reshape around the kernel."""
    if lead is None:
        x = te.placeholder((m, k), dtype, name="x")
        return _Source(
            x, 1, m, k, lambda b, i, kk: x[i, kk], (m, n), lambda i, j: (0, i, j), ("m", "n"), True
        )
    big = next((a for a, d in enumerate(lead) if d > 1), len(lead) - 1)  # the axis that carries M
    x = te.placeholder((*lead, k), dtype, name="x")

    def index(i):
        return tuple(i if a == big else 0 for a in range(len(lead)))

    roles = tuple("m" if a == big else f"u{a}" for a in range(len(lead))) + ("n",)
    return _Source(
        x,
        1,
        m,
        k,
        lambda b, i, kk: x[(*index(i), kk)],
        (*lead, n),
        lambda *idx: (0, idx[big], idx[-1]),
        roles,
        True,
    )


def _conv_source(spec: Conv1dSpec, transpose: bool = True) -> _Source:
    """im2col rows of a conv1d. The reduction index is tap-major, ``kk = kw * Cin + ci`` (weights
    ``[Cout, KW, Cin]``: `packing.conv_matrix`), so that consecutive ``kk`` of a row are consecutive
    channels at one input position; NCW input is transposed once (``x_t``, Cin*W values) to make
    them contiguous in memory too: the im2col quantization then runs on whole vectors."""
    x = te.placeholder(spec.input_shape, "float32", name="x")
    cin, pl = spec.in_channels, spec.padding[0]
    if spec.layout == "NCW" and transpose:
        xt = te.compute((spec.batch, spec.width, cin), lambda b, p, c: x[b, c, p], name="x_t")
        read = lambda b, p, c: xt[b, p, c]  # noqa: E731
    elif spec.layout == "NCW":  # (the fp32 kernels broadcast one value at a time: no gain from x_t)
        read = lambda b, p, c: x[b, c, p]  # noqa: E731
    else:
        read = lambda b, p, c: x[b, p, c]  # noqa: E731

    def load(b, i, kk):
        kw, ci = kk // cin, kk % cin
        pos = i * spec.stride + kw * spec.dilation - pl
        inside = tirx.all(pos >= 0, pos < spec.width)
        return tirx.if_then_else(inside, read(b, pos, ci), tirx.const(0.0, "float32"))

    if spec.layout == "NCW":
        out_index, roles = (lambda b, co, w: (b, w, co)), ("b", "n", "m")
    else:
        out_index, roles = (lambda b, w, co: (b, w, co)), ("b", "m", "n")
    return _Source(
        x, spec.batch, spec.out_width, spec.reduction, load, spec.output_shape, out_index, roles, conv=spec
    )


# ----------------------------------------------------------------------------------------------
# integer GEMM: compute


def _int_compute(
    isa: Isa, bits: int, src: _Source, n: int, group: int, act: ActQuant, epi: Epilogue, til: Tiling
):
    bt, m, k = src.batch, src.m, src.k
    nt, kt, mt = isa.nt, isa.kt, isa.mt
    mp = _ceil(m, mt * til.mr)
    np_ = padded_n(isa, n)
    kp = padded_k(isa, k, group if bits == 4 else None)
    zp = isa.act_zero_point
    f32 = "float32"
    inputs, consts = [src.tensor], []

    # -- activation scale
    if act.mode == "dynamic":
        lanes = _divisor_at_most(k, 16) if src.contiguous_k else 1
        if src.conv is not None:
            # absmax of an im2col row = max over its taps of the per-position absmax over channels
            # (max is exact, padding contributes |0|): Cin*W + Wout*KW work instead of Wout*Cin*KW
            spec, x = src.conv, src.tensor
            rc = te.reduce_axis((0, spec.in_channels), name="rc")
            pamax = te.compute(
                (bt, spec.width),
                lambda b, p: te.max(tirx.abs(x[b, rc, p] if spec.layout == "NCW" else x[b, p, rc]), axis=rc),
                name="x_pamax",
            )
            rw = te.reduce_axis((0, spec.kernel_size), name="rw")

            def row_amax(b, i):
                pos = i * spec.stride + rw * spec.dilation - spec.padding[0]
                inside = tirx.all(pos >= 0, pos < spec.width)
                return te.max(tirx.if_then_else(inside, pamax[b, pos], tirx.const(0.0, f32)), axis=rw)

            amax = te.compute((bt, m), row_amax, name="x_amax")
        elif lanes >= 4:  # two stages: lane-wise partial max (vectorized), then across lanes (max is exact)
            rko = te.reduce_axis((0, k // lanes), name="rko")
            part = te.compute(
                (bt, m, lanes),
                lambda b, i, ln: te.max(tirx.abs(src.load(b, i, rko * lanes + ln)), axis=rko),
                name="x_amax_part",
            )
            rl = te.reduce_axis((0, lanes), name="rl")
            amax = te.compute((bt, m), lambda b, i: te.max(part[b, i, rl], axis=rl), name="x_amax")
        else:
            rk = te.reduce_axis((0, k), name="rk")
            amax = te.compute(
                (bt, m), lambda b, i: te.max(tirx.abs(src.load(b, i, rk)), axis=rk), name="x_amax"
            )
        sx = te.compute(
            (bt, m),
            lambda b, i: tirx.if_then_else(
                amax[b, i] > tirx.const(0.0, f32), amax[b, i] / tirx.const(127.0, f32), tirx.const(1.0, f32)
            ),
            name="x_scale",
        )
        scale = lambda b, i: sx[b, i]  # noqa: E731
        # quantize by multiplying with the fp32 reciprocal (one division per row, not per element:
        # vdivps would dominate the kernel); reference.quantize_activations does the same
        xinv = te.compute((bt, m), lambda b, i: tirx.const(1.0, f32) / sx[b, i], name="x_inv")
        inv = lambda b, i: xinv[b, i]  # noqa: E731
    elif act.mode == "static":
        xs = te.placeholder((1,), f32, name="x_scale")
        inputs.append(xs)
        scale = lambda b, i: xs[0]  # noqa: E731
        xinv = te.compute((1,), lambda _: tirx.const(1.0, f32) / xs[0], name="x_inv")
        inv = lambda b, i: xinv[0]  # noqa: E731
    else:
        scale = None
        if epi.out_dtype == "float32":
            xs = te.placeholder((m,), f32, name="x_scale")
            inputs.append(xs)
            scale = lambda b, i: xs[i]  # noqa: E731

    # -- quantize (+ im2col, + zero point, + padding to the tile)
    def qval(b, i, kk):
        raw = src.load(b, i, kk)
        if act.mode == "int8":
            q = raw.astype("int32")
        else:
            r = tirx.nearbyint(raw * inv(b, i))
            q = tirx.max(tirx.min(r, tirx.const(127.0, f32)), tirx.const(-128.0, f32)).astype("int32")
        valid = tirx.all(i < m, kk < k)
        return (tirx.if_then_else(valid, q, tirx.const(0, "int32")) + zp).astype(isa.act_dtype)

    if isa.family == "bcast":
        xq = te.compute((bt, mp, kp), qval, name="x_q")
        xload = lambda b, i, kk: xq[b, i, kk]  # noqa: E731
    elif isa.family == "mmla":
        xq = te.compute(
            (bt, mp // 2, kp // 8, 2, 8), lambda b, mb, kb, r, c: qval(b, mb * 2 + r, kb * 8 + c), name="x_q"
        )
    else:
        xq = te.compute(
            (bt, mp, kp // 16, 2, 4, 2),
            lambda b, i, kc, h, ln, j: qval(b, i, kc * 16 + h * 8 + ln * 2 + j),
            name="x_q",
        )

    # -- weights
    tshape = tile_shape(isa)
    half = nt * kt // 2
    if bits == 8:
        w = te.placeholder((np_ // nt, kp // kt, *tshape), "int8", name="w")
    else:
        w = te.placeholder((np_ // nt, kp // kt, half), "uint8", name="w")
    consts.append(w)
    i32 = "int32"

    def wv_bcast(j, kk):
        if bits == 8:
            return w[j // nt, kk // kt, j % nt, kk % kt].astype(i32)
        e = (j % nt) * kt + kk % kt
        return decode_int4(w[j // nt, kk // kt, e % half], e // half)

    def wv_mmla(nb, c, kk):
        if bits == 8:
            return w[nb, kk // 8, c, kk % 8].astype(i32)
        return decode_int4(w[nb, kk // 8, kk % 8], c)

    def wv_row(j, kc, h, ln, jj):
        if bits == 8:
            return w[j, kc, h, ln, jj].astype(i32)
        return decode_int4(w[j, kc, ln * 2 + jj], h)

    # -- integer accumulation: acc(b, i, j) gives the int32 dot of (row i, column j)
    groups = kp // group if bits == 4 else 1
    span = group if bits == 4 else kp  # reduction length of one int32 accumulator
    if isa.family == "bcast":
        rk = te.reduce_axis((0, span), name="k")

        def body(b, i, g, j):
            kk = g * span + rk
            return te.sum(xload(b, i, kk).astype(i32) * wv_bcast(j, kk), axis=rk)

        if bits == 8:
            acc = te.compute((bt, mp, np_), lambda b, i, j: body(b, i, 0, j), name="acc")
            acc_at = lambda b, i, j: acc[b, i, j]  # noqa: E731
        else:
            accg = te.compute((bt, mp, groups, np_), body, name="acc")
            accg_at = lambda b, i, g, j: accg[b, i, g, j]  # noqa: E731
    elif isa.family == "mmla":
        rk = te.reduce_axis((0, span), name="k")

        def body(b, mb, g, nb, r, c):
            kk = g * span + rk
            return te.sum(xq[b, mb, kk // 8, r, kk % 8].astype(i32) * wv_mmla(nb, c, kk), axis=rk)

        if bits == 8:
            acc = te.compute(
                (bt, mp // 2, np_ // 2, 2, 2), lambda b, mb, nb, r, c: body(b, mb, 0, nb, r, c), name="acc"
            )
            acc_at = lambda b, i, j: acc[b, i // 2, j // 2, i % 2, j % 2]  # noqa: E731
        else:
            accg = te.compute((bt, mp // 2, groups, np_ // 2, 2, 2), body, name="acc")
            accg_at = None
    else:
        rc = te.reduce_axis((0, span // 16), name="kc")
        rh = te.reduce_axis((0, 2), name="kh")
        rj = te.reduce_axis((0, 2), name="kj")

        def body(b, i, g, j, ln):
            kc = g * (span // 16) + rc
            return te.sum(xq[b, i, kc, rh, ln, rj].astype(i32) * wv_row(j, kc, rh, ln, rj), axis=[rc, rh, rj])

        if bits == 8:
            acc = te.compute((bt, mp, np_, 4), lambda b, i, j, ln: body(b, i, 0, j, ln), name="acc")
            acc_at = lambda b, i, j: acc[b, i, j, 0] + acc[b, i, j, 1] + acc[b, i, j, 2] + acc[b, i, j, 3]  # noqa: E731
        else:
            accg = te.compute((bt, mp, groups, np_, 4), body, name="acc")
            accg_at = lambda b, i, g, j: (  # noqa: E731
                accg[b, i, g, j, 0] + accg[b, i, g, j, 1] + accg[b, i, g, j, 2] + accg[b, i, g, j, 3]
            )

    float_out = epi.out_dtype == "float32"
    if bits == 8:
        if float_out:
            ws = te.placeholder((n,), f32, name="w_scale")
            consts.append(ws)
        if zp:
            corr = te.placeholder((n,), i32, name="w_corr")
            consts.append(corr)
        dot = (lambda b, i, j: acc_at(b, i, j) - corr[j]) if zp else acc_at
    else:
        ws = te.placeholder((groups, np_), f32, name="w_scale")
        consts.append(ws)
        if zp:
            corr = te.placeholder((groups, np_), i32, name="w_corr")
            consts.append(corr)
        rg = te.reduce_axis((0, groups), name="g")
        if isa.family == "mmla":

            def fbody(b, mb, nb, r, c):
                j = nb * 2 + c
                d = accg[b, mb, rg, nb, r, c] - (corr[rg, j] if zp else 0)
                return te.sum(d.astype(f32) * ws[rg, j], axis=rg)

            accf = te.compute((bt, mp // 2, np_ // 2, 2, 2), fbody, name="acc_f")
            f_at = lambda b, i, j: accf[b, i // 2, j // 2, i % 2, j % 2]  # noqa: E731
        else:

            def fbody(b, i, j):
                d = accg_at(b, i, rg, j) - (corr[rg, j] if zp else 0)
                return te.sum(d.astype(f32) * ws[rg, j], axis=rg)

            accf = te.compute((bt, mp, np_), fbody, name="acc_f")
            f_at = lambda b, i, j: accf[b, i, j]  # noqa: E731

    if epi.bias:
        bias = te.placeholder((n,), f32, name="bias")
        consts.append(bias)
    if epi.residual:
        res = te.placeholder(src.out_shape, f32, name="residual")
        inputs.append(res)

    def out_value(*idx):
        b, i, j = src.out_index(*idx)
        if not float_out:
            return dot(b, i, j)
        if bits == 8:
            y = dot(b, i, j).astype(f32) * (scale(b, i) * ws[j])
        else:
            y = f_at(b, i, j) * scale(b, i)
        if epi.bias:
            y = y + bias[j]
        if epi.residual:
            y = y + res[idx]
        return _activation(y, epi.activation)

    out = te.compute(src.out_shape, out_value, name="out")
    return inputs, consts, out


# ----------------------------------------------------------------------------------------------
# integer GEMM: schedule


def _vectorize_inner(sch, block, width: int) -> None:
    """Vectorize the innermost loop of ``block`` by ``width`` lanes when it divides evenly."""
    loops = sch.get_loops(block)
    inner = loops[-1]
    extent = sch.get(inner).extent
    if not isinstance(extent, tirx.IntImm) or extent.value < 2:
        return
    e = int(extent.value)
    if e % width == 0 and e > width:
        _, inner = sch.split(inner, [None, width])
        sch.vectorize(inner)
    elif e <= width:
        sch.vectorize(inner)


def _tile_out(sch, src: _Source, rows: int, cols: int):
    """Tile the ``out`` block into (batch, M/rows, N/cols | rows, cols); returns (out, tile loops, inner)."""
    out = sch.get_sblock("out")
    loops = dict(zip(src.out_roles, sch.get_loops(out), strict=True))
    mo, mi = sch.split(loops["m"], [None, rows])
    no, ni = sch.split(loops["n"], [None, cols])
    units = [lp for role, lp in loops.items() if role.startswith("u")]  # unit leading dims (N-d dense)
    tile = units + ([loops["b"]] if "b" in loops else []) + [mo, no]
    sch.reorder(*tile, mi, ni)
    return out, tile, [mi, ni]


def _schedule_im2col(sch, isa: Isa, src: _Source) -> None:
    """conv1d: the im2col quantization ``x_q`` vectorized along the channels of one tap (contiguous
    in ``x_t`` and in ``x_q``: kk = kw * Cin + ci), or along the taps when Cin = 1."""
    spec = src.conv
    if spec is None or isa.family != "bcast":
        return
    xq = sch.get_sblock("x_q")
    b, i, kk = sch.get_loops(xq)
    kp = int(sch.get(kk).extent)
    cin = spec.in_channels
    if cin >= 4 and kp % cin == 0:
        _, ci = sch.split(kk, [None, cin])
        _vectorize_inner(sch, xq, 16)
    elif cin == 1:
        _vectorize_inner(sch, xq, 16)


def act_free(sch) -> bool:
    """True when the kernel has no dynamic-scale stage (static / int8 activations)."""
    try:
        sch.get_sblock("x_amax")
    except Exception:  # noqa: BLE001
        return True
    return False


def _schedule_amax(sch, src: _Source) -> None:
    """Dynamic scales: vectorize the lane-wise partial absmax (its k loop outside the lanes); for a
    conv, the per-position absmax over channels (NCW: positions contiguous, vectorized inside the
    channel loop, left to LLVM: TIR cannot vectorize a loop under a reduction loop)."""
    if src.conv is not None:
        if act_free(sch):
            return
        pos = sch.get_sblock("x_pamax")
        b, p, rc = sch.get_loops(pos)
        if src.conv.layout == "NCW":  # positions innermost: a unit-stride loop LLVM vectorizes
            sch.reorder(b, rc, p)
            sch.decompose_reduction(pos, rc)
        return
    try:
        part = sch.get_sblock("x_amax_part")
    except Exception:  # noqa: BLE001 - no such stage (static/int8 modes, strided conv input)
        return
    b, i, lane, ko = sch.get_loops(part)
    sch.reorder(b, i, ko, lane)
    sch.vectorize(lane)


def _schedule_int(sch, isa: Isa, bits: int, til: Tiling, src: _Source, intrin: str) -> None:
    """Epilogue-driven schedule: tile ``out``, compute the int32 register tile at each tile.

    The quantized activations (and the dynamic scales) are computed once, at the root; each
    (row-tile, n-tile) computes its accumulators in ``local`` scope with the intrinsic and applies
    the epilogue straight from them.
    """
    _schedule_amax(sch, src)
    _schedule_im2col(sch, isa, src)
    out, tile, _ = _tile_out(sch, src, til.mr * isa.mt, til.nr * isa.nt)
    no = tile[-1]
    acc = sch.get_sblock("acc")
    owner = acc if bits == 8 else sch.get_sblock("acc_f")
    sch.compute_at(owner, no, preserve_unit_loops=True)
    fused = sch.fuse(*tile)
    if til.parallel:  # before decompose/tensorize: parallel needs reduction blocks with their init
        sch.parallel(fused)
    tile = [fused]
    loops = sch.get_loops(owner)[1:]
    # loops of the register-tile owner under the tile: unit batch loop, spatial, then reduction
    if isa.family == "mmla":
        ub, mb, nb, r, c, *red = loops
        spatial = [mb, nb, r, c]
    elif isa.family == "rowdot":
        ub, i, j, *rest = loops
        spatial = [i, j, rest[0]] if bits == 8 else [i, j]
        red = rest[1:] if bits == 8 else rest
    else:
        ub, i, j, *red = loops
        spatial = [i, j]

    if bits == 8:
        plan = _order_acc(sch, isa, spatial, red, unit=[ub])
        _finish_acc(sch, isa, acc, *plan, intrin)
    else:
        (g,) = red
        sch.reorder(ub, g, *spatial)
        sch.compute_at(acc, g, preserve_unit_loops=True)
        sch.set_scope(owner, 0, "local")
        _vectorize_inner(sch, owner, {"bcast": isa.nt, "mmla": 2, "rowdot": 4}[isa.family])
        sch.decompose_reduction(owner, g)
        aloops = sch.get_loops(acc)[len(tile) + 2 :]
        if isa.family == "mmla":
            ab, amb, ag, anb, ar, ac, ak = aloops
            plan = _order_acc(sch, isa, [amb, anb, ar, ac], [ak], unit=[ab, ag])
        elif isa.family == "rowdot":
            ab, ai, ag, aj, al, akc, akh, akj = aloops
            plan = _order_acc(sch, isa, [ai, aj, al], [akc, akh, akj], unit=[ab, ag])
        else:
            ab, ai, ag, aj, ak = aloops
            plan = _order_acc(sch, isa, [ai, aj], [ak], unit=[ab, ag])
        _finish_acc(sch, isa, acc, *plan, intrin)

    if src.out_roles[-1] == "m":  # NCW conv: store along positions (contiguous), not channels
        mi, ni = sch.get_loops(out)[-2:]
        sch.reorder(ni, mi)
        _vectorize_inner(sch, out, 16)
    else:
        _vectorize_inner(sch, out, isa.nt if isa.family == "bcast" else 4)


def _order_acc(sch, isa: Isa, spatial_inner, red, unit=()):
    """Order (tile, unit loops, k-outer, row tiles, n-blocks, intrinsic tile); returns what to finish."""
    if isa.family == "bcast":
        mi, ni = spatial_inner
        nio, nii = sch.split(ni, [None, isa.nt])
        (k,) = red
        ko, ki = sch.split(k, [None, isa.kt])
        sch.reorder(*unit, ko, mi, nio, nii, ki)
        return ko, [mi, nio], nii
    if isa.family == "mmla":
        mi, ni, r, c = spatial_inner
        (k,) = red
        ko, ki = sch.split(k, [None, 8])
        sch.reorder(*unit, ko, mi, ni, r, c, ki)
        return ko, [mi, ni], r
    mi, ni, lane = spatial_inner
    kc, kh, kj = red
    sch.reorder(*unit, kc, mi, ni, lane, kh, kj)
    return kc, [mi, ni], lane


def _finish_acc(sch, isa: Isa, acc, ko, unroll, tensor_loop, intrin: str) -> None:
    """Accumulators to local scope, init hoisted out of the k loop, tensorize, unroll the tile."""
    sch.set_scope(acc, 0, "local")
    init = sch.decompose_reduction(acc, ko)
    sch.tensorize(tensor_loop, intrin)
    for loop in unroll:
        sch.unroll(loop)
    _vectorize_inner(sch, init, isa.nt if isa.family == "bcast" else 4)


# ----------------------------------------------------------------------------------------------
# public builders


def _finish(name: str, inputs, consts, out, schedule_fn, target: dict, tiling: Tiling | None) -> Kernel:
    func = te.create_prim_func([*inputs, *consts, out])
    func = func.with_attr("global_symbol", name)
    sch = tvm.s_tir.Schedule(func)
    schedule_fn(sch)
    func = sch.mod["main"].with_attr("global_symbol", name).with_attr("target", tvm.target.Target(target))
    func = func.with_attr("op_pattern", 8)  # kOpaque: a later FuseOps must not fuse into a scheduled kernel

    def spec(t):
        return TensorSpec(t.op.name, tuple(int(d) for d in t.shape), str(t.dtype))

    return Kernel(
        name=name,
        func=func,
        inputs=tuple(spec(t) for t in inputs),
        consts=tuple(spec(t) for t in consts),
        output=spec(out),
        tiling=tiling,
    )


def _check_int(isa: Isa, bits: int, act: ActQuant, epi: Epilogue, group: int | None) -> None:
    if bits not in (8, 4):
        raise ValueError(f"bits must be 8 or 4, got {bits}")
    if epi.out_dtype == "int32" and (bits != 8 or act.mode != "int8"):
        raise ValueError("an int32 epilogue needs int8 weights and ActQuant('int8') inputs")
    if bits == 4:
        check_group_size(isa, group)


def dense_int(
    isa: Isa,
    bits: int,
    m: int,
    k: int,
    n: int,
    epilogue: Epilogue,
    act: ActQuant,
    group_size: int,
    name: str,
    lead: tuple[int, ...] | None = None,
) -> Kernel:
    _check_int(isa, bits, act, epilogue, group_size)
    til = choose_tiling(isa, 1, m, n, k)
    src = _dense_source(m, k, n, "int8" if act.mode == "int8" else "float32", check_lead(m, lead))
    inputs, consts, out = _int_compute(isa, bits, src, n, group_size, act, epilogue, til)
    intrin = isa.intrin_int8 if bits == 8 else isa.intrin_int4
    return _finish(
        name,
        inputs,
        consts,
        out,
        lambda s: _schedule_int(s, isa, bits, til, src, intrin),
        isa.target,
        til,
    )


def conv1d_int(
    isa: Isa, bits: int, spec: Conv1dSpec, epilogue: Epilogue, act: ActQuant, group_size: int, name: str
) -> Kernel:
    if act.mode == "int8":
        raise ValueError("conv1d takes fp32 activations: ActQuant('dynamic') or ActQuant('static')")
    _check_int(isa, bits, act, epilogue, group_size)
    til = choose_tiling(isa, spec.batch, spec.out_width, spec.out_channels, spec.reduction)
    src = _conv_source(spec)
    inputs, consts, out = _int_compute(isa, bits, src, spec.out_channels, group_size, act, epilogue, til)
    intrin = isa.intrin_int8 if bits == 8 else isa.intrin_int4
    return _finish(
        name,
        inputs,
        consts,
        out,
        lambda s: _schedule_int(s, isa, bits, til, src, intrin),
        isa.target,
        til,
    )


# ----------------------------------------------------------------------------------------------
# fp32 GEMM (the fair baseline): packed [Np/L, K, L] weights, L-lane FMAs, register tile
# (also weight-only fp16: the same with half-precision weights widened in registers)


def _fp32_compute(isa: Isa, src: _Source, n: int, epi: Epilogue, wdtype: str = "float32"):
    """fp32 GEMM; ``wdtype="float16"`` stores the weights in half precision (weight-only fp16: each
    weight is widened to fp32 in registers, products and sums stay fp32)."""
    lanes = isa.fp32_lanes
    np_ = _ceil(n, lanes)
    bt, m, k = src.batch, src.m, src.k
    w = te.placeholder((np_ // lanes, k, lanes), wdtype, name="w")
    rk = te.reduce_axis((0, k), name="k")

    def wv(j, kk):
        v = w[j // lanes, kk, j % lanes]
        return v if wdtype == "float32" else v.astype("float32")

    acc = te.compute(
        (bt, m, np_),
        lambda b, i, j: te.sum(src.load(b, i, rk) * wv(j, rk), axis=rk),
        name="acc",
    )
    consts = [w]
    inputs = [src.tensor]
    if epi.bias:
        bias = te.placeholder((n,), "float32", name="bias")
        consts.append(bias)
    if epi.residual:
        res = te.placeholder(src.out_shape, "float32", name="residual")
        inputs.append(res)

    def out_value(*idx):
        b, i, j = src.out_index(*idx)
        y = acc[b, i, j]
        if epi.bias:
            y = y + bias[j]
        if epi.residual:
            y = y + res[idx]
        return _activation(y, epi.activation)

    return inputs, consts, te.compute(src.out_shape, out_value, name="out")


def _schedule_fp32(sch, isa: Isa, til: Tiling, src: _Source) -> None:
    lanes = isa.fp32_lanes
    out, tile, _ = _tile_out(sch, src, til.mr, til.nr * lanes)
    acc = sch.get_sblock("acc")
    sch.compute_at(acc, tile[-1], preserve_unit_loops=True)
    fused = sch.fuse(*tile)
    if til.parallel:
        sch.parallel(fused)
    ub, i, j, k = sch.get_loops(acc)[1:]
    jo, ji = sch.split(j, [None, lanes])
    sch.reorder(ub, k, i, jo, ji)
    sch.set_scope(acc, 0, "local")
    sch.vectorize(ji)
    sch.unroll(i)
    sch.unroll(jo)
    sch.decompose_reduction(acc, k)
    _vectorize_inner(sch, out, lanes if src.out_roles[-1] == "n" else 4)


def _fp32_tiling(isa: Isa, batch: int, m: int, n: int, k: int) -> Tiling:
    """fp32 register tile: ``mr`` rows (a divisor of M, <= 4) x ``nr`` vectors of ``fp32_lanes``."""
    nblocks = _ceil(n, isa.fp32_lanes) // isa.fp32_lanes
    mr = _divisor_at_most(m, 4)
    vregs = max(1, isa.fp32_lanes // (isa.vector_bits // 32))
    nr = _divisor_at_most(nblocks, max(1, isa.max_acc // (mr * vregs)))
    tiles = batch * (m // mr) * (nblocks // nr)
    return Tiling(mr=mr, nr=nr, parallel=tiles > 1 and batch * m * n * k >= PARALLEL_MIN_MACS)


def dense_fp32(
    isa: Isa,
    m: int,
    k: int,
    n: int,
    epilogue: Epilogue,
    name: str,
    wdtype: str = "float32",
    lead: tuple[int, ...] | None = None,
) -> Kernel:
    til = _fp32_tiling(isa, 1, m, n, k)
    src = _dense_source(m, k, n, "float32", check_lead(m, lead))
    inputs, consts, out = _fp32_compute(isa, src, n, epilogue, wdtype)
    return _finish(name, inputs, consts, out, lambda s: _schedule_fp32(s, isa, til, src), isa.target, til)


def conv1d_fp32(isa: Isa, spec: Conv1dSpec, epilogue: Epilogue, name: str, wdtype: str = "float32") -> Kernel:
    til = _fp32_tiling(isa, spec.batch, spec.out_width, spec.out_channels, spec.reduction)
    src = _conv_source(spec, transpose=False)
    inputs, consts, out = _fp32_compute(isa, src, spec.out_channels, epilogue, wdtype)
    return _finish(name, inputs, consts, out, lambda s: _schedule_fp32(s, isa, til, src), isa.target, til)
