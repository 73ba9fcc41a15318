"""The cross-group error model: residual responses measured through the compiled rollout predict the
quantized model's real rollout error; compile(error_model="cross") plans with it; the SQNR baseline is the
site's own output noise."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import tvm_tqs
from tvm_tqs.contexts import SyntheticContexts
from tvm_tqs.error_model import dequantized
from tvm_tqs.errors import TQSError
from tvm_tqs.examples import example_model
from tvm_tqs.planning import (
    CrossGroupModel,
    PlanningProblem,
    gains_of,
    residual_probes,
    residual_responses,
    sqnr_table,
)
from tvm_tqs.rollout import RolloutSpec

EXAMPLE = example_model()
SPEC = RolloutSpec.from_onnx(onnx.load(str(EXAMPLE)))
HORIZON = 48


@pytest.fixture(scope="module")
def problem():
    return PlanningProblem.from_model(EXAMPLE, "x86")


@pytest.fixture(scope="module")
def contexts():
    return SyntheticContexts().make(SPEC, 8, seed=3)


@pytest.fixture(scope="module")
def cross(problem, contexts):
    report = tvm_tqs.score(
        EXAMPLE, horizon=HORIZON, contexts=contexts, seeds=None, mode="weight", linearity=False
    )
    activation2 = problem.error_table(gains_of(report), contexts, weight_term=False)
    responses = residual_responses(problem, horizon=HORIZON, seeds=None, contexts=contexts)
    return CrossGroupModel.build(problem, responses, activation2)


def _rollout(plan, contexts):
    compiled = tvm_tqs.compile(EXAMPLE, target="x86", plan=plan, batch=len(contexts))
    return compiled.rollout(contexts, HORIZON).astype(np.float64)


def test_responses_are_a_gram_matrix_over_every_quantized_option(problem, cross):
    c = cross.responses.coupling
    assert c.shape == (len(cross.responses.keys),) * 2
    np.testing.assert_allclose(c, c.T, rtol=1e-12, atol=0)
    assert np.linalg.eigvalsh(c).min() > -1e-9 * np.abs(c).max()
    expected = {(g.name, p) for g in problem.groups for p in g.options if p != "fp32"}
    assert set(cross.responses.keys) == expected
    own = cross.responses.own_error2()
    for g in problem.groups:
        assert 0 < own[g.name]["fp16"] < own[g.name]["int8"] < own[g.name]["int4"]


def test_predicted_error_matches_the_quantized_models_measured_rollout(problem, cross, contexts):
    """The model's claim: measured / predicted within [0.7, 1.4] on the windows it was measured from."""
    reference = _rollout({}, contexts)
    names = [g.name for g in problem.groups]
    plans = [problem.uniform("int8"), problem.uniform("int4")]
    mixed = {names[0]: "int4", names[1]: "int8", names[2]: "int4"}
    plans.append({s: mixed[g.name] for g in problem.groups for s in g.sites})
    for plan in plans:
        measured = np.linalg.norm(_rollout(plan, contexts) - reference) / np.linalg.norm(reference)
        predicted = cross.predicted_error(problem, plan)
        assert 0.7 <= measured / predicted <= 1.4, (plan, measured, predicted)


def test_residual_probe_is_the_quantizer_residual_in_the_constants_layout():
    tcn = PlanningProblem.from_model("benchmarks/zoo/models/etth1_tcn.onnx", "x86")
    probes = residual_probes(tcn)
    conv = next(g for g in tcn.groups if tcn.analysis.matches[g.sites[0]].op == "conv1d")
    match = tcn.analysis.matches[conv.sites[0]]
    probe = probes[(conv.name, "int4")]
    assert probe.delta.shape == match.weight.shape  # [O, I, KW], not the quantizer's [O, KW, I]
    view = np.asarray(conv.weight, np.float32)
    expected = (dequantized(view, conv.channel_axis, "int4", group_size=tcn.group_size) - view).transpose(
        0, 2, 1
    )
    np.testing.assert_array_equal(probe.delta, expected)
    assert probe.sites == conv.sites


def test_sqnr_table_is_each_sites_own_output_noise(problem, contexts):
    table = sqnr_table(problem, contexts)
    first = problem.groups[0]  # Linear(192 -> 128) on the mean-centred, flattened window
    x = (contexts - contexts.mean(axis=1, keepdims=True)).reshape(len(contexts), -1).astype(np.float64)
    w = np.asarray(first.weight, np.float64)  # [K, N]
    y = x @ w
    wq = dequantized(first.weight, first.channel_axis, "fp16").astype(np.float64)
    expected = np.sum((x @ wq - y) ** 2) / np.sum(y**2)
    assert table[first.name]["fp16"] == pytest.approx(expected, rel=1e-6)
    for g in problem.groups:
        assert table[g.name]["fp32"] == 0.0
        assert 0 < table[g.name]["fp16"] < table[g.name]["int8"] < table[g.name]["int4"]


def test_compile_with_the_cross_error_model(problem):
    compiled = tvm_tqs.compile(
        EXAMPLE, target="x86", budget="size=20%", horizon=HORIZON, seeds=4, error_model="cross"
    )
    plan = compiled.plan
    assert plan.method == "pairwise local search" and not plan.optimal
    assert plan.totals["size_bytes"] <= 0.2 * plan.fp32_totals["size_bytes"] * (1 + 1e-9)
    assert np.isfinite(plan.predicted_error) and plan.predicted_error > 0
    shares = sum(s.error_share for s in plan.sites)
    assert shares == pytest.approx(plan.predicted_error**2, rel=1e-9)


def test_cli_compile_with_the_cross_error_model(tmp_path):
    from cli_runner import run_cli

    out_dir = tmp_path / "art"
    code, out, err = run_cli(
        "compile", "--example", "--target", "x86", "--budget", "size=20%", "--horizon", "24", "--seeds", "2",
        "--error-model", "cross", "--out", str(out_dir),
    )  # fmt: skip
    assert code == 0, err
    assert "pairwise local search" in out and (out_dir / "plan.json").exists()
    code, _, err = run_cli(
        "compile", "--example", "--budget", "size=20%", "--error-model", "pairs", "--out", str(tmp_path / "x")
    )
    assert code == 2 and "--error-model" in err and not (tmp_path / "x").exists()


def test_unknown_error_model_is_refused_by_name():
    with pytest.raises(TQSError, match="error_model"):
        tvm_tqs.compile(EXAMPLE, target="x86", budget="size=25%", error_model="quadratic")
