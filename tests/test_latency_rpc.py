"""RPCRunner end to end against a real TVM RPC tracker and servers started here.

Default: a tracker and two servers on 127.0.0.1 under one key (two "devices"), x86 kernels.
``-m "slow and qemu"``: an aarch64 server under qemu-aarch64 (tests/qemu_rpc), arm kernels cross-compiled
here; emulated timings mean nothing, so those tests check the plumbing and the numerics.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tvm
from latency_builders import FAST, medium_module, small_module

from tvm_tqs.latency import (
    KernelJob,
    LocalRunner,
    OfflineRunner,
    RPCRunner,
    RPCUnavailableError,
    measure_kernels,
    measure_model,
    site_jobs,
)
from tvm_tqs.latency.build import build_kernels, export_library
from tvm_tqs.targets.registry import get_target

pytest.importorskip("tornado", reason="the RPC tracker needs tornado (pip install -e '.[rpc]')")
pytest.importorskip("psutil", reason="the RPC server needs psutil (pip install -e '.[rpc]')")
pytest.importorskip("cloudpickle", reason="the RPC server needs cloudpickle (pip install -e '.[rpc]')")

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _spawn(cmd, log_path) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    # Own session: teardown kills the whole group (the server forks a worker per connection).
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _kill(procs) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=30)


def _servers_under(port: int, key: str) -> int:
    try:
        return RPCRunner(f"{HOST}:{port}", key, connect_timeout_s=1).devices()
    except RPCUnavailableError:
        return 0


def _wait(port: int, key: str, count: int, timeout_s: float, procs, logs) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if _servers_under(port, key) >= count:
            return
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.5)
    _kill(procs)
    tails = {str(log): log.read_text(errors="replace")[-1500:] for log in logs if log.exists()}
    pytest.fail(f"RPC servers did not register under '{key}' within {timeout_s:g} s: {tails}")


def _start_tracker(tmp) -> tuple[int, subprocess.Popen]:
    port = _free_port()
    log = tmp / "tracker.log"
    proc = _spawn(
        [
            sys.executable,
            "-m",
            "tvm.exec.rpc_tracker",
            "--host",
            HOST,
            "--port",
            str(port),
            "--port-end",
            str(port + 1),
        ],
        log,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return port, proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    _kill([proc])
    pytest.fail(f"RPC tracker did not start: {log.read_text(errors='replace')[-1500:]}")


@pytest.fixture(scope="module")
def host_tracker(tmp_path_factory):
    """A tracker with two servers under key "host": two devices behind one key."""
    tmp = tmp_path_factory.mktemp("rpc")
    port, tracker = _start_tracker(tmp)
    servers, logs = [], []
    for i in range(2):
        base = _free_port()
        logs.append(tmp / f"server{i}.log")
        servers.append(
            _spawn(
                [
                    sys.executable,
                    "-m",
                    "tvm.exec.rpc_server",
                    "--tracker",
                    f"{HOST}:{port}",
                    "--key",
                    "host",
                    "--host",
                    HOST,
                    "--port",
                    str(base),
                    "--port-end",
                    str(base + 20),
                ],
                logs[-1],
            )
        )
    _wait(port, "host", 2, 120, [tracker, *servers], logs)
    yield f"{HOST}:{port}"
    _kill([*servers, tracker])


@pytest.fixture(scope="module")
def medium_jobs():
    mod = medium_module()
    return mod, list({j.name: j for j in site_jobs(mod, "x86").values()}.values())


def test_rpc_measures_real_kernels_like_the_local_runner(host_tracker, medium_jobs):
    _, jobs = medium_jobs
    remote = RPCRunner(host_tracker, "host", n_parallel=1).measure(jobs, FAST)
    local = LocalRunner().measure(jobs, FAST)
    for r, here in zip(remote, local, strict=True):
        assert r.ok, r.error
        assert r.runner == f"rpc://{host_tracker}/host" and r.key == here.key
        # Same machine, same code: same magnitude (generous: the 2-core host is shared).
        assert 0.2 < r.median_ms / here.median_ms < 5, (r.name, r.median_ms, here.median_ms)


def test_rpc_measures_in_parallel_across_the_devices_of_a_key(host_tracker, medium_jobs, tmp_path):
    _, jobs = medium_jobs
    extra = list({j.name: j for j in site_jobs(small_module(hidden=32), "x86").values()}.values())
    runner = RPCRunner(host_tracker, "host")
    assert runner.devices() == 2
    out = measure_kernels(jobs + extra, runner, FAST)
    assert all(m.ok for m in out), [m.error for m in out if not m.ok]
    workers = [m.device for m in out]
    print("kernels per worker:", {w: workers.count(w) for w in set(workers)})
    assert set(workers) <= {"host#0", "host#1"}


def test_rpc_measures_a_whole_model(host_tracker, medium_jobs):
    mod, _ = medium_jobs
    m = measure_model(mod, RPCRunner(host_tracker, "host"), config=FAST)
    assert m.ok and m.median_ms > 0 and m.kind == "model"


def test_unknown_key_names_tracker_and_registered_keys(host_tracker, medium_jobs):
    _, jobs = medium_jobs
    with pytest.raises(RPCUnavailableError) as info:
        RPCRunner(host_tracker, "rpi5").measure(jobs[:1], FAST)
    text = str(info.value)
    assert host_tracker in text and "'rpi5'" in text and "keys registered: host" in text


def test_busy_devices_time_out_clearly(host_tracker, medium_jobs):
    from tvm import rpc

    _, jobs = medium_jobs
    host, port = host_tracker.split(":")
    held = [rpc.connect_tracker(host, int(port)).request("host", session_timeout=60) for _ in range(2)]
    try:
        with pytest.raises(RPCUnavailableError, match="no free device"):
            RPCRunner(host_tracker, "host", request_timeout_s=2).measure(jobs[:1], FAST)
    finally:
        del held


# --------------------------------------------------------------------------------------------------
# aarch64 under qemu
# --------------------------------------------------------------------------------------------------
ARM = "arm_cpu/cortex-a76"


@pytest.fixture(scope="module")
def qemu_tracker(tmp_path_factory):
    import qemu_rpc

    try:
        wrapper = qemu_rpc.setup()
    except qemu_rpc.QemuRPCUnavailable as err:
        pytest.skip(f"no emulated aarch64 RPC server: {err}")
    tmp = tmp_path_factory.mktemp("qemu-rpc")
    port, tracker = _start_tracker(tmp)
    base = _free_port()
    log = tmp / "qemu-server.log"
    server = qemu_rpc.start_server(f"{HOST}:{port}", "arm64-qemu", port=base, port_end=base + 20, log=log)
    _wait(port, "arm64-qemu", 1, 300, [tracker, server], [log])
    yield f"{HOST}:{port}", wrapper
    _kill([server, tracker])


@pytest.mark.slow
@pytest.mark.qemu
def test_qemu_rpc_numerics_and_timing(qemu_tracker, tmp_path):
    from tvm import rpc

    tracker, _ = qemu_tracker
    jobs = list({j.name: j for j in site_jobs(small_module(), ARM).values()}.values())
    out = RPCRunner(tracker, "arm64-qemu").measure(jobs, FAST)
    assert all(m.ok and m.median_ms > 0 for m in out), [m.error for m in out]
    # Numerics: the cross-compiled matmul+add+relu kernel on the emulated aarch64 matches x86.
    job = next(j for j in jobs if "matmul" in j.features.kinds)
    arm = build_kernels([job], ARM)
    path = export_library(arm.libs[0], tmp_path / "kernel.so", get_target(ARM))
    x86 = build_kernels([KernelJob.create(job.func, "x86", name=job.name)], "x86")
    args = [np.random.default_rng(i).standard_normal(a.shape).astype(a.dtype) for i, a in enumerate(job.args)]
    host, port = tracker.split(":")
    sess = rpc.connect_tracker(host, int(port)).request("arm64-qemu", session_timeout=300)
    sess.upload(str(path))
    remote = [tvm.runtime.tensor(a, sess.cpu()) for a in args]
    sess.load_module(path.name)[arm.located[0][1]](*remote)
    here = [tvm.runtime.tensor(a) for a in args]
    x86.libs[0].jit()[x86.located[0][1]](*here)
    assert np.abs(here[-1].numpy()).max() > 0
    np.testing.assert_allclose(remote[-1].numpy(), here[-1].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.qemu
def test_qemu_rpc_measures_a_whole_model(qemu_tracker):
    tracker, _ = qemu_tracker
    m = measure_model(small_module(), RPCRunner(tracker, "arm64-qemu"), target=ARM, config=FAST)
    assert m.ok and m.median_ms > 0


@pytest.mark.slow
@pytest.mark.qemu
def test_offline_bundle_runs_on_emulated_aarch64(qemu_tracker, tmp_path):
    """The air-gapped flow on a foreign architecture: bundle_runner.py under the aarch64 Python."""
    _, wrapper = qemu_tracker
    jobs = list({j.name: j for j in site_jobs(small_module(), ARM).values()}.values())
    runner = OfflineRunner(tmp_path / "bundle")
    bundle = runner.export_bundle(jobs, FAST)
    proc = subprocess.run(
        [str(wrapper), "bundle_runner.py"], cwd=bundle, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = runner.import_results()
    assert {m.key for m in results} == {j.key(FAST) for j in jobs} and all(m.ok for m in results)
    device = json.loads(results[0].device)
    assert device["machine"] == "aarch64"


# --------------------------------------------------------------------------------------------------
# tvm_tqs.compile with runner="rpc://..." end to end
# --------------------------------------------------------------------------------------------------
def _compile_over_rpc(target: str, runner: str, budget: str, cache_path):
    import tvm_tqs
    from tvm_tqs.examples import example_model
    from tvm_tqs.latency import LatencyCache

    cache = LatencyCache(cache_path)
    report = tvm_tqs.score(example_model(), horizon=24, seeds=2, mode="weight", linearity=False)
    compiled = tvm_tqs.compile(
        example_model(),
        target=target,
        budget=budget,
        tqs_report=report,
        runner=runner,
        latency_cache=cache,
        max_rounds=2,
    )
    return compiled, LatencyCache(cache_path)


def test_compile_measures_sites_and_the_model_over_rpc(host_tracker, tmp_path):
    runner = f"rpc://{host_tracker}/host"
    compiled, cache = _compile_over_rpc("x86", runner, "avg-bits=8,latency=1000ms", tmp_path / "lat.jsonl")
    measured = [m for m in cache if m.runner == runner]
    # Every site's kernel at every precision the target offers it was measured on the remote devices.
    assert len(measured) == len(cache) > 0
    assert {m.device for m in measured} <= {"host#0", "host#1"}
    sources = {s.latency_source for s in compiled.plan.sites}
    assert sources <= {"measured", "cached"} and compiled.plan.totals["latency_ms"] > 0
    (last,) = compiled.trace  # a generous budget is met in one round
    assert last["met"] and 0 < last["measured_ms"] <= 1000
    # A second compile finds everything in the cache: nothing is measured twice.
    again, cache2 = _compile_over_rpc("x86", runner, "avg-bits=8,latency=1000ms", tmp_path / "lat.jsonl")
    assert len(cache2) == len(cache)
    assert {s.latency_source for s in again.plan.sites if s.latency_source} == {"cached"}


@pytest.mark.slow
@pytest.mark.qemu
def test_compile_for_aarch64_measures_on_the_emulated_board(qemu_tracker, tmp_path):
    tracker, _ = qemu_tracker
    runner = f"rpc://{tracker}/arm64-qemu"
    # Emulated timings mean nothing: the budget only has to be met; the plumbing and the trace are checked.
    compiled, cache = _compile_over_rpc(ARM, runner, "avg-bits=8,latency=60000ms", tmp_path / "lat.jsonl")
    assert all(m.runner == runner for m in cache) and len(cache) > 0
    assert compiled.trace[-1]["met"] and compiled.trace[-1]["measured_ms"] > 0
    assert compiled.plan.counts().get("int8", 0) > 0
