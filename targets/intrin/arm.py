"""aarch64 int8/int4 dot-product intrinsics: sdot (+dotprod), smmla (+i8mm), NEON rowdot (baseline).

``SDOT_INT8`` / ``SDOT_INT4``: ``sdot v.4s, v.16b, v.16b``, 4 lanes x 4 (same semantics as the shipped
``dot_4x4_i8i8s32_sdot``, re-registered here so that nothing imports ``tvm.s_tir.tensor_intrin``).

``SMMLA_INT8`` / ``SMMLA_INT4``: ``smmla v.4s, v.16b, v.16b`` (FEAT_I8MM; TVM ships none):
``C[2x2] += A[2x8] . B[2x8]^T`` with ``A``/``B`` row-major 16-byte tiles and ``C`` row-major int32x4.

``NEON_INT8`` / ``NEON_INT4`` (cortex-a72, no dotprod): over a 16-byte chunk,
``smull(lo) + smull(hi)`` (LLVM fuses into ``smull`` + ``smlal2``) then ``sadalp`` into int32x4.
The int16 lane holds ``a[e]*b[e] + a[e+8]*b[e+8]``; with ``b`` in ``[-127, 127]`` its magnitude is at
most ``2 * 128 * 127 = 32512``, so it is EXACT (weights must never hold -128; int4 always fits).
"""

from __future__ import annotations

from tvm.script import tirx as T

from .common import decode_int4_vec, desc_bcast, desc_mmla, desc_rowdot, register

__all__ = ["SDOT_INT8", "SDOT_INT4", "SMMLA_INT8", "SMMLA_INT4", "NEON_INT8", "NEON_INT4"]


def _w16(B, bits: int, nd: int):
    """The 16 int8 weights of a tile: a plain load, or 8 packed bytes decoded."""
    if bits == 8:
        return B.vload([0] * nd, dtype="int8x16")
    return decode_int4_vec(B.vload([0], dtype="uint8x8"), 8)


def _sdot_impl(bits: int):
    b_shape, b_dtype = ((4, 4), "int8") if bits == 8 else ((8,), "uint8")
    b_region = (slice(0, 4), slice(0, 4)) if bits == 8 else (slice(0, 8),)

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "int8", offset_factor=1),
        B: T.Buffer(b_shape, b_dtype, offset_factor=1),
        C: T.Buffer((4,), "int32", offset_factor=1, scope="local"),
    ):
        with T.sblock("root"):
            T.reads(C[0:4], A[0:4], B[b_region])
            T.writes(C[0:4])
            a = T.reinterpret("int8x16", T.broadcast(T.reinterpret("int32", A.vload([0], "int8x4")), 4))
            C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
                "int32x4",
                "llvm.aarch64.neon.sdot.v4i32.v16i8",
                C.vload([0], dtype="int32x4"),
                a,
                _w16(B, bits, 2),
            )

    return impl


def _smmla_impl(bits: int):
    b_shape, b_dtype = ((2, 8), "int8") if bits == 8 else ((8,), "uint8")
    b_region = (slice(0, 2), slice(0, 8)) if bits == 8 else (slice(0, 8),)

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((2, 8), "int8", offset_factor=1),
        B: T.Buffer(b_shape, b_dtype, offset_factor=1),
        C: T.Buffer((2, 2), "int32", offset_factor=1, scope="local"),
    ):
        with T.sblock("root"):
            T.reads(C[0:2, 0:2], A[0:2, 0:8], B[b_region])
            T.writes(C[0:2, 0:2])
            # C is a contiguous row-major 2x2 tile: one int32x4 store starting at C[0, 0].
            C[0, T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
                "int32x4",
                "llvm.aarch64.neon.smmla.v4i32.v16i8",
                C.vload([0, 0], dtype="int32x4"),
                A.vload([0, 0], dtype="int8x16"),
                _w16(B, bits, 2),
            )

    return impl


def _rowdot_impl(bits: int):
    b_shape, b_dtype = ((2, 4, 2), "int8") if bits == 8 else ((8,), "uint8")
    b_region = (slice(0, 2), slice(0, 4), slice(0, 2)) if bits == 8 else (slice(0, 8),)

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((2, 4, 2), "int8", offset_factor=1),
        B: T.Buffer(b_shape, b_dtype, offset_factor=1),
        C: T.Buffer((4,), "int32", offset_factor=1, scope="local"),
    ):
        with T.sblock("root"):
            T.reads(C[0:4], A[0:2, 0:4, 0:2], B[b_region])
            T.writes(C[0:4])
            a = A.vload([0, 0, 0], dtype="int8x16")
            b = _w16(B, bits, 3)
            lo = T.call_llvm_pure_intrin(
                "int16x8", "llvm.aarch64.neon.smull.v8i16", T.vectorlow("int8x8", a), T.vectorlow("int8x8", b)
            )
            hi = T.call_llvm_pure_intrin(
                "int16x8",
                "llvm.aarch64.neon.smull.v8i16",
                T.vectorhigh("int8x8", a),
                T.vectorhigh("int8x8", b),
            )
            C[T.ramp(T.int32(0), 1, 4)] = C.vload([0], dtype="int32x4") + T.call_llvm_pure_intrin(
                "int32x4", "llvm.aarch64.neon.saddlp.v4i32.v8i16", lo + hi
            )

    return impl


SDOT_INT8 = register("tqs_sdot_s8s8s32_4x4", desc_bcast(4, 4, "int8", 8), _sdot_impl(8))
SDOT_INT4 = register("tqs_sdot_s8s4s32_4x4", desc_bcast(4, 4, "int8", 4), _sdot_impl(4))
SMMLA_INT8 = register("tqs_smmla_s8s8s32_2x2x8", desc_mmla(8), _smmla_impl(8))
SMMLA_INT4 = register("tqs_smmla_s8s4s32_2x2x8", desc_mmla(4), _smmla_impl(4))
NEON_INT8 = register("tqs_neon_s8s8s32_rowdot16", desc_rowdot(8), _rowdot_impl(8))
NEON_INT4 = register("tqs_neon_s8s4s32_rowdot16", desc_rowdot(4), _rowdot_impl(4))
