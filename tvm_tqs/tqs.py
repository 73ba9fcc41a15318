"""`score`: the Trajectory-based Quantization Sensitivity (TQS) of every fused call site (docs/tqs.md).

For each fused call site k the model's rollout is run from data-free contexts with a small relative
perturbation injected at k at every model call, next to an unperturbed reference row, all inside one
compiled rollout function (`tvm_tqs.rollout.compile_rollout`) driven by runtime inputs
(`tvm_tqs.passes.perturb`). The divergence curve

    d_k(t) = ||y_k(t) - y(t)||_2 / rms_t ||y(t)||_2,    t = 1..H

(norms over the target channels; the denominator is the reference's RMS over the horizon) is averaged
over seeds; TQS_k is the least-squares slope of log d_k(t) against t (a finite-time Lyapunov-style growth
rate, per time step) and the gain G_k = mean_t d_k(t) / eps is the rollout error per unit of injected
relative error. Confidence intervals come from a bootstrap over seeds; a second pass at eps/2 checks that
the response is linear.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import RolloutSpecError, TQSError
from .graph import FusedOp

DEFAULT_EPS = 1e-3
LINEARITY_TOLERANCE = 0.1  # a site is flagged non-linear when |d(eps) / d(eps/2) / 2 - 1| exceeds this
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_STREAM = 0x7A5_0B00
CONFIDENCE = 0.95
DEFAULT_BURN_IN_CALLS = 4  # free-running calls from the synthetic contexts (docs/tqs.md: why)
_TINY = 1e-30  # floor under log d: a site whose perturbation never reaches the output has d == 0
REPORT_VERSION = 1

Progress = Callable[[int, int, str], None]


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class SiteScore:
    """The TQS result of one fused call site (see docs/tqs.md for every formula).

    ``tqs`` is the growth rate (natural log per time step) of the seed-averaged divergence curve, ``gain``
    the mean divergence per unit of injected relative error; ``*_ci`` are bootstrap intervals over seeds
    (None with one seed). ``gain_first_call`` and ``gain_first_step`` are the same gain over the first
    model call only and over the first time step only (single-step sensitivities, read from the same
    rollout). ``linearity_ratio`` = d(eps) / d(eps/2), 2 for a linear response. ``status`` is "ok",
    "skipped" (cannot be perturbed; `reason` says why) or "no effect" (the perturbation never reaches
    the forecast).
    """

    site: int
    name: str
    anchor: str
    kinds: tuple[str, ...]
    status: str
    reason: str | None = None
    tqs: float | None = None
    tqs_ci: tuple[float, float] | None = None
    growth_endpoint: float | None = None
    gain: float | None = None
    gain_ci: tuple[float, float] | None = None
    gain_final: float | None = None
    gain_first_call: float | None = None
    gain_first_step: float | None = None
    linearity_ratio: float | None = None
    linear: bool | None = None
    curve: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("tqs_ci", "gain_ci"):
            d[key] = None if d[key] is None else [float(v) for v in d[key]]
        d["kinds"] = list(self.kinds)
        d["curve"] = [float(v) for v in self.curve]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SiteScore:
        d = dict(d)
        d["kinds"] = tuple(d["kinds"])
        d["curve"] = tuple(d["curve"])
        for key in ("tqs_ci", "gain_ci"):
            d[key] = None if d[key] is None else tuple(d[key])
        return cls(**d)


@dataclass(frozen=True)
class TQSReport:
    """What `score` found: one `SiteScore` per call site, the op table, and how it was measured."""

    model: str
    mode: str
    horizon: int
    seeds: int
    seed: int
    eps: float
    contexts: str
    burn_in_calls: int
    stride: int
    calls: int
    batch: int
    executions: int
    method: str
    linearity_eps: float | None
    linearity_seeds: int
    spec: dict
    sites: tuple[SiteScore, ...]
    ops: tuple[FusedOp, ...]
    notes: tuple[str, ...] = ()
    version: int = REPORT_VERSION
    path: str = "rows"  # how rows ran: "rows" (batch rows of one call) or "calls" (a call per row)
    path_reason: str | None = None  # why the calls path ran

    def ranked(self, by: str = "tqs") -> list[SiteScore]:
        """Scored sites, most sensitive first (by "tqs" or "gain"); unscored sites last."""
        if by not in ("tqs", "gain"):
            raise ValueError(f"by must be 'tqs' or 'gain', got {by!r}")
        scored = [s for s in self.sites if getattr(s, by) is not None]
        rest = [s for s in self.sites if getattr(s, by) is None]
        other = "gain" if by == "tqs" else "tqs"
        scored.sort(key=lambda s: (-getattr(s, by), -(getattr(s, other) or 0.0), s.site))
        return scored + rest

    def site(self, index: int) -> SiteScore:
        return next(s for s in self.sites if s.site == index)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["sites"] = [s.to_dict() for s in self.sites]
        d["ops"] = [op.to_dict() for op in self.ops]
        d["notes"] = list(self.notes)
        return d

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict) -> TQSReport:
        d = dict(d)
        d["sites"] = tuple(SiteScore.from_dict(s) for s in d["sites"])
        d["ops"] = tuple(FusedOp.from_dict(op) for op in d["ops"])
        d["notes"] = tuple(d["notes"])
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> TQSReport:
        return cls.from_dict(json.loads(text))


# ------------------------------------------------------------------------------------------------
# Statistics (pure numpy; also used by the tests on hand-made curves)


def growth_rate(curve: np.ndarray) -> np.ndarray:
    """Least-squares slope of log d(t) against t = 1..H along the last axis (natural log per step)."""
    curve = np.asarray(curve, dtype=np.float64)
    h = curve.shape[-1]
    if h < 2:
        return np.full(curve.shape[:-1], np.nan)
    t = np.arange(1, h + 1, dtype=np.float64)
    tc = t - t.mean()
    logs = np.log(np.maximum(curve, _TINY))
    return (logs * tc).sum(axis=-1) / (tc * tc).sum()


def endpoint_rate(curve: np.ndarray) -> np.ndarray:
    """(1 / (H - 1)) * log(d(H) / d(1)) along the last axis."""
    curve = np.asarray(curve, dtype=np.float64)
    h = curve.shape[-1]
    if h < 2:
        return np.full(curve.shape[:-1], np.nan)
    return (np.log(np.maximum(curve[..., -1], _TINY)) - np.log(np.maximum(curve[..., 0], _TINY))) / (h - 1)


def divergence(perturbed: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """d(t) = ||perturbed(t) - reference(t)|| / rms_t ||reference(t)|| for ``[..., H, channels]`` arrays.

    The denominator is one number per reference trajectory, so log d(t) has the same slope as the
    absolute error (the growth rate is that of the error itself) and d does not blow up where the
    forecast crosses zero.
    """
    diff = np.linalg.norm(np.asarray(perturbed, np.float64) - np.asarray(reference, np.float64), axis=-1)
    ref = np.sqrt(np.mean(np.sum(np.asarray(reference, np.float64) ** 2, axis=-1), axis=-1, keepdims=True))
    return diff / np.maximum(ref, _TINY)


def _bootstrap(curves: np.ndarray, eps: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap over seeds of (growth rate, gain): curves ``[S, K, H]`` -> two ``[K, 2]``."""
    s = curves.shape[0]
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, BOOTSTRAP_STREAM])))
    rates = np.empty((BOOTSTRAP_SAMPLES, curves.shape[1]))
    gains = np.empty_like(rates)
    for i in range(BOOTSTRAP_SAMPLES):
        mean = curves[rng.integers(0, s, size=s)].mean(axis=0)
        rates[i] = growth_rate(mean)
        gains[i] = mean.mean(axis=-1) / eps
    q = [(1 - CONFIDENCE) / 2 * 100, (1 + CONFIDENCE) / 2 * 100]
    return np.percentile(rates, q, axis=0).T, np.percentile(gains, q, axis=0).T


def site_scores(
    ops: Sequence[FusedOp],
    perturbable: Sequence[int],
    skipped: dict,
    curves: np.ndarray,
    half_curves: np.ndarray,
    eps: float,
    seed: int,
    stride: int,
) -> tuple[list[SiteScore], list[int]]:
    """The per-site statistics of docs/tqs.md from the divergence curves.

    Parameters
    ----------
    curves : [S, K, H]
        d_k(t) per replicate at eps (K = call sites; rows of unscored sites are ignored).
    half_curves : [S_lin, K, H]
        The same at eps / 2 for the first S_lin replicates (S_lin may be 0).

    Returns
    -------
    (list of SiteScore in site order, sites flagged non-linear)
    """
    n_rep, n_lin = curves.shape[0], half_curves.shape[0]
    H = curves.shape[-1]
    mean = curves.mean(axis=0)  # [K, H]: the seed-averaged divergence curve of every site
    rates = growth_rate(mean)
    ends = endpoint_rate(mean)
    gains = mean.mean(axis=-1) / eps
    if n_rep > 1:
        rate_ci, gain_ci = _bootstrap(curves, eps, seed)
    else:
        rate_ci = gain_ci = None
    stride_steps = min(stride, H)
    perturbable = set(perturbable)
    scores = []
    nonlinear = []
    for op in ops:
        k = op.index
        common = dict(site=k, name=op.name, anchor=op.anchor, kinds=op.kinds)
        if k not in perturbable:
            reason = skipped.get(k, "not selected (sites=...)")
            scores.append(SiteScore(status="skipped", reason=reason, **common))
            continue
        if not np.any(mean[k] > 0):
            scores.append(
                SiteScore(
                    status="no effect",
                    reason="the perturbation never reaches the forecast",
                    gain=0.0,
                    gain_final=0.0,
                    gain_first_call=0.0,
                    gain_first_step=0.0,
                    curve=tuple(float(v) for v in mean[k]),
                    **common,
                )
            )
            continue
        ratio = linear = None
        if n_lin:
            half = half_curves[:, k].mean()
            full = curves[:n_lin, k].mean()
            ratio = _finite(full / half) if half > 0 else None
            linear = ratio is not None and abs(ratio / 2 - 1) <= LINEARITY_TOLERANCE
            if not linear:
                nonlinear.append(k)
        scores.append(
            SiteScore(
                status="ok",
                tqs=_finite(rates[k]),
                tqs_ci=None if rate_ci is None else (float(rate_ci[k, 0]), float(rate_ci[k, 1])),
                growth_endpoint=_finite(ends[k]),
                gain=float(gains[k]),
                gain_ci=None if gain_ci is None else (float(gain_ci[k, 0]), float(gain_ci[k, 1])),
                gain_final=float(mean[k, -1] / eps),
                gain_first_call=float(mean[k, :stride_steps].mean() / eps),
                gain_first_step=float(mean[k, 0] / eps),
                linearity_ratio=ratio,
                linear=linear,
                curve=tuple(float(v) for v in mean[k]),
                **common,
            )
        )
    return scores, nonlinear


# ------------------------------------------------------------------------------------------------
# Rows and executions


@dataclass
class _Execution:
    """One compiled-rollout run: reference rows for its replicates, then one row per (replicate, eps, site)."""

    refs: dict = dataclasses.field(default_factory=dict)  # replicate -> row
    items: list = dataclasses.field(default_factory=list)  # (row, replicate, eps, site)
    sites: set = dataclasses.field(default_factory=set)

    @property
    def rows(self) -> int:
        return len(self.refs) + len(self.items)


def _pack(items: list[tuple[int, float, int]], batch: int, distinct_sites: bool) -> list[_Execution]:
    """Fill executions of `batch` rows in order; weight mode needs each site at most once per execution
    (a site's weight delta is one tensor shared by the rows that select it)."""
    executions: list[_Execution] = []
    current: _Execution | None = None
    for replicate, eps, site in items:
        need = 1 + (replicate not in current.refs if current else 1)
        if current is None or current.rows + need > batch or (distinct_sites and site in current.sites):
            current = _Execution()
            executions.append(current)
        if replicate not in current.refs:
            current.refs[replicate] = current.rows
        current.items.append((current.rows, replicate, eps, site))
        current.sites.add(site)
    return executions


# ------------------------------------------------------------------------------------------------
# The scorer


def _default_progress(_done: int, _total: int, _what: str) -> None:
    return None


def _empty_noise(plan, rows: int) -> np.ndarray:
    if plan.mode == "output":
        return np.zeros((rows, plan.noise_width), np.float32)
    return np.zeros(plan.dweight_size, np.float32)


def _read_model(model, rollout, input_shapes):
    """(proto, source, contract) of what `score` was given; the contract checked against the model."""
    from .frontend.load import as_rollout_spec, import_onnx, read_onnx, require_rollout_spec

    if isinstance(model, (str, os.PathLike, bytes)) or type(model).__name__ == "ModelProto":
        proto, source = read_onnx(model)
    else:
        raise TQSError(
            f"score() takes the model as an ONNX path, bytes or onnx.ModelProto (it compiles the model at "
            f"its own batch size), not {type(model).__name__}"
        )
    mod = import_onnx(proto, input_shapes, source, rollout=as_rollout_spec(rollout))
    return proto, source, require_rollout_spec(mod, source)


def score(
    model,
    horizon: int = 96,
    seeds: int | None = 8,
    mode: Literal["output", "weight"] = "output",
    contexts: np.ndarray | None = None,
    *,
    exog: np.ndarray | None = None,
    eps: float = DEFAULT_EPS,
    seed: int = 0,
    burn_in_calls: int | None = None,
    linearity: bool = True,
    linearity_seeds: int = 2,
    sites: Sequence[int] | None = None,
    batch: int | None = None,
    method: str = "auto",
    target: str = "x86",
    progress: Progress | None = None,
    input_shapes: Mapping | None = None,
    rollout=None,
    path: str = "auto",
) -> TQSReport:
    """Score every fused call site of `model` by how a small error injected there grows over the rollout.

    Parameters
    ----------
    model : path, bytes or onnx.ModelProto
        An ONNX forecaster with a rollout contract (`tvm_tqs.RolloutSpec`: attached, inferable, or
        `rollout`); any batch (fixed or symbolic) and any auxiliary inputs the contract covers.
    horizon : int
        Rollout length H in time steps (the model is called ceil(H / stride) times).
    seeds : int or None
        Replicates S: replicate r uses context r and its own noise draw per site. None with `contexts`
        means one replicate per given context.
    mode : {"output", "weight"}
        "output" perturbs each site's result (any float op, black box); "weight" perturbs the weight
        constants a site reads (sites without weights are skipped). docs/tqs.md gives the cost of each.
    contexts : array [S, lookback, channels], optional
        Initial windows in the model's input units. Default: the data-free family of
        `tvm_tqs.contexts.SyntheticContexts`.
    exog : array [S, >= calls * stride, n_exogenous], optional
        Future exogenous values for user contexts when the contract says exogenous="supplied" (the
        data-free family generates its own).
    eps : float
        Relative size of the injected perturbation (noise RMS / site RMS, or weight-noise RMS / weight RMS).
    seed : int
        Seeds contexts, noise and the bootstrap: the same inputs and seed give the same report.
    burn_in_calls : int, optional
        Free-running model calls applied to each synthetic context before scoring (0: none). Default:
        `DEFAULT_BURN_IN_CALLS` for the data-free contexts when the horizon covers at least one call
        (the burn-in reuses the scoring rollout), else 0; user contexts are never burnt in.
    linearity : bool
        Re-run the first `linearity_seeds` replicates at eps / 2 and report d(eps) / d(eps/2) per site.
    sites : sequence of int, optional
        Score only these call sites (default: all).
    batch : int, optional
        Rows per compiled-rollout execution (default: all rows up to 128).
    method : {"auto", "unrolled", "recursive"}
        How the rollout function is written (`tvm_tqs.rollout.rollout_module`).
    target : str
        Host target to build for.
    progress : callable(done, total, what), optional
        Called as executions complete.
    input_shapes : mapping, optional
        Static values for dynamic dimensions other than the batch (see `tvm_tqs.load`).
    rollout : RolloutSpec, dict or path, optional
        The rollout contract, overriding the model's own (see `tvm_tqs.load`).
    path : {"auto", "rows", "calls"}
        How the rows of an execution run (`tvm_tqs.tqs_paths`): "auto" takes the rows path where the
        batch can be re-bound and keeps rows apart at every site, else the calls path.

    Returns
    -------
    TQSReport
    """
    from .contexts import SyntheticContexts, burn_in, validate_contexts
    from .passes.perturb import MODES, site_noise

    progress = progress or _default_progress
    if path not in ("auto", "rows", "calls"):
        raise TQSError(f"path must be 'auto', 'rows' or 'calls', got {path!r}")
    if mode not in MODES:
        raise TQSError(f"mode must be one of {MODES}, got {mode!r}")
    if horizon < 1:
        raise TQSError(f"horizon must be >= 1, got {horizon}")
    if not eps > 0:
        raise TQSError(f"eps must be > 0, got {eps}")
    if seeds is None and contexts is None:
        raise TQSError("seeds=None needs contexts (one replicate per context)")
    if seeds is not None and seeds < 1:
        raise TQSError(f"seeds must be >= 1, got {seeds}")
    if burn_in_calls is None:
        burn_in_calls = 0 if contexts is not None else DEFAULT_BURN_IN_CALLS
        auto_burn_in = True
    else:
        auto_burn_in = False
    if burn_in_calls < 0:
        raise TQSError(f"burn_in_calls must be >= 0, got {burn_in_calls}")
    n_lin = min(linearity_seeds, seeds or len(contexts)) if linearity else 0

    def rows_hint(ops: list[FusedOp]) -> int:
        n_rep = seeds or len(contexts)
        if mode == "weight":
            return sum(1 for op in ops if op.weights) + 2
        return (n_rep + n_lin) * len(ops) + n_rep

    from .tqs_paths import build_path, calls_path

    proto, source, spec = _read_model(model, rollout, input_shapes)
    if contexts is not None:
        validate_contexts(spec, contexts, seeds)  # user contexts are refused before anything is compiled
    runner, ops, path_reason, probe = build_path(
        proto,
        spec,
        input_shapes,
        horizon=horizon,
        mode=mode,
        batch=batch,
        method=method,
        target=target,
        sites=sites,
        rows_hint=rows_hint,
        progress=progress,
        force=None if path == "auto" else path,
    )
    plan, B = runner.plan, runner.batch
    if contexts is not None:
        ctx = validate_contexts(spec, contexts, seeds)
        n_rep = ctx.shape[0]
        context_desc = f"user-given ({n_rep} windows)"
    else:
        n_rep = seeds
        ctx = None
        context_desc = SyntheticContexts().describe()
    total = spec.calls(horizon) * spec.stride
    supplied = spec.exogenous == "supplied" and bool(spec.exogenous_channels)
    exo = list(spec.exogenous_channels)
    future = None
    if ctx is None:
        burn_steps = burn_in_calls * spec.stride
        signal = SyntheticContexts().make(
            spec, n_rep, seed, spec.lookback + (burn_steps + total if supplied else 0)
        )
        ctx = signal[:, : spec.lookback]
        if supplied:
            future = signal[:, spec.lookback :, exo]
    elif supplied:
        if exog is None:
            raise RolloutSpecError(
                f"the model's rollout contract has exogenous='supplied' channels {exo}: pass exog=[S, >= {total}, "
                f"{len(exo)}] with user contexts"
            )
        future = np.asarray(exog, np.float32)
        if future.shape[0] != n_rep or future.shape[1] < total or future.shape[2] != len(exo):
            raise RolloutSpecError(
                f"exog must have shape [{n_rep}, >= {total}, {len(exo)}]; got {list(future.shape)}"
            )
    elif burn_in_calls:
        raise TQSError(
            "burn_in_calls applies to the data-free contexts only; user contexts are used as given"
        )

    zero_scale = np.zeros((B, plan.columns), np.float32)

    def batched(rows_ctx: np.ndarray, rows_fut: np.ndarray | None) -> np.ndarray:
        """Unperturbed rollouts of any number of rows, B at a time (padding repeats row 0)."""
        out = []
        for start in range(0, len(rows_ctx), B):
            idx = np.arange(start, min(start + B, len(rows_ctx)))
            pad = np.concatenate([idx, np.full(B - len(idx), idx[0])])
            fut = None if rows_fut is None else rows_fut[pad]
            noise = _empty_noise(plan, B)
            out.append(runner.run(rows_ctx[pad], zero_scale, noise, fut, range(len(idx)))[: len(idx)])
        return np.concatenate(out)

    # Burn-in: the model's own free-running trajectory from each synthetic context.
    if auto_burn_in and horizon < spec.stride:
        burn_in_calls = 0  # the scoring rollout makes no whole call to burn in with
    if burn_in_calls and contexts is None:
        done = 0
        while done < burn_in_calls:
            n_calls = min(burn_in_calls - done, horizon // spec.stride)
            if n_calls < 1:
                raise TQSError(f"burn_in_calls needs horizon >= stride ({spec.stride})")
            fut = None if future is None else future[:, done * spec.stride :]
            traj = batched(ctx, fut)
            ctx = burn_in(spec, ctx, traj[:, : n_calls * spec.stride], None if fut is None else fut)
            done += n_calls
        if future is not None:
            future = future[:, burn_in_calls * spec.stride :]
        context_desc += f", then {burn_in_calls} free-running model calls (burn-in)"
    fut_rows = None if future is None else np.ascontiguousarray(future[:, :total])

    notes: list[str] = []

    def fill_noise(noise: np.ndarray, row: int, replicate: int, e: float, site: int) -> None:
        if mode == "output":
            size = plan.row_sizes[site]
            noise[row, :size] = site_noise(seed, replicate, site, size, "output")
        else:
            slots = plan.weights[site]
            unit = site_noise(seed, replicate, site, sum(s.size for s in slots), "weight")
            pos = 0
            for slot in slots:
                noise[slot.offset : slot.offset + slot.size] = e * slot.rms * unit[pos : pos + slot.size]
                pos += slot.size

    # Isolation probe: perturbing a site in row 1 must leave every other row bit-identical. Where the batch
    # has an axis of its own the layout is certain; where it is merged with other dims (``[batch * C, ...]``)
    # batch-major order is assumed, and this catches a batch-minor one before any scoring.
    if runner.name == "rows" and plan.merged and B >= 3:
        culprits = _leaking_sites(runner, plan, ctx, fut_rows, n_rep, eps, fill_noise)
        if culprits is not None:
            where = (
                f"at sites {culprits[:8]}{' ...' if len(culprits) > 8 else ''}"
                if culprits
                else (f"when sites {list(plan.merged)[:8]} are perturbed together")
            )
            path_reason = (
                f"perturbing one batch row changed other rows {where} (their results mix batch rows)"
            )
            if path == "rows":
                raise TQSError(f"the rows path cannot score this model: {path_reason}")
            runner = calls_path(probe, spec, horizon, mode, method, target, sites, B, progress)
            plan = runner.plan
            zero_scale = np.zeros((B, plan.columns), np.float32)

    # Every (replicate, eps, site) row, replicate-major; the eps/2 rows of the first replicates after.
    perturbable = list(plan.perturbable)
    items = [(r, eps, k) for r in range(n_rep) for k in perturbable]
    items += [(r, eps / 2, k) for r in range(n_lin) for k in perturbable]
    executions = _pack(items, B, distinct_sites=(mode == "weight"))
    H = horizon
    curves = np.zeros((n_rep, plan.columns, H))
    half_curves = np.zeros((n_lin, plan.columns, H))
    for count, ex in enumerate(executions):
        progress(count, len(executions), "scoring")
        rows_ctx = np.empty((B, spec.lookback, spec.channels), np.float32)
        rows_rep = np.zeros(B, dtype=np.int64)
        first = next(iter(ex.refs))
        rows_rep[:] = first  # padding rows: unperturbed copies of the first reference
        for r, row in ex.refs.items():
            rows_rep[row] = r
        for row, r, _, _ in ex.items:
            rows_rep[row] = r
        rows_ctx[:] = ctx[rows_rep]
        fut = None if fut_rows is None else fut_rows[rows_rep]
        scales, noise = zero_scale.copy(), _empty_noise(plan, B)
        for row, r, e, k in ex.items:
            scales[row, k] = e if mode == "output" else 1.0
            fill_noise(noise, row, r, e, k)
        used = [*ex.refs.values(), *(row for row, _, _, _ in ex.items)]
        y = runner.run(rows_ctx, scales, noise, fut, used)
        for row, r, e, k in ex.items:
            d = divergence(y[row], y[ex.refs[r]])
            if e == eps:
                curves[r, k] = d
            else:
                half_curves[r, k] = d
    progress(len(executions), len(executions), "scoring")

    scores, nonlinear = site_scores(
        ops, plan.perturbable, plan.skipped, curves, half_curves, eps, seed, spec.stride
    )
    skipped = [k for k in range(plan.columns) if k not in plan.perturbable]
    if skipped:
        notes.append(
            f"{len(skipped)} site(s) not scored: "
            + "; ".join(f"{k}: {plan.skipped.get(k, 'not selected')}" for k in skipped[:5])
            + (" ..." if len(skipped) > 5 else "")
        )
    if nonlinear:
        notes.append(
            f"{len(nonlinear)} site(s) respond non-linearly at eps={eps:g} (d(eps)/d(eps/2) outside "
            f"2 +- {2 * LINEARITY_TOLERANCE:g}): {nonlinear[:20]}{' ...' if len(nonlinear) > 20 else ''}"
        )
    if path_reason:
        notes.append(f"scored by repeated calls of the model (calls path): {path_reason}")
    return TQSReport(
        model=source,
        mode=mode,
        horizon=H,
        seeds=n_rep,
        seed=seed,
        eps=eps,
        contexts=context_desc,
        burn_in_calls=burn_in_calls if contexts is None else 0,
        stride=spec.stride,
        calls=spec.calls(H),
        batch=B,
        executions=len(executions),
        method=runner.rollout.method,
        linearity_eps=eps / 2 if n_lin else None,
        linearity_seeds=n_lin,
        spec=spec.to_dict(),
        sites=tuple(scores),
        ops=tuple(ops),
        notes=tuple(notes),
        path=runner.name,
        path_reason=path_reason,
    )


def _leaking_sites(runner, plan, ctx, fut_rows, n_rep, eps, fill_noise) -> list[int] | None:
    """Merged-axis sites where perturbing batch row 1 changes another row (bisection over the sites); None
    when no row changes, [] when rows change only with several sites perturbed together."""
    B = runner.batch
    mode = plan.mode
    zero_scale = np.zeros((B, plan.columns), np.float32)
    probe_ctx = ctx[np.arange(B) % n_rep]
    probe_fut = None if fut_rows is None else fut_rows[np.arange(B) % n_rep]
    base = runner.run(probe_ctx, zero_scale, _empty_noise(plan, B), probe_fut)

    def leaks(group: list[int]) -> bool:
        scales, noise = zero_scale.copy(), _empty_noise(plan, B)
        for k in group:
            scales[1, k] = eps if mode == "output" else 1.0
            fill_noise(noise, 1, 0, eps, k)
        out = runner.run(probe_ctx, scales, noise, probe_fut)
        others = np.arange(B) != 1
        return not np.array_equal(out[others], base[others])

    if not leaks(list(plan.merged)):
        return None
    culprits: list[int] = []
    stack = [list(plan.merged)]
    while stack:
        group = stack.pop()
        if len(group) == 1:
            culprits.append(group[0])
        else:
            half = len(group) // 2
            stack += [g for g in (group[half:], group[:half]) if leaks(g)]
    return sorted(culprits)
