"""The Runner interface that every way of reaching a device implements, and what the runners share."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Sequence

from .jobs import KernelJob, MeasureConfig, Measurement, ModelJob


def stats_config(config: MeasureConfig) -> dict:
    return config.key_dict()


def error_measurement(job, config, runner: str, device: str, error: str) -> Measurement:
    return Measurement.from_stats(job, config, {"error": error}, runner, device, time.time())


def group_by_target(jobs: Sequence[KernelJob]) -> dict[str, list[int]]:
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
