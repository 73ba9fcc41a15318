"""An RPC device that disappears mid-measurement (its server killed): no hang, the finished measurements
are kept, the rest fail naming why, and compile() stops with a MeasurementError (CLI exit 4).

A tracker and one server are started here (as in test_latency_rpc.py); the server's whole process group
is killed with SIGKILL from the measurement's own progress callback, so the kill lands mid-run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from latency_builders import FAST, chain_module
from onnx_builders import mlp_forecaster

import tvm_tqs
from tvm_tqs.errors import MeasurementError
from tvm_tqs.latency import LatencyCache, RPCRunner, RPCUnavailableError, measure_kernels, site_jobs

pytest.importorskip("tornado", reason="the RPC tracker needs tornado (pip install -e '.[rpc]')")
pytest.importorskip("psutil", reason="the RPC server needs psutil (pip install -e '.[rpc]')")
pytest.importorskip("cloudpickle", reason="the RPC server needs cloudpickle (pip install -e '.[rpc]')")

HOST = "127.0.0.1"
KEY = "vanishing"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _spawn(args, log) -> subprocess.Popen:
    # Own session: the server forks a worker per connection; killing the group kills them all.
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        stdin=subprocess.DEVNULL,
        stdout=open(log, "ab"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _devices(tracker: str) -> int:
    try:
        return RPCRunner(tracker, KEY, connect_timeout_s=1).devices()
    except RPCUnavailableError:
        return 0


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rpc_vanish")
    port = _free_port()
    proc = _spawn(
        ["tvm.exec.rpc_tracker", "--host", HOST, "--port", str(port), "--port-end", str(port + 1)],
        tmp / "t.log",
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        _kill(proc)
        pytest.fail(f"RPC tracker did not start: {(tmp / 't.log').read_text(errors='replace')[-1500:]}")
    yield f"{HOST}:{port}", tmp
    _kill(proc)


@pytest.fixture
def server(tracker):
    """One device under KEY, fresh for each test (each test kills it)."""
    address, tmp = tracker
    base = _free_port()
    log = tmp / f"server{base}.log"
    proc = _spawn(
        ["tvm.exec.rpc_server", "--tracker", address, "--key", KEY, "--host", HOST]
        + ["--port", str(base), "--port-end", str(base + 20)],
        log,
    )
    deadline = time.time() + 120
    while _devices(address) < 1:
        if time.time() > deadline or proc.poll() is not None:
            _kill(proc)
            pytest.fail(f"RPC server did not register: {log.read_text(errors='replace')[-1500:]}")
        time.sleep(0.5)
    yield address, proc
    _kill(proc)


def _killing_at(proc, count: int, when: list):
    """A progress callback that kills the server once `count` measurements arrived."""

    def progress(done, total, what):
        if what == "measuring" and done >= count and not when:
            os.killpg(proc.pid, signal.SIGKILL)
            when.append(time.time())

    return progress


def test_server_killed_mid_measurement_keeps_what_finished_and_fails_the_rest(server, tmp_path):
    address, proc = server
    jobs = list({j.name: j for j in site_jobs(chain_module(), "x86").values()}.values())
    runner = RPCRunner(address, KEY, n_parallel=1, request_timeout_s=5, connect_timeout_s=2)
    cache = LatencyCache(tmp_path / "lat.jsonl")
    killed: list[float] = []
    start = time.time()
    results = measure_kernels(jobs, runner, FAST, cache, progress=_killing_at(proc, 2, killed))
    assert killed, "the server was never killed"
    assert time.time() - killed[0] < 60, "no bound on the wait after the device vanished"
    ok = [m for m in results if m.ok]
    failed = [m for m in results if not m.ok]
    assert len(ok) >= 2 and failed, [m.error for m in results]
    for m in failed:  # each failure says why: the device is gone from the tracker / the session dropped
        assert KEY in m.error or "Error" in m.error, m.error
    # What finished is on disk and is what a resume will reuse; failures are not cached.
    assert {m.key for m in LatencyCache(tmp_path / "lat.jsonl")} == {m.key for m in ok}
    # The next measurement through the vanished device fails at once, by name, as a MeasurementError.
    with pytest.raises(MeasurementError, match=KEY):
        runner.measure(jobs[:1], FAST)
    assert time.time() - start < 120


@pytest.mark.slow  # a second server and a TQS run: ~40 s on a 2-core host
def test_compile_with_a_device_that_vanishes_raises_measurement_error(server, tmp_path):
    address, proc = server
    runner = RPCRunner(address, KEY, request_timeout_s=5, connect_timeout_s=2)
    killed: list[float] = []
    start = time.time()
    with pytest.raises(MeasurementError) as info:
        tvm_tqs.compile(
            mlp_forecaster(),
            target="x86",
            budget="latency=100ms",
            runner=runner,
            horizon=8,
            seeds=2,
            latency_cache=LatencyCache(tmp_path / "lat.jsonl"),
            progress=_killing_at(proc, 1, killed),
        )
    assert killed and KEY in str(info.value), str(info.value)
    assert time.time() - start < 180
