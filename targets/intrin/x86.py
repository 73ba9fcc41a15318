"""x86 int8/int4 dot-product intrinsics that work with the LLVM 22 in TVM 0.27.

``VNNI_INT8`` / ``VNNI_INT4`` (AVX-512 VNNI, 16 lanes x 4): ``vpdpbusd zmm`` on u8 activations x s8
weights. The shipped ``dot_16x4_vnni`` passes ``int32x16`` operands, which LLVM 22 rejects
(``llvm.x86.avx512.vpdpbusd.512`` now takes ``<64 x i8>``); here the operands are reinterpreted to
``int8x64``. u8 x s8 products accumulate exactly in int32 (no saturation).

``AVX2_INT8`` / ``AVX2_INT4`` (AVX2, 8 lanes x 4): s8 x s8 through the sign trick
``vpmaddubsw(|a|, sign(b, a))`` then ``vpmaddwd(., 1)``. ``vpmaddubsw`` saturates the int16 sum of a
pair of products; with ``|a| <= 128`` and ``b`` in ``[-127, 127]`` the pair is at most
``2 * 128 * 127 = 32512 < 32767``, so the sequence is EXACT provided the weights never hold -128
(``sign(-128, a<0)`` would also wrap). Our weight quantizer contract is symmetric int8 in
``[-127, 127]``; ``kernels.packing`` enforces it. The shipped ``dot_16x4_avx512`` (pmaddubsw on full
range u8 x s8) can saturate and is not used.
"""

from __future__ import annotations

from tvm.script import tirx as T

from .common import decode_int4_vec_x86, desc_bcast, register

__all__ = ["VNNI_INT8", "VNNI_INT4", "AVX2_INT8", "AVX2_INT4"]


def _vnni_impl(bits: int):
    nt, kt = 16, 4
    half = nt * kt // 2

    def weights(B):
        if bits == 8:
            return B.vload([0, 0], dtype="int8x64")
        return decode_int4_vec_x86(B.vload([0], dtype="uint8x32"), half)

    b_shape, b_dtype = ((nt, kt), "int8") if bits == 8 else ((half,), "uint8")
    b_region = (slice(0, nt), slice(0, kt)) if bits == 8 else (slice(0, half),)

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((kt,), "uint8", offset_factor=1),
        B: T.Buffer(b_shape, b_dtype, offset_factor=1),
        C: T.Buffer((nt,), "int32", offset_factor=1, scope="local"),
    ):
        with T.sblock("root"):
            T.reads(C[0:nt], A[0:kt], B[b_region])
            T.writes(C[0:nt])
            a = T.reinterpret("int8x64", T.broadcast(T.reinterpret("int32", A.vload([0], "uint8x4")), 16))
            C[T.ramp(T.int32(0), 1, nt)] = T.call_llvm_pure_intrin(
                "int32x16", "llvm.x86.avx512.vpdpbusd.512", C.vload([0], dtype="int32x16"), a, weights(B)
            )

    return impl


def _avx2_impl(bits: int):
    nt, kt = 8, 4
    half = nt * kt // 2

    def weights(B):
        if bits == 8:
            return B.vload([0, 0], dtype="int8x32")
        return decode_int4_vec_x86(B.vload([0], dtype="uint8x16"), half)

    b_shape, b_dtype = ((nt, kt), "int8") if bits == 8 else ((half,), "uint8")
    b_region = (slice(0, nt), slice(0, kt)) if bits == 8 else (slice(0, half),)

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((kt,), "int8", offset_factor=1),
        B: T.Buffer(b_shape, b_dtype, offset_factor=1),
        C: T.Buffer((nt,), "int32", offset_factor=1, scope="local"),
    ):
        with T.sblock("root"):
            T.reads(C[0:nt], A[0:kt], B[b_region])
            T.writes(C[0:nt])
            a = T.reinterpret("int8x32", T.broadcast(T.reinterpret("int32", A.vload([0], "int8x4")), 8))
            abs_a = T.call_llvm_pure_intrin("int8x32", "llvm.x86.avx2.psign.b", a, a)
            signed_b = T.call_llvm_pure_intrin("int8x32", "llvm.x86.avx2.psign.b", weights(B), a)
            pairs = T.call_llvm_pure_intrin("int16x16", "llvm.x86.avx2.pmadd.ub.sw", abs_a, signed_b)
            quads = T.call_llvm_pure_intrin(
                "int32x8", "llvm.x86.avx2.pmadd.wd", pairs, T.broadcast(T.int16(1), 16)
            )
            C[T.ramp(T.int32(0), 1, nt)] = C.vload([0], dtype="int32x8") + quads

    return impl


VNNI_INT8 = register("tqs_vnni_u8s8s32_16x4", desc_bcast(16, 4, "uint8", 8), _vnni_impl(8))
VNNI_INT4 = register("tqs_vnni_u8s4s32_16x4", desc_bcast(16, 4, "uint8", 4), _vnni_impl(4))
AVX2_INT8 = register("tqs_avx2_s8s8s32_8x4", desc_bcast(8, 4, "int8", 8), _avx2_impl(8))
AVX2_INT4 = register("tqs_avx2_s8s4s32_8x4", desc_bcast(8, 4, "int8", 4), _avx2_impl(4))
