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

Each runner lives in its own module (`local_runner`, `rpc_runner`, `offline_runner`; the interface
in `runner_base`, bundle files in `bundles`); this one gathers them and parses runner strings.
"""

from __future__ import annotations

from tvm_tqs.errors import TQSError

from .bundles import read_results, write_bundle  # noqa: F401 - read_results was always importable from here
from .local_runner import LocalRunner, TargetNotRunnableError
from .offline_runner import MeasurementPending, OfflineRunner, export_bundle, import_results
from .rpc_runner import RemoteDeviceMissingError, RPCRunner, RPCUnavailableError, remote_device
from .runner_base import Runner

__all__ = [
    "LocalRunner",
    "MeasurementPending",
    "OfflineRunner",
    "RPCRunner",
    "RPCUnavailableError",
    "RemoteDeviceMissingError",
    "Runner",
    "TargetNotRunnableError",
    "export_bundle",
    "import_results",
    "make_runner",
    "remote_device",
    "write_bundle",
]


def make_runner(spec: str | Runner | None) -> Runner:
    """A runner from a short string (for compile() and the CLI).

    ``"local"`` | ``"local:isolate"`` | ``"rpc://HOST:PORT/KEY"`` | ``"offline:DIR"``; a Runner is
    returned as is, None means ``"local"``.
    """
    if spec is None:
        return LocalRunner()
    if isinstance(spec, Runner):
        return spec
    if not isinstance(spec, str):
        raise TQSError(
            f"runner must be 'local', 'local:isolate', 'rpc://HOST:PORT/KEY', 'offline:DIR' or a Runner, "
            f"not {type(spec).__name__}"
        )
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
