"""`OfflineRunner`: measures through a bundle that a person runs on an air-gapped device."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from tvm_tqs.errors import TQSError

from . import bundle_runner as br
from .bundles import read_results, write_bundle
from .devices import device_kind
from .jobs import KernelJob, MeasureConfig, Measurement, ModelJob
from .runner_base import OnResult, Runner


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
        kind = device_kind(target)
        device, needs = "the device", "numpy and the TVM runtime"
        if kind != "cpu":
            device, needs = f"the machine with the {kind} device", f"numpy and a TVM runtime with {kind}"
        super().__init__(
            f"{len(pending)} latency measurement(s) for target '{target}' must run on {device}: a bundle "
            f"was written to {bundle_dir}. Copy that directory there, run `python3 bundle_runner.py` "
            f"inside it (needs only {needs}), copy the results.json it writes back into "
            f"{bundle_dir}, and run again: the results are imported and cached, nothing is measured twice."
        )


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
