"""Activations of the sites' inputs on data-free contexts (or calibration windows), read through the compiled
graph: the crest factors of the error model's activation term, and the Gram matrices X^T X that
reconstruction-based weight quantizers (`bitsplit`) minimise against."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..error_model import crest_factor

# Data-free contexts the activations of "bitsplit" (and data-free ModCap) are read on.
GRAM_CONTEXTS = 64
# Gram matrices get this fraction of their mean diagonal added: with few rows X^T X is rank-deficient, and
# the damping keeps the weight error in charge of the directions X never visits.
GRAM_DAMPING = 0.01
# Each context is first run free for GRAM_BURN_IN calls (its own forecasts fed back, as TQS's burn-in), then
# the anchors' inputs are read on the next GRAM_CALLS calls. A synthetic window is not where the model
# lives: the hidden states of recurrent and conv models on it differ from those on real windows, and
# DLinear's trend layer saw the wrong level; on the model's own trajectory the data-free Grams come close
# to calibrated ones (docs/quantize.md, "Weight quantizers", has the numbers).
GRAM_BURN_IN = 4
GRAM_CALLS = 8


@dataclass(frozen=True)
class Capture:
    """Windows ``[S, lookback, channels]`` the model runs free from for `calls` calls, the anchors' inputs
    read from call `skip` on (`exog`: the supplied exogenous future); `source` is what reports say."""

    windows: np.ndarray
    calls: int = 1
    skip: int = 0
    exog: np.ndarray | None = None
    source: str = ""


def _capture(
    exposed, io_module, rollout, contexts: np.ndarray, n: int, calls: int = 1, skip: int = 0, exog=None
) -> list[list[np.ndarray]]:
    """Run `exposed` (whose main returns the model's result then `n` tensors) on `contexts` in chunks of the
    module's batch; the last `n` outputs of each chunk, padding rows dropped. With `calls` > 1 the model runs
    free from each context for that many calls (its own forecasts fed back, exactly as in the rollout;
    `exog` ``[S, >= (calls - 1) * stride, n_exogenous]`` for exogenous="supplied") and the outputs of every
    call from call `skip` on are kept, in call order."""
    from ..frontend.load import model_signatures
    from ..rollout import io_names
    from ..runtime import VMRunner, build

    names, outputs = io_names(io_module)
    inputs, _ = model_signatures(io_module, outputs)
    window_shape, window_dtype = inputs[rollout.window_input]
    batch = window_shape[0]
    runner = VMRunner(build(exposed))
    captured: list[list[np.ndarray]] = [[] for _ in range(n)]
    steps = calls * rollout.stride
    for start in range(0, len(contexts), batch):
        real = min(batch, len(contexts) - start)
        pad = start + np.concatenate([np.arange(real), np.zeros(batch - real, int)])
        model = _Recorder(runner, names, outputs, n, skip, real, batch)
        # The auxiliary inputs start at, and are supplied with, their data-free values.
        rollout.rollout(
            model,
            contexts[pad].astype(np.float32),
            steps,
            exog=None if exog is None else exog[pad],
            aux=rollout.default_aux(inputs, batch),
            aux_future=rollout.default_future(inputs, batch, steps),
            window_dtype=window_dtype,
        )
        for i, xs in enumerate(model.captured):
            captured[i] += xs
    return captured


class _Recorder:
    """The model for `RolloutSpec.rollout`: runs the exposed graph, returns the model's outputs and keeps the
    exposed tensors of every call from call `skip` on (padding rows dropped)."""

    def __init__(self, runner, names, outputs, n: int, skip: int, real: int, batch: int):
        self.runner, self.names, self.outputs = runner, names, outputs
        self.n, self.skip, self.real, self.batch, self.calls = n, skip, real, batch, 0
        self.captured: list[list[np.ndarray]] = [[] for _ in range(n)]

    def __call__(self, feeds: dict) -> dict:
        outs = self.runner(*[feeds[name] for name in self.names])
        if self.calls >= self.skip:
            for i, x in enumerate(outs[len(outs) - self.n :]):
                # Padding rows would weigh context 0 (plans changed with compile's batch=).
                cut = self.real < self.batch and x.shape[0] == self.batch
                self.captured[i].append(x[: self.real] if cut else x)
        self.calls += 1
        return dict(zip(self.outputs, outs[: len(outs) - self.n], strict=False))


def activation_crests(fused, rollout, sites: list[int], contexts: np.ndarray) -> dict[int, float]:
    """Crest factor of each site's input over `contexts` (see `error_model.crest_factor`)."""
    from ..graph import expose_site_inputs

    if not sites:
        return {}
    captured = _capture(expose_site_inputs(fused, sites), fused, rollout, contexts, len(sites))
    return {
        s: crest_factor(np.concatenate([x.reshape(-1, x.shape[-1]) for x in xs]))
        for s, xs in zip(sites, captured, strict=True)
    }


def _rows(match, x: np.ndarray) -> np.ndarray | None:
    """The anchor's input as GEMM rows [M, K] in the reduction order of the quantizer's view of the weight
    (conv1d: tap-major im2col, ``[O, KW, I]`` -> index ``kw * I + i``)."""
    if match.op == "dense":
        return x.reshape(-1, x.shape[-1]) if x.shape[-1] == match.k else None
    if match.op == "dense_left":
        return np.moveaxis(x, -2, -1).reshape(-1, match.k) if x.shape[-2] == match.k else None
    spec = match.conv
    if spec.layout == "NWC":
        x = np.moveaxis(x, -1, 1)  # -> [B, I, W]
    pad = np.pad(x, ((0, 0), (0, 0), spec.padding))
    taps = [
        pad[
            :,
            :,
            kw * spec.dilation : kw * spec.dilation + spec.stride * (spec.out_width - 1) + 1 : spec.stride,
        ]
        for kw in range(spec.kernel_size)
    ]
    cols = np.stack(taps, axis=1)  # [B, KW, I, T]
    return np.moveaxis(cols, -1, 1).reshape(-1, spec.kernel_size * spec.in_channels)


def constant_table(problem, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{constant digest: array}`` for `graph.replace_constants` from ``{group name: weight}`` given as the
    quantizer sees the group's weight (conv1d ``[O, KW, I]``; the graph's constant is ``[O, I, KW]``)."""
    table = {}
    for g in problem.groups:
        if g.name not in weights:
            continue
        match = problem.analysis.matches[g.sites[0]]
        w = np.asarray(weights[g.name], np.float32)
        table[match.weight_digest] = w.transpose(0, 2, 1) if match.op == "conv1d" else w
    return table


def anchor_rows(
    problem, contexts, sites=None, weights: dict[str, np.ndarray] | None = None
) -> dict[int, np.ndarray | None]:
    """Per grouped site (or per site in `sites`), its anchor's input on `contexts` (windows, one call each, or
    a `Capture`) as GEMM rows ``[M, K]`` (float64) in the quantizer view's reduction order; None where the
    layout cannot be read as rows. `weights` (``{group name: weight}``, quantizer view) replaces those groups'
    weights first: the inputs downstream sites see when those groups are quantized."""
    from ..graph import replace_constants
    from ..passes.quantize import expose_anchor_inputs

    capture = contexts if isinstance(contexts, Capture) else Capture(np.asarray(contexts))
    sites = sorted(problem.grouped_sites if sites is None else sites)
    if not sites:
        return {}
    exposed = expose_anchor_inputs(problem.analysis, sites)
    if weights:
        exposed = replace_constants(exposed, constant_table(problem, weights))
    captured = _capture(
        exposed,
        problem.module,
        problem.rollout,
        capture.windows,
        len(sites),
        capture.calls,
        capture.skip,
        capture.exog,
    )
    out = {}
    for s, xs in zip(sites, captured, strict=True):
        rows = [_rows(problem.analysis.matches[s], x) for x in xs]
        out[s] = None if any(r is None for r in rows) else np.concatenate(rows).astype(np.float64)
    return out


def input_grams(problem, contexts, damping: float = GRAM_DAMPING) -> dict[str, np.ndarray]:
    """Per weight group, sum over its sites of X^T X / rows of the anchors' inputs on `contexts` (windows or
    a `Capture`; damped), keyed by the content digest of the weight as the quantizer sees it
    (`BitSplit.grams`)."""
    from ..graph import weight_digest

    rows = anchor_rows(problem, contexts)
    grams = {}
    for g in problem.groups:
        if any(rows[s] is None for s in g.sites):
            continue
        total = sum(rows[s].T @ rows[s] / max(len(rows[s]), 1) for s in g.sites)
        total += damping * max(float(np.mean(np.diag(total))), 1e-12) * np.eye(len(total))
        grams[weight_digest(np.asarray(g.weight, np.float32))] = total
    return grams


def activation_capture(rollout, calibration: np.ndarray | None = None) -> Capture:
    """Where reconstruction-based quantizers read their input activations: the `calibration` windows (one
    call each) when given, else the data-free trajectories (`GRAM_CONTEXTS` synthetic windows, the model
    run free from each for `GRAM_BURN_IN + GRAM_CALLS` calls, the last `GRAM_CALLS` captured)."""
    from ..contexts import SyntheticContexts, validate_contexts

    if calibration is not None:
        windows = validate_contexts(rollout, calibration)
        return Capture(windows, source=f"calibration ({len(windows)} windows)")
    calls = GRAM_BURN_IN + GRAM_CALLS
    supplied = rollout.exogenous == "supplied" and bool(rollout.exogenous_channels)
    # Exogenous channels supplied by the user continue the same synthetic draw (as in TQS's burn-in).
    length = rollout.lookback + (calls - 1) * rollout.stride if supplied else None
    signal = SyntheticContexts().make(rollout, GRAM_CONTEXTS, seed=0, length=length)
    exog = signal[:, rollout.lookback :, list(rollout.exogenous_channels)] if supplied else None
    source = f"data-free ({GRAM_CONTEXTS} synthetic contexts"
    if calls > 1:
        source += f", {calls} free-running model calls each, the last {GRAM_CALLS} captured"
    return Capture(signal[:, : rollout.lookback], calls, GRAM_BURN_IN, exog, source + ")")


def bitsplit_quantizer(problem, calibration: np.ndarray | None = None):
    """`BitSplit` with the Gram matrices of the problem's sites on `activation_capture`; its `activations`
    says where they came from."""
    from ..quantizers import BitSplit

    rollout = problem.rollout
    if rollout is None:
        return BitSplit(activations="none: the model has no rollout contract (weight error only)")
    capture = activation_capture(rollout, calibration)
    return BitSplit(input_grams(problem, capture), activations=capture.source)
