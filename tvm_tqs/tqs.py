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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .errors import TQSError
from .tqs_report import REPORT_VERSION, SiteScore, TQSReport  # noqa: F401 (re-exported)
from .tqs_scorer import TQSScorer, _pack  # noqa: F401 (re-exported; the tests pack rows by hand)
from .tqs_stats import (  # noqa: F401 (re-exported)
    BOOTSTRAP_SAMPLES,
    BOOTSTRAP_STREAM,
    CONFIDENCE,
    LINEARITY_TOLERANCE,
    divergence,
    endpoint_rate,
    growth_rate,
    site_scores,
)

DEFAULT_EPS = 1e-3
# Upper bounds that keep a typo (horizon=10**9) from allocating gigabytes or running for hours: TQS horizons
# are hundreds of steps and seeds tens (docs/reliability.md).
MAX_HORIZON = 100_000
MAX_SEEDS = 10_000
DEFAULT_BURN_IN_CALLS = 4  # free-running calls from the synthetic contexts (docs/tqs.md: why)

Progress = Callable[[int, int, str], None]


def _default_progress(_done: int, _total: int, _what: str) -> None:
    return None


@dataclass(eq=False)
class ScoreSettings:
    """`score`'s arguments, checked on construction (with `score`'s errors), and the defaults that depend
    on other arguments resolved: `burn_in_calls`, `progress` and the linearity replicates."""

    horizon: int
    seeds: int | None
    mode: str
    contexts: np.ndarray | None
    exog: np.ndarray | None
    eps: float
    seed: int
    burn_in_calls: int | None
    linearity: bool
    linearity_seeds: int
    sites: Sequence[int] | None
    batch: int | None
    method: str
    target: str
    progress: Progress | None
    input_shapes: Mapping | None
    rollout: object
    path: str
    auto_burn_in: bool = field(init=False)  # burn_in_calls was left to the default
    linearity_replicates: int = field(init=False)  # replicates re-run at eps / 2 (0: no linearity check)

    def __post_init__(self) -> None:
        from .passes.perturb import MODES

        self.progress = self.progress or _default_progress
        if self.path not in ("auto", "rows", "calls"):
            raise TQSError(f"path must be 'auto', 'rows' or 'calls', got {self.path!r}")
        if self.mode not in MODES:
            raise TQSError(f"mode must be one of {MODES}, got {self.mode!r}")
        _check_int("horizon", self.horizon, 1, MAX_HORIZON)
        if self.seeds is not None:
            _check_int("seeds", self.seeds, 1, MAX_SEEDS)
        if self.batch is not None:
            _check_int("batch", self.batch, 2, None, "(a reference row and a perturbed row)")
        if self.burn_in_calls is not None:
            _check_int("burn_in_calls", self.burn_in_calls, 0, MAX_HORIZON)
        if self.horizon < 1:
            raise TQSError(f"horizon must be >= 1, got {self.horizon}")
        if not self.eps > 0:
            raise TQSError(f"eps must be > 0, got {self.eps}")
        if self.seeds is None and self.contexts is None:
            raise TQSError("seeds=None needs contexts (one replicate per context)")
        if self.seeds is not None and self.seeds < 1:
            raise TQSError(f"seeds must be >= 1, got {self.seeds}")
        self.auto_burn_in = self.burn_in_calls is None
        if self.auto_burn_in:
            self.burn_in_calls = 0 if self.contexts is not None else DEFAULT_BURN_IN_CALLS
        if self.burn_in_calls < 0:
            raise TQSError(f"burn_in_calls must be >= 0, got {self.burn_in_calls}")
        self.linearity_replicates = (
            min(self.linearity_seeds, self.seeds or len(self.contexts)) if self.linearity else 0
        )


def _check_int(name: str, value, low: int, high: int | None, why: str = "") -> None:
    """`value` is an integer in [low, high]; the error names the option and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TQSError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise TQSError(f"{name} must be >= {low}{' ' + why if why else ''}, got {value}")
    if high is not None and value > high:
        raise TQSError(f"{name} must be <= {high}, got {value}")


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
    settings = ScoreSettings(
        horizon=horizon,
        seeds=seeds,
        mode=mode,
        contexts=contexts,
        exog=exog,
        eps=eps,
        seed=seed,
        burn_in_calls=burn_in_calls,
        linearity=linearity,
        linearity_seeds=linearity_seeds,
        sites=sites,
        batch=batch,
        method=method,
        target=target,
        progress=progress,
        input_shapes=input_shapes,
        rollout=rollout,
        path=path,
    )
    return TQSScorer(settings).score(model)
