"""Shared pieces of the tvm_tqs tensor intrinsics: int4 nibble decoding and the TIR descriptions.

Every intrinsic here is registered under a ``tqs_`` name with ``TensorIntrin.register(...,
override=True)`` when its module is imported, so importing twice is harmless. We do NOT import
``tvm.s_tir.tensor_intrin`` (it registers every shipped intrinsic and takes ~30 s on 2 cores).

Three families of micro-kernels, one TIR description each (``bits`` 8 or 4):

* ``bcast`` (x86 VNNI 16x4, x86 AVX2 8x4, aarch64 sdot 4x4): ``C[i] += A[k] * B[i, k]``,
  the kt activations ``A`` are broadcast to every lane, ``B`` is an ``nt x kt`` weight tile.
* ``mmla`` (aarch64 i8mm smmla 2x2x8): ``C[i, j] += A[i, k] * B[j, k]``.
* ``rowdot`` (aarch64 NEON without dotprod): ``C[l] += A[h, l, j] * B[h, l, j]`` over a 16-byte
  chunk viewed as ``(h, l, j) = (2, 4, 2)``: lane ``l`` of ``smull/smlal2 + sadalp`` sums exactly the
  bytes at ``h*8 + 2*l + j``, so the description is the hardware semantics, not an approximation.

int4 weights are stored two per byte in *offset binary*: nibble ``u = q + 8`` in ``[0, 15]``. An
intrinsic tile of ``E`` int4 values (in the int8 tile order, flattened) occupies ``E/2`` bytes; byte
``j`` holds element ``j`` in its low nibble and element ``j + E/2`` in its high nibble. Decoding is
``(b & 15) - 8`` and ``(b >> 4) - 8`` on whole vectors, then one concatenation.

The accumulator operand ``C`` of every intrinsic is in ``local`` scope: the kernels keep the register
tile of accumulators in a ``local`` buffer (LLVM promotes it to registers).
"""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

__all__ = [
    "decode_int4",
    "decode_int4_vec",
    "decode_int4_vec_x86",
    "register",
    "desc_bcast",
    "desc_mmla",
    "desc_rowdot",
]


def register(name: str, desc, impl) -> str:
    """Register (or re-register) a tensor intrinsic; returns its name."""
    TensorIntrin.register(name, desc, impl, override=True)
    return name


def decode_int4(byte, half):
    """Scalar int4 decode used by descriptions and TE computes: int32 value in [-8, 7].

    ``byte`` is a uint8 load, ``half`` (int32) selects the low (0) or high (1) nibble.
    """
    shift = tirx.Cast("uint8", half * 4)
    return tirx.Cast("int32", tirx.bitwise_and(tirx.shift_right(byte, shift), tirx.const(15, "uint8"))) - 8


def decode_int4_vec(packed, nbytes: int):
    """Vector int4 decode: uint8xN -> int8x(2N) = concat(low nibbles - 8, high nibbles - 8)."""
    eight = tirx.Broadcast(tirx.const(8, "uint8"), nbytes)
    lo = tirx.bitwise_and(packed, tirx.Broadcast(tirx.const(15, "uint8"), nbytes)) - eight
    hi = tirx.shift_right(packed, tirx.Broadcast(tirx.const(4, "uint8"), nbytes)) - eight
    lo = tirx.reinterpret(f"int8x{nbytes}", lo)
    hi = tirx.reinterpret(f"int8x{nbytes}", hi)
    return T.vectorcombine(f"int8x{2 * nbytes}", lo, hi)


def decode_int4_vec_x86(packed, nbytes: int):
    """Same result as :func:`decode_int4_vec`, in 4 x86 ops instead of 6.

    Broadcast the N bytes to both halves (``vbroadcasti*`` folds the load), shift the upper half's
    dwords right by 4 (``vpsrlvd``), keep each byte's low nibble, subtract 8. A dword shift drags
    bits of the next byte into a byte's high nibble only, which the mask drops.
    """
    lanes = 2 * nbytes
    both = T.vectorcombine(f"uint8x{lanes}", packed, packed)
    dwords = lanes // 4
    shifts = T.vectorcombine(
        f"uint32x{dwords}",
        tirx.Broadcast(tirx.const(0, "uint32"), dwords // 2),
        tirx.Broadcast(tirx.const(4, "uint32"), dwords // 2),
    )
    shifted = tirx.reinterpret(
        f"uint8x{lanes}", tirx.shift_right(tirx.reinterpret(f"uint32x{dwords}", both), shifts)
    )
    nib = tirx.bitwise_and(shifted, tirx.Broadcast(tirx.const(15, "uint8"), lanes))
    return tirx.reinterpret(f"int8x{lanes}", nib - tirx.Broadcast(tirx.const(8, "uint8"), lanes))


def desc_bcast(nt: int, kt: int, a_dtype: str, bits: int):
    """``C[i] += A[k] * B[i, k]`` for an nt x kt tile (B int8 [nt, kt], or uint8 [nt*kt/2] for int4)."""
    half = nt * kt // 2
    if bits == 8:

        @T.prim_func(s_tir=True)
        def desc8(
            A: T.Buffer((kt,), a_dtype, offset_factor=1),
            B: T.Buffer((nt, kt), "int8", offset_factor=1),
            C: T.Buffer((nt,), "int32", offset_factor=1, scope="local"),
        ):
            with T.sblock("root"):
                T.reads(C[0:nt], A[0:kt], B[0:nt, 0:kt])
                T.writes(C[0:nt])
                for i, k in T.grid(nt, kt):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vi, vk])

        return desc8

    @T.prim_func(s_tir=True)
    def desc4(
        A: T.Buffer((kt,), a_dtype, offset_factor=1),
        B: T.Buffer((half,), "uint8", offset_factor=1),
        C: T.Buffer((nt,), "int32", offset_factor=1, scope="local"),
    ):
        with T.sblock("root"):
            T.reads(C[0:nt], A[0:kt], B[0:half])
            T.writes(C[0:nt])
            for i, k in T.grid(nt, kt):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("int32", A[vk]) * decode_int4(
                        B[(vi * kt + vk) % half], (vi * kt + vk) // half
                    )

    return desc4


def desc_mmla(bits: int):
    """``C[i, j] += A[i, k] * B[j, k]`` over 2x8 by 8x2 int8 tiles (int4: B uint8 [8])."""
    if bits == 8:

        @T.prim_func(s_tir=True)
        def desc8(
            A: T.Buffer((2, 8), "int8", offset_factor=1),
            B: T.Buffer((2, 8), "int8", offset_factor=1),
            C: T.Buffer((2, 2), "int32", offset_factor=1, scope="local"),
        ):
            with T.sblock("root"):
                T.reads(C[0:2, 0:2], A[0:2, 0:8], B[0:2, 0:8])
                T.writes(C[0:2, 0:2])
                for i, j, k in T.grid(2, 2, 8):
                    with T.sblock("update"):
                        vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                        C[vi, vj] = C[vi, vj] + T.Cast("int32", A[vi, vk]) * T.Cast("int32", B[vj, vk])

        return desc8

    @T.prim_func(s_tir=True)
    def desc4(
        A: T.Buffer((2, 8), "int8", offset_factor=1),
        B: T.Buffer((8,), "uint8", offset_factor=1),
        C: T.Buffer((2, 2), "int32", offset_factor=1, scope="local"),
    ):
        with T.sblock("root"):
            T.reads(C[0:2, 0:2], A[0:2, 0:8], B[0:8])
            T.writes(C[0:2, 0:2])
            for i, j, k in T.grid(2, 2, 8):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    C[vi, vj] = C[vi, vj] + T.Cast("int32", A[vi, vk]) * decode_int4(B[vk], vj)

    return desc4


def desc_rowdot(bits: int):
    """``C[l] += A[h, l, j] * B[h, l, j]`` over a 16-byte chunk viewed as (2, 4, 2) (int4: B uint8 [8])."""
    if bits == 8:

        @T.prim_func(s_tir=True)
        def desc8(
            A: T.Buffer((2, 4, 2), "int8", offset_factor=1),
            B: T.Buffer((2, 4, 2), "int8", offset_factor=1),
            C: T.Buffer((4,), "int32", offset_factor=1, scope="local"),
        ):
            with T.sblock("root"):
                T.reads(C[0:4], A[0:2, 0:4, 0:2], B[0:2, 0:4, 0:2])
                T.writes(C[0:4])
                for lane, h, j in T.grid(4, 2, 2):
                    with T.sblock("update"):
                        vl, vh, vj = T.axis.remap("SRR", [lane, h, j])
                        C[vl] = C[vl] + T.Cast("int32", A[vh, vl, vj]) * T.Cast("int32", B[vh, vl, vj])

        return desc8

    @T.prim_func(s_tir=True)
    def desc4(
        A: T.Buffer((2, 4, 2), "int8", offset_factor=1),
        B: T.Buffer((8,), "uint8", offset_factor=1),
        C: T.Buffer((4,), "int32", offset_factor=1, scope="local"),
    ):
        with T.sblock("root"):
            T.reads(C[0:4], A[0:2, 0:4, 0:2], B[0:8])
            T.writes(C[0:4])
            for lane, h, j in T.grid(4, 2, 2):
                with T.sblock("update"):
                    vl, vh, vj = T.axis.remap("SRR", [lane, h, j])
                    C[vl] = C[vl] + T.Cast("int32", A[vh, vl, vj]) * decode_int4(B[vl * 2 + vj], vh)

    return desc4
