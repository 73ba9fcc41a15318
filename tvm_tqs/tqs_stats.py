"""TQS statistics from divergence curves (docs/tqs.md): growth rate, gains, bootstrap intervals, linearity.

Pure numpy, so the tests and benchmarks can apply them to hand-made curves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .graph import FusedOp
from .tqs_report import SiteScore

LINEARITY_TOLERANCE = 0.1  # a site is flagged non-linear when |d(eps) / d(eps/2) / 2 - 1| exceeds this
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_STREAM = 0x7A5_0B00
CONFIDENCE = 0.95
_TINY = 1e-30  # floor under log d: a site whose perturbation never reaches the output has d == 0


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def growth_rate(curve: np.ndarray) -> np.ndarray:
    """Least-squares slope of log d(t) against t = 1..H along the last axis (natural log per step).

    Parameters
    ----------
    curve : array [..., H]
        Divergence curves d(t); zeros are floored so that a site without effect gets a finite slope.

    Returns
    -------
    array [...]
        One rate per curve; NaN where H < 2.
    """
    curve = np.asarray(curve, dtype=np.float64)
    h = curve.shape[-1]
    if h < 2:
        return np.full(curve.shape[:-1], np.nan)
    t = np.arange(1, h + 1, dtype=np.float64)
    tc = t - t.mean()
    logs = np.log(np.maximum(curve, _TINY))
    return (logs * tc).sum(axis=-1) / (tc * tc).sum()


def endpoint_rate(curve: np.ndarray) -> np.ndarray:
    """(1 / (H - 1)) * log(d(H) / d(1)) along the last axis.

    Parameters
    ----------
    curve : array [..., H]
        Divergence curves d(t).

    Returns
    -------
    array [...]
        One rate per curve; NaN where H < 2.
    """
    curve = np.asarray(curve, dtype=np.float64)
    h = curve.shape[-1]
    if h < 2:
        return np.full(curve.shape[:-1], np.nan)
    return (np.log(np.maximum(curve[..., -1], _TINY)) - np.log(np.maximum(curve[..., 0], _TINY))) / (h - 1)


def divergence(perturbed: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """d(t) = ||perturbed(t) - reference(t)|| / rms_t ||reference(t)|| for ``[..., H, channels]`` arrays.

    The denominator is one number per reference trajectory, so log d(t) has the same slope as the
    absolute error (the growth rate is that of the error itself) and d does not blow up where the
    forecast crosses zero.

    Parameters
    ----------
    perturbed, reference : array [..., H, channels]
        Perturbed and reference rollouts.

    Returns
    -------
    array [..., H]
        d(t), in float64.
    """
    diff = np.linalg.norm(np.asarray(perturbed, np.float64) - np.asarray(reference, np.float64), axis=-1)
    ref = np.sqrt(np.mean(np.sum(np.asarray(reference, np.float64) ** 2, axis=-1), axis=-1, keepdims=True))
    return diff / np.maximum(ref, _TINY)


def _bootstrap(curves: np.ndarray, eps: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap over seeds of (growth rate, gain): curves ``[S, K, H]`` -> two ``[K, 2]``."""
    s = curves.shape[0]
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, BOOTSTRAP_STREAM])))
    rates = np.empty((BOOTSTRAP_SAMPLES, curves.shape[1]))
    gains = np.empty_like(rates)
    for i in range(BOOTSTRAP_SAMPLES):
        mean = curves[rng.integers(0, s, size=s)].mean(axis=0)
        rates[i] = growth_rate(mean)
        gains[i] = mean.mean(axis=-1) / eps
    q = [(1 - CONFIDENCE) / 2 * 100, (1 + CONFIDENCE) / 2 * 100]
    return np.percentile(rates, q, axis=0).T, np.percentile(gains, q, axis=0).T


def site_scores(
    ops: Sequence[FusedOp],
    perturbable: Sequence[int],
    skipped: dict,
    curves: np.ndarray,
    half_curves: np.ndarray,
    eps: float,
    seed: int,
    stride: int,
) -> tuple[list[SiteScore], list[int]]:
    """The per-site statistics of docs/tqs.md from the divergence curves.

    Parameters
    ----------
    ops : sequence of FusedOp
        Every call site, in site order (one SiteScore each).
    perturbable : sequence of int
        The sites that were scored; the others are reported "skipped".
    skipped : dict
        Site -> why it cannot be perturbed (sites missing here were not selected).
    curves : [S, K, H]
        d_k(t) per replicate at eps (K = call sites; rows of unscored sites are ignored).
    half_curves : [S_lin, K, H]
        The same at eps / 2 for the first S_lin replicates (S_lin may be 0).
    eps : float
        The injected relative error the gains are divided by.
    seed : int
        Seeds the bootstrap.
    stride : int
        Time steps per model call (`gain_first_call` averages the first call's steps).

    Returns
    -------
    (list of SiteScore in site order, sites flagged non-linear)
    """
    n_rep, n_lin = curves.shape[0], half_curves.shape[0]
    H = curves.shape[-1]
    mean = curves.mean(axis=0)  # [K, H]: the seed-averaged divergence curve of every site
    rates = growth_rate(mean)
    ends = endpoint_rate(mean)
    gains = mean.mean(axis=-1) / eps
    if n_rep > 1:
        rate_ci, gain_ci = _bootstrap(curves, eps, seed)
    else:
        rate_ci = gain_ci = None
    stride_steps = min(stride, H)
    perturbable = set(perturbable)
    scores = []
    nonlinear = []
    for op in ops:
        k = op.index
        common = dict(site=k, name=op.name, anchor=op.anchor, kinds=op.kinds)
        if k not in perturbable:
            reason = skipped.get(k, "not selected (sites=...)")
            scores.append(SiteScore(status="skipped", reason=reason, **common))
            continue
        if not np.any(mean[k] > 0):
            scores.append(
                SiteScore(
                    status="no effect",
                    reason="the perturbation never reaches the forecast",
                    gain=0.0,
                    gain_final=0.0,
                    gain_first_call=0.0,
                    gain_first_step=0.0,
                    curve=tuple(float(v) for v in mean[k]),
                    **common,
                )
            )
            continue
        ratio = linear = None
        if n_lin:
            half = half_curves[:, k].mean()
            full = curves[:n_lin, k].mean()
            ratio = _finite(full / half) if half > 0 else None
            linear = ratio is not None and abs(ratio / 2 - 1) <= LINEARITY_TOLERANCE
            if not linear:
                nonlinear.append(k)
        scores.append(
            SiteScore(
                status="ok",
                tqs=_finite(rates[k]),
                tqs_ci=None if rate_ci is None else (float(rate_ci[k, 0]), float(rate_ci[k, 1])),
                growth_endpoint=_finite(ends[k]),
                gain=float(gains[k]),
                gain_ci=None if gain_ci is None else (float(gain_ci[k, 0]), float(gain_ci[k, 1])),
                gain_final=float(mean[k, -1] / eps),
                gain_first_call=float(mean[k, :stride_steps].mean() / eps),
                gain_first_step=float(mean[k, 0] / eps),
                linearity_ratio=ratio,
                linear=linear,
                curve=tuple(float(v) for v in mean[k]),
                **common,
            )
        )
    return scores, nonlinear
