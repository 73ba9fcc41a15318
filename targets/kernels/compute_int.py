"""TE compute of the integer GEMM kernels: activation scales, ``x_q``, ``acc`` [, ``acc_f``], ``out``.

The stage names are the TIR block names the schedule (`schedule.schedule_int`) looks up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tvm import te, tirx

from ..intrin.common import decode_int4
from .config import ActQuant, Epilogue, Isa, Tiling
from .epilogue import epilogue_out
from .packing import padded_k, padded_n, tile_shape
from .sources import Source
from .tiling import divisor_at_most, round_up

__all__ = ["int_compute"]

F32 = "float32"
I32 = "int32"


@dataclass(frozen=True)
class _Dims:
    """Padded extents of one integer GEMM (M to the register tile, N and K to the weight tiles).

    ``groups`` is the number of int4 K-groups (1 for int8) and ``span`` the K extent that one int32
    accumulator sums (the group size for int4, all of ``kp`` for int8).
    """

    batch: int
    mp: int
    np: int
    kp: int
    groups: int
    span: int


# -- activation scale and quantization


def _im2col_amax(src: Source) -> te.Tensor:
    """Per-row absmax of conv1d im2col rows, ``x_amax[b, i]``."""
    # absmax of an im2col row = max over its taps of the per-position absmax over channels
    # (max is exact, padding contributes |0|): Cin*W + Wout*KW work instead of Wout*Cin*KW
    spec, x = src.conv, src.tensor
    rc = te.reduce_axis((0, spec.in_channels), name="rc")
    pamax = te.compute(
        (src.batch, spec.width),
        lambda b, p: te.max(tirx.abs(x[b, rc, p] if spec.layout == "NCW" else x[b, p, rc]), axis=rc),
        name="x_pamax",
    )
    rw = te.reduce_axis((0, spec.kernel_size), name="rw")

    def row_amax(b, i):
        pos = i * spec.stride + rw * spec.dilation - spec.padding[0]
        inside = tirx.all(pos >= 0, pos < spec.width)
        return te.max(tirx.if_then_else(inside, pamax[b, pos], tirx.const(0.0, F32)), axis=rw)

    return te.compute((src.batch, src.m), row_amax, name="x_amax")


def _row_amax(src: Source) -> te.Tensor:
    """Per-row absmax of the GEMM rows, ``x_amax[b, i]``."""
    if src.conv is not None:
        return _im2col_amax(src)
    bt, m, k = src.batch, src.m, src.k
    lanes = divisor_at_most(k, 16) if src.contiguous_k else 1
    if lanes >= 4:  # two stages: lane-wise partial max (vectorized), then across lanes (max is exact)
        rko = te.reduce_axis((0, k // lanes), name="rko")
        part = te.compute(
            (bt, m, lanes),
            lambda b, i, ln: te.max(tirx.abs(src.load(b, i, rko * lanes + ln)), axis=rko),
            name="x_amax_part",
        )
        rl = te.reduce_axis((0, lanes), name="rl")
        return te.compute((bt, m), lambda b, i: te.max(part[b, i, rl], axis=rl), name="x_amax")
    rk = te.reduce_axis((0, k), name="rk")
    return te.compute((bt, m), lambda b, i: te.max(tirx.abs(src.load(b, i, rk)), axis=rk), name="x_amax")


def _act_scale(src: Source, act: ActQuant, epi: Epilogue, inputs: list) -> tuple[Callable, Callable]:
    """Activation scale ``scale(b, i)`` and its reciprocal ``inv(b, i)``; either may be None.

    A runtime ``x_scale`` input (static mode; int8 mode with a float epilogue) is appended to ``inputs``.
    """
    bt, m = src.batch, src.m
    if act.mode == "dynamic":
        amax = _row_amax(src)
        sx = te.compute(
            (bt, m),
            lambda b, i: tirx.if_then_else(
                amax[b, i] > tirx.const(0.0, F32), amax[b, i] / tirx.const(127.0, F32), tirx.const(1.0, F32)
            ),
            name="x_scale",
        )
        # quantize by multiplying with the fp32 reciprocal (one division per row, not per element:
        # vdivps would dominate the kernel); reference.quantize_activations does the same
        xinv = te.compute((bt, m), lambda b, i: tirx.const(1.0, F32) / sx[b, i], name="x_inv")
        return (lambda b, i: sx[b, i]), (lambda b, i: xinv[b, i])
    if act.mode == "static":
        xs = te.placeholder((1,), F32, name="x_scale")
        inputs.append(xs)
        xinv = te.compute((1,), lambda _: tirx.const(1.0, F32) / xs[0], name="x_inv")
        return (lambda b, i: xs[0]), (lambda b, i: xinv[0])
    if epi.out_dtype == "float32":
        xs = te.placeholder((m,), F32, name="x_scale")
        inputs.append(xs)
        return (lambda b, i: xs[i]), None
    return None, None


def _quantize(isa: Isa, src: Source, act: ActQuant, inv: Callable | None, d: _Dims) -> te.Tensor:
    """``x_q``: quantize (+ im2col, + zero point, + zero padding to the tile) in the family's layout."""
    zp = isa.act_zero_point

    def qval(b, i, kk):
        raw = src.load(b, i, kk)
        if act.mode == "int8":
            q = raw.astype(I32)
        else:
            r = tirx.nearbyint(raw * inv(b, i))
            q = tirx.max(tirx.min(r, tirx.const(127.0, F32)), tirx.const(-128.0, F32)).astype(I32)
        valid = tirx.all(i < src.m, kk < src.k)
        return (tirx.if_then_else(valid, q, tirx.const(0, I32)) + zp).astype(isa.act_dtype)

    bt, mp, kp = d.batch, d.mp, d.kp
    if isa.family == "bcast":
        return te.compute((bt, mp, kp), qval, name="x_q")
    if isa.family == "mmla":
        return te.compute(
            (bt, mp // 2, kp // 8, 2, 8), lambda b, mb, kb, r, c: qval(b, mb * 2 + r, kb * 8 + c), name="x_q"
        )
    return te.compute(
        (bt, mp, kp // 16, 2, 4, 2),
        lambda b, i, kc, h, ln, j: qval(b, i, kc * 16 + h * 8 + ln * 2 + j),
        name="x_q",
    )


# -- weights and int32 accumulation


def _weights(isa: Isa, bits: int, d: _Dims) -> te.Tensor:
    """Packed weights ``w``: int8 tiles, or int4 tiles two to a byte (`packing`)."""
    if bits == 8:
        return te.placeholder((d.np // isa.nt, d.kp // isa.kt, *tile_shape(isa)), "int8", name="w")
    return te.placeholder((d.np // isa.nt, d.kp // isa.kt, isa.nt * isa.kt // 2), "uint8", name="w")


# One accumulation per micro-kernel family, each in the layout its intrinsic writes. Each returns
# (acc, at): int8 ``at(b, i, j)`` / int4 ``at(b, i, g, j)`` read the int32 dot of row i and column j
# (over K-group g), so the rescale need not know the layout; None where the int4 rescale reads ``acc``
# in its own (mmla 2x2) layout.


def _acc_bcast(isa: Isa, bits: int, d: _Dims, xq: te.Tensor, w: te.Tensor):
    """bcast: ``acc[b, i, (g,) j]``, one int32 per (row, column)."""
    nt, kt, span = isa.nt, isa.kt, d.span
    half = nt * kt // 2
    rk = te.reduce_axis((0, span), name="k")

    def wv(j, kk):
        if bits == 8:
            return w[j // nt, kk // kt, j % nt, kk % kt].astype(I32)
        e = (j % nt) * kt + kk % kt
        return decode_int4(w[j // nt, kk // kt, e % half], e // half)

    def body(b, i, g, j):
        kk = g * span + rk
        return te.sum(xq[b, i, kk].astype(I32) * wv(j, kk), axis=rk)

    if bits == 8:
        acc = te.compute((d.batch, d.mp, d.np), lambda b, i, j: body(b, i, 0, j), name="acc")
        return acc, lambda b, i, j: acc[b, i, j]
    acc = te.compute((d.batch, d.mp, d.groups, d.np), body, name="acc")
    return acc, lambda b, i, g, j: acc[b, i, g, j]


def _acc_mmla(isa: Isa, bits: int, d: _Dims, xq: te.Tensor, w: te.Tensor):
    """mmla: ``acc[b, mb, (g,) nb, r, c]``, 2x2 (row, column) tiles of int32."""
    span = d.span
    rk = te.reduce_axis((0, span), name="k")

    def wv(nb, c, kk):
        if bits == 8:
            return w[nb, kk // 8, c, kk % 8].astype(I32)
        return decode_int4(w[nb, kk // 8, kk % 8], c)

    def body(b, mb, g, nb, r, c):
        kk = g * span + rk
        return te.sum(xq[b, mb, kk // 8, r, kk % 8].astype(I32) * wv(nb, c, kk), axis=rk)

    if bits == 8:
        acc = te.compute(
            (d.batch, d.mp // 2, d.np // 2, 2, 2),
            lambda b, mb, nb, r, c: body(b, mb, 0, nb, r, c),
            name="acc",
        )
        return acc, lambda b, i, j: acc[b, i // 2, j // 2, i % 2, j % 2]
    return te.compute((d.batch, d.mp // 2, d.groups, d.np // 2, 2, 2), body, name="acc"), None


def _lane_sum(lane: Callable):
    """The int32 dot from the 4 partial lanes of a rowdot accumulator."""
    return lane(0) + lane(1) + lane(2) + lane(3)


def _acc_rowdot(isa: Isa, bits: int, d: _Dims, xq: te.Tensor, w: te.Tensor):
    """rowdot: ``acc[b, i, (g,) j, lane]``, 4 int32 partial lanes per (row, column)."""
    chunks = d.span // 16
    rc = te.reduce_axis((0, chunks), name="kc")
    rh = te.reduce_axis((0, 2), name="kh")
    rj = te.reduce_axis((0, 2), name="kj")

    def wv(j, kc, h, ln, jj):
        if bits == 8:
            return w[j, kc, h, ln, jj].astype(I32)
        return decode_int4(w[j, kc, ln * 2 + jj], h)

    def body(b, i, g, j, ln):
        kc = g * chunks + rc
        return te.sum(xq[b, i, kc, rh, ln, rj].astype(I32) * wv(j, kc, rh, ln, rj), axis=[rc, rh, rj])

    if bits == 8:
        acc = te.compute((d.batch, d.mp, d.np, 4), lambda b, i, j, ln: body(b, i, 0, j, ln), name="acc")
        return acc, lambda b, i, j: _lane_sum(lambda ln: acc[b, i, j, ln])
    acc = te.compute((d.batch, d.mp, d.groups, d.np, 4), body, name="acc")
    return acc, lambda b, i, g, j: _lane_sum(lambda ln: acc[b, i, g, j, ln])


_ACCUMULATE = {"bcast": _acc_bcast, "mmla": _acc_mmla, "rowdot": _acc_rowdot}


# -- rescale to fp32


def _int8_value(isa: Isa, n: int, at: Callable, scale: Callable | None, float_out: bool, consts: list):
    """int8 ``out`` value: ``(acc - w_corr) * (s_x * w_scale)``, or the raw int32 dot."""
    zp = isa.act_zero_point
    if float_out:
        ws = te.placeholder((n,), F32, name="w_scale")
        consts.append(ws)
    if zp:
        corr = te.placeholder((n,), I32, name="w_corr")
        consts.append(corr)
    dot = (lambda b, i, j: at(b, i, j) - corr[j]) if zp else at
    if not float_out:
        return dot
    return lambda b, i, j: dot(b, i, j).astype(F32) * (scale(b, i) * ws[j])


def _int4_value(isa: Isa, d: _Dims, acc: te.Tensor, at: Callable | None, scale: Callable, consts: list):
    """int4 ``out`` value: ``acc_f * s_x``, ``acc_f`` = sum over K-groups of ``(acc_g - w_corr) * w_scale``."""
    zp = isa.act_zero_point
    ws = te.placeholder((d.groups, d.np), F32, name="w_scale")
    consts.append(ws)
    if zp:
        corr = te.placeholder((d.groups, d.np), I32, name="w_corr")
        consts.append(corr)
    rg = te.reduce_axis((0, d.groups), name="g")

    def group_sum(acc_g, j):
        diff = acc_g - (corr[rg, j] if zp else 0)
        return te.sum(diff.astype(F32) * ws[rg, j], axis=rg)

    if isa.family == "mmla":
        accf = te.compute(
            (d.batch, d.mp // 2, d.np // 2, 2, 2),
            lambda b, mb, nb, r, c: group_sum(acc[b, mb, rg, nb, r, c], nb * 2 + c),
            name="acc_f",
        )
        return lambda b, i, j: accf[b, i // 2, j // 2, i % 2, j % 2] * scale(b, i)
    accf = te.compute((d.batch, d.mp, d.np), lambda b, i, j: group_sum(at(b, i, rg, j), j), name="acc_f")
    return lambda b, i, j: accf[b, i, j] * scale(b, i)


def int_compute(
    isa: Isa, bits: int, src: Source, n: int, group: int, act: ActQuant, epi: Epilogue, til: Tiling
) -> tuple[list, list, te.Tensor]:
    """All stages of one integer GEMM kernel; returns (runtime inputs, constants, ``out``)."""
    kp = padded_k(isa, src.k, group if bits == 4 else None)
    d = _Dims(
        batch=src.batch,
        mp=round_up(src.m, isa.mt * til.mr),
        np=padded_n(isa, n),
        kp=kp,
        groups=kp // group if bits == 4 else 1,
        span=group if bits == 4 else kp,
    )
    inputs, consts = [src.tensor], []
    scale, inv = _act_scale(src, act, epi, inputs)
    xq = _quantize(isa, src, act, inv, d)
    w = _weights(isa, bits, d)
    consts.append(w)
    acc, at = _ACCUMULATE[isa.family](isa, bits, d, xq, w)
    if bits == 8:
        value = _int8_value(isa, n, at, scale, epi.out_dtype == "float32", consts)
    else:
        value = _int4_value(isa, d, acc, at, scale, consts)
    return inputs, consts, epilogue_out(src, n, epi, value, inputs, consts)
