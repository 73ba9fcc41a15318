"""The append-only latency cache: survives crashes, concurrent writers, and nothing is measured twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from latency_builders import FAST, CountingRunner, chain_module, fake_measurement, small_module

from tvm_tqs.latency import LatencyCache, MeasureConfig, measure_kernels, site_jobs

TESTS = Path(__file__).resolve().parent


def test_append_and_reload(tmp_path):
    path = tmp_path / "c.jsonl"
    cache = LatencyCache(path)
    assert len(cache) == 0 and not path.exists()
    cache.append(fake_measurement("a", 1.5))
    cache.append(fake_measurement("b", 2.5))
    again = LatencyCache(path)
    assert {m.key for m in again} == {"a", "b"}
    assert again.get("b").median_ms == 2.5
    assert again.get("a") == cache.get("a")


def test_failed_measurements_are_not_stored(tmp_path):
    cache = LatencyCache(tmp_path / "c.jsonl")
    assert not cache.append(fake_measurement("bad", float("nan"), error="build failed"))
    assert len(LatencyCache(tmp_path / "c.jsonl")) == 0


def test_torn_last_line_is_ignored_and_next_append_survives(tmp_path):
    path = tmp_path / "c.jsonl"
    cache = LatencyCache(path)
    cache.append(fake_measurement("a"))
    line = json.dumps(fake_measurement("torn").to_dict())
    with open(path, "ab") as f:
        f.write(line[: len(line) // 2].encode())  # what a crash mid-write leaves
    reloaded = LatencyCache(path)
    assert {m.key for m in reloaded} == {"a"}
    reloaded.append(fake_measurement("c"))  # must not glue itself to the torn fragment
    final = LatencyCache(path)
    assert {m.key for m in final} == {"a", "c"}
    assert final.skipped_lines == 1


_WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from latency_builders import fake_measurement
    from tvm_tqs.latency import LatencyCache
    cache = LatencyCache({path!r})
    for i in range({count}):
        cache.append(fake_measurement(f"{prefix}{{i}}", 1.0 + i, pad={pad}))
        print(i, flush=True)
        time.sleep({sleep})
    """
)


def _writer(path, prefix, count, pad=0, sleep=0.0):
    code = _WRITER.format(tests=str(TESTS), path=str(path), prefix=prefix, count=count, pad=pad, sleep=sleep)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_sigkill_mid_way_keeps_every_complete_record(tmp_path):
    path = tmp_path / "c.jsonl"
    proc = _writer(path, "k", 10_000, sleep=0.002)
    done = -1
    for line in proc.stdout:  # wait until a good number of records were written, then kill -9
        done = int(line)
        if done >= 30:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cache = LatencyCache(path)
    # Every record the writer reported is there (each append is fsync'd before it prints).
    assert {f"k{i}" for i in range(done + 1)} <= {m.key for m in cache}
    assert cache.skipped_lines == 0


def test_concurrent_appends_from_two_processes_do_not_corrupt_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    mine = LatencyCache(path)
    mine.append(fake_measurement("mine"))
    count = 80
    procs = [_writer(path, prefix, count, pad=600) for prefix in ("a", "b")]  # ~10 KB lines
    for p in procs:
        p.communicate(timeout=120)
        assert p.returncode == 0
    cache = LatencyCache(path)
    assert cache.skipped_lines == 0
    assert len(cache) == 2 * count + 1
    with open(path, "rb") as f:
        assert all(json.loads(line)["key"] for line in f)
    # An open cache object sees the other processes' records after reload().
    assert "a0" not in mine
    mine.reload()
    assert len(mine) == 2 * count + 1


def test_nothing_is_measured_twice(tmp_path):
    mod = small_module()
    jobs = list(site_jobs(mod, "x86").values())
    cache = LatencyCache(tmp_path / "c.jsonl")
    runner = CountingRunner()
    ticks = []
    # duplicates within one call: measured once
    first = measure_kernels(jobs + jobs, runner, FAST, cache, progress=lambda *a: ticks.append(a))
    assert sorted(runner.measured) == sorted(j.name for j in jobs)
    n = len({j.key(FAST) for j in jobs})
    assert ticks == [(i, n, "measuring") for i in range(1, n + 1)]
    assert [m.key for m in first] == [j.key(FAST) for j in jobs + jobs]
    # A new process (new cache object on the same file) measures nothing.
    runner2 = CountingRunner()
    second = measure_kernels(jobs, runner2, FAST, LatencyCache(tmp_path / "c.jsonl"))
    assert runner2.calls == []
    assert [m.median_ms for m in second] == [m.median_ms for m in first[: len(jobs)]]
    # Other measurement settings are other keys.
    runner3 = CountingRunner()
    measure_kernels(jobs[:1], runner3, FAST.__class__(repeat=4, min_repeat_ms=2), cache)
    assert runner3.measured == [jobs[0].name]


def test_failures_are_measured_again(tmp_path):
    jobs = list(site_jobs(small_module(), "x86").values())
    cache = LatencyCache(tmp_path / "c.jsonl")
    bad = jobs[0].name
    out = measure_kernels(jobs, CountingRunner(fail={bad}), FAST, cache)
    assert not out[0].ok and out[0].error == "boom"
    runner = CountingRunner()
    measure_kernels(jobs, runner, FAST, cache)
    assert runner.measured == [bad]


def test_keys_separate_targets_and_shapes():
    a = list(site_jobs(small_module(), "x86").values())[1]
    b = list(site_jobs(small_module(hidden=16), "x86").values())[1]
    c = list(site_jobs(small_module(), "arm_cpu/cortex-a76").values())[1]
    assert a.kernel_hash != b.kernel_hash
    assert len({a.key(FAST), b.key(FAST), c.key(FAST)}) == 3


def test_cache_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TVM_TQS_LATENCY_CACHE", str(tmp_path / "env.jsonl"))
    cache = LatencyCache()
    cache.append(fake_measurement("x"))
    assert (tmp_path / "env.jsonl").exists()


_MEASURER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from latency_builders import chain_module
    from tvm_tqs.latency import LatencyCache, LocalRunner, MeasureConfig, measure_kernels, site_jobs
    jobs = list({{j.name: j for j in site_jobs(chain_module(), "x86").values()}}.values())
    print(len(jobs), flush=True)
    measure_kernels(jobs, LocalRunner(), MeasureConfig(repeat=5, min_repeat_ms=40), LatencyCache({path!r}))
    print("finished", flush=True)
    """
)


def test_a_measurement_killed_mid_way_resumes_without_measuring_twice(tmp_path):
    path = tmp_path / "c.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", _MEASURER.format(tests=str(TESTS), path=str(path))],
        stdout=subprocess.PIPE,
        text=True,
    )
    total = int(proc.stdout.readline())
    deadline = time.time() + 120
    while time.time() < deadline and (not path.exists() or path.read_bytes().count(b"\n") < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-way: results are streamed to the cache one by one
    proc.wait()
    cache = LatencyCache(path)
    assert 3 <= len(cache) < total and cache.skipped_lines == 0
    jobs = list({j.name: j for j in site_jobs(chain_module(), "x86").values()}.values())
    runner = CountingRunner()
    measure_kernels(jobs, runner, MeasureConfig(repeat=5, min_repeat_ms=40), cache)
    assert sorted(runner.measured + [m.name for m in LatencyCache(path) if m.runner == "local"]) == sorted(
        j.name for j in jobs
    )
