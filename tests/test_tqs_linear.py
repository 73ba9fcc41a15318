"""TQS on linear systems with known Jacobians: the measured growth rate and gain match the closed form."""

from __future__ import annotations

import numpy as np
import pytest
from tqs_builders import linear_system

import tvm_tqs
from tvm_tqs.passes.perturb import site_noise
from tvm_tqs.tqs import divergence, endpoint_rate, growth_rate

H = 48


def _first_order_curves(a: np.ndarray, contexts: np.ndarray, eps: float, seed: int) -> np.ndarray:
    """d_r(t) of the linearised system: delta_t = A delta_{t-1} + eps * rms(y_t) * n_r (float64).

    The perturbation enters at every call (the one site is the MatMul) and is relative to the site's
    current output y_t = A y_{t-1}; n_r is the documented noise draw of replicate r at site 0.
    """
    curves = []
    for r, z0 in enumerate(contexts[:, 0, :].astype(np.float64)):
        n = site_noise(seed, r, 0, a.shape[0]).astype(np.float64)
        y, delta, ys, ds = z0, np.zeros_like(z0), [], []
        for _ in range(H):
            y = a @ y
            delta = a @ delta + eps * np.sqrt(np.mean(y**2)) * n
            ys.append(y)
            ds.append(delta)
        ys, ds = np.array(ys), np.array(ds)
        curves.append(divergence(ys + ds, ys))
    return np.array(curves)


@pytest.mark.parametrize(
    "a",
    [
        np.diag([1.03, 1.03]),  # uniform growth: rate = log 1.03 + slope of log t
        np.diag([0.96, 0.96]),  # uniform decay
        np.array([[1.05, 0.3], [0.0, 0.8]]),  # non-normal, eigenvalues 1.05 and 0.8
    ],
    ids=["grow", "decay", "non_normal"],
)
def test_growth_rate_matches_the_linearised_system(a):
    eps, seed = 1e-4, 3
    contexts = np.random.default_rng(0).uniform(0.5, 1.5, size=(4, 1, 2)).astype(np.float32)
    report = tvm_tqs.score(linear_system(a), horizon=H, seeds=None, contexts=contexts, eps=eps, seed=seed)
    site = report.site(0)
    assert site.status == "ok" and report.calls == H
    expected = _first_order_curves(a, contexts, eps, seed).mean(axis=0)
    assert site.tqs == pytest.approx(float(growth_rate(expected)), abs=2e-3)
    assert site.gain == pytest.approx(float(expected.mean() / eps), rel=2e-2)
    assert site.growth_endpoint == pytest.approx(float(endpoint_rate(expected)), abs=5e-3)
    assert site.linear and site.linearity_ratio == pytest.approx(2.0, rel=0.02)


def test_uniform_growth_has_the_closed_form_rate():
    # A = rho * I: delta_t = eps * rms(z0) * rho^t * t * n, so log d(t) = const + t log(rho) + log(t) and the
    # least-squares slope over t = 1..H is log(rho) plus the slope of log(t) alone.
    rho = 1.03
    contexts = np.random.default_rng(1).uniform(0.5, 1.5, size=(3, 1, 2)).astype(np.float32)
    report = tvm_tqs.score(
        linear_system(np.diag([rho, rho])), horizon=H, seeds=None, contexts=contexts, eps=1e-4
    )
    t = np.arange(1, H + 1)
    closed_form = np.log(rho) + np.polyfit(t, np.log(t), 1)[0]
    assert report.site(0).tqs == pytest.approx(closed_form, abs=2e-3)


def test_statistics_on_hand_made_curves():
    t = np.arange(1, 11)
    curve = 1e-3 * np.exp(0.1 * t)
    assert growth_rate(curve) == pytest.approx(0.1)
    assert endpoint_rate(curve) == pytest.approx(0.1)
    ref = np.ones((10, 2))
    np.testing.assert_allclose(divergence(ref + [[3e-3, 4e-3]], ref), 5e-3 / np.sqrt(2))
