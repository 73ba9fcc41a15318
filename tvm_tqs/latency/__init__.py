"""Latency of (site, precision) on a target: runners, an append-only cache, an XGBoost model, the table.

>>> from tvm_tqs.graph import fuse
>>> from tvm_tqs.latency import LatencyCache, build_table, site_requests, measure_model
>>> mod = fuse("model.onnx", {"batch": 1})
>>> table = build_table(site_requests(mod, "x86"), "local", cache=LatencyCache())
>>> table.latency_ms(3, "fp32"), table.entry(3, "int8").source, table.model["error"]
>>> measure_model(mod, "rpc://127.0.0.1:9190/rpi5", target="arm_cpu/cortex-a76").median_ms
>>> measure_model(mod, "rpc://10.0.0.5:9190/h200", target="cuda/sm_90").median_ms   # GPU: cuda:0 there

GPU targets (``cuda/*``, ``opencl/*``) go through the same runners: kernels are bound to GPU threads
before they are built (`bind_threads`), and run on ``cuda:N`` / ``opencl:N`` (`device_kind`,
`local_device`, `remote_device`; offline bundles record the kind).

See docs/latency.md.
"""

from .cache import LatencyCache, default_cache_path
from .devices import device_kind, local_device, local_device_available
from .jobs import (
    ArgSpec,
    KernelFeatures,
    KernelJob,
    MeasureConfig,
    Measurement,
    ModelJob,
    bind_threads,
    gpu_schedule,
    kernel_hash,
    loop_order_schedule,
    site_jobs,
    target_schedule,
)
from .measure import measure_kernels, measure_model, model_job
from .model import LatencyModel, ModelError
from .runners import (
    LocalRunner,
    MeasurementPending,
    OfflineRunner,
    RemoteDeviceMissingError,
    RPCRunner,
    RPCUnavailableError,
    Runner,
    TargetNotRunnableError,
    export_bundle,
    import_results,
    make_runner,
    remote_device,
)
from .table import (
    Correction,
    LatencyEntry,
    LatencyTable,
    Observation,
    SiteRequest,
    build_table,
    fit_correction,
    site_requests,
)

__all__ = [
    "ArgSpec",
    "Correction",
    "KernelFeatures",
    "KernelJob",
    "LatencyCache",
    "LatencyEntry",
    "LatencyModel",
    "LatencyTable",
    "LocalRunner",
    "MeasureConfig",
    "Measurement",
    "MeasurementPending",
    "ModelError",
    "ModelJob",
    "Observation",
    "OfflineRunner",
    "RPCRunner",
    "RPCUnavailableError",
    "RemoteDeviceMissingError",
    "Runner",
    "SiteRequest",
    "TargetNotRunnableError",
    "bind_threads",
    "build_table",
    "default_cache_path",
    "device_kind",
    "export_bundle",
    "fit_correction",
    "gpu_schedule",
    "import_results",
    "kernel_hash",
    "local_device",
    "local_device_available",
    "loop_order_schedule",
    "make_runner",
    "measure_kernels",
    "measure_model",
    "model_job",
    "remote_device",
    "site_jobs",
    "site_requests",
    "target_schedule",
]
