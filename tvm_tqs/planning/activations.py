"""Activations of the sites' inputs on data-free contexts (or calibration windows), read through the compiled
graph: the crest factors of the error model's activation term, and the Gram matrices X^T X that
reconstruction-based weight quantizers (`bitsplit`) minimise against."""

from __future__ import annotations

import numpy as np

from ..error_model import crest_factor

# Data-free contexts whose first model call gives "bitsplit" its input activations (one call each: cheap).
GRAM_CONTEXTS = 64
# Gram matrices get this fraction of their mean diagonal added: with few rows (one call per context) X^T X
# is rank-deficient, and the damping keeps the weight error in charge of the directions X never visits.
GRAM_DAMPING = 0.01


def _capture(exposed, io_module, rollout, contexts: np.ndarray, n: int) -> list[list[np.ndarray]]:
    """Run `exposed` (whose main returns the model's result then `n` tensors) on `contexts` in chunks of the
    module's batch; the last `n` outputs of each chunk, padding rows dropped."""
    from ..frontend.load import model_signatures
    from ..rollout import io_names
    from ..runtime import VMRunner, build

    names, outputs = io_names(io_module)
    inputs, _ = model_signatures(io_module, outputs)
    window_shape, window_dtype = inputs[rollout.window_input]
    batch = window_shape[0]
    runner = VMRunner(build(exposed))
    captured: list[list[np.ndarray]] = [[] for _ in range(n)]
    for start in range(0, len(contexts), batch):
        chunk = contexts[start : start + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch - real, axis=0)])
        # The window in the model's layout and dtype, the auxiliary inputs at their data-free values.
        feeds = rollout.default_aux(inputs, batch)
        feeds[rollout.window_input] = rollout.to_model_window(chunk.astype(np.float32), window_dtype)
        outs = runner(*[feeds[name] for name in names])
        for i, x in enumerate(outs[len(outs) - n :]):
            # Padding rows would weigh context 0 (plans changed with compile's batch=).
            captured[i].append(x[:real] if real < batch and x.shape[0] == batch else x)
    return captured


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
    problem, contexts: np.ndarray, sites=None, weights: dict[str, np.ndarray] | None = None
) -> dict[int, np.ndarray | None]:
    """Per grouped site (or per site in `sites`), its anchor's input on `contexts` as GEMM rows ``[M, K]``
    (float64) in the quantizer view's reduction order; None where the layout cannot be read as rows.
    `weights` (``{group name: weight}``, quantizer view) replaces those groups' weights first: the inputs
    downstream sites see when those groups are quantized."""
    from ..graph import replace_constants
    from ..passes.quantize import expose_anchor_inputs

    sites = sorted(problem.grouped_sites if sites is None else sites)
    if not sites:
        return {}
    exposed = expose_anchor_inputs(problem.analysis, sites)
    if weights:
        exposed = replace_constants(exposed, constant_table(problem, weights))
    captured = _capture(exposed, problem.module, problem.rollout, contexts, len(sites))
    out = {}
    for s, xs in zip(sites, captured, strict=True):
        rows = [_rows(problem.analysis.matches[s], x) for x in xs]
        out[s] = None if any(r is None for r in rows) else np.concatenate(rows).astype(np.float64)
    return out


def input_grams(problem, contexts: np.ndarray, damping: float = GRAM_DAMPING) -> dict[str, np.ndarray]:
    """Per weight group, sum over its sites of X^T X / rows of the anchors' inputs on `contexts` (damped),
    keyed by the content digest of the weight as the quantizer sees it (`BitSplit.grams`)."""
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


def bitsplit_quantizer(problem, calibration: np.ndarray | None = None):
    """`BitSplit` with the Gram matrices of the problem's sites: from `calibration` windows when given, else
    from `GRAM_CONTEXTS` data-free contexts; its `activations` says which."""
    from ..contexts import SyntheticContexts, validate_contexts
    from ..quantizers import BitSplit

    rollout = problem.rollout
    if rollout is None:
        return BitSplit(activations="none: the model has no rollout contract (weight error only)")
    if calibration is not None:
        windows = validate_contexts(rollout, calibration)
        source = f"calibration ({len(windows)} windows)"
    else:
        windows = SyntheticContexts().make(rollout, GRAM_CONTEXTS, seed=0)
        source = f"data-free ({len(windows)} synthetic contexts)"
    return BitSplit(input_grams(problem, windows), activations=source)
