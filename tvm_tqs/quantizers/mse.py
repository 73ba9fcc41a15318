"""MSE clipping: per channel (or group), the symmetric scale that minimises the squared weight error."""

from __future__ import annotations

import numpy as np

from .base import QuantizedWeight, as_matrix, blocks_of


def mse(
    w: np.ndarray,
    bits: int,
    channel_axis: int,
    group_size: int | None = None,
    *,
    steps: int = 64,
    lowest: float = 0.4,
) -> QuantizedWeight:
    """Round-to-nearest with the scale per channel/group that minimises ||w - Q(w)||^2 among
    a * max|w| / qmax for clip ratios a: `steps` values in [`lowest`, 1], and qmax / c for the codes
    c in [qmax / 2, qmax) (the scales that put the block's largest weight exactly on code c).

    a = 1 (round-to-nearest, `rtn`) is tried first and only a strictly smaller error replaces it, so the
    result is never worse than `rtn`'s. Parameters as `rtn`; `steps`, `lowest` set the clipping search.
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8], got {bits}")
    m = as_matrix(np.asarray(w, dtype=np.float32), channel_axis)
    out, red = m.shape
    blocks = blocks_of(m, group_size)  # [out, n_groups, group]
    qmax = 2 ** (bits - 1) - 1
    amax = np.abs(blocks).max(axis=2)
    base = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    best_scale = base.copy()
    best_err = np.full(base.shape, np.inf)
    aligned = [qmax / c for c in range(qmax - 1, (qmax - 1) // 2, -1)]
    for ratio in [*np.linspace(1.0, lowest, steps), *aligned]:
        scale = np.where(amax > 0, base * np.float32(ratio), 1.0).astype(np.float32)
        q = np.clip(np.rint(blocks / scale[:, :, None]), -qmax, qmax)
        err = np.sum((q * scale[:, :, None] - blocks).astype(np.float64) ** 2, axis=2)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_scale = np.where(better, scale, best_scale)
    q = np.clip(np.rint(blocks / best_scale[:, :, None]), -qmax, qmax).astype(np.int8)
    return QuantizedWeight(
        q.reshape(out, -1)[:, :red], best_scale, bits, group_size, tuple(w.shape), channel_axis
    )
