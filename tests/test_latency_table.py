"""The latency table: measured, cached and predicted entries, and correction from end-to-end measurements."""

from __future__ import annotations

import dataclasses
import json

import pytest
from latency_builders import FAST, CountingRunner, medium_module, small_module

from tvm_tqs.errors import TQSError
from tvm_tqs.graph import fuse
from tvm_tqs.latency import (
    KernelJob,
    LatencyCache,
    LatencyTable,
    Observation,
    build_table,
    fit_correction,
    measure_model,
    site_requests,
)
from tvm_tqs.latency.model import LatencyModel


def test_site_requests_cover_every_site_and_its_precisions():
    mod = small_module()
    reqs = site_requests(mod, "x86")
    by_site = {}
    for r in reqs:
        by_site.setdefault(r.site, []).append(r)
    assert sorted(by_site) == [0, 1, 2, 3]
    assert [r.precision for r in by_site[0]] == ["fp32"]  # transpose: no weights
    assert [r.precision for r in by_site[1]] == ["fp32", "fp16", "int8", "int4"]
    assert all((r.job is not None) == (r.precision == "fp32") for r in reqs)
    # All precisions of a site share the site's features but the precision.
    f32, i8 = by_site[1][0].features, by_site[1][2].features
    assert f32.macs == i8.macs and f32.iters == i8.iters and i8.precision == "int8"


def test_sources_measured_cached_predicted(tmp_path):
    mod = small_module()
    cache = LatencyCache(tmp_path / "c.jsonl")
    runner = CountingRunner()
    table = build_table(site_requests(mod, "x86"), runner, config=FAST, cache=cache)
    assert table.counts() == {"measured": 4, "cached": 0, "predicted": 6}
    assert table.entry(1, "fp32").source == "measured" and table.entry(1, "fp32").spread_ms == 0.0
    pred = table.entry(1, "int8")
    assert pred.source == "predicted" and pred.latency_ms > 0
    assert "no kernel" in pred.note and "saw no int8" in pred.note
    # Again: everything from the cache, nothing measured.
    runner2 = CountingRunner()
    again = build_table(
        site_requests(mod, "x86"), runner2, config=FAST, cache=LatencyCache(tmp_path / "c.jsonl")
    )
    assert runner2.calls == [] and again.counts()["cached"] == 4
    assert again.latency_ms(1, "fp32") == table.latency_ms(1, "fp32")
    # Round trip through JSON (the compile result carries the table).
    back = LatencyTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert back.entries == table.entries and back.target == "x86"


def _int8_stand_in(mod):
    fp32 = {r.site: r.job for r in site_requests(mod, "x86", precisions=["fp32"])}

    def kernel_for(op, precision):
        # Stand-in for the quantize pass: a distinct PrimFunc (an attribute changes its hash) with the
        # site's features at that precision.
        if precision != "int8":
            return None
        job = fp32[op.index]
        func = job.func.with_attr("tqs_test", "int8")
        features = dataclasses.replace(job.features, precision="int8")
        return KernelJob.create(func, "x86", name=f"{op.func}_int8", features=features)

    return kernel_for


def test_kernel_hook_and_failures_are_predicted():
    mod = medium_module()
    reqs = site_requests(mod, "x86", kernel_for=_int8_stand_in(mod))
    runner = CountingRunner(fail={"transpose"})
    table = build_table(reqs, runner, config=FAST)
    assert len(runner.measured) == 6  # 4 fp32 sites + 2 int8 kernels
    assert table.entry(1, "int8").source == "measured" and table.entry(1, "int4").source == "predicted"
    failed = table.entry(0, "fp32")
    assert failed.source == "predicted" and "measurement failed: boom" in failed.note
    assert table.counts() == {"measured": 5, "cached": 0, "predicted": len(reqs) - 5}


def test_max_measure_limits_new_measurements():
    mod = medium_module()
    reqs = site_requests(mod, "x86", kernel_for=_int8_stand_in(mod))
    runner = CountingRunner()
    table = build_table(reqs, runner, config=FAST, max_measure=4)
    assert len(runner.measured) == 4
    assert sum("max_measure" in (e.note or "") for e in table.entries) == 2
    assert table.counts()["measured"] == 4


def test_no_measurements_no_predictions():
    reqs = [r for r in site_requests(small_module(), "x86") if r.precision != "fp32"]
    with pytest.raises(TQSError, match="cannot predict"):
        build_table(reqs, CountingRunner(), config=FAST)


def test_model_is_trained_on_the_cache_too(tmp_path):
    cache = LatencyCache(tmp_path / "c.jsonl")
    build_table(site_requests(medium_module(), "x86"), CountingRunner(), config=FAST, cache=cache)
    table = build_table(site_requests(small_module(), "x86"), CountingRunner(), config=FAST, cache=cache)
    assert table.model["n_train"] > 4  # the other model's kernels count
    assert table.model["error"] is not None


def _table_with(latencies: dict[tuple[int, str], float]) -> LatencyTable:
    from tvm_tqs.latency.table import LatencyEntry

    return LatencyTable("x86", tuple(LatencyEntry(s, p, t, "measured", t) for (s, p), t in latencies.items()))


def test_correction_from_one_observation_is_a_ratio():
    table = _table_with({(0, "fp32"): 1.0, (1, "fp32"): 2.0, (1, "int8"): 0.5})
    plan = {0: "fp32", 1: "int8"}
    c = fit_correction(table, [Observation(plan, 3.0, table.total_ms(plan))])
    assert c.method == "ratio" and c.default_scale == pytest.approx(2.0) and c.overhead_ms == 0
    fixed = table.corrected(c)
    assert fixed.total_ms(plan) == pytest.approx(3.0)
    assert fixed.entry(1, "int8").raw_ms == 0.5 and fixed.correction == c
    assert table.corrected(None).total_ms(plan) == pytest.approx(1.5)


def test_correction_recovers_scale_and_overhead():
    table = _table_with(
        {(0, "fp32"): 1.0, (1, "fp32"): 2.0, (1, "int8"): 0.5, (2, "fp32"): 4.0, (2, "int8"): 1.0}
    )

    def truth(plan):  # device: kernels 1.5x slower, plus 0.7 ms of fixed overhead
        return 1.5 * table.total_ms(plan) + 0.7

    plans = [{1: "fp32", 2: "fp32"}, {1: "int8", 2: "int8"}]
    c = fit_correction(table, [Observation(p, truth(p), table.total_ms(p)) for p in plans])
    assert c.method == "ratio+overhead"
    assert c.default_scale == pytest.approx(1.5) and c.overhead_ms == pytest.approx(0.7)
    third = {1: "int8", 2: "fp32"}
    assert table.corrected(c).total_ms(third) == pytest.approx(truth(third))


def test_correction_per_precision_with_enough_observations():
    table = _table_with(
        {
            (0, "fp32"): 1.0,
            (0, "int8"): 0.4,
            (1, "fp32"): 2.0,
            (1, "int8"): 0.5,
            (2, "fp32"): 3.0,
            (2, "int8"): 1.5,
        }
    )

    def truth(plan):  # int8 kernels twice as slow as the table says, fp32 exact, 0.2 ms overhead
        return sum((2.0 if plan[s] == "int8" else 1.0) * table.latency_ms(s, plan[s]) for s in range(3)) + 0.2

    plans = [
        {0: "fp32", 1: "fp32", 2: "fp32"},
        {0: "int8", 1: "int8", 2: "int8"},
        {0: "int8", 1: "fp32", 2: "fp32"},
        {0: "fp32", 1: "int8", 2: "fp32"},
    ]
    c = fit_correction(table, [Observation(p, truth(p), table.total_ms(p)) for p in plans])
    assert c.method == "per-precision+overhead"
    assert c.factor("int8") == pytest.approx(2.0) and c.factor("fp32") == pytest.approx(1.0)
    assert c.overhead_ms == pytest.approx(0.2)


def test_table_and_end_to_end_on_a_real_model(tmp_path):
    """The real thing, small: local measurements, a model measured end to end, one correction round."""
    mod = fuse(_tiny_onnx(tmp_path), {"batch": 1})
    table = build_table(site_requests(mod, "x86", precisions=["fp32"]), "local", config=FAST)
    assert table.counts()["measured"] == len(table.entries) and table.model is not None
    plan = {s: "fp32" for s in table.sites}
    e2e = measure_model(mod, "local", config=FAST)
    c = fit_correction(table, [Observation(plan, e2e.median_ms, table.total_ms(plan))])
    assert table.corrected(c).total_ms(plan) == pytest.approx(e2e.median_ms)


def _tiny_onnx(tmp_path):
    import onnx
    from onnx_builders import mlp_forecaster

    path = tmp_path / "mlp.onnx"
    onnx.save(mlp_forecaster(lookback=32, hidden=32), path)
    return str(path)


def test_latency_model_error_is_reported_in_the_table(tmp_path):
    cache = LatencyCache(tmp_path / "c.jsonl")
    table = build_table(
        site_requests(medium_module(), "x86"),
        CountingRunner(),
        config=FAST,
        cache=cache,
        model=LatencyModel(seed=3),
    )
    assert set(table.model) >= {"n_train", "error", "precisions", "targets"}
