"""Latency of (site, precision) on a target: runners, an append-only cache, an XGBoost model, the table.

>>> from tvm_tqs.graph import fuse
>>> from tvm_tqs.latency import LatencyCache, build_table, site_requests, measure_model
>>> mod = fuse("model.onnx", {"batch": 1})
>>> table = build_table(site_requests(mod, "x86"), "local", cache=LatencyCache())
>>> table.latency_ms(3, "fp32"), table.entry(3, "int8").source, table.model["error"]
>>> measure_model(mod, "rpc://127.0.0.1:9190/rpi5", target="arm_cpu/cortex-a76").median_ms

See docs/latency.md.
"""

from .cache import LatencyCache, default_cache_path
from .jobs import (
    ArgSpec,
    KernelFeatures,
    KernelJob,
    MeasureConfig,
    Measurement,
    ModelJob,
    kernel_hash,
    loop_order_schedule,
    site_jobs,
)
from .measure import measure_kernels, measure_model, model_job
from .model import LatencyModel, ModelError
from .runners import (
    LocalRunner,
    MeasurementPending,
    OfflineRunner,
    RPCRunner,
    RPCUnavailableError,
    Runner,
    TargetNotRunnableError,
    export_bundle,
    import_results,
    make_runner,
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
    "Runner",
    "SiteRequest",
    "TargetNotRunnableError",
    "build_table",
    "default_cache_path",
    "export_bundle",
    "fit_correction",
    "import_results",
    "kernel_hash",
    "loop_order_schedule",
    "make_runner",
    "measure_kernels",
    "measure_model",
    "model_job",
    "site_jobs",
    "site_requests",
]
