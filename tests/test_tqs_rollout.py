"""compile_rollout: the whole horizon in one Relax function equals the numpy reference rollout."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_builders import mlp_forecaster
from tqs_builders import partial_targets

from tvm_tqs.errors import RolloutSpecError
from tvm_tqs.frontend.load import rollout_spec_of
from tvm_tqs.graph import fuse
from tvm_tqs.rollout import compile_rollout, rollout_module
from tvm_tqs.runtime import VMRunner, build


@pytest.mark.parametrize("method", ["unrolled", "recursive"])
def test_one_function_rollout_matches_the_python_loop(method):
    mod = fuse(mlp_forecaster(lookback=16, horizon=4, channels=2), {"batch": 3})
    spec = rollout_spec_of(mod)
    x = np.random.default_rng(0).standard_normal((3, 16, 2)).astype(np.float32)
    step = VMRunner(build(mod))
    expected = spec.rollout(lambda f: step(f["window"])[0], x, steps=10)  # 3 calls of 4, trimmed to 10
    rollout = compile_rollout(mod, spec, 10, method=method)
    assert rollout.method == method
    got = rollout(x)
    assert got.shape == (3, 10, 2)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("exogenous", ["hold", "supplied"])
def test_partial_targets_and_exogenous_channels(exogenous):
    mod = fuse(partial_targets(exogenous=exogenous), {"batch": 2})
    spec = rollout_spec_of(mod)
    assert spec.target_channels == (0, 2) and spec.stride == 2
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 10, 3)).astype(np.float32)
    exog = rng.standard_normal((2, 8, 1)).astype(np.float32) if exogenous == "supplied" else None
    step = VMRunner(build(mod))
    expected = spec.rollout(lambda f: step(f["window"])[0], x, steps=7, exog=exog)
    for method in ("unrolled", "recursive"):
        got = compile_rollout(mod, spec, 7, method=method)(x, exog=exog)
        np.testing.assert_array_equal(got, expected)


def test_auto_method_and_extra_inputs_are_checked():
    mod = fuse(mlp_forecaster(lookback=16, horizon=4, channels=2), {"batch": 2})
    spec = rollout_spec_of(mod)
    out = rollout_module(mod, spec, 8)
    assert [p.name for p in out["rollout"].params] == ["window"]
    assert "rollout_step" not in [gv.name_hint for gv in out.get_global_vars()]  # 2 calls: unrolled
    rollout = compile_rollout(mod, spec, 8)
    with pytest.raises(RolloutSpecError, match=r"takes 0 inputs after the window"):
        rollout(np.zeros((2, 16, 2), np.float32), np.zeros(3, np.float32))
    with pytest.raises(RolloutSpecError, match=r"has batch 5; this compiled rollout runs batch 2"):
        rollout(np.zeros((5, 16, 2), np.float32))
    with pytest.raises(RolloutSpecError, match=r"must have shape \[batch, 16, 2\]"):
        rollout(np.zeros((2, 15, 2), np.float32))


def test_window_shape_mismatch_is_reported():
    mod = fuse(mlp_forecaster(lookback=16, horizon=4, channels=2), {"batch": 2})
    spec = rollout_spec_of(mod)
    wrong = type(spec)(**{**spec.to_dict(), "lookback": 12, "stride": 4})
    with pytest.raises(RolloutSpecError, match=r"expects window input 'window' of shape \[2, 12, 2\]"):
        rollout_module(mod, wrong, 8)


@pytest.mark.parametrize("aux_steps", [8, 3, 2])  # longer than, equal to, shorter than the stride
@pytest.mark.parametrize("method", ["unrolled", "recursive"])
def test_every_aux_policy_in_relax_equals_the_numpy_reference_on_onnxruntime(method, aux_steps):
    ort = pytest.importorskip("onnxruntime")
    from onnx_builders import every_aux_policy

    from tvm_tqs.contract import RolloutSpec

    model = every_aux_policy(aux_steps=aux_steps)
    spec = RolloutSpec.from_dict(
        {
            "version": 2,
            "window_input": "window",
            "forecast_output": "forecast",
            "lookback": 8,
            "horizon": 4,
            "channels": 2,
            "target_channels": [0, 1],
            "stride": 3,
            "aux_inputs": [
                {"name": "cov", "policy": "supplied", "time_axis": 1},
                {"name": "mask", "policy": "observed_mask", "time_axis": 1},
                {"name": "step", "policy": "time", "time_axis": 1},  # step: the last difference
                {"name": "phase", "policy": "time", "time_axis": 1, "step": 0.125, "period": 1.0},
                {"name": "level", "policy": "constant"},
            ],
        }
    )
    rng = np.random.default_rng(2)
    n = aux_steps
    x = rng.standard_normal((2, 8, 2)).astype(np.float32)
    aux = {
        "cov": rng.standard_normal((2, n)).astype(np.float32),
        "mask": rng.random((2, n)) > 0.3,
        "step": np.stack([np.arange(n) * 2, np.arange(n) + 5]).astype(np.int64),
        "phase": ((np.arange(n)[None] * 0.125 + np.array([[0.0], [0.5]])) % 1.0).astype(np.float32),
        "level": rng.standard_normal((2, 1)).astype(np.float32),
    }
    future = {"cov": rng.standard_normal((2, 9)).astype(np.float32)}  # (calls - 1) * stride steps
    sess = ort.InferenceSession(model.SerializeToString())
    seen = []

    def run(feeds):
        seen.append(feeds)
        return sess.run(None, feeds)[0]

    expected = spec.rollout(run, x, steps=10, aux=aux, aux_future=future)
    r = min(3, n)
    np.testing.assert_array_equal(seen[1]["step"][0], (np.arange(n) + 3) * 2)  # advanced by its own step
    np.testing.assert_allclose(seen[1]["phase"][0], ((np.arange(n) + 3) * 0.125) % 1.0, atol=1e-7)
    assert seen[1]["mask"][:, -r:].all() and seen[1]["mask"].dtype == bool
    np.testing.assert_array_equal(seen[1]["cov"][:, -r:], future["cov"][:, 3 - r : 3])
    mod = fuse(model, {"batch": 2}, rollout=spec)
    got = compile_rollout(mod, spec, 10, method=method)(x, aux=aux, aux_future=future)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
