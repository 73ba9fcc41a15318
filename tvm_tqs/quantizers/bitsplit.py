"""Bit-Split and stitching (Wang et al., ICML 2020 / TPAMI 2023).

A signed M-bit weight integer is written as M-1 ternary bit planes, q = sum_i 2^i b_i with b_i in
{-1, 0, +1} (so q covers the symmetric grid [-(2^(M-1) - 1), 2^(M-1) - 1] that `rtn` and the kernels use),
times a scale per output channel (or per group of the reduction). Scales and planes are optimised
alternately, each update in closed form and never increasing its objective:

1. the weight error ||W - S * Q||^2 (planes: per-element rounding of the exact minimiser; scales: least
   squares per block);
2. with the Gram matrix H = X^T X of the layer's input activations, the output reconstruction error
   ||X W^T - X (S * Q)^T||^2 = sum_n e_n H e_n^T (planes: per coordinate, the best of {-1, 0, +1} given the
   rest; scales: the one-dimensional least-squares optimum per block).

The planes are then stitched back into integers, which the integer kernels take unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .base import QuantizedWeight, as_matrix
from .mse import mse
from .rtn import rtn


def split_planes(q: np.ndarray, bits: int) -> np.ndarray:
    """Integers in [-(2^(bits-1) - 1), 2^(bits-1) - 1] -> `bits - 1` ternary planes (sign times binary digit)."""
    q = np.asarray(q, dtype=np.int64)
    magnitude, sign = np.abs(q), np.sign(q)
    return np.stack([sign * ((magnitude >> i) & 1) for i in range(bits - 1)]).astype(np.int8)


def stitch_planes(planes: np.ndarray) -> np.ndarray:
    """sum_i 2^i b_i: the integers the planes stand for."""
    weights = (1 << np.arange(planes.shape[0], dtype=np.int64)).reshape(-1, *([1] * (planes.ndim - 1)))
    return (planes.astype(np.int64) * weights).sum(axis=0)


class _Problem:
    """W [N, K], planes [P, N, K], per-element scale view of the block scales, and the objective's state."""

    def __init__(self, m: np.ndarray, q: np.ndarray, scale: np.ndarray, bits: int, group: int):
        self.m = m.astype(np.float64)
        self.planes = split_planes(q, bits).astype(np.int64)
        self.group = group
        self.cols = np.arange(m.shape[1]) // group
        self.scale = scale.astype(np.float64)  # [N, n_groups]
        self.gram = None  # set for the output stage

    @property
    def q(self) -> np.ndarray:
        return stitch_planes(self.planes)

    def s(self) -> np.ndarray:
        return self.scale[:, self.cols]

    def residual(self) -> np.ndarray:
        return self.m - self.s() * self.q

    def objective(self) -> float:
        e = self.residual()
        return float(np.sum(e * e)) if self.gram is None else float(np.sum((e @ self.gram) * e))

    # -- stage 1: weight error -------------------------------------------------------------------------
    def weight_scales(self) -> None:
        for g in range(self.scale.shape[1]):
            blk = self.cols == g
            q = self.q[:, blk].astype(np.float64)
            den = np.sum(q * q, axis=1)
            num = np.sum(q * self.m[:, blk], axis=1)
            ok = (den > 0) & (num > 0)
            self.scale[ok, g] = num[ok] / den[ok]

    def weight_planes(self) -> None:
        s = self.s()
        target = np.divide(self.m, s, out=np.zeros_like(self.m), where=s > 0)
        for i in reversed(range(self.planes.shape[0])):
            rest = self.q - (self.planes[i] << i)
            self.planes[i] = np.clip(np.rint((target - rest) / (1 << i)), -1, 1).astype(np.int64)

    # -- stage 2: output reconstruction with the Gram matrix -------------------------------------------
    def output_planes(self) -> None:
        h, s = self.gram, self.s()
        e = self.residual()
        grad = e @ h  # [N, K]: (e H)_nk
        candidates = np.array([-1, 0, 1], dtype=np.int64)
        for i in reversed(range(self.planes.shape[0])):
            for k in range(self.m.shape[1]):
                b = self.planes[i, :, k]
                de = -s[:, k, None] * ((candidates[None, :] - b[:, None]) << i)  # [N, 3]
                change = 2.0 * de * grad[:, k, None] + de * de * h[k, k]
                best = np.argmin(change, axis=1)
                take = change[np.arange(len(b)), best] < 0  # strictly better, or keep the current plane
                if not take.any():
                    continue
                step = np.where(take, de[np.arange(len(b)), best], 0.0)
                self.planes[i, :, k] = np.where(take, candidates[best], b)
                grad += np.outer(step, h[k])

    def output_scales(self) -> None:
        h = self.gram
        q = self.q.astype(np.float64)
        grad = self.residual() @ h
        for g in range(self.scale.shape[1]):
            blk = np.flatnonzero(self.cols == g)
            qg = q[:, blk]
            along = qg @ h[blk, :]  # how (e H) moves per unit of this block's scale
            den = np.sum(qg * along[:, blk], axis=1)
            num = np.sum(qg * grad[:, blk], axis=1)
            delta = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
            delta = np.where(self.scale[:, g] + delta > 0, delta, 0.0)  # scales stay positive
            self.scale[:, g] += delta
            grad -= delta[:, None] * along


def bitsplit(
    w: np.ndarray,
    bits: int,
    channel_axis: int,
    group_size: int | None = None,
    *,
    gram: np.ndarray | None = None,
    sweeps: int = 4,
    history: list | None = None,
) -> QuantizedWeight:
    """Bit-Split quantization of `w` (parameters as `rtn`), started from `mse`'s clipped grid.

    Parameters
    ----------
    gram : ndarray [K, K], optional
        X^T X of the layer's inputs in the reduction order of ``as_matrix(w, channel_axis)``; with it the
        output reconstruction stage runs after the weight stage.
    sweeps : int
        Alternations (scales, then planes) per stage; a stage stops early when nothing changes.
    history : list, optional
        Receives ``(stage, objective)`` after every update, for inspection (each stage's values never rise).
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8], got {bits}")
    m = as_matrix(np.asarray(w, dtype=np.float32), channel_axis)
    out, red = m.shape
    if gram is not None and np.shape(gram) != (red, red):
        raise ValueError(f"gram must be [{red}, {red}] (the reduction of the weight), got {np.shape(gram)}")
    group = red if group_size is None else int(group_size)
    start = mse(w, bits, channel_axis, group_size)
    prob = _Problem(m, start.q, start.scale, bits, group)
    _run(prob, prob.weight_scales, prob.weight_planes, sweeps, "weight", history)
    if gram is not None:
        prob.gram = np.asarray(gram, dtype=np.float64)
        # The output stage starts from whichever of the weight stage's result, rtn and mse reconstructs best:
        # its updates never raise the objective, so the result is never worse than rtn on it.
        for other in (rtn(w, bits, channel_axis, group_size), start):
            alt = _Problem(m, other.q, other.scale, bits, group)
            alt.gram = prob.gram
            if alt.objective() < prob.objective():
                prob = alt
        _run(prob, prob.output_scales, prob.output_planes, sweeps, "output", history)
    q = prob.q.astype(np.int8)
    return QuantizedWeight(q, prob.scale.astype(np.float32), bits, group_size, tuple(w.shape), channel_axis)


def _run(prob: _Problem, scales, planes, sweeps: int, stage: str, history: list | None) -> None:
    if history is not None:
        history.append((stage, prob.objective()))
    for _ in range(sweeps):
        before = prob.planes.copy(), prob.scale.copy()
        for update in (scales, planes):
            update()
            if history is not None:
                history.append((stage, prob.objective()))
        if np.array_equal(before[0], prob.planes) and np.array_equal(before[1], prob.scale):
            break


@dataclass(frozen=True)
class BitSplit:
    """`bitsplit` as a quantizer object: the Gram matrix of each weight's inputs found by the weight's
    content digest (`tvm_tqs.graph.weight_digest` of the array the quantizer is given); weights without one
    get the weight-error stage only. Results are kept, so the error model and the quantize pass share them."""

    grams: Mapping[str, np.ndarray] = field(default_factory=dict)
    sweeps: int = 4
    activations: str = "none"  # where the Gram matrices came from (reports say it)
    _done: dict = field(default_factory=dict, compare=False, repr=False)

    __name__ = "bitsplit"

    def __call__(
        self, w: np.ndarray, bits: int, channel_axis: int, group_size: int | None = None
    ) -> QuantizedWeight:
        from ..graph import weight_digest

        w = np.asarray(w, dtype=np.float32)
        digest = weight_digest(w)
        key = (digest, bits, channel_axis, group_size)
        if key not in self._done:
            gram = self.grams.get(digest)
            self._done[key] = bitsplit(w, bits, channel_axis, group_size, gram=gram, sweeps=self.sweeps)
        return self._done[key]
