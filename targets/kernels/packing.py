"""Offline weight packing (numpy) into the layouts the micro-kernels read.

Every family reads weights in *tiles* of ``nt x kt`` int8 values (output channels x reduction):
VNNI 16x4, AVX2 8x4, sdot 4x4, smmla 2x8, NEON rowdot 1x16. The packed int8 array is
``[Np / nt, Kp / kt, *tile]`` with ``tile = (nt, kt)`` (``(2, 4, 2)`` for rowdot, the same bytes as
one 16-wide row chunk). ``Np``/``Kp`` are N and K rounded up (K to the group size for int4); padding
is zero, so padded lanes add exactly nothing.

int4 tiles hold ``E = nt * kt`` values in ``E / 2`` bytes, offset binary (``u = q + 8``), byte ``j`` =
element ``j`` (low nibble) | element ``j + E/2`` (high nibble), elements in the int8 tile order.
"""

from __future__ import annotations

import numpy as np

from .config import Isa, PackedWeights

__all__ = [
    "check_group_size",
    "conv_matrix",
    "pack_fp32",
    "pack_int4",
    "pack_int8",
    "padded_k",
    "padded_n",
    "tile_shape",
]


def _ceil(a: int, b: int) -> int:
    return -(-a // b) * b


def conv_matrix(w: np.ndarray) -> np.ndarray:
    """Conv weights ``[Cout, Cin, KW]`` (PyTorch order) -> the kernels' ``[Cout, KW * Cin]`` (tap-major:
    column ``kw * Cin + ci``, the im2col order of the conv kernels)."""
    w = np.asarray(w)
    if w.ndim != 3:
        raise ValueError(f"conv weights must be [Cout, Cin, KW], got {list(w.shape)}")
    return np.ascontiguousarray(w.transpose(0, 2, 1).reshape(w.shape[0], -1))


def tile_shape(isa: Isa) -> tuple[int, ...]:
    return (2, 4, 2) if isa.family == "rowdot" else (isa.nt, isa.kt)


def padded_n(isa: Isa, n: int) -> int:
    return _ceil(n, isa.nt)


def padded_k(isa: Isa, k: int, group_size: int | None = None) -> int:
    return _ceil(k, group_size if group_size else isa.kt)


def check_group_size(isa: Isa, group_size: int) -> None:
    if group_size <= 0 or group_size % isa.kt or group_size % 16:
        raise ValueError(
            f"{isa.name}: int4 group size must be a positive multiple of 16 and {isa.kt}, got {group_size}"
        )


def _tiles(isa: Isa, q: np.ndarray, kp: int) -> np.ndarray:
    """[N, K] -> zero-padded [Np/nt, Kp/kt, nt*kt] (tile elements i*kt + k)."""
    n, k = q.shape
    np_ = padded_n(isa, n)
    full = np.zeros((np_, kp), dtype=q.dtype)
    full[:n, :k] = q
    t = full.reshape(np_ // isa.nt, isa.nt, kp // isa.kt, isa.kt).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(t.reshape(np_ // isa.nt, kp // isa.kt, isa.nt * isa.kt))


def _check_scale(scale: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    scale = np.asarray(scale, dtype=np.float32)
    if scale.shape != shape:
        raise ValueError(f"weight scale must have shape {shape}, got {scale.shape}")
    return scale


def pack_int8(isa: Isa, q: np.ndarray, scale: np.ndarray) -> PackedWeights:
    """Symmetric per-output-channel int8 weights ``q: int8[N, K]`` in [-127, 127], ``scale: f32[N]``.

    Returns arrays ``w`` (packed tiles), ``w_scale`` (f32[N]) and, on VNNI, ``w_corr``
    (int32[N] = 128 * sum_k q[n, k], the zero-point correction of the uint8 activations).
    """
    q = np.asarray(q)
    if q.ndim != 2 or q.dtype != np.int8:
        raise ValueError(f"int8 weights must be int8[N, K], got {q.dtype}{list(q.shape)}")
    if q.size and q.min() < -127:
        raise ValueError(
            "int8 weights must lie in [-127, 127] (symmetric); -128 breaks the exact AVX2/NEON paths"
        )
    n, k = q.shape
    scale = _check_scale(scale, (n,))
    tiles = _tiles(isa, q, padded_k(isa, k))
    w = tiles.reshape(tiles.shape[:2] + tile_shape(isa))
    arrays = [("w", np.ascontiguousarray(w)), ("w_scale", scale)]
    if isa.act_zero_point:
        corr = isa.act_zero_point * q.astype(np.int64).sum(axis=1)
        arrays.append(("w_corr", corr.astype(np.int32)))
    return PackedWeights(isa=isa.name, bits=8, n=n, k=k, arrays=tuple(arrays))


def pack_int4(isa: Isa, q: np.ndarray, scale: np.ndarray, group_size: int = 32) -> PackedWeights:
    """Group-wise symmetric int4 weights ``q: int8[N, K]`` in [-8, 7], ``scale: f32[N, ceil(K/G)]``.

    Returns ``w`` (uint8, two nibbles per byte, ``[Np/nt, Kp/kt, nt*kt/2]``), ``w_scale``
    (f32[G_count, Np], transposed and zero-padded so a vector of output channels loads at once) and,
    on VNNI, ``w_corr`` (int32[G_count, Np] = 128 * sum over the group of q).
    """
    check_group_size(isa, group_size)
    q = np.asarray(q)
    if q.ndim != 2 or q.dtype != np.int8:
        raise ValueError(f"int4 weights must be given as int8[N, K], got {q.dtype}{list(q.shape)}")
    if q.size and (q.min() < -8 or q.max() > 7):
        raise ValueError("int4 weights must lie in [-8, 7]")
    n, k = q.shape
    kp = padded_k(isa, k, group_size)
    groups = kp // group_size
    scale = _check_scale(scale, (n, groups))
    tiles = (_tiles(isa, q, kp).astype(np.int16) + 8).astype(np.uint8)
    half = tiles.shape[-1] // 2
    w = tiles[..., :half] | (tiles[..., half:] << 4)
    np_ = padded_n(isa, n)
    s = np.zeros((groups, np_), dtype=np.float32)
    s[:, :n] = scale.T
    arrays = [("w", np.ascontiguousarray(w, dtype=np.uint8)), ("w_scale", s)]
    if isa.act_zero_point:
        qp = np.zeros((n, kp), dtype=np.int64)
        qp[:, :k] = q
        corr = np.zeros((groups, np_), dtype=np.int32)
        corr[:, :n] = (isa.act_zero_point * qp.reshape(n, groups, group_size).sum(axis=2)).T
        arrays.append(("w_corr", corr))
    return PackedWeights(isa=isa.name, bits=4, n=n, k=k, arrays=tuple(arrays), group_size=group_size)


def pack_fp32(isa: Isa, w: np.ndarray, dtype: str = "float32") -> PackedWeights:
    """fp32 weights ``w: f32[N, K]`` -> ``w: f32[Np/L, K, L]`` with L = the fp32 vector block.

    ``dtype="float16"`` stores them rounded to half precision (round to nearest even; weight-only fp16).
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"fp32 weights must be [N, K], got {list(w.shape)}")
    n, k = w.shape
    lanes = isa.fp32_lanes
    np_ = _ceil(n, lanes)
    full = np.zeros((np_, k), dtype=np.float32)
    full[:n] = w
    packed = np.ascontiguousarray(full.reshape(np_ // lanes, lanes, k).transpose(0, 2, 1)).astype(dtype)
    bits = 32 if dtype == "float32" else 16
    return PackedWeights(isa=isa.name, bits=bits, n=n, k=k, arrays=(("w", packed),))
