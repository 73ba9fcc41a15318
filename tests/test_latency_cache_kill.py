"""The measurement cache loses nothing on a crash: a process measuring kernels is killed with SIGKILL
mid-run; a new process resumes and re-measures only what was not finished (docs/reliability.md).

The child measures through the real path (`measure_kernels` -> `LatencyCache.append`, one fsync'd line per
result as it arrives); only the runner is fake and slow, so that the kill lands mid-run deterministically
and the resume can count what is measured again.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from latency_builders import FAST, CountingRunner, chain_module

from tvm_tqs.latency import LatencyCache, measure_kernels, site_jobs

TESTS = Path(__file__).resolve().parent
WIDTHS = tuple(range(8, 8 + 4 * 25, 4))  # 24 chained layers: 24 distinct kernels to measure

_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from latency_builders import FAST, CountingRunner, chain_module
    from tvm_tqs.latency import LatencyCache, measure_kernels, site_jobs

    class SlowRunner(CountingRunner):
        # Streams each result (on_result -> the cache's fsync'd append) after a pause, like a device.
        name = "slow-device"

        def measure(self, jobs, config, on_result=None):
            def slow(m):
                time.sleep(0.15)
                on_result(m)
                print("finished", m.name, flush=True)  # printed only once the record is on disk
            return super().measure(jobs, config, slow)

    jobs = list({{j.name: j for j in site_jobs(chain_module({widths!r}), "x86").values()}}.values())
    print("jobs", len(jobs), flush=True)
    measure_kernels(jobs, SlowRunner(), FAST, LatencyCache({path!r}))
    print("all done", flush=True)
    """
)


def test_sigkill_mid_measurement_then_resume_reuses_every_finished_measurement(tmp_path):
    path = tmp_path / "latency.jsonl"
    code = _CHILD.format(tests=str(TESTS), widths=WIDTHS, path=str(path))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    finished: list[str] = []
    try:
        total = int(child.stdout.readline().split()[1])
        deadline = time.time() + 120
        for line in child.stdout:  # kill -9 once a third of the kernels are measured
            assert line.startswith("finished"), line
            finished.append(line.split()[1])
            if len(finished) >= total // 3 or time.time() > deadline:
                break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert 0 < len(finished) < total, (len(finished), total)

    # The file parses: every complete line is a record; a torn last line (the kill hit a write) would be
    # skipped by the loader and never glued to the next append.
    raw = path.read_bytes()
    torn = int(not raw.endswith(b"\n"))
    assert all(json.loads(line)["key"] for line in raw.split(b"\n")[: len(raw.split(b"\n")) - 1])
    cache = LatencyCache(path)
    assert cache.skipped_lines == 0  # complete lines only are read; a torn tail waits for the next reload
    on_disk = {m.name for m in cache}
    assert set(finished) <= on_disk and len(on_disk) < total

    # Resume in a new process's view of the file: only the unfinished kernels are measured.
    jobs = list({j.name: j for j in site_jobs(chain_module(WIDTHS), "x86").values()}.values())
    assert len(jobs) == total
    runner = CountingRunner()
    results = measure_kernels(jobs, runner, FAST, LatencyCache(path))
    assert sorted(runner.measured) == sorted(j.name for j in jobs if j.name not in on_disk)
    assert not set(runner.measured) & set(finished)  # every finished measurement reused, none re-timed
    assert all(m.ok for m in results)
    assert {m.name for m in results if m.runner == "slow-device"} == on_disk

    # And the file is whole afterwards: one record per kernel (plus the torn line, if any, on its own).
    final = LatencyCache(path)
    assert final.skipped_lines == torn and {m.name for m in final} == {j.name for j in jobs}
    assert len(path.read_text().splitlines()) == total + torn
