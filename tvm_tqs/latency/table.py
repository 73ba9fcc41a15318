"""The latency table: cost in ms of every (site, precision) on one target, and where each number came from.

`build_table` measures what the cache does not hold (through any runner), fits the latency model on
every measurement of the target it can find (this run's and the cache's), and predicts the rest:
pairs without a kernel yet (a precision whose kernels the quantize pass does not produce), pairs left
out by ``max_measure``, and pairs whose measurement failed. Each entry records its source.

After the compiled model is measured end to end, `fit_correction` turns (plan, measured total)
observations into a `Correction` (scale factors and a fixed overhead) and `LatencyTable.corrected`
applies it, so that the solver's summed per-site latencies match what the device does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import tvm

from tvm_tqs.errors import MeasurementError, TQSError
from tvm_tqs.graph import FusedOp, fused_ops
from tvm_tqs.targets.registry import WEIGHTED_KINDS, TargetSpec, get_target

from .cache import LatencyCache
from .jobs import KernelFeatures, KernelJob, MeasureConfig, Measurement, Schedule, site_jobs
from .measure import measure_kernels
from .model import LatencyModel
from .runners import Runner, make_runner

__all__ = [
    "Correction",
    "LatencyEntry",
    "LatencyTable",
    "Observation",
    "SiteRequest",
    "build_table",
    "fit_correction",
    "site_requests",
]

SOURCES = ("measured", "cached", "predicted")


@dataclass(frozen=True)
class SiteRequest:
    """One (site, precision) whose latency the table must hold; `job` is None when no kernel exists yet."""

    site: int
    precision: str
    features: KernelFeatures
    job: KernelJob | None = None


@dataclass(frozen=True)
class LatencyEntry:
    """Latency of one (site, precision).

    `latency_ms` is what the solver uses (corrected when the table is); `raw_ms` the measured or
    predicted kernel latency before correction. `source`: ``"measured"`` (this call), ``"cached"``
    (measured earlier, same key) or ``"predicted"`` (latency model). `spread_ms` is the IQR of the
    repeats for measured entries. `note` says why an entry is predicted when it had a kernel, or that
    its precision/target was absent from the model's training data.
    """

    site: int
    precision: str
    latency_ms: float
    source: str
    raw_ms: float
    spread_ms: float | None = None
    key: str | None = None
    note: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Observation:
    """A compiled plan and its measured end-to-end latency (one round of the compile loop)."""

    plan: Mapping[int, str] = field(hash=False)
    measured_ms: float
    predicted_ms: float

    def to_dict(self) -> dict:
        return {
            "plan": {str(k): v for k, v in self.plan.items()},
            "measured_ms": self.measured_ms,
            "predicted_ms": self.predicted_ms,
        }


@dataclass(frozen=True)
class Correction:
    """Maps raw per-site latencies to corrected ones: ``scale[precision] * raw + overhead_ms / n_sites``.

    The overhead (VM dispatch, allocation: what a model costs beyond its kernels) is spread evenly over
    the sites, so every plan pays it once in total. `method` says what the observations allowed:
    ``"ratio"`` (one observation: one scale for all, no overhead), ``"ratio+overhead"`` (two or more:
    one scale and the overhead, non-negative least squares), ``"per-precision+overhead"`` (enough
    observations with varied precision mixes: one scale per precision).
    """

    scale: Mapping[str, float] = field(hash=False)
    default_scale: float
    overhead_ms: float
    method: str
    n_observations: int

    def factor(self, precision: str) -> float:
        return float(self.scale.get(precision, self.default_scale))

    def to_dict(self) -> dict:
        return {
            "scale": dict(self.scale),
            "default_scale": self.default_scale,
            "overhead_ms": self.overhead_ms,
            "method": self.method,
            "n_observations": self.n_observations,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Correction:
        return cls(dict(d["scale"]), d["default_scale"], d["overhead_ms"], d["method"], d["n_observations"])


@dataclass(frozen=True)
class LatencyTable:
    """Latencies per (site, precision) on `target`, with the model's cross-validated error."""

    target: str
    entries: tuple[LatencyEntry, ...]
    model: Mapping | None = field(default=None, hash=False)  # LatencyModel.summary()
    correction: Correction | None = None

    @functools.cached_property
    def _index(self) -> dict[tuple[int, str], LatencyEntry]:
        return {(e.site, e.precision): e for e in self.entries}

    @property
    def sites(self) -> list[int]:
        return sorted({e.site for e in self.entries})

    def entry(self, site: int, precision: str) -> LatencyEntry:
        try:
            return self._index[(site, precision)]
        except KeyError:
            raise KeyError(f"no latency for site {site} at {precision}") from None

    def latency_ms(self, site: int, precision: str) -> float:
        return self.entry(site, precision).latency_ms

    def precisions(self, site: int) -> list[str]:
        return [p for (s, p) in self._index if s == site]

    def total_ms(self, plan: Mapping[int, str], raw: bool = False) -> float:
        """Summed latency of a plan (site -> precision); sites not in the plan count at fp32."""
        return float(
            sum(
                (
                    self.entry(s, plan.get(s, "fp32")).raw_ms
                    if raw
                    else self.entry(s, plan.get(s, "fp32")).latency_ms
                )
                for s in self.sites
            )
        )

    def counts(self) -> dict[str, int]:
        return {src: sum(e.source == src for e in self.entries) for src in SOURCES}

    def corrected(self, correction: Correction | None) -> LatencyTable:
        """The same table with `correction` applied to the raw latencies (None removes it)."""
        n = max(1, len(self.sites))
        entries = tuple(
            dataclasses.replace(
                e,
                latency_ms=e.raw_ms
                if correction is None
                else correction.factor(e.precision) * e.raw_ms + correction.overhead_ms / n,
            )
            for e in self.entries
        )
        return dataclasses.replace(self, entries=entries, correction=correction)

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "entries": [e.to_dict() for e in self.entries],
            "model": self.model,
            "correction": self.correction.to_dict() if self.correction else None,
            "counts": self.counts(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> LatencyTable:
        return cls(
            d["target"],
            tuple(LatencyEntry(**e) for e in d["entries"]),
            d.get("model"),
            Correction.from_dict(d["correction"]) if d.get("correction") else None,
        )


def _default_precisions(op: FusedOp, spec: TargetSpec) -> tuple[str, ...]:
    # Only weighted ops have integer kernels; everything else runs in fp32 (see the target registry).
    if op.weights and op.anchor in WEIGHTED_KINDS:
        return tuple(spec.precisions.get(op.anchor, ("fp32",)))
    return ("fp32",)


def site_requests(
    mod: tvm.IRModule,
    target: str | TargetSpec = "x86",
    *,
    precisions: Sequence[str] | Callable[[FusedOp], Sequence[str]] | None = None,
    kernel_for: Callable[[FusedOp, str], KernelJob | None] | None = None,
    schedule: Schedule | None = None,
    ops: Sequence[FusedOp] | None = None,
) -> list[SiteRequest]:
    """Requests for every call site of a fused module and each of its precisions.

    Parameters
    ----------
    precisions : sequence or callable, optional
        Precisions per site: a fixed list, or ``f(op) -> list``. Default: what the target registry
        allows for the site's anchor kind when it has weights, else fp32 only.
    kernel_for : callable, optional
        ``f(op, precision) -> KernelJob or None``: the kernel the quantize pass inserts for that pair.
        Without it, or when it returns None, a non-fp32 pair is predicted and an fp32 pair is the
        site's fused PrimFunc (`jobs.site_jobs`).
    schedule : callable, optional
        Schedule hook applied to the fp32 PrimFuncs before building (`jobs.Schedule`).
    """
    spec = get_target(target)
    ops = list(ops) if ops is not None else fused_ops(mod)
    fp32_jobs = site_jobs(mod, spec, schedule=schedule, ops=ops)
    out = []
    for op in ops:
        if precisions is None:
            precs = _default_precisions(op, spec)
        elif callable(precisions):
            precs = tuple(precisions(op))
        else:
            precs = tuple(precisions)
        for prec in precs:
            job = kernel_for(op, prec) if kernel_for else None
            if job is None and prec == "fp32":
                job = fp32_jobs[op.index]
            # The site's fp32 features (TIR work included) with the precision swapped: every precision
            # of a site is described by the same computation.
            features = dataclasses.replace(fp32_jobs[op.index].features, precision=prec)
            out.append(SiteRequest(op.index, prec, features, job))
    return out


def _spread_pick(jobs: list[KernelJob], n: int) -> list[KernelJob]:
    """`n` jobs spread over the size range of each precision (what the model needs to interpolate)."""
    if n >= len(jobs):
        return jobs
    if n <= 0:
        return []

    def size(j):
        f = j.features
        return (
            (f.precision, math.log1p(f.macs) + math.log1p(sum(int(np.prod(s)) for s in f.outputs)))
            if f
            else ("", 0.0)
        )

    ordered = sorted(jobs, key=size)
    picks = np.unique(np.round(np.linspace(0, len(ordered) - 1, n)).astype(int))
    return [ordered[i] for i in picks]


def build_table(
    requests: Sequence[SiteRequest],
    runner: Runner | str | None = None,
    *,
    config: MeasureConfig | None = None,
    cache: LatencyCache | None = None,
    max_measure: int | None = None,
    model: LatencyModel | None = None,
    train_on_cache: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
) -> LatencyTable:
    """Measure, look up and predict the latency of every request (all for one target).

    Parameters
    ----------
    runner : Runner or str
        Where to measure (`runners.make_runner` strings accepted); default local.
    cache : LatencyCache, optional
        Cached keys are not measured again; new measurements are appended.
    max_measure : int, optional
        At most this many NEW kernels are measured (spread over sizes); the rest are predicted.
    model : LatencyModel, optional
        The (unfitted) model to fit; default `LatencyModel()`.
    train_on_cache : bool
        Also fit the model on every cached measurement of the target (other models' kernels too).
    progress : callable(done, total, what), optional
        Called as each new kernel measurement arrives.
    """
    if not requests:
        raise TQSError("no (site, precision) pairs to build a latency table for")
    targets = {r.features.target for r in requests}
    if len(targets) != 1:
        raise TQSError(f"a latency table is for one target, got {sorted(targets)}")
    target = targets.pop()
    config = config or MeasureConfig()
    runner = make_runner(runner)

    jobs_by_key: dict[str, KernelJob] = {}
    for r in requests:
        if r.job is not None:
            jobs_by_key.setdefault(r.job.key(config), r.job)
    found: dict[str, Measurement] = {}
    cached_keys: set[str] = set()
    if cache is not None:
        cache.reload()
        for key in jobs_by_key:
            hit = cache.get(key)
            if hit is not None:
                found[key] = hit
                cached_keys.add(key)
    new = [j for k, j in jobs_by_key.items() if k not in found]
    chosen = new if max_measure is None else _spread_pick(new, max_measure)
    if chosen:
        for m in measure_kernels(chosen, runner, config, cache, progress=progress):
            found[m.key] = m

    # Training points: this call's kernels with their current features (a cached record keeps the
    # features of when it was measured), then every other cached kernel of the target.
    train: dict[str, tuple[KernelFeatures, float]] = {
        k: (jobs_by_key[k].features, m.median_ms)
        for k, m in found.items()
        if m.ok and jobs_by_key[k].features is not None
    }
    if train_on_cache and cache is not None:
        for m in cache.for_target(target):
            if m.features is not None and m.key not in train:
                train[m.key] = (m.features, m.median_ms)
    keys = [r.job.key(config) if r.job is not None else None for r in requests]
    measured = [found.get(k) if k is not None else None for k in keys]
    to_predict = [i for i, m in enumerate(measured) if m is None or not m.ok]
    fitted = None
    if train:
        fitted = (model or LatencyModel()).fit([f for f, _ in train.values()], [t for _, t in train.values()])
    elif to_predict:
        raise MeasurementError(
            f"cannot predict {len(to_predict)} latencies on '{target}': no kernel of that target was "
            "measured (measure some, or allow max_measure > 0)"
        )
    predicted = (
        dict(zip(to_predict, fitted.predict([requests[i].features for i in to_predict]), strict=True))
        if to_predict
        else {}
    )

    entries = []
    for i, (r, key, m) in enumerate(zip(requests, keys, measured, strict=True)):
        if i not in predicted:
            source = "cached" if key in cached_keys else "measured"
            entries.append(LatencyEntry(r.site, r.precision, m.median_ms, source, m.median_ms, m.iqr_ms, key))
            continue
        if r.job is None:
            note = "no kernel for this precision"
        elif m is None:
            note = "not measured (max_measure)"
        else:
            note = f"measurement failed: {m.error}"
        if not fitted.covers(r.features):
            note += f"; the model saw no {r.features.precision} kernels on {r.features.target}"
        t = float(predicted[i])
        entries.append(LatencyEntry(r.site, r.precision, t, "predicted", t, None, key, note))
    return LatencyTable(target, tuple(entries), fitted.summary() if fitted else None)


def fit_correction(table: LatencyTable, observations: Sequence[Observation]) -> Correction:
    """Correction that makes the table's plan totals match measured end-to-end latencies.

    One observation gives a single ratio (measured / predicted). Two or more fit one scale and a fixed
    overhead by non-negative least squares; once there are at least two observations more than the
    precisions used, one scale per precision. A degenerate fit (e.g. every plan predicted the same total)
    falls back to the ratio of the sums.
    """
    from scipy.optimize import nnls

    if not observations:
        raise ValueError("fit_correction needs at least one observation")
    measured = np.array([o.measured_ms for o in observations], dtype=np.float64)
    if np.any(~np.isfinite(measured)) or np.any(measured <= 0):
        raise ValueError("measured latencies must be positive and finite")
    precs = sorted({p for o in observations for p in o.plan.values()} | {"fp32"})
    parts = np.zeros((len(observations), len(precs)))
    for i, o in enumerate(observations):
        for s in table.sites:
            p = o.plan.get(s, "fp32")
            parts[i, precs.index(p)] += table.entry(s, p).raw_ms
    totals = parts.sum(axis=1)
    k = len(observations)
    ratio = float(measured.sum() / totals.sum())

    def residual_ok(design, coef):
        return np.all(np.isfinite(coef)) and np.linalg.matrix_rank(design) == design.shape[1]

    used = [j for j in range(len(precs)) if parts[:, j].any()]
    if k >= len(used) + 2 and len(used) > 1:
        design = np.column_stack([parts[:, used], np.ones(k)])
        coef, _ = nnls(design, measured)
        if residual_ok(design, coef) and np.all(coef[:-1] > 0):
            scale = {precs[j]: float(c) for j, c in zip(used, coef[:-1], strict=True)}
            default = float(np.dot(coef[:-1], parts[:, used].sum(axis=0)) / parts[:, used].sum())
            return Correction(scale, default, float(coef[-1]), "per-precision+overhead", k)
    if k >= 2:
        design = np.column_stack([totals, np.ones(k)])
        coef, _ = nnls(design, measured)
        if residual_ok(design, coef) and coef[0] > 0:
            return Correction({}, float(coef[0]), float(coef[1]), "ratio+overhead", k)
    return Correction({}, ratio, 0.0, "ratio", k)
