"""Predicted rollout error of a precision plan, from TQS gains and the data-free quantization noise of each site.

For site k at precision p the quantization noise, relative to the site's own signal, is

    r_w(k, p) = ||Q_p(W_k) - W_k||_F / ||W_k||_F          (from the weights and the chosen quantizer)
    r_a(k, p) = c_k / (127 * sqrt(12))  for int8/int4     (int8 activations, dynamic per-row absmax scale)

where c_k is the RMS crest factor (row absmax / row RMS) of the site's input on data-free contexts:
a uniform rounding error of step absmax/127 has variance step^2 / 12. TQS's weight-mode gain G_k maps a
relative perturbation of the site's weights to the mean relative divergence of the rollout, so in the
small-error (linear) regime a group g of sites that read one weight contributes

    e_g^2 = r_w^2 * (sum_{k in g} G_k)^2 + r_a^2 * sum_{k in g} G_k^2

(the weight error is the same at every site of the group and adds coherently; activation errors differ
per site and add in variance), and the plan's predicted relative rollout error is sqrt(sum_g e_g^2).
The solver minimises sum_g e_g^2, which is linear in the choices. See docs/error_model.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .precision import INT4_GROUP, PRECISIONS
from .quantizers import rtn

BITS = {name: p.bits for name, p in PRECISIONS.items()}
_ACT_STEP_NOISE = 1.0 / (127.0 * math.sqrt(12.0))
_FLOATS = {16: np.float16}


def dequantized(
    w: np.ndarray, channel_axis: int, name: str, quantizer: Callable = rtn, group_size: int = INT4_GROUP
) -> np.ndarray:
    """`w` (float32) as the quantize pass will store it at precision `name`, back in float32."""
    p = PRECISIONS.get(name)
    if p is None:
        raise ValueError(f"unknown precision {name!r}")
    w = np.asarray(w, dtype=np.float32)
    if p.bits == 32:
        return w
    if not p.integer:
        return w.astype(_FLOATS[p.bits]).astype(np.float32)
    if p.group_size is None:
        return quantizer(w, p.bits, channel_axis).dequantize()
    return quantizer(w, p.bits, channel_axis, group_size).dequantize()


def weight_error(
    w: np.ndarray, channel_axis: int, name: str, quantizer: Callable = rtn, group_size: int = INT4_GROUP
) -> float:
    """r_w: relative Frobenius error of `w` stored at `precision` (what the quantize pass will do)."""
    w = np.asarray(w, dtype=np.float32)
    norm = float(np.linalg.norm(w.astype(np.float64)))
    approx = dequantized(w, channel_axis, name, quantizer, group_size)
    if norm == 0.0:
        return 0.0
    return float(np.linalg.norm((approx - w).astype(np.float64)) / norm)


def activation_error(crest: float, precision: str) -> float:
    """r_a: relative rounding noise of int8 activations with per-row absmax scaling (0 for float)."""
    return crest * _ACT_STEP_NOISE if PRECISIONS[precision].act_bits == 8 else 0.0


def crest_factor(x: np.ndarray) -> float:
    """RMS over rows (last axis) of absmax/RMS: the activation-noise multiplier of per-row int8 scaling."""
    rows = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
    rms = np.sqrt(np.mean(rows**2, axis=1))
    ok = rms > 0
    if not ok.any():
        return 0.0
    ratio = np.abs(rows[ok]).max(axis=1) / rms[ok]
    return float(np.sqrt(np.mean(ratio**2)))


def group_error2(gains: Sequence[float], r_w: float, r_a: float) -> float:
    """e_g^2 for a group whose sites have `gains` (see the module docstring)."""
    g = np.asarray(gains, dtype=np.float64)
    # A zero noise term is zero even for an unmeasured (infinite) gain: 0 * inf would poison the plan.
    weight = r_w**2 * g.sum() ** 2 if r_w else 0.0
    activation = r_a**2 * np.sum(g**2) if r_a else 0.0
    return float(weight + activation)
