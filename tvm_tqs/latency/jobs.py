"""What is measured (KernelJob, ModelJob), how (MeasureConfig), and what comes back (Measurement).

A kernel to measure is a TVM PrimFunc (or a small IRModule) + its argument shapes/dtypes + a registered
target; where it came from (a fused fp32 site, an int8 kernel of the quantize pass, a hand-written
micro-kernel) does not matter. `KernelFeatures` describe the *site* a kernel implements, in the terms
the latency model learns from (op kinds, shapes, MACs, precision, target), so that unmeasured
(site, precision) pairs can be predicted from measured ones.

GPU targets (CUDA, OpenCL): a PrimFunc without a GPU thread binding builds "successfully" and then runs
on the host, so a kernel job for a GPU target holds bound code: `KernelJob.create` gives every unbound
PrimFunc dlight's default GPU schedule (`bind_threads`, as `targets.build.build` does in the deployed
model) and hashes what it will build; the quantized kernels of the GPU kernel sets are bound already
and kept as they are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, tirx

from tvm_tqs.graph import FusedOp, call_sites, count_macs, fused_ops
from tvm_tqs.passes.fuse import OP_KINDS_ATTR
from tvm_tqs.targets.registry import TargetSpec, get_target

from .devices import is_gpu
from .schedules import bind_threads, gpu_schedule, loop_order_schedule, target_schedule

__all__ = [
    "ArgSpec",
    "KernelFeatures",
    "KernelJob",
    "MeasureConfig",
    "Measurement",
    "ModelJob",
    "Schedule",
    "bind_threads",
    "gpu_schedule",
    "kernel_hash",
    "loop_order_schedule",
    "site_jobs",
    "target_schedule",
    "tir_stats",
]

# Bump when the meaning of a cached number changes (timing method, input generation, key layout).
SCHEMA = 1

# A schedule hook: takes the PrimFunc of a site and the target, returns the PrimFunc to build.
Schedule = Callable[[tirx.PrimFunc, TargetSpec], tirx.PrimFunc]


@dataclass(frozen=True)
class ArgSpec:
    """Shape and dtype of one kernel argument (outputs included: PrimFuncs write into their last args)."""

    shape: tuple[int, ...]
    dtype: str

    def to_list(self) -> list:
        return [list(self.shape), self.dtype]

    @classmethod
    def from_list(cls, item) -> ArgSpec:
        return cls(tuple(int(s) for s in item[0]), str(item[1]))


@dataclass(frozen=True)
class MeasureConfig:
    """How one latency is measured (every field but `timeout_s` is part of the cache key).

    Parameters
    ----------
    repeat : int
        Independent repeats; the reported latency is their median, the spread their IQR and std.
        10 gives a stable median on a shared machine at ~10 x `min_repeat_ms` per kernel.
    min_repeat_ms : int
        Each repeat calls the kernel as many times as needed to last this long (`time_evaluator`
        grows `number`), so that microsecond kernels are averaged over many calls and timer
        resolution does not matter; a repeat reports the mean over its calls.
    number : int
        Starting calls per repeat (grown by `min_repeat_ms`).
    warmup : int
        Untimed calls before timing (page faults, lazy initialisation, cold caches).
    seed : int
        Seed of the random inputs (the same on every runner).
    timeout_s : float
        Per-job limit for remote and isolated runs (not part of the key).
    """

    repeat: int = 10
    min_repeat_ms: int = 10
    number: int = 1
    warmup: int = 2
    seed: int = 0
    timeout_s: float = 300.0

    def __post_init__(self):
        if self.repeat < 1 or self.number < 1 or self.min_repeat_ms < 0 or self.warmup < 0:
            raise ValueError(f"invalid MeasureConfig {self}")

    def key_dict(self) -> dict:
        return {
            "repeat": self.repeat,
            "min_repeat_ms": self.min_repeat_ms,
            "number": self.number,
            "warmup": self.warmup,
            "seed": self.seed,
        }

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MeasureConfig:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


# TIR intrinsics that cost far more than an add or multiply (libm calls or long polynomial sequences).
_TRANSCENDENTAL = frozenset(
    f"tirx.{n}"
    for n in (
        "exp",
        "exp2",
        "exp10",
        "tanh",
        "sigmoid",
        "erf",
        "sqrt",
        "rsqrt",
        "log",
        "log2",
        "pow",
        "sin",
        "cos",
        "fast_exp",
        "fast_tanh",
        "fast_erf",
    )
)


def tir_stats(func: tirx.PrimFunc) -> dict[str, int]:
    """Work of a PrimFunc read from its blocks: how the default (unscheduled) code spends its time.

    ``iters`` block iterations in total, ``reduce_iters`` of them in reduction blocks, ``loads`` buffer
    loads executed, ``transcendentals`` exp/tanh/sigmoid/erf/sqrt/... evaluations, ``blocks`` count.
    """
    blocks: list = []
    tvm_ffi.structural_walk(func.body, [(tvm.s_tir.SBlock, blocks.append)])
    out = {"iters": 0, "reduce_iters": 0, "loads": 0, "transcendentals": 0, "blocks": 0}
    for block in blocks:
        if not block.iter_vars:  # the root block
            continue
        n = int(np.prod([int(iv.dom.extent) for iv in block.iter_vars], dtype=np.int64))
        loads: list = []
        calls: list = []
        tvm_ffi.structural_walk(block.body, [(tvm.ir.TensorLoad, loads.append), (tvm.ir.Call, calls.append)])
        out["blocks"] += 1
        out["iters"] += n
        if any(iv.iter_type == tirx.IterVar.CommReduce for iv in block.iter_vars):
            out["reduce_iters"] += n
        out["loads"] += n * len(loads)
        out["transcendentals"] += n * sum(getattr(c.op, "name", "") in _TRANSCENDENTAL for c in calls)
    return out


@dataclass(frozen=True)
class KernelFeatures:
    """What the latency model sees of one (site, precision, target).

    Shapes are the site's logical tensors (not the packed weight layout of an integer kernel), and the
    TIR work statistics (`tir_stats`: ``iters``, ``reduce_iters``, ``loads``, ``transcendentals``,
    ``blocks``; 0 when unknown) come from the site's fp32 PrimFunc, so that the fp32 and int8 kernels
    of one site share every feature but `precision`.
    """

    kinds: tuple[str, ...]
    inputs: tuple[tuple[int, ...], ...]
    weights: tuple[tuple[int, ...], ...]
    outputs: tuple[tuple[int, ...], ...]
    macs: int
    precision: str
    target: str
    iters: int = 0
    reduce_iters: int = 0
    loads: int = 0
    transcendentals: int = 0
    blocks: int = 0

    @classmethod
    def from_site(
        cls, op: FusedOp, precision: str, target: str | TargetSpec, func: tirx.PrimFunc | None = None
    ) -> KernelFeatures:
        """Features of a call site at a precision; `func` is the site's fp32 PrimFunc (``mod[op.func]``
        of the fused module), for the TIR work statistics. Pass the fp32 one for every precision."""
        return cls(
            kinds=tuple(op.kinds),
            inputs=tuple(t.shape for t in op.inputs),
            weights=tuple(w.shape for w in op.weights),
            outputs=tuple(t.shape for t in op.outputs),
            macs=int(op.macs),
            precision=precision,
            target=get_target(target).name,
            **(tir_stats(func) if func is not None else {}),
        )

    @classmethod
    def from_primfunc(
        cls,
        func: tirx.PrimFunc,
        precision: str,
        target: str | TargetSpec,
        kinds: Sequence[str] | None = None,
        n_outputs: int = 1,
    ) -> KernelFeatures:
        """Features of a free-standing kernel: every argument but the last `n_outputs` is an input."""
        shapes = [spec.shape for spec in _arg_specs(func)]
        if kinds is None:
            attrs = func.attrs or {}
            kinds = [str(k) for k in attrs[OP_KINDS_ATTR]] if OP_KINDS_ATTR in attrs else []
        return cls(
            kinds=tuple(kinds),
            inputs=tuple(shapes[:-n_outputs]),
            weights=(),
            outputs=tuple(shapes[-n_outputs:]),
            macs=count_macs(func),
            precision=precision,
            target=get_target(target).name,
            **tir_stats(func),
        )

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> KernelFeatures:
        def shapes(items):
            return tuple(tuple(int(s) for s in sh) for sh in items)

        extra = {k: int(d.get(k, 0)) for k in ("iters", "reduce_iters", "loads", "transcendentals", "blocks")}
        return cls(
            tuple(d["kinds"]),
            shapes(d["inputs"]),
            shapes(d["weights"]),
            shapes(d["outputs"]),
            int(d["macs"]),
            d["precision"],
            d["target"],
            **extra,
        )


def _arg_specs(func: tirx.PrimFunc) -> tuple[ArgSpec, ...]:
    specs = []
    for p in func.params:
        if not hasattr(p, "shape"):  # a scalar parameter, not a buffer
            raise ValueError(f"kernel parameter {p} is not a buffer; only buffer arguments can be generated")
        specs.append(ArgSpec(tuple(int(s) for s in p.shape), str(p.dtype)))
    return tuple(specs)


def kernel_hash(obj: tirx.PrimFunc | tvm.IRModule) -> str:
    """Structural hash (64-bit hex) of a kernel; for a PrimFunc equal to `FusedOp.func_hash`."""
    return f"{tvm_ffi.structural_hash(obj) & (2**64 - 1):016x}"


def _entry_of(mod: tvm.IRModule, entry: str | None) -> str:
    names = [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)]
    if entry is not None:
        if entry not in names:
            raise ValueError(f"entry '{entry}' is not a PrimFunc of the module (have {names})")
        return entry
    if len(names) != 1:
        raise ValueError(f"the module has {len(names)} PrimFuncs {names}: name the entry")
    return names[0]


@dataclass(frozen=True)
class KernelJob:
    """One kernel to measure on one target.

    Build with `KernelJob.create`. `mod` holds the kernel PrimFunc (`entry`), possibly with helpers;
    `args` are the entry's argument shapes/dtypes (inputs are generated from them, seeded);
    `kernel_hash` identifies the code for the cache; `features` describe it for the latency model.
    """

    name: str
    target: str
    entry: str
    args: tuple[ArgSpec, ...]
    kernel_hash: str
    features: KernelFeatures | None
    mod: tvm.IRModule = field(compare=False, hash=False, repr=False)

    @classmethod
    def create(
        cls,
        kernel: tirx.PrimFunc | tvm.IRModule,
        target: str | TargetSpec,
        *,
        name: str | None = None,
        entry: str | None = None,
        features: KernelFeatures | None = None,
        precision: str = "fp32",
    ) -> KernelJob:
        """A job from a PrimFunc or an IRModule of PrimFuncs (`entry` names the one to time).

        Without `features`, they are read from the entry PrimFunc (`KernelFeatures.from_primfunc`), before
        any GPU schedule. For a GPU target, unbound PrimFuncs get dlight's default GPU schedule
        (`bind_threads`) and the hash is that of the bound code; a function dlight cannot bind is kept
        as it is, and building the job then fails with the reason (only that job).
        """
        spec = get_target(target)
        if isinstance(kernel, tirx.PrimFunc):
            entry = entry or name or "kernel"
            mod = tvm.IRModule({entry: kernel})
        else:
            mod = kernel
            entry = _entry_of(mod, entry)
        func = mod[entry]
        if features is None:
            features = KernelFeatures.from_primfunc(func, precision, spec)
        if is_gpu(spec):
            try:
                mod = bind_threads(mod, spec)
            except ValueError:
                pass  # build_kernels reports it for this job alone
        prims = [f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)]
        khash = kernel_hash(prims[0]) if len(prims) == 1 else kernel_hash(mod)
        return cls(
            name=name or entry,
            target=spec.name,
            entry=entry,
            args=_arg_specs(mod[entry]),
            kernel_hash=khash,
            features=features,
            mod=mod,
        )

    @property
    def func(self) -> tirx.PrimFunc:
        return self.mod[self.entry]

    @property
    def single(self) -> bool:
        """True when the module is the entry alone (it can then be batched with other kernels)."""
        return len(self.mod.functions) == 1

    def key(self, config: MeasureConfig) -> str:
        return measurement_key("kernel", self.target, self.kernel_hash, self.args, config)


@dataclass(frozen=True)
class ModelJob:
    """A whole compiled model: `main` of a Relax VM executable (built here, or an exported library file
    for the target's device), timed on the given input arrays. Made by `measure.model_job`."""

    name: str
    target: str
    model_hash: str
    inputs: tuple[ArgSpec, ...]
    input_hash: str
    arrays: tuple[np.ndarray, ...] = field(compare=False, hash=False, repr=False)
    executable: relax.VMExecutable | None = field(default=None, compare=False, hash=False, repr=False)
    library_path: Path | None = field(default=None, compare=False, hash=False)

    @property
    def features(self) -> None:
        return None

    def key(self, config: MeasureConfig) -> str:
        return measurement_key(
            "model", self.target, self.model_hash + ":" + self.input_hash, self.inputs, config
        )


def _target_identity(target: str) -> dict:
    # The registry name alone is not enough: "x86" is this host's CPU, which differs between machines.
    return {"name": target, "tvm": get_target(target).tvm_target}


def measurement_key(
    kind: str, target: str, code_hash: str, args: Sequence[ArgSpec], config: MeasureConfig
) -> str:
    """Cache key: target (name + TVM target), code hash, argument shapes/dtypes, measurement settings,
    TVM version and schema (a new TVM generates different code)."""
    ident = {
        "schema": SCHEMA,
        "kind": kind,
        "target": _target_identity(target),
        "hash": code_hash,
        "args": [a.to_list() for a in args],
        "config": config.key_dict(),
        "tvm": tvm.__version__,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Measurement:
    """One measured latency (milliseconds), or the error that prevented it (`error` set, times NaN)."""

    key: str
    kind: str  # "kernel" or "model"
    name: str
    target: str
    code_hash: str
    args: tuple[ArgSpec, ...]
    median_ms: float
    q1_ms: float
    q3_ms: float
    std_ms: float
    min_ms: float
    results_ms: tuple[float, ...]
    runner: str
    device: str
    config: MeasureConfig
    features: KernelFeatures | None = None
    error: str | None = None
    timestamp: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and math.isfinite(self.median_ms) and self.median_ms > 0

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms

    def to_dict(self) -> dict:
        d = {
            "key": self.key,
            "kind": self.kind,
            "name": self.name,
            "target": self.target,
            "code_hash": self.code_hash,
            "args": [a.to_list() for a in self.args],
            "median_ms": self.median_ms,
            "q1_ms": self.q1_ms,
            "q3_ms": self.q3_ms,
            "std_ms": self.std_ms,
            "min_ms": self.min_ms,
            "results_ms": list(self.results_ms),
            "runner": self.runner,
            "device": self.device,
            "config": self.config.to_dict(),
            "features": self.features.to_dict() if self.features else None,
            "error": self.error,
            "timestamp": self.timestamp,
        }
        return json.loads(json.dumps(d, allow_nan=True))

    @classmethod
    def from_dict(cls, d: dict) -> Measurement:
        nan = float("nan")
        return cls(
            key=d["key"],
            kind=d.get("kind", "kernel"),
            name=d.get("name", ""),
            target=d["target"],
            code_hash=d.get("code_hash", ""),
            args=tuple(ArgSpec.from_list(a) for a in d.get("args", [])),
            median_ms=float(d.get("median_ms", nan)),
            q1_ms=float(d.get("q1_ms", nan)),
            q3_ms=float(d.get("q3_ms", nan)),
            std_ms=float(d.get("std_ms", nan)),
            min_ms=float(d.get("min_ms", nan)),
            results_ms=tuple(float(v) for v in d.get("results_ms", ())),
            runner=d.get("runner", ""),
            device=str(d.get("device", "")),
            config=MeasureConfig.from_dict(d.get("config", {})),
            features=KernelFeatures.from_dict(d["features"]) if d.get("features") else None,
            error=d.get("error"),
            timestamp=float(d.get("timestamp", 0.0)),
        )

    @classmethod
    def from_stats(
        cls,
        job: KernelJob | ModelJob,
        config: MeasureConfig,
        stats: dict,
        runner: str,
        device: str,
        timestamp: float,
    ) -> Measurement:
        """From `bundle_runner.summarize` output (or a dict with only `error`)."""
        nan = float("nan")
        is_kernel = isinstance(job, KernelJob)
        return cls(
            key=job.key(config),
            kind="kernel" if is_kernel else "model",
            name=job.name,
            target=job.target,
            code_hash=job.kernel_hash if is_kernel else job.model_hash,
            args=job.args if is_kernel else job.inputs,
            median_ms=stats.get("median_ms", nan),
            q1_ms=stats.get("q1_ms", nan),
            q3_ms=stats.get("q3_ms", nan),
            std_ms=stats.get("std_ms", nan),
            min_ms=stats.get("min_ms", nan),
            results_ms=tuple(stats.get("results_ms", ())),
            runner=runner,
            device=device,
            config=config,
            features=job.features if is_kernel else None,
            error=stats.get("error"),
            timestamp=timestamp,
        )


def site_jobs(
    mod: tvm.IRModule,
    target: str | TargetSpec = "x86",
    *,
    schedule: Schedule | None = None,
    ops: Sequence[FusedOp] | None = None,
) -> dict[int, KernelJob]:
    """The fp32 kernel of every call site of a fused module: ``{site index: KernelJob}``.

    Sites that call the same PrimFunc share one job object (measured once). `schedule`, when given,
    turns each site's PrimFunc into the one to build for `target` (e.g. `target_schedule`, what the
    deployed model runs); the job hashes the scheduled kernel, so a new schedule is measured anew. On a
    GPU target every site is bound to GPU threads in any case (dlight, after `schedule`; see
    `KernelJob.create`).
    """
    spec = get_target(target)
    ops = list(ops) if ops is not None else fused_ops(mod)
    gvars = [b.value.args[0] for b in call_sites(mod)]
    by_func: dict[str, KernelJob] = {}
    jobs = {}
    for op, gvar in zip(ops, gvars, strict=True):
        if op.func not in by_func:
            func = mod[gvar]
            if schedule is not None:
                func = schedule(func, spec)
            features = KernelFeatures.from_site(op, "fp32", spec, mod[gvar])
            by_func[op.func] = KernelJob.create(func, spec, name=op.func, entry=op.func, features=features)
        jobs[op.index] = by_func[op.func]
    return jobs
