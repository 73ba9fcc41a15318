"""Reliability: groups and corruptions, CSV windows, the per-group table, and `tvm-tqs reliability` end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

import tvm_tqs
from tvm_tqs.errors import TQSError
from tvm_tqs.examples import example_model
from tvm_tqs.frontend.load import rollout_spec_of
from tvm_tqs.reliability import (
    CORRUPTIONS,
    build_groups,
    corrupt,
    evaluate,
    parse_split,
    read_csv,
    standardize,
    windows,
)

ETTH1 = (
    Path(os.environ.get("TVM_TQS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    / "ETTh1.csv"
)


def _series_csv(path: Path, rows: int = 2400, seed: int = 0) -> Path:
    """Half-hourly demand-and-temperature-like series (daily cycles, a trend, noise) with timestamps."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    demand = 10 + 3 * np.sin(2 * np.pi * t / 48) + 0.002 * t + rng.normal(0, 0.5, rows)
    temp = 20 + 5 * np.sin(2 * np.pi * (t - 8) / 48) + rng.normal(0, 0.8, rows)
    times = np.datetime64("2013-10-01T00:00") + t * np.timedelta64(30, "m")
    lines = ["date,Demand,Temperature"] + [
        f"{d},{a:.4f},{b:.4f}" for d, a, b in zip(times, demand, temp, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruptions_are_seeded_and_grow_with_severity(name):
    x = np.random.default_rng(1).standard_normal((16, 48, 3)).astype(np.float32)
    assert np.array_equal(corrupt(x, name, 2, seed=3), corrupt(x, name, 2, seed=3))
    change = [np.abs(corrupt(x, name, s, seed=3) - x).mean() for s in (1, 2, 3)]
    assert 0 < change[0] < change[1] < change[2], change


def test_missing_values_are_forward_filled_from_the_window_itself():
    x = np.cumsum(np.ones((4, 32, 2), np.float32), axis=1)  # strictly increasing in time
    y = corrupt(x, "missing", 3, seed=0)
    assert np.array_equal(y[:, -1], x[:, -1])  # the latest observation is kept
    assert (np.diff(y, axis=1) >= 0).all()  # forward fill never goes back in time...
    assert set(np.unique(y)) <= set(np.unique(x))  # ...and only repeats observed values
    assert (y != x).any()


@given(st.integers(8, 60), st.integers(1, 4), st.integers(0, 10**6))
@settings(max_examples=30, deadline=None)
def test_groups_partition_the_windows(n, channels, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 24, channels)).astype(np.float32)
    starts = np.datetime64("2017-01-01T00") + np.sort(rng.integers(0, 24 * 200, n)) * np.timedelta64(1, "h")
    groups = build_groups(x, starts, list(range(channels)))
    for kind in ("month", "season", "volatility"):
        rows = np.sort(np.concatenate([g.rows for g in groups if g.kind == kind]))
        assert np.array_equal(rows, np.arange(n)), kind
    assert sum(g.kind == "channel" for g in groups) == channels
    assert sum(g.kind == "corruption" for g in groups) == 15


def test_csv_reading_splitting_and_errors(tmp_path):
    path = _series_csv(tmp_path / "s.csv", rows=500)
    series = read_csv(path)
    assert series.channels == ("Demand", "Temperature") and series.values.shape == (500, 2)
    assert series.times[1] - series.times[0] == np.timedelta64(1800, "s")
    assert parse_split("0.7,0.1,0.2", 500) == (350, 400, 500)
    assert parse_split("300,100,100", 500) == (300, 400, 500)
    values, mean, std = standardize(series, 350)
    assert np.allclose(values[:350].mean(axis=0), 0, atol=1e-5) and np.allclose(
        values[:350].std(axis=0), 1, atol=1e-4
    )
    w = windows(values, series.times, 400, 500, 48, 24, count=1000)
    assert w.x.shape == (500 - 24 - 400 + 1, 48, 2) and w.y.shape[1] == 24
    assert np.array_equal(w.x[0, -1], values[399]) and np.array_equal(w.y[0, 0], values[400])
    with pytest.raises(TQSError, match=r"no column\(s\) \['Load'\]"):
        read_csv(path, columns=["Load"])
    with pytest.raises(TQSError, match="needs 600 rows"):
        parse_split("300,200,100", 500)
    with pytest.raises(TQSError, match="three positive numbers"):
        parse_split("0.7,0.3", 500)
    with pytest.raises(TQSError, match="too few"):
        windows(values, None, 490, 500, 48, 24, count=4)


def test_the_table_adds_up_and_matches_the_compiled_rollout(tmp_path):
    from tvm_tqs.reliability.variants import csv_windows, host_variants

    spec = rollout_spec_of(tvm_tqs.load(str(example_model())))
    data, names = csv_windows(_series_csv(tmp_path / "s.csv"), spec, count=48, steps=48)
    variants = host_variants(example_model(), uniform=("int8",), horizon=48, batch=16)
    table = evaluate(variants, data, spec.target_channels, 48, channel_names=names)
    rows = {r["group"]: r for r in table.rows}
    for v in ("fp32", "uniform int8"):
        # the channels split the error of "all"; so do the volatility terciles, weighted by their windows
        assert np.isclose(np.mean([rows[c][f"{v} MSE"] for c in names]), rows["all"][f"{v} MSE"])
        vol = [r for r in table.rows if r["kind"] == "volatility"]
        assert np.isclose(
            sum(r[f"{v} MSE"] * r["windows"] for r in vol) / len(data.x), rows["all"][f"{v} MSE"]
        )
    direct = variants["uniform int8"](data.x) - data.y[:, :48][:, :, spec.target_channels]
    assert np.isclose(rows["all"]["uniform int8 MSE"], np.mean(direct.astype(np.float64) ** 2))
    summary = table.summary()
    assert "gap_at_worst" not in summary["fp32"]
    worst = summary["uniform int8"]["worst_group"]
    assert summary["uniform int8"]["worst_mse"] == max(r["uniform int8 MSE"] for r in table.rows)
    assert np.isclose(
        summary["uniform int8"]["gap_at_worst"], rows[worst]["uniform int8 MSE"] / rows[worst]["fp32 MSE"] - 1
    )
    assert rows["level_shift s3"]["fp32 MSE"] > rows["level_shift s1"]["fp32 MSE"]


def test_cli_reliability_writes_the_table_and_attaches_it_to_an_artifact(tmp_path):
    data = _series_csv(tmp_path / "s.csv")
    art = tmp_path / "art"
    code, _, err = run_cli("compile", "--example", "--target", "x86", "--uniform", "int4", "--out", str(art))
    assert code == 0, err
    out = tmp_path / "rel"
    code, stdout, err = run_cli(
        "reliability", str(example_model()), "--data", str(data), "--windows", "32", "--horizon", "48",
        "--plan", str(art), "--uniform", "int8", "--out", str(out), "--attach", "--json", "--no-png",
    )  # fmt: skip
    assert code == 0, err
    table = json.loads(stdout)
    assert table["variants"] == ["fp32", "art", "uniform int8"]
    assert json.loads((out / "reliability.json").read_text()) == table
    assert "| variant | mean MSE | worst group |" in (out / "reliability.md").read_text()
    report = json.loads((art / "report.json").read_text())
    assert report["reliability"] == table
    html = (art / "report.html").read_text()
    assert '<section id="reliability">' in html and table["summary"]["art"]["worst_group"] in html

    code, _, err = run_cli("reliability", str(example_model()), "--data", str(data), "--columns", "Demand")
    assert code == 2 and "gives 1 channels" in err and "--columns" in err


@pytest.mark.skipif(not ETTH1.exists(), reason="ETTh1.csv not in ../shared/data (TVM_TQS_DATA)")
def test_a_zoo_model_on_real_data(tmp_path):
    model = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo" / "models" / "etth1_dlinear.onnx"
    code, stdout, err = run_cli(
        "reliability", str(model), "--data", str(ETTH1), "--split", "8640,2880,2880", "--windows", "32",
        "--uniform", "int4", "--json",
    )  # fmt: skip
    assert code == 0, err
    table = json.loads(stdout)
    rows = {r["group"]: r for r in table["rows"]}
    assert {"2017-10", "2018-02", "OT", "calm (volatility)", "spikes s3"} <= set(rows)
    assert 0.2 < rows["all"]["fp32 MSE"] < 0.8  # the card's 96-step test MSE is 0.41 over all windows
