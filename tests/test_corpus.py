"""The exporter-styles corpus (tests/corpus): models exported the way users export them, planned end to end.

Each model must inspect, score, compile under a size budget and export; its compiled fp32 rollout (the
one-function Relax rollout TQS runs) must equal onnxruntime's rollout under the same contract.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

import tvm_tqs
from tvm_tqs.contexts import SyntheticContexts
from tvm_tqs.contract import RolloutSpec
from tvm_tqs.errors import RolloutSpecError

ort = pytest.importorskip("onnxruntime")

CORPUS = Path(__file__).parent / "corpus"
STEPS = 48  # two calls: the feedback (window shift, aux advance) runs once
# Recurrent exports unroll 96 GRU steps: minutes to build on 2 cores, so they run with -m slow.
SLOW = {"gru_fixed1_op13", "gru_dynamic_op13"}
NAMES = sorted(p.name[: -len(".rollout.json")] for p in CORPUS.glob("*.rollout.json"))


def _params():
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NAMES]


def _spec(name: str) -> RolloutSpec:
    return RolloutSpec.from_file(CORPUS / f"{name}.rollout.json")


def _ort_rollout(path: Path, spec: RolloutSpec, context, aux, aux_future=None):
    sess = ort.InferenceSession(str(path))
    return spec.rollout(
        lambda feeds: sess.run([spec.forecast_output], feeds)[0],
        context,
        STEPS,
        aux=aux,
        aux_future=aux_future,
    )


def test_corpus_is_complete():
    # The styles the product promises to plan (tests/corpus/README.md has the table).
    styles = {
        "fixed batch": any(
            not d.dim[0].dim_param
            for n in NAMES
            for d in [
                onnx.load(str(CORPUS / f"{n}.onnx"), load_external_data=False)
                .graph.input[0]
                .type.tensor_type.shape
            ]
        ),
        "channels-first": any(_spec(n).window_layout == "BCL" for n in NAMES),
        "univariate": any(_spec(n).window_layout == "BL" for n in NAMES),
        "observed-mask": any(a.policy == "observed_mask" for n in NAMES for a in _spec(n).aux_inputs),
        "time feature": any(a.policy == "time" for n in NAMES for a in _spec(n).aux_inputs),
        "quantile head": any(_spec(n).forecast_select is not None for n in NAMES),
        "external data": any((CORPUS / f"{n}.onnx.data").exists() for n in NAMES),
    }
    assert all(styles.values()), styles
    opsets = {
        onnx.load(str(CORPUS / f"{n}.onnx"), load_external_data=False).opset_import[0].version for n in NAMES
    }
    assert min(opsets) <= 13 and max(opsets) >= 18, opsets


@pytest.mark.parametrize("name", _params())
def test_compiled_rollout_equals_onnxruntime(name):
    from tvm_tqs.graph import fuse
    from tvm_tqs.rollout import compile_rollout

    spec, path = _spec(name), CORPUS / f"{name}.onnx"
    assert tvm_tqs.inspect(path, rollout=spec)  # the fused-op table needs no contract, but checks a given one
    rollout = compile_rollout(fuse(path, rollout=spec), spec, STEPS)
    context = SyntheticContexts().make(spec, rollout.batch, seed=3)
    aux = spec.default_aux(rollout.signatures, rollout.batch)
    got = rollout(context)
    want = _ort_rollout(path, spec, context, aux)
    assert got.shape == want.shape == (rollout.batch, STEPS, len(spec.target_channels))
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("name", _params())
def test_plans_under_a_size_budget_and_exports(name, tmp_path):
    spec, path = _spec(name), CORPUS / f"{name}.onnx"
    compiled = tvm_tqs.compile(path, target="x86", budget="size=40%", rollout=spec, horizon=STEPS, seeds=2)
    plan = compiled.plan
    assert plan.totals["size_bytes"] <= 0.4 * plan.fp32_totals["size_bytes"] + 1e-6
    assert any(s.precision != "fp32" for s in plan.sites)
    report = compiled.tqs
    assert any(s.status == "ok" for s in report.sites) and report.path in ("rows", "calls")
    out = compiled.export(tmp_path / "artifact")
    assert {p.name for p in out.iterdir()} >= {"plan.json", "report.json"}
    assert json.loads((out / "report.json").read_text())["rollout"] == spec.to_dict()
    # The quantized model against its fp32 self, through the public rollout on numpy.
    context = SyntheticContexts().make(spec, 3, seed=5)
    sigs = {n: (tuple(s), d) for n, s, d in compiled.inputs}
    fp32 = (
        _ort_rollout(path, spec, context, spec.default_aux(sigs, 3))
        if sigs[spec.window_input][0][0] != 1
        else None
    )
    got = compiled.rollout(context, STEPS)
    if fp32 is None:  # a fixed batch-1 export runs one row per call in onnxruntime too
        fp32 = np.concatenate(
            [_ort_rollout(path, spec, context[i : i + 1], spec.default_aux(sigs, 1)) for i in range(3)]
        )
    rel = np.linalg.norm(got - fp32) / np.linalg.norm(fp32)
    assert rel < 0.1, rel


def test_fixed_and_dynamic_batch_exports_score_the_same():
    # One model exported both ways (same weights): the fixed-batch export is scored by repeated calls,
    # the dynamic one by batch rows; the scores agree.
    kw = dict(horizon=STEPS, seeds=2, mode="weight", linearity=False)
    fixed = tvm_tqs.score(
        CORPUS / "mlp_dynamo_fixed1_op18.onnx", rollout=_spec("mlp_dynamo_fixed1_op18"), **kw
    )
    dynamic = tvm_tqs.score(
        CORPUS / "mlp_dynamo_dynamic_op18.onnx", rollout=_spec("mlp_dynamo_dynamic_op18"), **kw
    )
    assert fixed.path == "calls" and "fixed in the graph" in fixed.path_reason
    assert dynamic.path == "rows" and dynamic.path_reason is None
    a = {s.anchor + str(s.site): s for s in fixed.sites if s.status == "ok"}
    b = {s.anchor + str(s.site): s for s in dynamic.sites if s.status == "ok"}
    assert a.keys() == b.keys() and a
    for key in a:
        np.testing.assert_allclose(a[key].gain, b[key].gain, rtol=1e-6)
        np.testing.assert_allclose(a[key].tqs, b[key].tqs, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_gru_exported_both_ways_scores_the_same():
    kw = dict(horizon=STEPS, seeds=2, mode="weight", linearity=False)
    fixed = tvm_tqs.score(CORPUS / "gru_fixed1_op13.onnx", **kw)  # contract from the ONNX metadata
    dynamic = tvm_tqs.score(CORPUS / "gru_dynamic_op13.onnx", **kw)
    assert (fixed.path, dynamic.path) == ("calls", "rows")
    # Through the recurrence the last-bit differences of batch-1 and batch-128 kernels grow: ~1e-5 of the
    # divergence on the largest gains, ~0.3% on gains of 1% of the largest, tens of percent near zero (docs/tqs.md has
    # the LSTM's distribution). The ranking and the gains that matter agree.
    assert [s.status for s in fixed.sites] == [t.status for t in dynamic.sites]
    a = np.array([s.gain for s in dynamic.sites if s.status == "ok"])
    b = np.array([s.gain for s in fixed.sites if s.status == "ok"])
    from scipy.stats import spearmanr

    assert spearmanr(a, b).statistic > 0.999
    big = a >= 1e-2 * a.max()
    np.testing.assert_allclose(b[big], a[big], rtol=1e-2)


def test_transformer_encoder_is_scored_without_dropping_sites():
    # torch's nn.TransformerEncoder exports attention that runs sequence-first inside: batch rows mix at
    # some sites, so the scorer moves to one call per row by itself and scores every site.
    rep = tvm_tqs.score(
        CORPUS / "patchtst_encoder_dynamic.onnx",
        rollout=_spec("patchtst_encoder_dynamic"),
        horizon=STEPS,
        seeds=2,
        mode="weight",
        linearity=False,
    )
    assert rep.path == "calls" and "changed other rows at sites" in rep.path_reason
    weighted = [op.index for op in rep.ops if any(w.dtype.startswith("float") for w in op.weights)]
    assert len(weighted) >= 8 and all(rep.site(k).status == "ok" for k in weighted)


def test_time_feature_is_inferred_and_advanced():
    spec = RolloutSpec.from_onnx(onnx.load(str(CORPUS / "time_feature_op17.onnx")))
    (hour,) = spec.aux_inputs
    assert (hour.name, hour.policy, hour.time_axis, hour.period) == ("hour", "time", 1, 24.0)
    # A stride of 5 (not a multiple of the period): an hour left in place would show.
    spec = dataclasses.replace(spec, stride=5)
    x = np.zeros((1, 96, 7), np.float32)
    h = (np.arange(96) % 24)[None].astype(np.int64)
    seen = []
    spec.rollout(
        lambda feeds: (seen.append(feeds["hour"].copy()), np.zeros((1, 24, 7), np.float32))[1],
        x,
        10,
        aux={"hour": h},
    )
    np.testing.assert_array_equal(seen[1], ((np.arange(96) + 5) % 24)[None])
    # The compiled rollout advances it the same way: its forecast equals onnxruntime's under this contract.
    from tvm_tqs.graph import fuse
    from tvm_tqs.rollout import compile_rollout

    path = CORPUS / "time_feature_op17.onnx"
    rollout = compile_rollout(fuse(path, rollout=spec), spec, STEPS)
    context = SyntheticContexts().make(spec, 1, seed=3)
    start = {"hour": ((np.arange(96) + 7) % 24)[None].astype(np.int64)}
    want = _ort_rollout(path, spec, context, start)
    assert np.abs(rollout(context, aux=start) - want).max() <= 1e-5 * np.abs(want).max()
    # The model reads the hour: shifting it changes the forecast.
    sess = ort.InferenceSession(str(path))
    a = sess.run(None, {"x": x, "hour": h})[0]
    b = sess.run(None, {"x": x, "hour": (h + 6) % 24})[0]
    assert not np.allclose(a, b)


def test_masked_quantile_model_needs_a_contract_and_says_which(tmp_path):
    with pytest.raises(RolloutSpecError) as err:
        tvm_tqs.score(CORPUS / "masked_quantile_cf.onnx")
    msg = str(err.value)
    assert "cannot infer a rollout contract" in msg and "forecast_select" in msg
    skeleton = json.loads(msg[msg.index("{") :])
    assert {"name": "valid", "policy": "observed_mask", "time_axis": 2} in skeleton["aux_inputs"]


def test_cli_compiles_the_masked_channels_first_quantile_model_for_arm(tmp_path):
    from cli_runner import run_cli

    out = tmp_path / "out"
    model = CORPUS / "masked_quantile_cf.onnx"
    spec = CORPUS / "masked_quantile_cf.rollout.json"
    code, _, err = run_cli(
        "compile", str(model), "--rollout", str(spec), "--target", "arm_cpu", "--budget", "size=25%",
        "--out", str(out), "--horizon", str(STEPS), "--seeds", "2",
    )  # fmt: skip
    assert code == 0, err
    solved = json.loads((out / "plan.json").read_text())["solved_plan"]
    assert solved["totals"]["size_bytes"] <= 0.25 * solved["fp32_totals"]["size_bytes"] + 1e-6
    code, text, err = run_cli("rollout", str(model), "--rollout", str(spec), "--json")
    assert code == 0 and json.loads(text) == _spec("masked_quantile_cf").to_dict(), err


@pytest.mark.parametrize(
    "edit, match",
    [
        (dict(stride=97, horizon=120), r"stride 97 exceeds lookback 96"),
        (
            dict(channels=7, channel_mean=None, channel_std=None, target_channels=[0]),
            r"input 'values' has shape \[1, 1, 96\].*channels 7",
        ),
        (
            dict(horizon=12, stride=12),
            r"output 'q' is \[1, 24, 9\], which is not a forecast of this contract",
        ),
        (
            dict(aux_inputs=[]),
            r"input 'valid' \(bool \[1, 1, 96\]\) is neither the window nor an auxiliary input",
        ),
    ],
)
def test_contracts_the_model_cannot_satisfy_fail_before_any_work(edit, match, tmp_path):
    from cli_runner import run_cli

    d = {**_spec("masked_quantile_cf").to_dict(), **edit}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(RolloutSpecError, match=match):
        tvm_tqs.compile(CORPUS / "masked_quantile_cf.onnx", target="x86", budget="size=25%", rollout=bad)
    if edit.get("stride") != 97:
        return  # the command line is checked once: a subprocess costs seconds
    out = tmp_path / "out"
    code, _, err = run_cli(
        "compile", str(CORPUS / "masked_quantile_cf.onnx"), "--rollout", str(bad), "--budget", "size=25%",
        "--out", str(out),
    )  # fmt: skip
    assert code == 2 and "Traceback" not in err and "rollout" in err
    assert not out.exists() and not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_external_data_model_loads_from_a_copied_directory(tmp_path):
    for f in ("mlp_external_data.onnx", "mlp_external_data.onnx.data"):
        shutil.copy(CORPUS / f, tmp_path / f)
    ops = tvm_tqs.inspect(tmp_path / "mlp_external_data.onnx")
    assert sum(w.size for op in ops for w in op.weights) > 1000


@pytest.mark.slow
def test_pretrained_forecaster_we_did_not_train_plans_end_to_end(tmp_path):
    # Fracast-0 (tests/corpus/pretrained/fracast0.md): weights from the `fracast` wheel, univariate window
    # of 2048 steps, 9-quantile head; a DFT and a TopK period detector inside.
    from tvm_tqs.graph import fuse
    from tvm_tqs.rollout import compile_rollout

    path = CORPUS / "pretrained" / "fracast0.onnx"
    spec = RolloutSpec.from_file(CORPUS / "pretrained" / "fracast0.rollout.json")
    assert RolloutSpec.from_onnx(onnx.load(str(path))) == spec
    steps = 2 * spec.stride
    rollout = compile_rollout(fuse(path), spec, steps)
    context = 10.0 + 3.0 * SyntheticContexts().make(spec, rollout.batch, seed=1)
    sess = ort.InferenceSession(str(path))
    want = spec.rollout(lambda feeds: sess.run([spec.forecast_output], feeds)[0], context, steps)
    got = rollout(context)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    compiled = tvm_tqs.compile(path, target="x86", budget="size=40%", horizon=steps, seeds=2)
    assert compiled.plan.totals["size_bytes"] <= 0.4 * compiled.plan.fp32_totals["size_bytes"] + 1e-6
    out = compiled.export(tmp_path / "fracast")
    assert (out / "plan.json").exists()
    rel = np.linalg.norm(compiled.rollout(context, steps) - want) / np.linalg.norm(want)
    assert rel < 0.1, rel
