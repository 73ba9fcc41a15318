"""Register tiles of the integer and fp32 GEMM kernels, and when their tile loop runs in parallel."""

from __future__ import annotations

from .config import Isa, Tiling
from .packing import padded_n

__all__ = ["PARALLEL_MIN_MACS", "choose_tiling", "divisor_at_most", "fp32_tiling", "round_up"]

# Below this many multiply-accumulates a parallel launch costs more than it saves. Measured on the
# 2-vCPU host with TVM_NUM_THREADS=2: 16x512x512 (4M MACs) is 1.26x SLOWER in parallel, 32x512x512
# (8M) 1.26x faster; GEMVs up to 1x1024x1024 are faster serial. (TVM's default pool there is 1 thread.)
PARALLEL_MIN_MACS = 1 << 23


def round_up(a: int, b: int) -> int:
    """``a`` rounded up to a multiple of ``b``."""
    return -(-a // b) * b


def divisor_at_most(n: int, cap: int) -> int:
    """The largest divisor of ``n`` that is at most ``cap``."""
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def _tiling(mr: int, nr: int, tiles: int, macs: int) -> Tiling:
    return Tiling(mr=mr, nr=nr, parallel=tiles > 1 and macs >= PARALLEL_MIN_MACS)


def choose_tiling(isa: Isa, batch: int, m: int, n: int, k: int) -> Tiling:
    """Register tile: ``mr`` row tiles x ``nr`` n-blocks, at most ``isa.max_acc`` accumulators.

    Row tiles are ``isa.mt`` rows (2 for smmla). One row tile (batch-1 GEMV) -> ``mr = 1`` and all
    accumulators go along N. Otherwise (mr in {4, 3, 2}, nr a divisor of the n-block count, so no
    tail tiles) maximise ``accumulators used * useful rows / padded rows``, then prefer larger mr.
    """
    if isa.gpu:
        return Tiling(mr=1, nr=1, parallel=False)
    rows = -(-m // isa.mt)
    nblocks = padded_n(isa, n) // isa.nt
    if rows == 1:
        mr, nr = 1, divisor_at_most(nblocks, isa.max_acc)
    else:

        def score(cand):
            r, c = cand
            return (r * c / isa.max_acc) * (rows / round_up(rows, r)), r

        cands = [
            (r, c)
            for r in (4, 3, 2)
            for c in range(1, nblocks + 1)
            if nblocks % c == 0 and r * c <= isa.max_acc
        ]
        mr, nr = max(cands, key=score)
    tiles = batch * (round_up(rows, mr) // mr) * (nblocks // nr)
    return _tiling(mr, nr, tiles, batch * m * n * k)


def fp32_tiling(isa: Isa, batch: int, m: int, n: int, k: int) -> Tiling:
    """fp32 register tile: ``mr`` rows (a divisor of M, <= 4) x ``nr`` vectors of ``fp32_lanes``."""
    if isa.gpu:
        return Tiling(mr=1, nr=1, parallel=False)
    nblocks = round_up(n, isa.fp32_lanes) // isa.fp32_lanes
    mr = divisor_at_most(m, 4)
    vregs = max(1, isa.fp32_lanes // (isa.vector_bits // 32))
    nr = divisor_at_most(nblocks, max(1, isa.max_acc // (mr * vregs)))
    tiles = batch * (m // mr) * (nblocks // nr)
    return _tiling(mr, nr, tiles, batch * m * n * k)
