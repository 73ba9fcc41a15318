"""Runners: where kernels and models are timed. One interface, three ways to reach a device.

- `LocalRunner`: this host, in-process (default) or in a subprocess (``isolate=True``: a kernel that
  crashes kills the subprocess, is recorded as failed, and the rest is measured in a new one).
- `RPCRunner`: a TVM RPC tracker + device key; builds here with the target's cross compiler,
  uploads, measures remotely; one worker thread per device registered under the key, so a fleet of
  boards measures a table in parallel (the tracker hands each worker its own device).
- `OfflineRunner`: writes a bundle (libraries + manifest + ``bundle_runner.py``) to run on an
  air-gapped device, and imports its ``results.json``.

All three time with the same code (`bundle_runner.time_function` on `bundle_runner.random_arrays`
inputs), so their numbers are comparable. A runner measures; it does not cache: `measure.measure_kernels`
wraps any runner with the cache.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tvm

from tvm_tqs.errors import TQSError
from tvm_tqs.targets.registry import TargetSpec, get_target

from . import bundle_runner as br
from .build import build_kernels, device_name, export_library
from .jobs import KernelJob, MeasureConfig, Measurement, ModelJob

__all__ = [
    "LocalRunner",
    "MeasurementPending",
    "OfflineRunner",
    "RPCRunner",
    "RPCUnavailableError",
    "Runner",
    "TargetNotRunnableError",
    "export_bundle",
    "import_results",
    "make_runner",
    "write_bundle",
]


class RPCUnavailableError(TQSError):
    """The RPC tracker cannot be reached, or no device is registered (or free) under the key."""


class TargetNotRunnableError(TQSError):
    """A local measurement was asked for a target this host cannot run."""


class MeasurementPending(TQSError):
    """Offline measurement: a bundle was written and must be run on the device before going on.

    Attributes
    ----------
    bundle_dir : Path
    done : list of Measurement
        Results already imported (callers cache them before re-raising).
    pending : list of str
        Keys of the entries in the new bundle.
    """

    def __init__(self, bundle_dir: Path, done: list[Measurement], pending: list[str], target: str):
        self.bundle_dir, self.done, self.pending = Path(bundle_dir), done, pending
        super().__init__(
            f"{len(pending)} latency measurement(s) for target '{target}' must run on the device: a bundle "
            f"was written to {bundle_dir}. Copy that directory to the device, run `python3 bundle_runner.py` "
            f"inside it (needs only numpy and the TVM runtime), copy the results.json it writes back into "
            f"{bundle_dir}, and run again: the results are imported and cached, nothing is measured twice."
        )


def _stats_config(config: MeasureConfig) -> dict:
    return config.key_dict()


def _error_measurement(job, config, runner: str, device: str, error: str) -> Measurement:
    return Measurement.from_stats(job, config, {"error": error}, runner, device, time.time())


def _group_by_target(jobs: Sequence[KernelJob]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, job in enumerate(jobs):
        groups[job.target].append(i)
    return groups


# Called with each finished measurement (possibly from a worker thread).
OnResult = Callable[[Measurement], None]


class Runner(ABC):
    """Times kernels and whole models on one kind of device access."""

    #: short description stored in every Measurement (e.g. ``"local"``, ``"rpc://host:9190/rpi5"``)
    name: str = "runner"

    @abstractmethod
    def measure(
        self, jobs: Sequence[KernelJob], config: MeasureConfig, on_result: OnResult | None = None
    ) -> list[Measurement]:
        """One Measurement per job, in order; a job that fails to build or run gets `error` set.

        `on_result` is called with each measurement as soon as it exists (the cache appends there), so
        that a crash or Ctrl-C in the middle of a long batch loses only the kernel being timed.
        """

    @abstractmethod
    def measure_model(self, job: ModelJob, config: MeasureConfig) -> Measurement:
        """Median latency of `main` of a compiled model (VM) on the job's inputs."""


# --------------------------------------------------------------------------------------------------
# Bundles (offline runner, and the local runner's isolated mode)
# --------------------------------------------------------------------------------------------------
def write_bundle(
    bundle_dir: str | os.PathLike,
    jobs: Sequence[KernelJob],
    config: MeasureConfig,
    models: Sequence[ModelJob] = (),
) -> tuple[dict, dict[str, str]]:
    """Build and write a bundle for one target: ``libs/*.so``, ``inputs/*.npy``, ``manifest.json`` and
    a copy of ``bundle_runner.py``. Returns the manifest and the build errors by key (not in the bundle)."""
    targets = {j.target for j in jobs} | {m.target for m in models}
    if len(targets) != 1:
        raise ValueError(f"a bundle is for one target (one device); got {sorted(targets) or 'none'}")
    spec = get_target(targets.pop())
    root = Path(bundle_dir)
    if root.exists():
        for sub in ("libs", "inputs"):
            shutil.rmtree(root / sub, ignore_errors=True)
        for name in (br.MANIFEST, br.PARTIAL, br.RESULTS):
            (root / name).unlink(missing_ok=True)
    (root / "libs").mkdir(parents=True, exist_ok=True)
    errors: dict[str, str] = {}
    kernels = []
    if jobs:
        built = build_kernels(jobs, spec)
        for i, err in built.errors.items():
            errors[jobs[i].key(config)] = err
        lib_files = []
        for n, lib in enumerate(built.libs):
            path = export_library(lib, root / "libs" / f"kernels{n}.so", spec)
            lib_files.append(f"libs/{path.name}")
        for i, (lib_index, symbol) in sorted(built.located.items()):
            job = jobs[i]
            kernels.append(
                {
                    "key": job.key(config),
                    "name": job.name,
                    "target": job.target,
                    "code_hash": job.kernel_hash,
                    "args": [a.to_list() for a in job.args],
                    "features": job.features.to_dict() if job.features else None,
                    "lib": lib_files[lib_index],
                    "symbol": symbol,
                }
            )
    model_entries = []
    for n, job in enumerate(models):
        lib = f"libs/model{n}.so"
        if job.library_path is not None:
            shutil.copyfile(job.library_path, root / lib)
        else:
            export_library(job.executable, root / lib, spec)
        (root / "inputs").mkdir(exist_ok=True)
        inputs = []
        for k, arr in enumerate(job.arrays):
            rel = f"inputs/model{n}_in{k}.npy"
            np.save(root / rel, arr)
            inputs.append(rel)
        model_entries.append(
            {
                "key": job.key(config),
                "name": job.name,
                "target": job.target,
                "code_hash": job.model_hash,
                "args": [a.to_list() for a in job.inputs],
                "lib": lib,
                "inputs": inputs,
            }
        )
    manifest = {
        "format": br.FORMAT,
        "version": br.VERSION,
        "bundle_id": uuid.uuid4().hex,
        "created": time.time(),
        "target": spec.name,
        "tvm_target": spec.tvm_target,
        "device": device_name(spec),
        "tvm_version": tvm.__version__,
        "config": config.to_dict(),
        "kernels": kernels,
        "models": model_entries,
    }
    shutil.copyfile(br.__file__, root / "bundle_runner.py")
    tmp = root / (br.MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, root / br.MANIFEST)
    (root / "README.txt").write_text(
        f"tvm_tqs latency bundle for target '{spec.name}' ({len(kernels)} kernels, {len(model_entries)} models).\n"
        "On the device (numpy + the TVM runtime of the same version, "
        f"{tvm.__version__}):\n\n    python3 bundle_runner.py\n\n"
        "then copy results.json back next to manifest.json on the host.\n"
    )
    return manifest, errors


def read_results(path: str | os.PathLike, runner: str = "offline") -> list[Measurement]:
    """Measurements of a bundle's ``results.json`` (self-describing: no manifest needed)."""
    doc = json.loads(Path(path).read_text())
    if doc.get("format") != br.FORMAT + ".results":
        raise TQSError(f"{path} is not a tvm_tqs latency results file")
    device = json.dumps(doc.get("device", {}), sort_keys=True)
    return _from_records(doc.get("results", []), doc.get("config", {}), device, runner)


def _from_records(records, config: dict, device: str, runner: str) -> list[Measurement]:
    return [
        Measurement.from_dict({**rec, "config": config, "runner": runner, "device": device})
        for rec in records
    ]


def _run_bundle_isolated(bundle: Path, timeout_s: float) -> None:
    """Run bundle_runner.py in subprocesses until every entry has a record; an entry whose run kills
    the process (segfault, abort) is recorded as failed and skipped by the next subprocess."""
    partial = bundle / br.PARTIAL
    manifest = json.loads((bundle / br.MANIFEST).read_text())
    order = [e["key"] for e in manifest["kernels"]] + [e["key"] for e in manifest["models"]]
    skip: list[str] = []
    while True:
        cmd = [sys.executable, str(bundle / "bundle_runner.py"), str(bundle)]
        for key in skip:
            cmd += ["--skip", key]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            died = proc.returncode != 0
            detail = proc.stderr.strip().splitlines()[-1:] if died else []
        except subprocess.TimeoutExpired:
            died, detail = True, [f"timed out after {timeout_s:g} s"]
        if not died:
            return
        done = br.read_partial(str(partial))
        culprit = next((k for k in order if k not in done and k not in skip), None)
        if culprit is None:
            raise TQSError(f"bundle runner failed outside any measurement: {' '.join(detail)}")
        skip.append(culprit)


# --------------------------------------------------------------------------------------------------
# Local
# --------------------------------------------------------------------------------------------------
class LocalRunner(Runner):
    """Measures on this host.

    Parameters
    ----------
    isolate : bool
        False (default): build and time in this process (fastest; a kernel that segfaults takes the
        process with it). True: export a bundle to a temporary directory and time it with
        ``bundle_runner.py`` in subprocesses; a crashing kernel is recorded as failed.
    device_id : int
        Device index for GPU targets.
    """

    name = "local"

    def __init__(self, isolate: bool = False, device_id: int = 0):
        self.isolate = isolate
        self.device_id = device_id

    def _device(self, spec: TargetSpec):
        dev = tvm.runtime.device(device_name(spec), self.device_id)
        runnable = spec.runnable_here or (spec.kind in ("cuda", "opencl") and dev.exist)
        if not runnable:
            raise TargetNotRunnableError(
                f"target '{spec.name}' cannot run on this host; measure it with an RPC runner (a device "
                "registered with a TVM RPC tracker) or an offline bundle"
            )
        return dev

    @property
    def _device_label(self) -> str:
        return json.dumps(br.device_info(), sort_keys=True)

    def measure(
        self, jobs: Sequence[KernelJob], config: MeasureConfig, on_result: OnResult | None = None
    ) -> list[Measurement]:
        out: list[Measurement | None] = [None] * len(jobs)
        on_result = on_result or (lambda m: None)
        for target, idx in _group_by_target(jobs).items():
            spec = get_target(target)
            dev = self._device(spec)
            group = [jobs[i] for i in idx]
            results = (
                self._measure_isolated(group, config, on_result=on_result)
                if self.isolate
                else self._measure_here(group, spec, dev, config, on_result)
            )
            for i, m in zip(idx, results, strict=True):
                out[i] = m
        return out  # type: ignore[return-value]

    def _measure_here(self, jobs, spec, dev, config, on_result: OnResult) -> list[Measurement]:
        built = build_kernels(jobs, spec)
        modules = [lib.jit() for lib in built.libs]
        out = []
        for i, job in enumerate(jobs):
            if i in built.errors:
                out.append(_error_measurement(job, config, self.name, self._device_label, built.errors[i]))
                continue
            lib_index, symbol = built.located[i]
            try:
                tensors = [
                    tvm.runtime.tensor(a, dev)
                    for a in br.random_arrays([a.to_list() for a in job.args], config.seed)
                ]
                stats = br.time_function(modules[lib_index], symbol, dev, tensors, _stats_config(config))
            except Exception as err:  # noqa: BLE001 - one failing kernel must not stop the table
                stats = {"error": f"{type(err).__name__}: {err}"[:2000]}
            out.append(Measurement.from_stats(job, config, stats, self.name, self._device_label, time.time()))
            on_result(out[-1])
        return out

    def _measure_isolated(
        self, jobs, config, models=(), on_result: OnResult | None = None
    ) -> list[Measurement]:
        runner = self.name + "+isolated"
        with tempfile.TemporaryDirectory(prefix="tqs-bundle-") as tmp:
            _, errors = write_bundle(tmp, jobs, config, models)
            try:
                _run_bundle_isolated(Path(tmp), config.timeout_s * (len(jobs) + len(models) + 1))
            except BaseException:
                # Ctrl-C (the child gets it too) or a failure: hand over what the child finished.
                if on_result is not None:
                    done = br.read_partial(str(Path(tmp) / br.PARTIAL)).values()
                    for m in _from_records(done, config.to_dict(), self._device_label, runner):
                        on_result(m)
                raise
            by_key = {m.key: m for m in read_results(Path(tmp) / br.RESULTS, runner=runner)}
            if on_result is not None:
                for m in by_key.values():
                    on_result(m)
        out = []
        for job in list(jobs) + list(models):
            key = job.key(config)
            if key in by_key:
                out.append(by_key[key])
            else:
                out.append(
                    _error_measurement(
                        job, config, self.name, self._device_label, errors.get(key, "not measured")
                    )
                )
        return out

    def measure_model(self, job: ModelJob, config: MeasureConfig) -> Measurement:
        spec = get_target(job.target)
        dev = self._device(spec)
        if self.isolate:
            return self._measure_isolated([], config, [job])[0]
        from tvm.runtime.vm import VirtualMachine

        try:
            lib = tvm.runtime.load_module(str(job.library_path)) if job.library_path else job.executable.jit()
            vm = VirtualMachine(lib, dev)
            tensors = [tvm.runtime.tensor(br.contiguous(a), dev) for a in job.arrays]
            stats = br.time_function(vm, "main", dev, tensors, _stats_config(config))
        except Exception as err:  # noqa: BLE001
            stats = {"error": f"{type(err).__name__}: {err}"[:2000]}
        return Measurement.from_stats(job, config, stats, self.name, self._device_label, time.time())


# --------------------------------------------------------------------------------------------------
# RPC
# --------------------------------------------------------------------------------------------------
def _parse_hostport(tracker: str) -> tuple[str, int]:
    host, sep, port = tracker.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise TQSError(f"RPC tracker must be given as HOST:PORT, got '{tracker}'")
    return host, int(port)


_START_HINT = (
    "Start a tracker with `python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port PORT`, register each "
    "device with `python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY` on the device, and check "
    "with `python -m tvm.exec.query_rpc_tracker --host HOST --port PORT`."
)


class RPCRunner(Runner):
    """Measures on devices registered with a TVM RPC tracker under one key.

    Parameters
    ----------
    tracker : str
        ``"host:port"`` of the tracker.
    key : str
        Device key the servers registered with (``rpc_server --key``).
    n_parallel : int, optional
        Devices to measure on at once; default: as many as are registered under the key. Each worker
        takes its own session from the tracker (so its own device) and pulls kernels from a shared
        queue. Kernels are built and cross-compiled once, here.
    request_timeout_s : float
        How long to wait for the tracker to hand out a device (all may be busy) before giving up.
    session_timeout_s : float, optional
        Server-side limit of one session; default: ``config.timeout_s`` x (kernels per worker + 2).
    """

    def __init__(
        self,
        tracker: str,
        key: str,
        *,
        n_parallel: int | None = None,
        request_timeout_s: float = 120.0,
        session_timeout_s: float | None = None,
        connect_timeout_s: float = 5.0,
        priority: int = 1,
    ):
        self.host, self.port = _parse_hostport(tracker)
        self.key = key
        self.n_parallel = n_parallel
        self.request_timeout_s = request_timeout_s
        self.session_timeout_s = session_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.priority = priority
        self.name = f"rpc://{self.host}:{self.port}/{key}"

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def devices(self) -> int:
        """Number of servers registered under the key; raises RPCUnavailableError with the reason."""
        try:
            with socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s):
                pass
        except OSError as err:
            raise RPCUnavailableError(
                f"cannot reach the TVM RPC tracker at {self._where} (key '{self.key}'): {err.strerror or err}. "
                + _START_HINT
            ) from None
        from tvm import rpc

        try:
            tracker = rpc.connect_tracker(self.host, self.port)
            try:
                summary = tracker.summary()
            finally:
                tracker.close()
        except Exception as err:  # noqa: BLE001 - something listens there, but not a tracker
            raise RPCUnavailableError(
                f"{self._where} does not answer as a TVM RPC tracker (key '{self.key}'): {err}. "
                + _START_HINT
            ) from None
        keys = [str(s.get("key", "")).split(":", 1)[-1] for s in summary.get("server_info", [])]
        count = keys.count(self.key)
        if count == 0:
            known = ", ".join(sorted(set(keys))) or "none"
            raise RPCUnavailableError(
                f"the TVM RPC tracker at {self._where} has no device registered under key '{self.key}' "
                f"(keys registered: {known}). " + _START_HINT
            )
        return count

    def _session(self, session_timeout: float):
        from tvm import rpc

        tracker = rpc.connect_tracker(self.host, self.port)
        # The tracker queues a request until a device with the key is free: bound the wait.
        tracker._sock.settimeout(self.request_timeout_s)
        try:
            return tracker.request(
                self.key, priority=self.priority, session_timeout=session_timeout, max_retry=1
            )
        except Exception as err:  # noqa: BLE001
            raise RPCUnavailableError(
                f"the TVM RPC tracker at {self._where} gave no free device under key '{self.key}' within "
                f"{self.request_timeout_s:g} s ({err}). The devices may be busy or have dropped out. "
                + _START_HINT
            ) from None
        finally:
            tracker.close()

    def measure(
        self, jobs: Sequence[KernelJob], config: MeasureConfig, on_result: OnResult | None = None
    ) -> list[Measurement]:
        if not jobs:
            return []
        devices = self.devices()
        out: list[Measurement | None] = [None] * len(jobs)
        with tempfile.TemporaryDirectory(prefix="tqs-rpc-") as tmp:
            for target, idx in _group_by_target(jobs).items():
                spec = get_target(target)
                group = [jobs[i] for i in idx]
                built = build_kernels(group, spec)
                paths = [
                    export_library(lib, Path(tmp) / f"{uuid.uuid4().hex[:12]}.so", spec) for lib in built.libs
                ]
                results = self._measure_built(group, built, paths, spec, config, devices, on_result)
                for i, m in zip(idx, results, strict=True):
                    out[i] = m
        return out  # type: ignore[return-value]

    def _measure_built(self, jobs, built, paths, spec, config, devices, on_result) -> list[Measurement]:
        results: dict[int, Measurement] = {
            i: _error_measurement(jobs[i], config, self.name, self.key, err)
            for i, err in built.errors.items()
        }
        todo: queue.Queue[int] = queue.Queue()
        for i in sorted(built.located):
            todo.put(i)
        workers = max(1, min(self.n_parallel or devices, todo.qsize()))
        per_worker = -(-todo.qsize() // workers)
        session_timeout = self.session_timeout_s or config.timeout_s * (per_worker + 2)
        failures: list[str] = []
        lock = threading.Lock()

        def done(i: int, m: Measurement) -> None:
            results[i] = m
            if on_result is not None:
                with lock:
                    on_result(m)

        def work(wid: int) -> None:
            sess = modules = dev = None
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    break
                for attempt in (0, 1):
                    try:
                        if sess is None:
                            sess = self._session(session_timeout)
                            modules, dev = {}, sess.device(device_name(spec))
                        lib_index, symbol = built.located[i]
                        if lib_index not in modules:
                            sess.upload(str(paths[lib_index]))
                            modules[lib_index] = sess.load_module(paths[lib_index].name)
                        arrays = br.random_arrays([a.to_list() for a in jobs[i].args], config.seed)
                        tensors = [tvm.runtime.tensor(a, dev) for a in arrays]
                        stats = br.time_function(
                            modules[lib_index], symbol, dev, tensors, _stats_config(config)
                        )
                        done(
                            i,
                            Measurement.from_stats(
                                jobs[i], config, stats, self.name, f"{self.key}#{wid}", time.time()
                            ),
                        )
                        break
                    except RPCUnavailableError as err:
                        # No device for this worker: give the kernel back to the others and stop.
                        with lock:
                            failures.append(str(err))
                        todo.put(i)
                        return
                    except Exception as err:  # noqa: BLE001
                        # A dropped session or a kernel that killed the server's worker: retry once on
                        # a fresh session, then record the error.
                        sess = None
                        if attempt == 1:
                            done(
                                i,
                                _error_measurement(
                                    jobs[i],
                                    config,
                                    self.name,
                                    self.key,
                                    f"{type(err).__name__}: {err}"[:2000],
                                ),
                            )

        threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if not todo.empty() and len(results) == len(built.errors):
            raise RPCUnavailableError(failures[0] if failures else f"no device under key '{self.key}'")
        while not todo.empty():
            i = todo.get_nowait()
            results[i] = _error_measurement(
                jobs[i], config, self.name, self.key, failures[0] if failures else "not run"
            )
        return [results[i] for i in range(len(jobs))]

    def measure_model(self, job: ModelJob, config: MeasureConfig) -> Measurement:
        from tvm.runtime.vm import VirtualMachine

        self.devices()
        spec = get_target(job.target)
        with tempfile.TemporaryDirectory(prefix="tqs-rpc-") as tmp:
            path = Path(tmp) / f"model-{uuid.uuid4().hex[:12]}.so"
            if job.library_path is not None:
                shutil.copyfile(job.library_path, path)
            else:
                export_library(job.executable, path, spec)
            sess = self._session(self.session_timeout_s or config.timeout_s * 3)
            try:
                sess.upload(str(path))
                dev = sess.device(device_name(spec))
                vm = VirtualMachine(sess.load_module(path.name), dev)
                tensors = [tvm.runtime.tensor(br.contiguous(a), dev) for a in job.arrays]
                stats = br.time_function(vm, "main", dev, tensors, _stats_config(config))
            except Exception as err:  # noqa: BLE001
                stats = {"error": f"{type(err).__name__}: {err}"[:2000]}
        return Measurement.from_stats(job, config, stats, self.name, self.key, time.time())


# --------------------------------------------------------------------------------------------------
# Offline
# --------------------------------------------------------------------------------------------------
class OfflineRunner(Runner):
    """Measures through a bundle run by hand on an air-gapped device.

    `measure` returns what the bundle directory's results files hold; for the rest it writes a new
    bundle there and raises `MeasurementPending` (carrying the results it had), so the flow is:
    run once (bundle written) -> run ``bundle_runner.py`` on the device -> copy ``results.json`` back
    -> run again (results imported; with a cache, they are stored and never asked for again).
    A new bundle does not destroy earlier results: an existing ``results.json`` is kept as
    ``results-<bundle id>.json`` and still read.
    """

    def __init__(self, bundle_dir: str | os.PathLike):
        self.bundle_dir = Path(bundle_dir)
        self.name = f"offline:{self.bundle_dir}"

    def export_bundle(
        self, jobs: Sequence[KernelJob], config: MeasureConfig, models: Sequence[ModelJob] = ()
    ) -> Path:
        """Write a bundle for `jobs` (and `models`) into the bundle directory; returns it."""
        self._archive_results()
        write_bundle(self.bundle_dir, jobs, config, models)
        return self.bundle_dir

    def _archive_results(self) -> None:
        current = self.bundle_dir / br.RESULTS
        if current.exists():
            bundle_id = json.loads(current.read_text()).get("bundle_id") or uuid.uuid4().hex
            os.replace(current, self.bundle_dir / f"results-{bundle_id}.json")

    def import_results(self) -> list[Measurement]:
        """Every measurement in the directory's results files (current and archived), newest last."""
        files = sorted(self.bundle_dir.glob("results-*.json"), key=lambda p: p.stat().st_mtime)
        if (self.bundle_dir / br.RESULTS).exists():
            files.append(self.bundle_dir / br.RESULTS)
        out = []
        for path in files:
            out.extend(read_results(path, runner=self.name))
        return out

    def _collect(self, items, config, export) -> list[Measurement]:
        imported = {m.key: m for m in self.import_results()}
        found, missing = [], []
        for item in items:
            m = imported.get(item.key(config))
            (found if m is not None else missing).append(m if m is not None else item)
        if missing:
            export(missing)
            target = missing[0].target
            raise MeasurementPending(self.bundle_dir, found, [j.key(config) for j in missing], target)
        return found

    def measure(
        self, jobs: Sequence[KernelJob], config: MeasureConfig, on_result: OnResult | None = None
    ) -> list[Measurement]:
        return self._collect(jobs, config, lambda missing: self.export_bundle(missing, config))

    def measure_model(self, job: ModelJob, config: MeasureConfig) -> Measurement:
        return self._collect([job], config, lambda missing: self.export_bundle([], config, missing))[0]


def export_bundle(
    jobs: Sequence[KernelJob],
    bundle_dir: str | os.PathLike,
    config: MeasureConfig | None = None,
    models: Sequence[ModelJob] = (),
) -> Path:
    """Write an offline measurement bundle for `jobs` (one target) into `bundle_dir`; returns it.

    Earlier results in the directory are kept (``results-<id>.json``). Run ``python3 bundle_runner.py``
    inside the bundle on the device, bring ``results.json`` back, then `import_results`.
    """
    return OfflineRunner(bundle_dir).export_bundle(jobs, config or MeasureConfig(), models)


def import_results(bundle_dir: str | os.PathLike, cache=None) -> list[Measurement]:
    """Measurements of every results file in `bundle_dir`; appended to `cache` (a LatencyCache) if given."""
    out = OfflineRunner(bundle_dir).import_results()
    if cache is not None:
        cache.extend(out)
    return out


def make_runner(spec: str | Runner | None) -> Runner:
    """A runner from a short string (for compile() and the CLI).

    ``"local"`` | ``"local:isolate"`` | ``"rpc://HOST:PORT/KEY"`` | ``"offline:DIR"``; a Runner is
    returned as is, None means ``"local"``.
    """
    if spec is None:
        return LocalRunner()
    if isinstance(spec, Runner):
        return spec
    if spec == "local":
        return LocalRunner()
    if spec == "local:isolate":
        return LocalRunner(isolate=True)
    if spec.startswith("rpc://"):
        rest = spec[len("rpc://") :]
        tracker, sep, key = rest.partition("/")
        if not sep or not key:
            raise TQSError(f"an RPC runner is 'rpc://HOST:PORT/KEY', got '{spec}'")
        return RPCRunner(tracker, key)
    if spec.startswith("offline:"):
        return OfflineRunner(spec[len("offline:") :])
    raise TQSError(
        f"unknown runner '{spec}': use 'local', 'local:isolate', 'rpc://HOST:PORT/KEY' or 'offline:DIR'"
    )
