"""The XGBoost latency model: learns a known law, predicts unmeasured pairs, reports CV error, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from latency_builders import small_module

from tvm_tqs.latency import KernelFeatures, LatencyModel, site_jobs
from tvm_tqs.latency.model import encode, feature_names


def _dense(m: int, k: int, n: int, precision: str = "fp32", target: str = "x86") -> KernelFeatures:
    return KernelFeatures(
        kinds=("matmul", "add"),
        inputs=((m, k),),
        weights=((k, n), (n,)),
        outputs=((m, n),),
        macs=m * k * n,
        precision=precision,
        target=target,
        iters=m * k * n + m * n,
        reduce_iters=m * k * n,
        loads=2 * m * k * n + 2 * m * n,
        blocks=2,
    )


def _grid(rng, count, precisions=("fp32",)):
    out = []
    for _ in range(count):
        m, k, n = (int(2 ** rng.uniform(0, 9)) for _ in range(3))
        out.append(_dense(max(m, 1), max(k, 1), max(n, 1), str(rng.choice(precisions))))
    return out


_SPEED = {"fp32": 1.0, "int8": 0.3, "int4": 0.2}


def _law(f: KernelFeatures) -> float:
    """Synthetic truth: a fixed cost plus time proportional to MACs, faster at lower precision."""
    return 2e-4 + 1e-6 * f.macs * _SPEED[f.precision]


def test_learns_latency_proportional_to_macs_and_predicts_unmeasured_pairs():
    rng = np.random.default_rng(1)
    train = _grid(rng, 120, ("fp32", "int8"))
    model = LatencyModel(seed=0).fit(train, [_law(f) for f in train])
    assert model.error is not None and model.error.n == len({(f.macs, f.precision, f.outputs) for f in train})
    assert model.error.mdape < 0.15, model.error
    # Unmeasured pairs: new shapes, both precisions, inside the measured range.
    test = _grid(np.random.default_rng(2), 60, ("fp32", "int8"))
    pred = model.predict(test)
    ape = np.abs(pred / np.array([_law(f) for f in test]) - 1)
    assert np.median(ape) < 0.15
    # Precision matters: the same shape is predicted faster at int8.
    big = _dense(64, 256, 256)
    fp32, int8 = model.predict([big, _dense(64, 256, 256, "int8")])
    assert int8 < 0.6 * fp32


def test_extrapolates_beyond_the_largest_measured_kernel():
    """Trees alone cap predictions at the largest training value; the base law keeps scaling."""
    rng = np.random.default_rng(3)
    train = [f for f in _grid(rng, 150) if f.macs < 2**20]
    model = LatencyModel(seed=0).fit(train, [_law(f) for f in train])
    huge = _dense(512, 512, 256)  # 2^26 MACs, 64x the largest measured
    assert model.predict([huge])[0] == pytest.approx(_law(huge), rel=0.5)


def test_fit_is_deterministic_for_a_seed():
    rng = np.random.default_rng(4)
    train = _grid(rng, 60)
    noise = np.exp(np.random.default_rng(5).normal(0, 0.2, len(train)))
    lat = [_law(f) * e for f, e in zip(train, noise, strict=True)]
    a = LatencyModel(seed=7).fit(train, lat)
    b = LatencyModel(seed=7).fit(train, lat)
    test = _grid(np.random.default_rng(6), 20)
    assert np.array_equal(a.predict(test), b.predict(test))
    assert a.error == b.error


def test_few_points_use_the_base_law_and_no_error_below_four():
    train = [_dense(4, 8, 8), _dense(16, 32, 32), _dense(64, 64, 64)]
    model = LatencyModel().fit(train, [_law(f) for f in train])
    assert model.error is None and not model.summary()["uses_trees"]
    assert model.predict([_dense(32, 32, 32)])[0] > 0


def test_duplicates_are_one_point_and_bad_input_is_rejected():
    f = _dense(8, 8, 8)
    model = LatencyModel().fit(
        [f, f, f, _dense(1, 2, 3), _dense(3, 2, 1), _dense(9, 9, 9)], [1.0, 1.2, 0.8, 1, 1, 1]
    )
    assert model.n_train == 4
    with pytest.raises(ValueError):
        LatencyModel().fit([f], [0.0])
    with pytest.raises(ValueError):
        LatencyModel().fit([], [])


def test_features_of_real_kernels():
    jobs = site_jobs(small_module(), "x86")
    feats = [j.features for j in jobs.values()]
    matmul = next(f for f in feats if "matmul" in f.kinds)
    assert matmul.macs == 2 * 16 * 8 and matmul.iters > matmul.macs and matmul.reduce_iters == matmul.macs
    transpose = next(f for f in feats if "permute_dims" in f.kinds)
    assert transpose.macs == 0 and transpose.iters == 32
    kinds = sorted({k for f in feats for k in f.kinds})
    x = encode(feats, kinds, ["x86"])
    assert x.shape == (len(feats), len(feature_names(kinds, ["x86"])))
    assert np.all(np.isfinite(x))


def test_coverage_flags_unseen_precisions_and_targets():
    train = _grid(np.random.default_rng(8), 20)
    model = LatencyModel().fit(train, [_law(f) for f in train])
    assert model.covers(_dense(2, 2, 2))
    assert not model.covers(_dense(2, 2, 2, "int8"))
    assert not model.covers(_dense(2, 2, 2, target="arm_cpu/cortex-a76"))
