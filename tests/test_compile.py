"""tvm_tqs.compile end to end on the shipped example: every budget kind, forced plans, artifacts that run."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from cli_runner import run_cli

import tvm_tqs
from tvm_tqs.examples import example_model
from tvm_tqs.rollout import RolloutSpec
from tvm_tqs.solver import Budget, InfeasibleBudgetError

EXAMPLE = example_model()
SPEC = RolloutSpec.from_onnx(onnx.load(str(EXAMPLE)))


@pytest.fixture(scope="module")
def report():
    """One weight-mode TQS report of the example, shared by the tests (compile() accepts it)."""
    return tvm_tqs.score(EXAMPLE, horizon=48, seeds=4, mode="weight", linearity=False)


@pytest.fixture(scope="module")
def window():
    return np.random.default_rng(0).standard_normal((1, *SPEC.window_shape)).astype(np.float32)


def _fp32_forecast(window):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(EXAMPLE)).run(None, {SPEC.window_input: window})[0]


def test_uniform_int8_on_the_host_runs_close_to_fp32(window, tmp_path):
    compiled = tvm_tqs.compile(EXAMPLE, target="x86", uniform="int8")
    assert set(compiled.plan.counts()) == {"int8"}
    out = compiled.run(window)[0]
    ref = _fp32_forecast(window)
    rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert rel < 0.05, f"int8 forecast is {rel:.3f} (relative) away from fp32"
    trajectory = compiled.rollout(window, 4 * SPEC.stride)
    assert trajectory.shape == (1, 4 * SPEC.stride, len(SPEC.target_channels))

    path = compiled.export(tmp_path / "art")
    assert sorted(p.name for p in path.iterdir()) == ["model.so", "plan.json", "report.html", "report.json"]
    from tvm_tqs.targets.build import load

    vm, meta = load(path)
    import tvm

    again = vm["main"](tvm.runtime.tensor(window)).numpy()
    np.testing.assert_array_equal(again, out)
    assert meta["target_name"] == "x86"


@pytest.mark.parametrize(
    "budget, check",
    [
        ("size=40%", lambda t, f, b: t["size_bytes"] <= b["size_bytes"]),
        ("avg-bits=6", lambda t, f, b: t["avg_bits"] <= 6.0),
        ("bops=30%", lambda t, f, b: t["bops"] <= b["bops"]),
    ],
    ids=["size", "avg-bits", "bops"],
)
def test_each_budget_kind_is_met_exactly_on_arm(report, budget, check, tmp_path):
    compiled = tvm_tqs.compile(
        EXAMPLE, target="arm_cpu/cortex-a76", budget=budget, tqs_report=report, error_model="independent"
    )
    plan = compiled.plan
    assert check(plan.totals, plan.fp32_totals, plan.budget)
    assert plan.method == "exact" and plan.optimal
    assert plan.predicted_error > 0
    assert len(plan.sites) == len(report.sites)
    shares = sum(s.error_share for s in plan.sites)
    assert shares == pytest.approx(plan.predicted_error**2, rel=1e-6)
    front = compiled.pareto["size_bytes"]
    sizes, errors = [p["size_bytes"] for p in front], [p["predicted_error"] for p in front]
    assert len(front) >= 2 and sizes == sorted(sizes) and errors == sorted(errors, reverse=True)
    # Under a size budget the exact plan is on the front: no point of it is as small and better.
    assert not budget.startswith("size") or not any(
        p["size_bytes"] <= plan.totals["size_bytes"] * (1 + 1e-9)
        and p["predicted_error"] < plan.predicted_error * (1 - 1e-6)
        for p in front
    )
    path = compiled.export(tmp_path / "arm")
    meta = json.loads((path / "plan.json").read_text())
    # model.so when aarch64-linux-gnu-g++ is installed, else model.tar (object files, linked on the device)
    assert meta["library"] in ("model.so", "model.tar") and (path / meta["library"]).stat().st_size > 0
    assert meta["target_name"] == "arm_cpu/cortex-a76" and meta["solved_plan"]["budget"]


def test_infeasible_budget_names_the_smallest_feasible_value(report):
    with pytest.raises(InfeasibleBudgetError, match=r"size_bytes=1000 \(smallest feasible: [0-9.e+]+\)"):
        tvm_tqs.compile(EXAMPLE, target="x86", budget=Budget(size_bytes=1000), tqs_report=report)


def test_forced_plan_and_its_errors():
    compiled = tvm_tqs.compile(EXAMPLE, target="x86", plan={2: "int4"})
    assert compiled.plan.precisions[2] == "int4"
    assert all(p == "fp32" for s, p in compiled.plan.precisions.items() if s != 2)
    with pytest.raises(tvm_tqs.TQSError, match="plan names site 99"):
        tvm_tqs.compile(EXAMPLE, target="x86", plan={99: "int8"})
    with pytest.raises(tvm_tqs.TQSError, match="precision 'int3'"):
        tvm_tqs.compile(EXAMPLE, target="x86", plan={2: "int3"})


@pytest.mark.parametrize(
    ("target", "isa"), [("cuda/jetson-orin", "cuda_dp4a"), ("opencl/mali", "opencl_int")]
)
def test_gpu_targets_compile_with_gpu_kernels(target, isa, tmp_path):
    compiled = tvm_tqs.compile(EXAMPLE, target=target, budget="avg-bits=6")
    kernels = [s.kernel for s in compiled.plan.sites if s.precision != "fp32"]
    assert kernels and all(isa in k for k in kernels)
    compiled.export(tmp_path / "a")
    assert (tmp_path / "a" / "plan.json").exists()


class _ScriptedDevice:
    """A latency runner for the compile loop: kernels cost MACs x bits (int8 is 4x cheaper than fp32 on paper),
    and the whole model measures whatever the script says next (the device disagreeing with its kernels)."""

    def __new__(cls, model_ms):
        import time

        from tvm_tqs.latency import Measurement, Runner
        from tvm_tqs.precision import PRECISIONS

        def stats(t):
            return {"median_ms": t, "q1_ms": t, "q3_ms": t, "std_ms": 0.0, "min_ms": t, "results_ms": [t] * 3}

        class Scripted(Runner):
            name = "scripted"

            def __init__(self):
                self.script = list(model_ms)

            def measure(self, jobs, config, on_result=None):
                out = []
                for job in jobs:
                    f = job.features
                    t = 1e-3 + 1e-6 * f.macs * PRECISIONS[f.precision].bits / 32
                    out.append(
                        Measurement.from_stats(job, config, stats(t), self.name, "script", time.time())
                    )
                    if on_result is not None:
                        on_result(out[-1])
                return out

            def measure_model(self, job, config):
                return Measurement.from_stats(
                    job, config, stats(self.script.pop(0)), self.name, "script", time.time()
                )

        return Scripted()


def test_latency_loop_corrects_the_table_when_the_model_measures_over_budget(report, tmp_path):
    from tvm_tqs.latency import LatencyCache

    probe = tvm_tqs.compile(
        EXAMPLE,
        target="x86",
        budget=Budget(latency_ms=1e3),
        tqs_report=report,
        runner=_ScriptedDevice([1.0]),
        latency_cache=LatencyCache(tmp_path / "a.jsonl"),
    )
    fp32_ms = probe.trace[0]["predicted_ms"]  # the zero-error plan fits a generous budget: all fp32
    assert probe.trace[0]["plan"] == {}
    budget = Budget(latency_ms=0.8 * fp32_ms)
    # Round 0's plan fits the table but measures 1.5x the budget; round 1 measures under it.
    device = _ScriptedDevice([1.5 * budget.latency_ms, 0.9 * budget.latency_ms])
    compiled = tvm_tqs.compile(
        EXAMPLE,
        target="x86",
        budget=budget,
        tqs_report=report,
        runner=device,
        latency_cache=LatencyCache(tmp_path / "b.jsonl"),
    )
    first, second = compiled.trace
    assert not first["met"] and second["met"] and device.script == []
    assert first["predicted_ms"] <= budget.latency_ms * (1 + 1e-6)
    # The second plan fits the corrected table (every kernel 1.5 / predicted slower), so it is a faster plan.
    assert second["predicted_ms"] <= budget.latency_ms * (1 + 1e-6)
    ratio = 1.5 * budget.latency_ms / first["predicted_ms"]
    raw_second = second["predicted_ms"] / ratio
    assert raw_second < first["predicted_ms"] and second["plan"] != first["plan"]
    assert compiled.plan.totals["latency_ms"] == pytest.approx(second["predicted_ms"])


@pytest.mark.slow
def test_latency_budget_is_met_as_measured_on_this_host(report, tmp_path, monkeypatch):
    # Real timings: slow-marked because a loaded machine can make the model measure far over its kernels
    # (CI saw the fp32 model at 1.8x its earlier measurement); the scripted test above covers the loop.
    # Batch 32: at batch 1 the example's kernels take ~1 us each and the VM's own overhead dominates.
    monkeypatch.setenv("TVM_TQS_LATENCY_CACHE", str(tmp_path / "latency.jsonl"))
    from tvm_tqs.latency import measure_model

    batch = np.random.default_rng(1).standard_normal((32, *SPEC.window_shape)).astype(np.float32)
    base = {
        p: measure_model(
            tvm_tqs.compile(EXAMPLE, target="x86", uniform=p, batch=32).executable,
            "local",
            target="x86",
            inputs=[batch],
        ).median_ms
        for p in ("fp32", "int8")
    }
    # Between all-fp32 and all-int8 where int8 is clearly faster (AVX-512 VNNI hosts); just above the fp32
    # model where it is not (AVX2 only: the example's int8 kernels take about fp32's time). Never under what
    # the per-kernel table predicts for the all-fp32 plan: the table sums kernels measured alone and can
    # overestimate the whole model, and a budget it deems infeasible is refused (docs/latency.md).
    loose = tvm_tqs.compile(
        EXAMPLE, target="x86", budget=Budget(latency_ms=1e3), tqs_report=report, batch=32, runner="local"
    )
    table_fp32 = loose.trace[0]["predicted_ms"]
    if base["int8"] < 0.85 * base["fp32"]:
        budget = Budget(latency_ms=max(0.5 * (base["fp32"] + base["int8"]), 1.1 * table_fp32))
    else:
        budget = Budget(latency_ms=max(1.25 * base["fp32"], 1.1 * table_fp32))
    compiled = tvm_tqs.compile(
        EXAMPLE, target="x86", budget=budget, tqs_report=report, batch=32, runner="local"
    )
    last = compiled.trace[-1]
    assert last["measured_ms"] <= budget.latency_ms, compiled.trace
    assert all("predicted_ms" in t for t in compiled.trace)
    # The plan the solver returned fits the (last, possibly corrected) latency table.
    assert 0 < last["predicted_ms"] <= budget.latency_ms * (1 + 1e-6)


@pytest.mark.qemu
def test_arm_artifact_runs_under_qemu_like_the_host(window, tmp_path):
    qemu = pytest.importorskip("qemu_runner")
    if not qemu.available():
        pytest.skip("qemu-aarch64 / aarch64-linux-gnu-g++ not installed")
    arm = tvm_tqs.compile(EXAMPLE, target="arm_cpu/neoverse-v1", uniform="int8")
    host = tvm_tqs.compile(EXAMPLE, target="x86", uniform="int8")
    path = arm.export(tmp_path / "arm")
    out = qemu.run_vm(
        path / "model.so", [window], [((1, SPEC.horizon, len(SPEC.target_channels)), "float32")]
    )[0]
    np.testing.assert_allclose(out, host.run(window)[0], rtol=1e-5, atol=1e-5)


def test_cli_compile_main_command(tmp_path):
    code, out, err = run_cli(
        "compile",
        "--example",
        "--target",
        "arm_cpu/cortex-a76",
        "--budget",
        "avg-bits=6",
        "--horizon",
        "48",
        "--seeds",
        "2",
        "--out",
        str(tmp_path / "art"),
    )
    assert code == 0, err
    assert "plan by pairwise local search" in out and "artifact written to" in out
    assert (tmp_path / "art" / "report.json").exists()
    code, _, err = run_cli("compile", "--example", "--budget", "size=1b", "--out", str(tmp_path / "x"))
    assert code == 3 and "smallest feasible" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
    code, _, err = run_cli("compile", "--example", "--uniform", "int8", "--out", str(tmp_path / "art"))
    assert code == 2 and "exists (pass --overwrite" in err


def test_forced_plan_with_a_latency_budget_is_measured_once_and_reported(tmp_path):
    from tvm_tqs.latency import LatencyCache

    device = _ScriptedDevice([2.0])
    compiled = tvm_tqs.compile(
        EXAMPLE,
        target="x86",
        plan={2: "int8"},
        budget=Budget(latency_ms=1.0),
        runner=device,
        latency_cache=LatencyCache(tmp_path / "c.jsonl"),
    )
    (only,) = compiled.trace  # nothing to re-solve: the measurement is the answer
    assert only["measured_ms"] == 2.0 and only["met"] is False and device.script == []
    assert compiled.plan.precisions[2] == "int8"
