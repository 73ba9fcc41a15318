"""The TQS scoring engine behind `tvm_tqs.score`: rows, executions, and the scorer that runs them.

A scoring run is a list of rows: one unperturbed reference rollout per replicate and one perturbed rollout
per (replicate, eps, site). `_pack` fills compiled-rollout executions with them and `TQSScorer` runs the
executions on the path `tvm_tqs.tqs_paths` chose, then turns the divergence curves into a `TQSReport`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import RolloutSpecError, TQSError
from .graph import FusedOp
from .tqs_paths import Handles, workers
from .tqs_report import TQSReport
from .tqs_stats import LINEARITY_TOLERANCE, divergence, site_scores

if TYPE_CHECKING:
    from .tqs import ScoreSettings

MAX_CULPRITS = 8  # leaking sites named in the calls path's reason


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


class TQSScorer:
    """Scores every fused call site of one model under one set of checked `score` arguments.

    `score` compiles the perturbed rollout, prepares each replicate's starting window, makes sure batch
    rows stay apart, runs every row and reports. The compiled path (`runner`) is the scorer's state: the
    isolation probe may replace the rows path by the calls path, and everything after it must use the
    replacement, so methods read the current one from `self` rather than holding their own.
    """

    def __init__(self, settings: ScoreSettings):
        self.settings = settings
        self.spec = None  # the rollout contract, once the model is read
        self.source = "the model"
        self.runner = None  # tqs_paths.RowsPath or CallsPath
        self.path_reason: str | None = None  # why the calls path runs

    @property
    def plan(self):
        return self.runner.plan

    def score(self, model) -> TQSReport:
        """Score `model` (what `tvm_tqs.score` was given) and return the report.

        Parameters
        ----------
        model : path, bytes or onnx.ModelProto
            The ONNX forecaster, as `tvm_tqs.score` takes it.

        Returns
        -------
        TQSReport
        """
        s = self.settings
        source, ops, ctx, fut_rows, contexts_desc, burn_in_calls = self._prepare(model)
        curves, half_curves, executions = self._run_rows(ctx, fut_rows)
        scores, nonlinear = site_scores(
            ops,
            self.plan.perturbable,
            self.plan.skipped,
            curves,
            half_curves,
            s.eps,
            s.seed,
            self.spec.stride,
        )
        return TQSReport(
            model=source,
            mode=s.mode,
            horizon=s.horizon,
            seeds=len(ctx),
            seed=s.seed,
            eps=s.eps,
            contexts=contexts_desc,
            burn_in_calls=burn_in_calls,
            stride=self.spec.stride,
            calls=self.spec.calls(s.horizon),
            batch=self.runner.batch,
            executions=executions,
            method=self.runner.rollout.method,
            linearity_eps=s.eps / 2 if s.linearity_replicates else None,
            linearity_seeds=s.linearity_replicates,
            spec=self.spec.to_dict(),
            sites=tuple(scores),
            ops=tuple(ops),
            notes=tuple(self._notes(nonlinear)),
            path=self.runner.name,
            path_reason=self.path_reason,
        )

    def _prepare(self, model):
        """Read the model, compile the perturbed rollout, make each replicate's starting window (burnt in)
        and make sure batch rows stay apart: (source, fused ops, windows, future rows or None, what the
        windows are, burn-in calls)."""
        from .contexts import validate_contexts
        from .tqs_paths import build_path

        s = self.settings
        proto, source, self.spec = _read_model(model, s.rollout, s.input_shapes)
        self.source = source
        user_ctx = None
        if s.contexts is not None:
            # Refused before anything is compiled: compiling takes far longer than checking.
            user_ctx = validate_contexts(self.spec, s.contexts, s.seeds)
        self.runner, ops, self.path_reason, probe = build_path(
            proto,
            self.spec,
            s.input_shapes,
            horizon=s.horizon,
            mode=s.mode,
            batch=s.batch,
            method=s.method,
            target=s.target,
            sites=self._selected_sites(),
            rows_hint=self._rows_hint,
            progress=s.progress,
            force=None if s.path == "auto" else s.path,
        )
        start, future0, contexts_desc = self._start_windows(user_ctx)
        twin = getattr(self.runner, "deferred", None) is not None
        if twin:  # the batch-3 twin probes one model call from the windows, then gives way (`build_path`)
            self._isolate_rows(probe, start, future0)
        ctx, future, burn_in_calls = self._burn_in(start, future0)
        total = self.spec.calls(s.horizon) * self.spec.stride
        fut_rows = None if future is None else np.ascontiguousarray(future[:, :total])
        if not twin:
            self._isolate_rows(probe, ctx, fut_rows)
        if burn_in_calls:
            contexts_desc += f", then {burn_in_calls} free-running model calls (burn-in)"
        return source, ops, ctx, fut_rows, contexts_desc, burn_in_calls

    def _selected_sites(self):
        return self.settings.sites

    def _rows_hint(self, ops: list[FusedOp]) -> int:
        """Rows the whole scoring needs; `build_path` sizes the batch from it before contexts are known."""
        s = self.settings
        if s.mode == "weight":
            return sum(1 for op in ops if op.weights) + 2
        n_rep = s.seeds or len(s.contexts)
        return (n_rep + s.linearity_replicates) * len(ops) + n_rep

    def _start_windows(self, user_ctx: np.ndarray | None):
        """(windows [S, lookback, channels], supplied exogenous future [S, steps, n_exo] or None, what they
        are) before any burn-in: the data-free family, or the user's contexts and `exog`."""
        from .contexts import SyntheticContexts

        s, spec = self.settings, self.spec
        total = spec.calls(s.horizon) * spec.stride
        supplied = spec.exogenous == "supplied" and bool(spec.exogenous_channels)
        exo = list(spec.exogenous_channels)
        if user_ctx is None:
            # Sized for the requested burn-in; where `_burn_in` skips it (horizon < stride) the extra rows
            # are never read (a longer signal continues the same draw, so the windows do not change).
            burn_steps = s.burn_in_calls * spec.stride
            length = spec.lookback + (burn_steps + total if supplied else 0)
            signal = SyntheticContexts().make(spec, s.seeds, s.seed, length)
            future = signal[:, spec.lookback :, exo] if supplied else None
            return signal[:, : spec.lookback], future, SyntheticContexts().describe()
        n_rep = user_ctx.shape[0]
        desc = f"user-given ({n_rep} windows)"
        if supplied:
            if s.exog is None:
                raise RolloutSpecError(
                    f"the model's rollout contract has exogenous='supplied' channels {exo}: pass exog=[S, >= "
                    f"{total}, {len(exo)}] with user contexts"
                )
            future = np.asarray(s.exog, np.float32)
            if future.shape[0] != n_rep or future.shape[1] < total or future.shape[2] != len(exo):
                raise RolloutSpecError(
                    f"exog must have shape [{n_rep}, >= {total}, {len(exo)}]; got {list(future.shape)}"
                )
            return user_ctx, future, desc
        if s.burn_in_calls:
            raise TQSError(
                "burn_in_calls applies to the data-free contexts only; user contexts are used as given"
            )
        return user_ctx, None, desc

    def _burn_in(self, ctx: np.ndarray, future: np.ndarray | None):
        """(windows, future, calls made): the windows moved along the model's own free-running trajectory
        from each synthetic context (docs/tqs.md says why); user contexts are used as given."""
        from .contexts import burn_in

        s, stride = self.settings, self.spec.stride
        calls = s.burn_in_calls
        if s.auto_burn_in and s.horizon < stride:
            calls = 0  # the scoring rollout makes no whole call to burn in with
        if not calls or s.contexts is not None:
            return ctx, future, 0
        done = 0
        while done < calls:
            n_calls = min(calls - done, s.horizon // stride)
            if n_calls < 1:
                raise TQSError(f"burn_in_calls needs horizon >= stride ({stride})")
            fut = None if future is None else future[:, done * stride :]
            traj = self._free_run(ctx, fut)
            ctx = burn_in(self.spec, ctx, traj[:, : n_calls * stride], fut)
            done += n_calls
        if future is not None:
            future = future[:, calls * stride :]
        return ctx, future, calls

    def _free_run(self, rows_ctx: np.ndarray, rows_fut: np.ndarray | None) -> np.ndarray:
        """Unperturbed rollouts of any number of rows, a batch at a time (padding repeats row 0)."""
        B = self.runner.batch
        out = []
        for start in range(0, len(rows_ctx), B):
            idx = np.arange(start, min(start + B, len(rows_ctx)))
            pad = np.concatenate([idx, np.full(B - len(idx), idx[0])])
            fut = None if rows_fut is None else rows_fut[pad]
            noise = _empty_noise(self.plan, B)
            out.append(
                self.runner.run(rows_ctx[pad], self._zero_scale(), noise, fut, range(len(idx)))[: len(idx)]
            )
        return np.concatenate(out)

    def _zero_scale(self, runner=None) -> np.ndarray:
        runner = runner or self.runner
        return np.zeros((runner.batch, runner.plan.columns), np.float32)

    def _fill_noise(
        self, noise: np.ndarray, row: int, replicate: int, e: float, site: int, plan=None
    ) -> None:
        """Write the noise that perturbs `site` at relative size `e` in `row` (output mode; the scale input
        carries `e`) or in the site's weight slots (weight mode: the delta itself carries `e`); `plan`
        defaults to the current path's."""
        from .passes.perturb import site_noise

        s, plan = self.settings, plan or self.plan
        if s.mode == "output":
            size = plan.row_sizes[site]
            noise[row, :size] = site_noise(s.seed, replicate, site, size, "output")
        else:
            slots = plan.weights[site]
            unit = site_noise(s.seed, replicate, site, sum(slot.size for slot in slots), "weight")
            pos = 0
            for slot in slots:
                noise[slot.offset : slot.offset + slot.size] = e * slot.rms * unit[pos : pos + slot.size]
                pos += slot.size

    def _isolate_rows(self, probe, ctx: np.ndarray, fut_rows: np.ndarray | None) -> None:
        """Switch to the calls path when perturbing a site in one batch row changes other rows.

        Where the batch has an axis of its own the layout is certain; where it is merged with other dims
        (``[batch * C, ...]``) batch-major order is assumed, and this catches a batch-minor one before any
        scoring. A batch-3 twin (`tqs_paths.build_path`) that keeps rows apart gives way to the rows path
        at the scoring batch.
        """
        from .tqs_paths import calls_path

        s, prober = self.settings, self.runner
        if not (prober.name == "rows" and self.plan.merged and prober.batch >= 3):
            return
        culprits = self._leaking_sites(prober, ctx, fut_rows)
        if culprits is None:
            if prober.deferred is None:
                return
            self.runner, self.path_reason = prober.deferred()
            if self.runner is not None:
                return
        else:
            where = (
                f"at sites {culprits[:MAX_CULPRITS]}{' ...' if len(culprits) > MAX_CULPRITS else ''}"
                if culprits
                else (f"when sites {list(prober.plan.merged)[:8]} are perturbed together")
            )
            self.path_reason = (
                f"perturbing one batch row changed other rows {where} (their results mix batch rows)"
            )
        if s.path == "rows":
            raise TQSError(f"the rows path cannot score this model: {self.path_reason}")
        self.runner = calls_path(
            probe, self.spec, s.horizon, s.mode, s.method, s.target, s.sites, prober.scoring_batch, s.progress
        )

    def _leaking_sites(self, runner, ctx: np.ndarray, fut_rows: np.ndarray | None) -> list[int] | None:
        """Merged-axis sites where perturbing batch row 1 of `runner` changes another row, the lowest
        first and at most ``MAX_CULPRITS + 1`` (they only name the culprits; one leak is enough to leave
        the rows path); None when no row changes, [] when rows change only with several sites perturbed
        together."""
        B = runner.batch
        rows = np.arange(B) % len(ctx)
        probe_ctx = ctx[rows]
        probe_fut = None if fut_rows is None else fut_rows[rows]
        base = runner.run(probe_ctx, self._zero_scale(runner), _empty_noise(runner.plan, B), probe_fut)
        merged = list(runner.plan.merged)
        if not self._leaks(runner, merged, probe_ctx, probe_fut, base):
            return None
        # Depth first, lower half first: the culprits come out in order, and the search stops once the
        # message has its names. With several workers both halves of a leaking group are probed at once
        # (each on its own VM): the same answers as probing each half when reached, in about half the time.
        runners = Handles(lambda i: runner if i == 0 else runner.clone())

        def leaks(one, group):
            return self._leaks(one, group, probe_ctx, probe_fut, base)

        culprits: list[int] = []
        stack = [(merged, True)]  # (sites, whether they leak; None: not probed yet)
        while stack and len(culprits) <= MAX_CULPRITS:
            group, leaking = stack.pop()
            if leaking is None:
                leaking = leaks(runner, group)
            if not leaking:
                continue
            if len(group) == 1:
                culprits.append(group[0])
                continue
            halves = [group[: len(group) // 2], group[len(group) // 2 :]]
            low, high = runners.map(leaks, halves) if workers() > 1 else (None, None)
            stack += [(halves[1], high), (halves[0], low)]
        return culprits

    def _leaks(self, runner, group: list[int], probe_ctx, probe_fut, base: np.ndarray) -> bool:
        """Whether perturbing the sites of `group` together in batch row 1 changes any other row of `base`."""
        eps, B = self.settings.eps, runner.batch
        scales, noise = self._zero_scale(runner), _empty_noise(runner.plan, B)
        for k in group:
            scales[1, k] = eps if self.settings.mode == "output" else 1.0
            self._fill_noise(noise, 1, 0, eps, k, runner.plan)
        out = runner.run(probe_ctx, scales, noise, probe_fut)
        others = np.arange(B) != 1
        return not np.array_equal(out[others], base[others])

    def _run_rows(self, ctx: np.ndarray, fut_rows: np.ndarray | None):
        """(curves [S, K, H] at eps, curves [S_lin, K, H] at eps/2, executions run) for every perturbable
        site; rows of other sites stay 0."""
        s, plan = self.settings, self.plan
        n_rep, n_lin = len(ctx), s.linearity_replicates
        # Replicate-major, so that an execution needs few reference rows; the eps/2 rows come last.
        perturbable = list(plan.perturbable)
        items = [(r, s.eps, k) for r in range(n_rep) for k in perturbable]
        items += [(r, s.eps / 2, k) for r in range(n_lin) for k in perturbable]
        executions = _pack(items, self.runner.batch, distinct_sites=(s.mode == "weight"))
        curves = np.zeros((n_rep, plan.columns, s.horizon))
        half_curves = np.zeros((n_lin, plan.columns, s.horizon))
        for count, ex in enumerate(executions):
            s.progress(count, len(executions), "scoring")
            y = self._execute(ex, ctx, fut_rows)
            self._check_reference(y, ex)
            for row, r, e, k in ex.items:
                d = divergence(y[row], y[ex.refs[r]])
                if e == s.eps:
                    curves[r, k] = d
                else:
                    half_curves[r, k] = d
        s.progress(len(executions), len(executions), "scoring")
        return curves, half_curves, len(executions)

    def _check_reference(self, y: np.ndarray, ex: _Execution) -> None:
        """A non-finite unperturbed rollout makes every divergence NaN (read as "no effect"): refuse it."""
        for r, row in ex.refs.items():
            if not np.all(np.isfinite(y[row])):
                raise TQSError(
                    f"the unperturbed rollout of {self.source} is not finite (NaN or inf) for replicate {r}: "
                    f"the model's weights hold infinite values, or its forecast overflows within the "
                    f"{self.settings.horizon}-step horizon; TQS needs a finite reference rollout (check the "
                    "weights and the contexts, or score a shorter horizon)"
                )

    def _execute(self, ex: _Execution, ctx: np.ndarray, fut_rows: np.ndarray | None) -> np.ndarray:
        """The rollouts ``[batch, H, targets]`` of one execution's rows."""
        spec, B = self.spec, self.runner.batch
        rows_ctx = np.empty((B, spec.lookback, spec.channels), np.float32)
        rows_rep = np.zeros(B, dtype=np.int64)
        rows_rep[:] = next(iter(ex.refs))  # padding rows: unperturbed copies of the first reference
        for r, row in ex.refs.items():
            rows_rep[row] = r
        for row, r, _, _ in ex.items:
            rows_rep[row] = r
        rows_ctx[:] = ctx[rows_rep]
        fut = None if fut_rows is None else fut_rows[rows_rep]
        scales, noise = self._zero_scale(), _empty_noise(self.plan, B)
        for row, r, e, k in ex.items:
            scales[row, k] = e if self.settings.mode == "output" else 1.0
            self._fill_noise(noise, row, r, e, k)
        # The calls path runs only these rows; the padding rows' results are never read.
        used = [*ex.refs.values(), *(row for row, _, _, _ in ex.items)]
        return self.runner.run(rows_ctx, scales, noise, fut, used)

    def _notes(self, nonlinear: list[int]) -> list[str]:
        """What the report's reader should know: unscored sites, non-linear sites, the calls path."""
        eps, plan = self.settings.eps, self.plan
        notes = []
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
        if self.path_reason:
            notes.append(f"scored by repeated calls of the model (calls path): {self.path_reason}")
        return notes
