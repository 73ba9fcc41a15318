"""`RPCRunner`: measures on devices registered with a TVM RPC tracker under one key.

Kernels are built and cross-compiled here, uploaded, and timed remotely; one worker thread per device
registered under the key, so a fleet of boards measures a table in parallel. GPU targets run on the
server's ``cuda:N`` / ``opencl:N`` (``session.cuda(N)``, ``session.cl(N)``; `remote_device`); a server
without that device stops the measurement with `RemoteDeviceMissingError` instead of failing kernel by kernel.
"""

from __future__ import annotations

import queue
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import tvm

from tvm_tqs.errors import MeasurementError, TQSError
from tvm_tqs.targets.registry import TargetSpec, get_target

from . import bundle_runner as br
from .build import build_kernels, export_library
from .devices import device_kind, is_gpu
from .jobs import KernelJob, MeasureConfig, Measurement, ModelJob
from .runner_base import OnResult, Runner, error_measurement, group_by_target, stats_config

__all__ = ["RPCRunner", "RPCUnavailableError", "RemoteDeviceMissingError", "remote_device"]


class RPCUnavailableError(MeasurementError):
    """The RPC tracker cannot be reached, or no device is registered (or free) under the key (CLI exit 4)."""


class RemoteDeviceMissingError(RPCUnavailableError):
    """The RPC server answered, but has no device of the kind the target runs on (a GPU server without
    CUDA, or a server started from a TVM build without that backend)."""


def remote_device(session, target: str | TargetSpec, device_id: int = 0, where: str = "the RPC server"):
    """The server's device for `target`: ``session.cuda(i)``, ``session.cl(i)`` or ``session.cpu(i)``.

    Raises RemoteDeviceMissingError (naming `where`, the target and what to check) when the server has
    no such device.
    """
    spec = get_target(target)
    kind = device_kind(spec)
    dev = session.device(kind, device_id)
    if dev.exist:
        return dev
    fix = (
        f"start that server on the machine with the GPU, from a TVM runtime built with {kind} (check there: "
        f'python -c "import tvm; print(tvm.{"cuda" if kind == "cuda" else "opencl"}({device_id}).exist)")'
        if is_gpu(spec)
        else "check the server's TVM runtime"
    )
    raise RemoteDeviceMissingError(
        f"{where} has no {kind}:{device_id} for target '{spec.name}' (the remote {kind}:{device_id} does not "
        f"exist): {fix}, or pick another device with device_id"
    )


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
    device_id : int
        Index of the server's device for GPU targets (``session.cuda(device_id)``).
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
        device_id: int = 0,
    ):
        self.host, self.port = _parse_hostport(tracker)
        self.key = key
        self.n_parallel = n_parallel
        self.request_timeout_s = request_timeout_s
        self.session_timeout_s = session_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.priority = priority
        self.device_id = device_id
        self.name = f"rpc://{self.host}:{self.port}/{key}"

    def _device(self, sess, spec: TargetSpec):
        return remote_device(
            sess, spec, self.device_id, f"the device under key '{self.key}' at {self._where}"
        )

    def _label(self, spec: TargetSpec, worker: int | None = None) -> str:
        label = self.key if worker is None else f"{self.key}#{worker}"
        return f"{label}/{device_kind(spec)}:{self.device_id}" if is_gpu(spec) else label

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
            for target, idx in group_by_target(jobs).items():
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
            i: error_measurement(jobs[i], config, self.name, self._label(spec), err)
            for i, err in built.errors.items()
        }
        todo: queue.Queue[int] = queue.Queue()
        for i in sorted(built.located):
            todo.put(i)
        workers = max(1, min(self.n_parallel or devices, todo.qsize()))
        per_worker = -(-todo.qsize() // workers)
        session_timeout = self.session_timeout_s or config.timeout_s * (per_worker + 2)
        # (error class, message), not the exception: its traceback would hold the worker's frame and so
        # its RPC session, keeping the server busy for as long as the caller keeps the error.
        failures: list[tuple[type, str]] = []
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
                            modules, dev = {}, self._device(sess, spec)
                        lib_index, symbol = built.located[i]
                        if lib_index not in modules:
                            sess.upload(str(paths[lib_index]))
                            modules[lib_index] = sess.load_module(paths[lib_index].name)
                        arrays = br.random_arrays([a.to_list() for a in jobs[i].args], config.seed)
                        tensors = [tvm.runtime.tensor(a, dev) for a in arrays]
                        stats = br.time_function(
                            modules[lib_index], symbol, dev, tensors, stats_config(config)
                        )
                        done(
                            i,
                            Measurement.from_stats(
                                jobs[i], config, stats, self.name, self._label(spec, wid), time.time()
                            ),
                        )
                        break
                    except RPCUnavailableError as err:
                        # No device for this worker: give the kernel back to the others and stop.
                        with lock:
                            failures.append((type(err), str(err)))
                        todo.put(i)
                        return
                    except Exception as err:  # noqa: BLE001
                        # A dropped session or a kernel that killed the server's worker: retry once on
                        # a fresh session, then record the error.
                        sess = None
                        if attempt == 1:
                            done(
                                i,
                                error_measurement(
                                    jobs[i],
                                    config,
                                    self.name,
                                    self._label(spec),
                                    f"{type(err).__name__}: {err}"[:2000],
                                ),
                            )

        threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if not todo.empty() and len(results) == len(built.errors):
            cls, message = (
                failures[0] if failures else (RPCUnavailableError, f"no device under key '{self.key}'")
            )
            raise cls(message)
        while not todo.empty():
            i = todo.get_nowait()
            results[i] = error_measurement(
                jobs[i], config, self.name, self._label(spec), failures[0][1] if failures else "not run"
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
            missing = None
            try:
                dev = self._device(sess, spec)
            except RemoteDeviceMissingError as err:
                missing = str(err)
            if missing is not None:  # an error of the setup, not of the model
                sess = None  # released before raising: the error's traceback holds this frame
                raise RemoteDeviceMissingError(missing)
            try:
                sess.upload(str(path))
                vm = VirtualMachine(sess.load_module(path.name), dev)
                tensors = [tvm.runtime.tensor(br.contiguous(a), dev) for a in job.arrays]
                stats = br.time_function(vm, "main", dev, tensors, stats_config(config))
            except Exception as err:  # noqa: BLE001
                stats = {"error": f"{type(err).__name__}: {err}"[:2000]}
        return Measurement.from_stats(job, config, stats, self.name, self._label(spec), time.time())
