"""CUDA int8/int4 dot-product intrinsics: ``__dp4a`` on global int8 operands, accumulator in a register.

TVM ships a dp4a intrinsic whose operands must sit in ``shared`` memory (a tiled tensor-core style
schedule); ours reads the quantized activations and the packed weights where the kernel keeps them
(global, 4-byte aligned: K is padded to 4) so the one-output-per-thread schedule can use it.

``DP4A_INT8``: ``C[0] += sum_k A[k] * B[0, k]`` over 4 int8 pairs, one ``dp4a.s32.s32``.
``DP4A_INT4``: B is 2 bytes holding 4 offset-binary nibbles (`common.decode_int4` layout: byte j =
element j | element j + 2 << 4). The nibbles ``u = q + 8`` in [0, 15] are spread into one int32 word
(byte i = u_i, a valid signed byte) and ``dot(A, q) = dp4a(A, u) - 8 * dp4a(A, 0x01010101)``: exact.
"""

from __future__ import annotations

from tvm.script import tirx as T

from .common import decode_int4, register

__all__ = ["DP4A_INT4", "DP4A_INT8"]

_ONES = 0x01010101


def _desc(bits: int):
    """``C[0] += A[k] * B[k]`` over 4 values: `common.desc_bcast` for a one-column tile, whose unit
    column axis a schedule of one output per thread has already dropped."""
    if bits == 8:

        @T.prim_func(s_tir=True)
        def desc8(
            A: T.Buffer((4,), "int8", offset_factor=1),
            B: T.Buffer((1, 4), "int8", offset_factor=1),
            C: T.Buffer((1,), "int32", offset_factor=1, scope="local"),
        ):
            with T.sblock("root"):
                T.reads(C[0:1], A[0:4], B[0:1, 0:4])
                T.writes(C[0:1])
                for k in range(4):
                    with T.sblock("update"):
                        vk = T.axis.remap("R", [k])
                        C[0] = C[0] + T.Cast("int32", A[vk]) * T.Cast("int32", B[0, vk])

        return desc8

    @T.prim_func(s_tir=True)
    def desc4(
        A: T.Buffer((4,), "int8", offset_factor=1),
        B: T.Buffer((2,), "uint8", offset_factor=1),
        C: T.Buffer((1,), "int32", offset_factor=1, scope="local"),
    ):
        with T.sblock("root"):
            T.reads(C[0:1], A[0:4], B[0:2])
            T.writes(C[0:1])
            for k in range(4):
                with T.sblock("update"):
                    vk = T.axis.remap("R", [k])
                    C[0] = C[0] + T.Cast("int32", A[vk]) * decode_int4(B[vk % 2], vk // 2)

    return desc4


def _impl(bits: int):
    if bits == 8:

        @T.prim_func(s_tir=True)
        def impl8(
            A: T.Buffer((4,), "int8", offset_factor=1, align=4),
            B: T.Buffer((1, 4), "int8", offset_factor=1, align=4),
            C: T.Buffer((1,), "int32", offset_factor=1, scope="local"),
        ):
            with T.sblock("root"):
                T.reads(C[0:1], A[0:4], B[0:1, 0:4])
                T.writes(C[0:1])
                C[0] = T.call_pure_extern(
                    "int32", "__dp4a", A.vload([0], "int8x4"), B.vload([0, 0], "int8x4"), C[0]
                )

        return impl8

    @T.prim_func(s_tir=True)
    def impl4(
        A: T.Buffer((4,), "int8", offset_factor=1, align=4),
        B: T.Buffer((2,), "uint8", offset_factor=1),
        C: T.Buffer((1,), "int32", offset_factor=1, scope="local"),
    ):
        with T.sblock("root"):
            T.reads(C[0:1], A[0:4], B[0:2])
            T.writes(C[0:1])
            b0 = T.Cast("int32", B[0])
            b1 = T.Cast("int32", B[1])
            u = (
                T.bitwise_and(b0, 15)
                | T.shift_left(T.bitwise_and(b1, 15), 8)
                | T.shift_left(T.shift_right(b0, 4), 16)
                | T.shift_left(T.shift_right(b1, 4), 24)
            )
            a = A.vload([0], "int8x4")
            C[0] = (
                C[0]
                + T.call_pure_extern("int32", "__dp4a", a, u, T.int32(0))
                - 8 * T.call_pure_extern("int32", "__dp4a", a, T.int32(_ONES), T.int32(0))
            )

    return impl4


DP4A_INT8 = register("tqs_dp4a_s8s8s32_1x4", _desc(8), _impl(8))
DP4A_INT4 = register("tqs_dp4a_s8s4s32_1x4", _desc(4), _impl(4))
