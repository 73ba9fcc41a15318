"""Latency measurement for GPU targets (CUDA, OpenCL) on a host without a GPU.

What can be checked here: kernel jobs for GPU targets are built bound to GPU threads (CUDA C / OpenCL
source in the libraries, nothing left for the host), offline bundles record the device kind, every
runner picks the target's device kind and refuses clearly when it is not there (the local runner here,
an RPC server on this host asked for cuda:0 / opencl:0), compile() with a latency budget goes the same
way as for the ARM targets, and benchmarks/latency_gpu.py builds everything for the target in --dry-run.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tvm
from latency_builders import FAST, small_module

import tvm_tqs
from tvm_tqs.examples import example_model
from tvm_tqs.latency import (
    KernelFeatures,
    KernelJob,
    LatencyCache,
    LatencyModel,
    LocalRunner,
    MeasurementPending,
    OfflineRunner,
    RemoteDeviceMissingError,
    TargetNotRunnableError,
    bind_threads,
    device_kind,
    kernel_hash,
    local_device_available,
    measure_model,
    model_job,
    remote_device,
    site_jobs,
)
from tvm_tqs.latency import bundle_runner as br
from tvm_tqs.latency.build import build_kernels
from tvm_tqs.latency.model import encode
from tvm_tqs.passes.site_analysis import site_kernel
from tvm_tqs.targets.gpu import unbound_functions

REPO = Path(__file__).resolve().parents[1]
SOURCE_MARK = {"cuda": "__global__", "opencl": "__kernel"}

pytestmark = pytest.mark.skipif(
    local_device_available("cuda/sm_90"),
    reason="this host has a CUDA GPU: the no-GPU behaviour is not testable",
)


def _device_sources(lib) -> dict[str, str]:
    """{module kind: source} of the device modules a built kernel library imports."""
    out, todo = {}, [lib.mod]
    while todo:
        m = todo.pop()
        if m.kind in SOURCE_MARK:
            out[m.kind] = m.inspect_source()
        todo.extend(m.imports)
    return out


@pytest.fixture(scope="module")
def fused():
    return small_module()


@pytest.fixture(scope="module")
def loaded():
    """The unfused module of `fused` (what the quantize pass and `site_kernel` analyse)."""
    from onnx_builders import mlp_forecaster

    from tvm_tqs.frontend.load import load

    return load(mlp_forecaster(lookback=16, hidden=8, channels=2), {"batch": 1})


@pytest.mark.parametrize("target", ["cuda/sm_90", "opencl/adreno"])
def test_gpu_kernel_jobs_build_bound_with_device_source(fused, loaded, target):
    kind = device_kind(target)
    jobs = list(site_jobs(fused, target).values())
    assert all(unbound_functions(j.mod) == [] for j in jobs)  # bound when the job is made
    # The quantized kernel of the GPU kernel set, bound by the kernel layer itself, is kept as it is.
    kern = site_kernel(loaded, 1, "int8", target)
    int8 = KernelJob.create(kern.func, target, name=kern.name, entry=kern.name, precision="int8")
    assert int8.kernel_hash == kernel_hash(kern.func)
    # A job made around create() with an unbound PrimFunc is bound by the build (else it would run on
    # the host): the safety net.
    raw = site_jobs(fused, "x86")[1]
    assert unbound_functions(raw.mod) == [raw.entry]
    unbound = dataclasses.replace(jobs[1], name="unbound", mod=raw.mod)
    built = build_kernels([*jobs, int8, unbound], target)
    assert built.errors == {} and len(built.located) == len(jobs) + 2
    for mod, lib in zip(built.mods, built.libs, strict=True):
        assert unbound_functions(mod) == []
        sources = _device_sources(lib)
        assert list(sources) == [kind] and SOURCE_MARK[kind] in sources[kind]
    for _, symbol in built.located.values():
        assert any(symbol in s for lib in built.libs for s in _device_sources(lib).values())


def test_gpu_jobs_hash_the_bound_code_and_keep_site_features(fused):
    cpu, gpu = site_jobs(fused, "x86"), site_jobs(fused, "cuda/sm_90")
    assert gpu[1].kernel_hash != cpu[1].kernel_hash  # dlight's code, not the unscheduled one
    same = dataclasses.replace(gpu[1].features, target="x86")
    assert same == cpu[1].features  # features describe the site (unscheduled TIR), target aside
    assert bind_threads(cpu[1].mod, "x86") is cpu[1].mod  # CPU targets: untouched


def test_unbindable_kernel_fails_alone():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def scalar(a: T.Buffer((1,), "float32"), b: T.Buffer((1,), "float32")):
        b[0] = a[0] + T.float32(1)  # no block: dlight has nothing to schedule

    jobs = list(site_jobs(small_module(), "cuda/sm_90").values())[:1]
    bad = KernelJob.create(scalar, "cuda/sm_90", name="scalar")
    assert unbound_functions(bad.mod) == ["scalar"]  # create() keeps it; the build refuses it
    built = build_kernels([jobs[0], bad], "cuda/sm_90")
    assert list(built.errors) == [1] and "would run on the host" in built.errors[1]
    assert 0 in built.located


@pytest.mark.parametrize("target", ["cuda/sm_90", "opencl/mali"])
def test_offline_bundle_records_the_device_kind(fused, target, tmp_path):
    kind = device_kind(target)
    jobs = list(site_jobs(fused, target).values())
    bundle = OfflineRunner(tmp_path / "b").export_bundle(jobs, FAST)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["target"] == target and manifest["device"] == kind
    assert manifest["tvm_target"]["kind"] == kind
    lib = (bundle / manifest["kernels"][0]["lib"]).read_bytes()
    assert SOURCE_MARK[kind].encode() in lib  # the device source travels inside the library
    assert kind in (bundle / "README.txt").read_text()
    # Run here, the bundle stops before measuring anything, with a reason, and status EXIT_NO_DEVICE.
    proc = subprocess.run(
        [sys.executable, str(bundle / "bundle_runner.py"), str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == br.EXIT_NO_DEVICE, proc.stderr
    assert f"'{kind}" in proc.stderr and "GPU" in proc.stderr
    assert not (bundle / br.PARTIAL).exists()


@pytest.mark.parametrize(
    "target, reason",
    [
        ("cuda/sm_90", "runs on a CUDA GPU"),
        ("cuda/jetson-orin", "host code is for aarch64"),
        ("opencl/adreno", "host code is for aarch64"),
    ],
)
def test_local_runner_refuses_gpu_targets_without_the_device(fused, target, reason):
    assert not local_device_available(target)
    jobs = list(site_jobs(fused, target).values())[:1]
    for runner in (LocalRunner(), LocalRunner(isolate=True)):
        with pytest.raises(TargetNotRunnableError) as info:
            runner.measure(jobs, FAST)
        text = str(info.value)
        assert f"'{target}'" in text and reason in text and "rpc://" in text and "offline:" in text
        assert "\n" not in text


def test_gpu_model_jobs_need_gpu_code(fused):
    job = model_job(fused, "cuda/sm_90")  # built as the artifact is: dlight binds every PrimFunc
    kinds = set()
    todo = [job.executable.mod]
    while todo:
        m = todo.pop()
        kinds.add(m.kind)
        todo.extend(m.imports)
    assert "cuda" in kinds
    host_only = tvm.compile(fused, target=tvm.target.Target({"kind": "llvm"}))  # built for the wrong device
    with pytest.raises(ValueError, match="no cuda code"):
        model_job(host_only, "cuda/sm_90", inputs=job.arrays)
    with pytest.raises(TargetNotRunnableError, match="cuda/sm_90"):
        measure_model(job, "local", config=FAST)


def test_latency_model_keys_on_the_device_kind():
    f = KernelFeatures(("matmul",), ((1, 64),), ((64, 64),), ((1, 64),), 4096, "int8", "cuda/sm_90")
    names = ["x86", "cuda/sm_90", "opencl/mali"]
    rows = encode(
        [f, dataclasses.replace(f, target="x86"), dataclasses.replace(f, target="opencl/mali")], [], names
    )
    families = rows[:, -len(names) - 4 : -len(names)]  # family one-hot: x86, arm_cpu, cuda, opencl
    assert families.tolist() == [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    cpu_only = LatencyModel().fit(
        [dataclasses.replace(f, target="x86", macs=m) for m in (10, 100)], [1.0, 2.0]
    )
    assert not cpu_only.covers(f)  # a GPU kernel predicted from CPU data is flagged in the table


# -- RPC: a server on this host, asked for the GPU --------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rpc_tracker(tmp_path_factory):
    """A tracker and one CPU-only RPC server under key "nogpu" (this host)."""
    pytest.importorskip("tornado", reason="the RPC tracker needs tornado")
    pytest.importorskip("psutil", reason="the RPC server needs psutil")
    pytest.importorskip("cloudpickle", reason="the RPC server needs cloudpickle")
    from tvm_tqs.latency import RPCRunner, RPCUnavailableError

    log = open(tmp_path_factory.mktemp("rpc") / "rpc.log", "ab")  # noqa: SIM115 - closed at teardown
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port)]
            + ["--port-end", str(port + 1)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ]
    server = _free_port()
    procs.append(
        subprocess.Popen(
            [sys.executable, "-m", "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}", "--key", "nogpu"]
            + ["--host", "127.0.0.1", "--port", str(server), "--port-end", str(server + 20)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    )
    deadline = time.time() + 120
    try:
        while True:
            try:
                if RPCRunner(f"127.0.0.1:{port}", "nogpu", connect_timeout_s=1).devices() >= 1:
                    break
            except RPCUnavailableError:
                pass
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                pytest.fail("the RPC tracker and server did not start")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        import os
        import signal

        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)
        log.close()


def test_rpc_on_a_server_without_gpu_fails_clearly(rpc_tracker, fused):
    from tvm import rpc

    from tvm_tqs.latency import RPCRunner

    # The runner: one clear error for the whole batch (not one failed measurement per kernel).
    jobs = list(site_jobs(fused, "cuda/sm_90").values())
    runner = RPCRunner(rpc_tracker, "nogpu", request_timeout_s=60)
    with pytest.raises(RemoteDeviceMissingError) as info:
        runner.measure(jobs, FAST)
    text = str(info.value)
    assert "key 'nogpu'" in text and rpc_tracker in text and "cuda:0" in text and "'cuda/sm_90'" in text
    with pytest.raises(RemoteDeviceMissingError):
        runner.measure_model(model_job(fused, "cuda/sm_90"), FAST)
    # The selection itself, on a session of that server: cpu for CPU targets, cuda:i / opencl:i for GPUs.
    host, port = rpc_tracker.split(":")
    tracker = rpc.connect_tracker(host, int(port))
    sess = tracker.request("nogpu", session_timeout=60, max_retry=3)
    tracker.close()
    assert remote_device(sess, "x86").exist
    for target, kind in (("cuda/sm_90", "cuda"), ("opencl/mali", "opencl")):
        with pytest.raises(RemoteDeviceMissingError) as info:
            remote_device(sess, target, 1, where="server X")
        text = str(info.value)
        assert f"server X has no {kind}:1 for target '{target}'" in text and f"tvm.{kind}(1).exist" in text


# -- compile() with a latency budget for a GPU target ------------------------------------------------


@pytest.fixture(scope="module")
def report():
    return tvm_tqs.score(example_model(), horizon=48, seeds=4, mode="weight", linearity=False)


def test_compile_with_latency_budget_for_gpu_follows_the_cross_target_path(report, tmp_path):
    # No runner: refused by name, like the arm_cpu targets (not runnable here either).
    with pytest.raises(tvm_tqs.TQSError, match=r"'cuda/sm_90' needs a runner.*rpc://.*offline:"):
        tvm_tqs.compile(example_model(), target="cuda/sm_90", budget="latency=1ms", tqs_report=report)
    # "local" on a host without the GPU: the runner's own reason.
    with pytest.raises(TargetNotRunnableError, match="runs on a CUDA GPU"):
        tvm_tqs.compile(
            example_model(), target="cuda/sm_90", budget="latency=1ms", tqs_report=report, runner="local"
        )
    # Offline: every kernel of the table goes into one bundle for the cuda device.
    bundle = tmp_path / "bundle"
    with pytest.raises(MeasurementPending) as info:
        tvm_tqs.compile(
            example_model(),
            target="cuda/sm_90",
            budget="latency=1ms",
            tqs_report=report,
            runner=f"offline:{bundle}",
            latency_cache=LatencyCache(tmp_path / "cache.jsonl"),
        )
    assert "cuda" in str(info.value)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["device"] == "cuda" and manifest["target"] == "cuda/sm_90"
    precisions = {k["features"]["precision"] for k in manifest["kernels"]}
    assert {"fp32", "int8", "int4"} <= precisions
    for lib in {k["lib"] for k in manifest["kernels"]}:
        assert b"__global__" in (bundle / lib).read_bytes()


# -- benchmarks/latency_gpu.py ------------------------------------------------------------------------


def _benchmark():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import latency_gpu

    return latency_gpu


def test_gpu_benchmark_without_gpu_exits_2(capsys):
    assert _benchmark().main(["--models", "vic_elec_mlp"]) == 2
    err = capsys.readouterr().err
    assert "cuda/sm_90" in err and "--dry-run" in err


def test_gpu_benchmark_dry_run_builds_every_variant(capsys, tmp_path):
    pytest.importorskip("torch")
    args = ["--models", "vic_elec_mlp", "--batches", "1", "--horizon", "48", "--seeds", "2"]
    assert _benchmark().main(["--dry-run", *args, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "dry run for cuda/sm_90: 4 TVM builds with cuda code, 0 failed; nothing measured" in out
    assert "'vic_elec_mlp': 'trained (recovered from the ONNX file)'" in out
    assert not list(tmp_path.iterdir())  # a dry run writes no results


def test_gpu_benchmark_prepares_what_the_gpu_machine_measures(tmp_path):
    pytest.importorskip("torch")
    bench = _benchmark()
    work = tmp_path / "prepared"
    args = ["--models", "vic_elec_mlp", "--batches", "64", "--variants", "tqs_int8,torch_fp16"]
    assert bench.main(["--prepare", str(work), *args]) == 0
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["target"] == "cuda/sm_90" and manifest["settings"]["batches"] == [64]
    (entry,) = manifest["models"]
    batch = entry["batches"]["64"]
    assert list(batch["variants"]) == ["tqs_int8"] and batch["variants"]["tqs_int8"]["code"] == [
        "cuda",
        "llvm",
    ]
    assert b"__global__" in (work / batch["variants"]["tqs_int8"]["lib"]).read_bytes()
    assert (work / batch["input"]).exists() and (work / batch["reference"]).exists()
    # The GPU machine rebuilds the torch module from the zoo's models.py and the saved (trained) weights.
    model = bench._torch_from(entry, work)
    import numpy as np
    import torch

    x, ref = np.load(work / batch["input"]), np.load(work / batch["reference"])
    with torch.inference_mode():
        assert np.allclose(model(torch.from_numpy(x)).numpy(), ref, atol=1e-4)
    # The report renders from the manifest and (here made-up) timings and numerics.
    times = {"tqs_int8": [10.0, 11.0, 12.0], "torch_fp16": [30.0, 31.0, 33.0]}
    results = [{"model": "vic_elec_mlp", "batches": {"64": {"times_us": times, "numerics": {}}}}]
    payload = {
        "command": "python benchmarks/latency_gpu.py --from DIR",
        "env": {"gpu": "NVIDIA H200", "cpu": "x", "tvm": "0.27", "python": "3.12", "wall_s": 1.0},
        "build_env": manifest["build_env"],
        "settings": {**manifest["settings"], "target": "cuda/sm_90", "repeats": 3, "min_ms": 40.0},
        "rows": bench._rows(results),
        "models": manifest["models"],
    }
    text = bench.markdown(payload)
    assert "on NVIDIA H200" in text and "| vic_elec_mlp | 64 | 11.0 | 31.0 | - | 2.82x | - |" in text
    # Measuring what was prepared needs the GPU: exit 2 here, before loading anything.
    assert bench.main(["--from", str(work), "--out", str(tmp_path / "results")]) == 2
    assert not (tmp_path / "results").exists()


def test_gpu_benchmark_measure_path_on_a_cpu_stand_in(tmp_path):
    """The measuring half (load, time interleaved, numerics, report) on x86 builds and tvm.cpu(): all of it
    but the CUDA device itself."""
    import types

    import numpy as np

    bench = _benchmark()
    path = example_model()
    x = np.random.default_rng(0).standard_normal((2, 96, 2)).astype(np.float32)
    ref = bench._reference(path, x)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "ref.npy", ref)
    variants = {}
    for v, prec in (("tvm_fp32", "fp32"), ("tqs_int8", "int8")):
        compiled = tvm_tqs.compile(str(path), target="x86", uniform=prec, batch=2)
        compiled.executable.export_library(str(tmp_path / f"{v}.so"))
        variants[v] = {"lib": f"{v}.so", "build_s": 1.0, "code": ["llvm"]}
    manifest = {
        "settings": {"budget": "size=25%", "batches": [2], "variants": list(variants), "tqs": {}},
        "models": [{"model": "vic_elec_mlp", "torch": None, "mixed": None, "batches": {"2": {
            "input": "x.npy", "reference": "ref.npy", "variants": variants}}}],
        "build_env": {"cpu": "x", "cores": 2, "tvm": "0.27"},
        "failures": {},
    }  # fmt: skip
    args = types.SimpleNamespace(torch_cuda=False, repeats=3, min_ms=2.0, device_id=0)
    results = bench.measure(manifest, tmp_path, args, tvm.cpu())
    b = results[0]["batches"]["2"]
    assert {v: len(t) for v, t in b["times_us"].items()} == {"tvm_fp32": 3, "tqs_int8": 3}
    assert b["numerics"]["tvm_fp32"]["rel_l2"] < 1e-5 < b["numerics"]["tqs_int8"]["rel_l2"] < 0.05
    payload = {
        "command": "c",
        "env": {"gpu": "cpu stand-in", "cpu": "x", "tvm": "0.27", "python": "3", "wall_s": 1.0},
        "build_env": manifest["build_env"],
        "settings": {**manifest["settings"], "target": "cuda/sm_90", "repeats": 3, "min_ms": 2.0},
        "rows": bench._rows(results),
        "models": manifest["models"],
    }
    bench._write(str(tmp_path / "out"), payload, {})
    assert "| vic_elec_mlp | 2 |" in (tmp_path / "out" / "latency_gpu.md").read_text()
    assert json.loads((tmp_path / "out" / "latency_gpu.json").read_text())["rows"][0]["batch"] == 2
