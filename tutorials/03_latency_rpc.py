"""Tutorial 3: a latency-aware compile, measured on a device over TVM RPC.

What it teaches: how a latency budget is met "as measured". tvm_tqs times every fused site's kernel at
every precision on the device, plans under the budget with those numbers, builds the plan, times the whole
built model on the device and, while it is over budget, corrects its per-site table and plans again. The
device is reached the standard TVM way: an RPC tracker, and an ``rpc_server`` on each board registering
under a key. Here a local tracker and server (two subprocesses on this host) stand in for the board, so the
target is "x86"; for a real board start the server on it and use its target (e.g. "arm_cpu/cortex-a76").

Time: about 1 minute on a 2-core x86 host (most of it building and timing kernels). Timings on a shared
host are noisy: your numbers will differ from run to run.

Run: python tutorials/03_latency_rpc.py   (writes ./rpc_logs/ and ./latency.jsonl)
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import tvm_tqs
from tvm_tqs.examples import example_model
from tvm_tqs.latency import LatencyCache, RPCRunner, RPCUnavailableError
from tvm_tqs.report.text import plan_summary

start = time.perf_counter()
HOST, KEY = "127.0.0.1", "tutorial-x86"
LOGS = Path("rpc_logs")
LOGS.mkdir(exist_ok=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    # Own process group: the server forks a worker per session, and stop() must end those too.
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in reversed(procs):
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


def wait_for_device(tracker: str, procs: list[subprocess.Popen], timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        try:
            if RPCRunner(tracker, KEY, connect_timeout_s=1).devices() >= 1:
                return
        except RPCUnavailableError:  # tracker not listening yet, or no server under the key yet
            pass
        time.sleep(0.5)
    logs = {p.name: p.read_text(errors="replace")[-800:] for p in LOGS.iterdir()}
    raise RuntimeError(f"the RPC server did not register under '{KEY}' within {timeout_s:g} s: {logs}")


# --- 1. A tracker and one server ----------------------------------------------------------------------------
# On a real setup: `python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190` on this machine, and
# `python -m tvm.exec.rpc_server --tracker THIS_HOST:9190 --key rpi5` on each board. Several boards under
# one key are used in parallel. Everything below runs in try/finally so the servers never outlive us.
procs: list[subprocess.Popen] = []
try:
    port = free_port()
    tracker = f"{HOST}:{port}"
    procs.append(
        spawn(
            ["tvm.exec.rpc_tracker", "--host", HOST, "--port", str(port), "--port-end", str(port + 1)],
            LOGS / "tracker.log",
        )
    )
    base = free_port()
    procs.append(
        spawn(
            [
                "tvm.exec.rpc_server",
                "--tracker",
                tracker,
                "--key",
                KEY,
                "--host",
                HOST,
                "--port",
                str(base),
                "--port-end",
                str(base + 20),
            ],
            LOGS / "server.log",
        )
    )
    wait_for_device(tracker, procs)
    runner = f"rpc://{tracker}/{KEY}"
    devices = RPCRunner(tracker, KEY).devices()
    print(f"tracker {tracker}: {devices} device(s) under key '{KEY}' -> runner {runner}")

    # --- 2. Score once --------------------------------------------------------------------------------------
    # TQS does not depend on the device, so one report serves every compile below.
    path = example_model()
    report = tvm_tqs.score(path, horizon=48, seeds=2, mode="weight", linearity=False)

    # --- 3. First compile: measure every (site, precision) on the device ------------------------------------
    # Every measurement goes into an append-only cache (here ./latency.jsonl; by default
    # ~/.cache/tvm_tqs/latency.jsonl), keyed by the kernel, the target and the device: nothing is timed twice.
    # A loose budget (1 s) lets us read the table before asking for something hard. Batch 64: at batch 1
    # this small MLP's kernels take about a microsecond each and the VM's own per-call overhead (~10 us)
    # would be all there is to measure; a latency budget matters where the kernels dominate.
    cache = LatencyCache(Path("latency.jsonl"))
    t0 = time.perf_counter()
    loose = tvm_tqs.compile(
        path,
        target="x86",
        budget="latency=1000ms",
        tqs_report=report,
        runner=runner,
        latency_cache=cache,
        batch=64,
    )
    print(f"\nfirst compile (kernels timed over RPC) in {time.perf_counter() - t0:.1f} s")
    table = loose.latency  # the per-(site, precision) table the solver used, as a dict
    print(f"latency table: {table['counts']} entries by source")
    by_site: dict[int, dict[str, float]] = {}
    for e in table["entries"]:
        by_site.setdefault(e["site"], {})[e["precision"]] = e["latency_ms"]
    for site, costs in sorted(by_site.items()):
        print(f"  site {site}: " + ", ".join(f"{p} {ms * 1000:.1f} us" for p, ms in costs.items()))
    fp32_sum = sum(c["fp32"] for c in by_site.values())
    fastest_sum = sum(min(c.values()) for c in by_site.values())
    measured_ms = loose.trace[-1]["measured_ms"]
    loose_plan = loose.trace[-1]["plan"] or "all fp32"  # the least-error plan: nothing needs to be faster
    print(
        f"sum of kernels: all fp32 {fp32_sum * 1000:.1f} us, fastest everywhere {fastest_sum * 1000:.1f} us"
    )
    print(f"the loose plan ({loose_plan}) measured end to end: {measured_ms * 1000:.1f} us")

    # --- 4. A budget that matters ---------------------------------------------------------------------------
    # Halfway between the fastest plan and all-fp32 by the kernel sums, plus what the whole model measured
    # beyond its kernels (the VM's dispatch and allocation, which the per-kernel table does not see). If the
    # built plan still measures over budget, the loop fits a correction (scale and overhead) to the table
    # from that measurement and solves again, max_rounds rounds at most. Later rounds' predictions and the
    # plan's latency column use the corrected table.
    budget_ms = fastest_sum + 0.5 * (fp32_sum - fastest_sum) + (measured_ms - fp32_sum)
    t0 = time.perf_counter()
    try:
        compiled = tvm_tqs.compile(
            path,
            target="x86",
            budget=tvm_tqs.Budget(latency_ms=budget_ms),
            tqs_report=report,
            runner=runner,
            latency_cache=cache,
            batch=64,
            max_rounds=3,
        )
    except tvm_tqs.InfeasibleBudgetError as err:  # the corrected table says no plan can meet it
        print(f"\nbudget {budget_ms * 1000:.1f} us refused: {err}")
    else:
        print(f"\nsecond compile (every kernel from the cache) in {time.perf_counter() - t0:.1f} s")
        print(plan_summary(compiled))
        # --- 5. The trace: one entry per solve-build-measure round ------------------------------------------
        print(f"\ntrace against the budget of {budget_ms * 1000:.1f} us:")
        for entry in compiled.trace:
            plan = ", ".join(f"site {s}: {p}" for s, p in entry["plan"].items()) or "all fp32"
            print(
                f"  round {entry['round']}: predicted {entry['predicted_ms'] * 1000:.1f} us, measured "
                f"{entry['measured_ms'] * 1000:.1f} us, {'met' if entry['met'] else 'over budget'}  [{plan}]"
            )
        if not compiled.trace[-1]["met"]:
            print(
                "  (still over budget after max_rounds: the result says so instead of failing; the CLI warns)"
            )
    print(f"\nlatency cache: {len(list(LatencyCache(Path('latency.jsonl'))))} measurements in latency.jsonl")
finally:
    stop(procs)
    print("tracker and server stopped:", all(p.poll() is not None for p in procs))

print(f"\ntutorial 3 done in {time.perf_counter() - start:.0f} s")
