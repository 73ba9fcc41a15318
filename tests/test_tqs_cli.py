"""`tvm-tqs score`: ranked table, JSON report, clear errors (run as a real process)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from cli_runner import run_cli
from onnx_builders import mlp_forecaster

from tvm_tqs.tqs import TQSReport


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tqs_cli") / "mlp.onnx"
    onnx.save(mlp_forecaster(), str(path))
    return path


def test_score_prints_a_ranked_table_and_writes_json(model_path, tmp_path):
    out = tmp_path / "tqs.json"
    code, stdout, stderr = run_cli(
        "score", str(model_path), "--horizon", "8", "--seeds", "2", "--out", str(out), "--progress"
    )
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].split()[:4] == ["rank", "site", "anchor", "fused"]
    assert [line.split()[0] for line in lines[2:6]] == ["1", "2", "3", "4"]
    assert "4/4 sites scored (output mode), horizon 8 (2 calls of stride 4), 2 seeds" in stdout
    assert "scoring:" in stderr
    report = TQSReport.from_json(out.read_text())
    assert report.seeds == 2 and len(report.sites) == 4
    tqs = [s.tqs for s in report.ranked()]
    assert tqs == sorted(tqs, reverse=True)
    assert json.loads(out.read_text())["horizon"] == 8


def test_score_with_user_contexts_and_gain_ranking(model_path, tmp_path):
    ctx = tmp_path / "ctx.npy"
    np.save(ctx, np.random.default_rng(0).standard_normal((3, 16, 2)).astype(np.float32))
    code, stdout, _ = run_cli(
        "score",
        str(model_path),
        "--horizon",
        "4",
        "--contexts",
        str(ctx),
        "--rank-by",
        "gain",
        "--top",
        "2",
        "--quiet",
    )
    assert code == 0
    assert "3 seeds" in stdout and "top 2 of 4 shown" in stdout


def test_score_errors_are_one_paragraph(model_path, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 5, 2), np.float32))
    code, stdout, stderr = run_cli(
        "score", str(model_path), "--horizon", "4", "--contexts", str(bad), "--quiet"
    )
    assert code == 2 and stdout == ""
    assert stderr.startswith(
        "tvm-tqs score: error: context for input 'window' must have shape [batch, 16, 2]"
    )
    assert "Traceback" not in stderr
