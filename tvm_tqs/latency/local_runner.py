"""`LocalRunner`: measures on this host, in-process or (``isolate=True``) through a bundle in subprocesses.

CPU targets run on ``tvm.cpu()``; GPU targets on ``tvm.cuda(i)`` / ``tvm.opencl(i)`` when this host has
that device and the target's host code is for this machine (`devices.local_device`), else the runner
refuses with the way to measure them elsewhere (RPC or an offline bundle).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import tvm

from tvm_tqs.targets.registry import TargetSpec, get_target

from . import bundle_runner as br
from .build import build_kernels
from .bundles import measurements_from_records, read_results, run_bundle_isolated, write_bundle
from .devices import TargetNotRunnableError, local_device
from .jobs import KernelJob, MeasureConfig, Measurement, ModelJob
from .runner_base import OnResult, Runner, error_measurement, group_by_target, stats_config

__all__ = ["LocalRunner", "TargetNotRunnableError"]


class LocalRunner(Runner):
    """Measures on this host.

    Parameters
    ----------
    isolate : bool
        False (default): build and time in this process (fastest; a kernel that segfaults takes the
        process with it). True: export a bundle to a temporary directory and time it with
        ``bundle_runner.py`` in subprocesses; a crashing kernel is recorded as failed.
    device_id : int
        Device index for GPU targets (``tvm.cuda(device_id)``); the isolated mode uses it too.
    """

    name = "local"

    def __init__(self, isolate: bool = False, device_id: int = 0):
        self.isolate = isolate
        self.device_id = device_id
        self._label = json.dumps(br.device_info(), sort_keys=True)

    def _device(self, spec: TargetSpec):
        """The device that runs `spec` here (raises TargetNotRunnableError); the label follows it."""
        dev = local_device(spec, self.device_id)
        self._label = json.dumps(br.device_info(dev), sort_keys=True)
        return dev

    @property
    def _device_label(self) -> str:
        return self._label

    def measure(
        self, jobs: Sequence[KernelJob], config: MeasureConfig, on_result: OnResult | None = None
    ) -> list[Measurement]:
        out: list[Measurement | None] = [None] * len(jobs)
        on_result = on_result or (lambda m: None)
        for target, idx in group_by_target(jobs).items():
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
                out.append(error_measurement(job, config, self.name, self._device_label, built.errors[i]))
                continue
            lib_index, symbol = built.located[i]
            try:
                tensors = [
                    tvm.runtime.tensor(a, dev)
                    for a in br.random_arrays([a.to_list() for a in job.args], config.seed)
                ]
                stats = br.time_function(modules[lib_index], symbol, dev, tensors, stats_config(config))
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
                run_bundle_isolated(
                    Path(tmp), config.timeout_s * (len(jobs) + len(models) + 1), device_id=self.device_id
                )
            except BaseException:
                # Ctrl-C (the child gets it too) or a failure: hand over what the child finished.
                if on_result is not None:
                    done = br.read_partial(str(Path(tmp) / br.PARTIAL)).values()
                    for m in measurements_from_records(done, config.to_dict(), self._device_label, runner):
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
                    error_measurement(
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
            stats = br.time_function(vm, "main", dev, tensors, stats_config(config))
        except Exception as err:  # noqa: BLE001
            stats = {"error": f"{type(err).__name__}: {err}"[:2000]}
        return Measurement.from_stats(job, config, stats, self.name, self._device_label, time.time())
