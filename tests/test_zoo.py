"""The committed model zoo: every model imports, fuses, and computes what onnxruntime computes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import tvm_tqs
from tvm_tqs.examples import example_model
from tvm_tqs.graph import fuse
from tvm_tqs.rollout import RolloutSpec
from tvm_tqs.runtime import VMRunner, build

ROOT = Path(__file__).resolve().parents[1]
ZOO = sorted((ROOT / "benchmarks" / "zoo" / "models").glob("*.onnx")) + [example_model()]
FAMILIES = {"lstm", "gru", "tcn", "dlinear", "patchtst", "fits", "nbeats"}


def test_zoo_covers_the_model_families():
    names = {p.stem for p in ZOO}
    assert {
        f for f in FAMILIES if any(n.rsplit("_", 1)[-1].rstrip("0123456789") == f for n in names)
    } == FAMILIES
    assert example_model().exists()
    for path in ZOO:
        card = path.with_suffix(".md")
        assert card.exists(), f"{path.name} has no model card"


# zoo v2 (issue: TQS on models with many independent weight groups): at least this many groups each
MANY_GROUPS = {"etth1_patchtst6": 30, "etth1_nbeats": 16, "etth1_lstm3": 7}


@pytest.mark.parametrize("name", sorted(MANY_GROUPS))
def test_zoo_v2_models_have_many_independent_weight_groups(name):
    from tvm_tqs.planning import PlanningProblem

    problem = PlanningProblem.from_model(ROOT / "benchmarks" / "zoo" / "models" / f"{name}.onnx", "x86")
    assert len(problem.groups) >= MANY_GROUPS[name]
    # independent: no two groups hold the same weight values (torch's cloned layers were trained apart)
    digests = {np.asarray(g.weight).tobytes() for g in problem.groups}
    assert len(digests) == len(problem.groups)


@pytest.mark.parametrize("path", ZOO, ids=[p.stem for p in ZOO])
def test_zoo_model_matches_onnxruntime(path):
    ort = pytest.importorskip("onnxruntime")
    proto = onnx.load(str(path))
    spec = RolloutSpec.from_onnx(proto)
    batch = 2
    x = np.random.default_rng(0).standard_normal((batch, *spec.window_shape)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {spec.window_input: x}
    )
    mod = fuse(proto, {"batch": batch})
    got = VMRunner(build(mod))(x)
    assert len(got) == len(expected)
    if any(node.op_type == "DFT" for node in proto.graph.node):
        # onnxruntime's float32 DFT is off by ~2e-5 for non-power-of-two lengths (96 here); the ONNX
        # reference evaluator computes in float64, so it is the oracle, and onnxruntime a loose check.
        from onnx.reference import ReferenceEvaluator

        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, atol=1e-4, rtol=0)
        expected = ReferenceEvaluator(proto).run(None, {spec.window_input: x})
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=0)
    ops = tvm_tqs.graph.fused_ops(mod)
    assert ops and sum(op.macs for op in ops) > 0
    assert json.loads(json.dumps([op.to_dict() for op in ops]))


@pytest.mark.parametrize("path", ZOO, ids=[p.stem for p in ZOO])
def test_cli_inspect_prints_fused_ops(path, capsys):
    from tvm_tqs.cli import main

    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("site")
    assert "fused call sites" in out.splitlines()[-1]
