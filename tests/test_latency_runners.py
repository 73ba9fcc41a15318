"""Local and offline runners on real kernels, whole-model latency, and runner errors.

The RPC runner has its own file (test_latency_rpc.py): it starts a tracker and servers.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import tvm
from latency_builders import FAST, medium_module, small_module
from tvm.script import tirx as T

from tvm_tqs.errors import TQSError
from tvm_tqs.latency import (
    KernelJob,
    LatencyCache,
    LocalRunner,
    MeasurementPending,
    OfflineRunner,
    RPCRunner,
    RPCUnavailableError,
    TargetNotRunnableError,
    loop_order_schedule,
    make_runner,
    measure_kernels,
    measure_model,
    site_jobs,
)
from tvm_tqs.latency import bundle_runner as br


@pytest.fixture(scope="module")
def medium():
    from tvm_tqs.targets.build import schedule

    def as_built(func, spec):  # the kernels as the artifact (and measure_model) lowers them
        return schedule(tvm.IRModule({"main": func}), spec)["main"]

    mod = medium_module()
    jobs = list({j.name: j for j in site_jobs(mod, "x86", schedule=as_built).values()}.values())
    return mod, jobs


@pytest.fixture(scope="module")
def local_results(medium):
    _, jobs = medium
    return LocalRunner().measure(jobs, FAST)


@T.prim_func
def _aborts(a: T.Buffer((4,), "float32"), b: T.Buffer((4,), "float32")):
    for i in range(4):
        b[i] = a[i] + T.Cast("float32", T.call_extern("int32", "abort"))


def test_local_runner_measures_real_kernels(medium, local_results):
    _, jobs = medium
    assert [m.name for m in local_results] == [j.name for j in jobs]
    for m in local_results:
        assert m.ok, m.error
        assert m.median_ms > 0 and m.q1_ms <= m.median_ms <= m.q3_ms and m.std_ms >= 0
        assert len(m.results_ms) == FAST.repeat and m.runner == "local"
        assert m.features is not None and m.config == FAST
    matmul = next(m for m in local_results if m.features.macs == 8 * 256 * 256)
    transpose = next(m for m in local_results if m.features.macs == 0)
    assert matmul.median_ms > 10 * transpose.median_ms  # 0.5 M MACs vs a 2 K-element transpose


def test_isolated_runner_agrees_and_survives_a_crashing_kernel(medium, local_results):
    _, jobs = medium
    crash = KernelJob.create(_aborts, "x86", name="aborts")
    out = LocalRunner(isolate=True).measure([jobs[1], crash, jobs[2]], FAST)
    assert out[0].ok and out[2].ok
    assert not out[1].ok and "crashed" in out[1].error
    for iso, here in ((out[0], local_results[1]), (out[2], local_results[2])):
        assert 0.2 < iso.median_ms / here.median_ms < 5


def test_inputs_are_seeded_and_safe():
    specs = [
        ((2, 3), "float32"),
        ((4,), "int8"),
        ((3,), "int64"),
        ((), "int64"),
        ((2,), "uint8"),
        ((2,), "bool"),
    ]
    a, b = br.random_arrays(specs, 0), br.random_arrays(specs, 0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], br.random_arrays(specs, 1)[0])
    assert a[2].tolist() == [0, 0, 0] and a[3].shape == ()  # index-like: zeros, 0-d stays 0-d
    assert a[1].dtype == np.int8 and a[4].dtype == np.uint8 and a[5].dtype == bool
    stats = br.summarize([1e-3, 2e-3, 3e-3, 4e-3])
    assert stats["median_ms"] == pytest.approx(2.5) and stats["q3_ms"] - stats["q1_ms"] == pytest.approx(1.5)


def test_offline_bundle_round_trip(tmp_path, medium):
    _, jobs = medium
    runner = OfflineRunner(tmp_path / "bundle")
    cache = LatencyCache(tmp_path / "cache.jsonl")
    with pytest.raises(MeasurementPending) as info:
        measure_kernels(jobs, runner, FAST, cache)
    bundle = info.value.bundle_dir
    assert "bundle_runner.py" in str(info.value) and str(bundle) in str(info.value)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["target"] == "x86" and len(manifest["kernels"]) == len(jobs)
    assert (bundle / "bundle_runner.py").exists() and (bundle / manifest["kernels"][0]["lib"]).exists()
    # The "device": the copied script in a fresh process, no tvm_tqs needed, run from inside the bundle.
    proc = subprocess.run(
        [sys.executable, "bundle_runner.py"], cwd=bundle, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    imported = runner.import_results()
    assert {m.key for m in imported} == {j.key(FAST) for j in jobs} and all(m.ok for m in imported)
    # Second run: results imported and cached, nothing pending.
    measured = measure_kernels(jobs, runner, FAST, cache)
    assert [m.key for m in measured] == [j.key(FAST) for j in jobs]
    assert len(cache) == len(jobs)
    # A later request with a new kernel: new bundle, earlier results kept (archived) and still read.
    extra = site_jobs(small_module(), "x86")[1]
    with pytest.raises(MeasurementPending) as info2:
        runner.measure(jobs + [extra], FAST)
    assert len(info2.value.done) == len(jobs) and info2.value.pending == [extra.key(FAST)]
    assert len(list(bundle.glob("results-*.json"))) == 1


def test_bundle_runner_resumes_after_a_crash(tmp_path, medium):
    _, jobs = medium
    crash = KernelJob.create(_aborts, "x86", name="aborts")
    runner = OfflineRunner(tmp_path / "b")
    bundle = runner.export_bundle([jobs[1], crash, jobs[2]], FAST)
    cmd = [sys.executable, str(bundle / "bundle_runner.py"), str(bundle)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode != 0  # killed by abort() in the second kernel
    assert len(br.read_partial(str(bundle / br.PARTIAL))) == 1  # the first result survived
    second = subprocess.run(cmd + ["--skip", crash.key(FAST)], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    results = {m.name: m for m in runner.import_results()}
    assert results[jobs[1].name].ok and results[jobs[2].name].ok and not results["aborts"].ok


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None, reason="needs g++-aarch64-linux-gnu")
def test_offline_bundle_for_an_arm_target_is_cross_compiled(tmp_path):
    jobs = list(site_jobs(small_module(), "arm_cpu/cortex-a76").values())[:2]
    bundle = OfflineRunner(tmp_path / "arm").export_bundle(jobs, FAST)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["target"] == "arm_cpu/cortex-a76" and manifest["device"] == "cpu"
    lib = (bundle / manifest["kernels"][0]["lib"]).read_bytes()
    assert lib[:4] == b"\x7fELF" and int.from_bytes(lib[18:20], "little") == 183  # EM_AARCH64


def test_measure_model_end_to_end(tmp_path, medium, local_results):
    mod, _ = medium
    cache = LatencyCache(tmp_path / "c.jsonl")
    m = measure_model(mod, "local", config=FAST, cache=cache)
    assert m.ok and m.kind == "model" and m.median_ms > 0
    # The whole model costs at least its biggest kernel.
    assert m.median_ms > 0.5 * max(x.median_ms for x in local_results)
    assert measure_model(mod, "local", config=FAST, cache=cache) == m  # cached: same record back
    # Explicit inputs and a built executable.
    exe = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    x = np.random.default_rng(0).standard_normal((1, 256, 8)).astype("float32")
    m2 = measure_model(exe, LocalRunner(), [x], config=FAST)
    assert m2.ok and m2.median_ms > 0
    with pytest.raises(ValueError, match="inputs"):
        measure_model(exe, "local", config=FAST)


def test_measure_model_isolated_and_offline(tmp_path):
    mod = small_module()
    iso = measure_model(mod, "local:isolate", config=FAST)
    assert iso.ok and iso.runner == "local+isolated"
    runner = OfflineRunner(tmp_path / "m")
    with pytest.raises(MeasurementPending):
        measure_model(mod, runner, config=FAST)
    subprocess.run(
        [sys.executable, str(tmp_path / "m" / "bundle_runner.py"), str(tmp_path / "m")],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert measure_model(mod, runner, config=FAST).ok


def test_local_runner_refuses_targets_it_cannot_run():
    jobs = list(site_jobs(small_module(), "arm_cpu/cortex-a76").values())[:1]
    with pytest.raises(TargetNotRunnableError, match="RPC"):
        LocalRunner().measure(jobs, FAST)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rpc_runner_without_tracker_fails_clearly():
    port = _free_port()
    runner = RPCRunner(f"127.0.0.1:{port}", "rpi5", connect_timeout_s=2)
    jobs = list(site_jobs(small_module(), "x86").values())[:1]
    with pytest.raises(RPCUnavailableError) as info:
        runner.measure(jobs, FAST)
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text and "'rpi5'" in text and "rpc_tracker" in text
    assert isinstance(info.value, TQSError) and "\n" not in text


def test_make_runner():
    assert isinstance(make_runner(None), LocalRunner) and make_runner("local:isolate").isolate
    rpc = make_runner("rpc://10.0.0.2:9190/rpi5")
    assert (rpc.host, rpc.port, rpc.key) == ("10.0.0.2", 9190, "rpi5")
    assert isinstance(make_runner("offline:/tmp/x"), OfflineRunner)
    for bad in ("rpc://host/key", "rpc://h:1", "ssh://x"):
        with pytest.raises(TQSError):
            make_runner(bad)


def test_schedule_hook_changes_the_kernel_and_its_key(medium):
    mod, _ = medium
    plain = site_jobs(mod, "x86")
    seen = []

    def hook(func, spec):
        seen.append(spec.name)
        return loop_order_schedule(func, spec)

    scheduled = site_jobs(mod, "x86", schedule=hook)
    assert seen == ["x86"] * 4  # once per distinct PrimFunc
    matmul, transpose = 1, 0
    assert scheduled[matmul].kernel_hash != plain[matmul].kernel_hash
    assert scheduled[transpose].kernel_hash == plain[transpose].kernel_hash
    assert scheduled[matmul].features == plain[matmul].features  # features describe the site, not the code
    fast, slow = LocalRunner().measure([scheduled[matmul], plain[matmul]], FAST)
    assert fast.ok and slow.ok and fast.median_ms < slow.median_ms


def test_a_small_irmodule_with_private_functions_is_a_kernel():
    mod = small_module()
    pair = tvm.IRModule(
        {"transpose": mod["transpose"], "fused_matmul_add_relu": mod["fused_matmul_add_relu"]}
    )
    job = KernelJob.create(pair, "x86", entry="fused_matmul_add_relu")
    assert not job.single and [a.shape for a in job.args] == [(1, 2, 16), (16, 8), (8,), (1, 2, 8)]
    with pytest.raises(ValueError, match="name the entry"):
        KernelJob.create(pair, "x86")
    m = LocalRunner().measure([job], FAST)[0]
    assert m.ok and m.median_ms > 0, m.error
