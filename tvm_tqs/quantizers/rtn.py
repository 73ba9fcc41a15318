"""Round-to-nearest symmetric weight quantization, per output channel or per (channel, group)."""

from __future__ import annotations

import numpy as np

from .base import QuantizedWeight, as_matrix, blocks_of


def rtn(w: np.ndarray, bits: int, channel_axis: int, group_size: int | None = None) -> QuantizedWeight:
    """Quantize `w` to signed `bits`-bit integers with scale = max|w| / (2^(bits-1) - 1) per channel/group.

    Parameters
    ----------
    w : np.ndarray
        fp32 weight in its graph layout.
    bits : int
        2..8. The grid is symmetric, [-(2^(b-1) - 1), 2^(b-1) - 1] (the -2^(b-1) code is unused so that
        negation is exact and the grid has a zero).
    channel_axis : int
        Output-channel axis of `w` (1 for a Relax matmul weight [K, N], 0 for conv [O, I, k]).
    group_size : int, optional
        Consecutive reduction elements sharing one scale; None for one scale per channel. The last group
        of a channel may be shorter.
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8], got {bits}")
    m = as_matrix(np.asarray(w, dtype=np.float32), channel_axis)
    out, red = m.shape
    blocks = blocks_of(m, group_size)
    qmax = 2 ** (bits - 1) - 1
    amax = np.abs(blocks).max(axis=2)
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    q = np.clip(np.rint(blocks / scale[:, :, None]), -qmax, qmax).astype(np.int8)
    return QuantizedWeight(q.reshape(out, -1)[:, :red], scale, bits, group_size, tuple(w.shape), channel_axis)
