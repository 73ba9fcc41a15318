"""Rollout responses to the actual quantization residual of each weight group, and how they combine.

TQS's Gaussian probe measures how a random weight perturbation grows; it cannot see that the residuals of
two groups partly cancel (or add) through a recurrence or a residual stream, because independent random
probes have no cross terms. This runs the paper's second probe kind: for every weight group g and every
precision p it is offered, the group's weights are replaced by their quantized values (W + R_g(p), the
residual of the chosen quantizer) in every site that reads them, and the rollout's response
dy_{g,p} = y_{g,p} - y is recorded from the same starting windows as TQS (data-free, burnt in, or the
user's). The responses' inner products

    C[(g,p), (h,q)] = sum_replicates <dy_{g,p}, dy_{h,q}> / sum_replicates ||y||^2

give, to first order (responses add), the relative rollout error of any plan as sqrt(v^T C v) with v the
plan's indicator over (group, precision) pairs: the diagonal is each group's own error (the residual probe),
the off-diagonal terms are the group interactions. `planning.cross_model` turns C into an error model.

Cost: one rollout row per (replicate, group, quantized precision) plus one reference per replicate and
execution; executions carry many groups at once (each site reads one residual per execution).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import TQSError
from .tqs_scorer import TQSScorer, _empty_noise


@dataclass(frozen=True)
class ResidualProbe:
    """One group's residual at one precision: the delta (graph layout) added to the weight constant of RMS
    `weight_rms` in every site of `sites`."""

    sites: tuple[int, ...]
    delta: np.ndarray
    weight_rms: float


@dataclass(frozen=True)
class ResidualResponses:
    """Normalised Gram matrix of the rollout responses to each (group, precision) residual.

    Attributes
    ----------
    keys : tuple of (str, str)
        (group name, precision) of each row and column of `coupling`.
    coupling : ndarray [N, N]
        C above (float64, symmetric positive semi-definite).
    replicates, horizon : int
        Starting windows and rollout steps the responses were measured over.
    executions : int
        Compiled-rollout executions run.
    contexts : str
        Where the starting windows came from.
    """

    keys: tuple[tuple[str, str], ...]
    coupling: np.ndarray
    replicates: int
    horizon: int
    executions: int
    contexts: str

    def index(self) -> dict[tuple[str, str], int]:
        return {k: i for i, k in enumerate(self.keys)}

    def own_error2(self) -> dict[str, dict[str, float]]:
        """{group: {precision: C[(g,p),(g,p)]}}: each group's squared relative error taken alone."""
        out: dict[str, dict[str, float]] = {}
        for i, (g, p) in enumerate(self.keys):
            out.setdefault(g, {})[p] = float(self.coupling[i, i])
        return out


class ResponseScorer(TQSScorer):
    """A weight-mode TQS scorer whose rows carry given weight deltas instead of Gaussian probes."""

    def __init__(self, settings, probes: dict[tuple[str, str], ResidualProbe]):
        super().__init__(settings)
        self.probes = probes

    def _selected_sites(self):
        return sorted({k for probe in self.probes.values() for k in probe.sites})

    def _rows_hint(self, ops) -> int:
        n_rep = self.settings.seeds or len(self.settings.contexts)
        return n_rep * (len(self.probes) + 1)

    def responses(self, model) -> ResidualResponses:
        """Run every probe from every starting window of `model` and return the normalised Gram matrix."""
        s = self.settings
        _source, _ops, ctx, fut_rows, desc, _calls = self._prepare(model)
        # A group whose sites the perturbed rollout cannot reach keeps no probe: the error model then
        # leaves it at fp32, as the independent model does for a site TQS could not score.
        slots = {k: self._slots(pr) for k, pr in self.probes.items()}
        keys = tuple(k for k in self.probes if slots[k] is not None)
        if not keys:
            raise TQSError("no weight group's residual can be injected into the rollout")
        deltas, ref2, executions = self._run_probes(keys, slots, ctx, fut_rows)
        gram = np.einsum("rim,rjm->ij", deltas, deltas)
        return ResidualResponses(keys, gram / ref2, len(ctx), s.horizon, executions, desc)

    def _slots(self, probe: ResidualProbe) -> list | None:
        """Per site of the probe, the dweight slot its residual goes to; None when a site has none."""
        try:
            return [_weight_slot(self.plan.weights.get(site, ()), probe, site) for site in probe.sites]
        except TQSError:
            return None

    def _packs(self, keys, n_rep: int) -> list[list[int]]:
        """Probe indices per execution: all replicates of each probe, no site twice, within the batch."""
        packs: list[list[int]] = []
        sites_in: list[set] = []
        cap = self.runner.batch // n_rep - 1
        if cap < 1:
            raise TQSError(f"batch {self.runner.batch} cannot hold {n_rep} references and one probe each")
        for i, key in enumerate(keys):
            sites = set(self.probes[key].sites)
            for pack, used in zip(packs, sites_in, strict=True):
                if len(pack) < cap and not (sites & used):
                    pack.append(i)
                    used |= sites
                    break
            else:
                packs.append([i])
                sites_in.append(set(sites))
        return packs

    def _run_probes(self, keys, slots: dict, ctx: np.ndarray, fut_rows):
        """(responses [S, N, H * targets], sum of ||y||^2 over replicates, executions)."""
        s, B = self.settings, self.runner.batch
        n_rep = len(ctx)
        packs = self._packs(keys, n_rep)
        deltas = None
        ref2 = 0.0
        for count, pack in enumerate(packs):
            s.progress(count, len(packs), "residual responses")
            rep = np.zeros(B, dtype=np.int64)  # padding rows: copies of the first replicate
            scales, noise = self._zero_scale(), _empty_noise(self.plan, B)
            rep[:n_rep] = np.arange(n_rep)  # rows 0..S-1: the references
            for j, i in enumerate(pack):
                rows = slice(n_rep * (j + 1), n_rep * (j + 2))
                rep[rows] = np.arange(n_rep)
                delta = self.probes[keys[i]].delta.ravel()
                for site, slot in zip(self.probes[keys[i]].sites, slots[keys[i]], strict=True):
                    scales[rows, site] = 1.0
                    noise[slot.offset : slot.offset + slot.size] = delta
            rows_ctx = ctx[rep]
            fut = None if fut_rows is None else fut_rows[rep]
            used = list(range(n_rep * (len(pack) + 1)))
            y = self.runner.run(rows_ctx, scales, noise, fut, used).astype(np.float64)
            ref = y[:n_rep].reshape(n_rep, -1)
            if deltas is None:
                deltas = np.zeros((n_rep, len(keys), ref.shape[1]))
                ref2 = float(np.sum(ref**2))
            for j, i in enumerate(pack):
                deltas[:, i] = y[n_rep * (j + 1) : n_rep * (j + 2)].reshape(n_rep, -1) - ref
        s.progress(len(packs), len(packs), "residual responses")
        if not ref2 > 0:
            raise TQSError("the reference rollouts are all zero: relative responses are undefined")
        return deltas, ref2, len(packs)


def _weight_slot(slots, probe: ResidualProbe, site: int):
    """The slot of `site` holding the constant the probe's residual belongs to: same shape, nearest RMS."""
    shape = tuple(probe.delta.shape)
    matching = [slot for slot in slots if tuple(slot.shape) == shape]
    if not matching:
        raise TQSError(f"site {site} reads no weight of shape {list(shape)} to carry its residual")
    return min(matching, key=lambda slot: abs(slot.rms - probe.weight_rms))
