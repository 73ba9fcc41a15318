"""Shared pieces of the latency tests: small fused modules, fake measurements, a counting runner."""

from __future__ import annotations

import time

from onnx_builders import mlp_forecaster

from tvm_tqs.graph import fuse
from tvm_tqs.latency import KernelJob, MeasureConfig, Measurement, Runner

# Fast settings for tests: the numbers only need to be positive and of the right magnitude.
FAST = MeasureConfig(repeat=3, min_repeat_ms=2, warmup=1)


def small_module(lookback: int = 16, hidden: int = 8, channels: int = 2):
    """The fused MLP forecaster of onnx_builders (4 sites: transpose, matmul+add+relu, matmul+add, transpose)."""
    return fuse(mlp_forecaster(lookback=lookback, hidden=hidden, channels=channels), {"batch": 1})


def medium_module():
    """The same MLP with kernels big enough (~0.05-1 ms unscheduled) that timings are well above noise."""
    return small_module(lookback=256, hidden=256, channels=8)


def chain_module(widths=(24, 40, 56, 72, 88, 104, 120, 136, 152, 168)):
    """x[1, w0] -> MatMul+Tanh through every width: one distinct fused kernel per layer."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from onnx_builders import _model

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        inits.append(numpy_helper.from_array(rng.standard_normal((a, b)).astype(np.float32) * 0.1, f"w{i}"))
        nodes += [
            helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
            helper.make_node("Tanh", [f"m{i}"], [f"h{i}"]),
        ]
        prev = f"h{i}"
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, widths[0]])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, widths[-1]])],
        inits,
    )
    return fuse(model)


def fake_measurement(key: str, median_ms: float = 1.0, pad: int = 0, **kw) -> Measurement:
    """A Measurement that needs no TVM build; `pad` repeats grow the JSON line (for interleaving tests)."""
    results = tuple([median_ms] * (3 + pad))
    fields = dict(
        key=key,
        kind="kernel",
        name=key,
        target="x86",
        code_hash="0" * 16,
        args=(),
        median_ms=median_ms,
        q1_ms=median_ms,
        q3_ms=median_ms,
        std_ms=0.0,
        min_ms=median_ms,
        results_ms=results,
        runner="fake",
        device="fake",
        config=MeasureConfig(),
        features=None,
        error=None,
        timestamp=time.time(),
    )
    fields.update(kw)
    return Measurement(**fields)


class CountingRunner(Runner):
    """Returns made-up latencies (proportional to MACs + 1 us) and counts what it was asked to measure."""

    name = "counting"

    def __init__(self, fail: set[str] | None = None):
        self.calls: list[list[KernelJob]] = []
        self.fail = fail or set()

    @property
    def measured(self) -> list[str]:
        return [j.name for batch in self.calls for j in batch]

    def measure(self, jobs, config, on_result=None):
        self.calls.append(list(jobs))
        out = []
        for job in jobs:
            stats = {"error": "boom"} if job.name in self.fail else _fake_stats(job)
            out.append(Measurement.from_stats(job, config, stats, self.name, "fake", time.time()))
            if on_result is not None:
                on_result(out[-1])
        return out

    def measure_model(self, job, config):
        raise NotImplementedError


def _fake_stats(job: KernelJob) -> dict:
    t = 1e-3 + 1e-6 * (job.features.macs if job.features else 0)
    return {"median_ms": t, "q1_ms": t, "q3_ms": t, "std_ms": 0.0, "min_ms": t, "results_ms": [t, t, t]}
