"""The cross-group error model: the weight term measured from the rollout's responses to each group's actual
quantization residual (`tqs_responses`), interactions between groups included, plus the independent
activation term of `error_model`.

    responses = residual_responses(problem)                       # one compiled rollout, S x sum_g |options|
    model = CrossGroupModel.build(problem, responses, activation2)
    solution = solve_cross(problem, model, "size=25%")

The predicted squared relative rollout error of a plan is

    e^2 = v^T C v + sum_g a_g(p_g)

with v the plan's (group, precision) indicator, C the responses' normalised Gram matrix and a_g the
activation term (r_a^2 sum_k G_k^2 from the Gaussian TQS gains). Responses are measured at the residuals'
real size, so each group's own term includes its non-linear response; only the superposition of groups is
first order. docs/error_model.md gives the derivation and the cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..error_model import dequantized
from ..quantizers import rtn
from ..tqs_responses import ResidualProbe, ResidualResponses
from .problem import ErrorTable, PlanSolution


def residual_probes(problem, quantizer: Callable = rtn) -> dict[tuple[str, str], ResidualProbe]:
    """(group, precision) -> the group's quantization residual in the graph layout of its weight constant,
    for every precision below fp32 the target offers the group."""
    probes = {}
    for g in problem.groups:
        match = problem.analysis.matches[g.sites[0]]
        rms = float(np.sqrt(np.mean(np.asarray(match.weight, np.float64) ** 2)))
        view = np.asarray(g.weight, np.float32)
        for p in g.options:
            if p == "fp32":
                continue
            residual = dequantized(view, g.channel_axis, p, quantizer, problem.group_size) - view
            if match.op == "conv1d":  # the quantizer's view is [O, KW, I]; the constant is [O, I, KW]
                residual = residual.transpose(0, 2, 1)
            probes[(g.name, p)] = ResidualProbe(g.sites, np.ascontiguousarray(residual, np.float32), rms)
    return probes


def residual_responses(
    problem,
    *,
    horizon: int = 96,
    seeds: int = 8,
    seed: int = 0,
    contexts: np.ndarray | None = None,
    quantizer: Callable = rtn,
    target: str = "x86",
    batch: int | None = None,
    progress=None,
    input_shapes=None,
) -> ResidualResponses:
    """Roll the model out with each group's residual in place (`tqs_responses`), from TQS's starting
    windows: `seeds` data-free contexts burnt in (or `contexts` as given)."""
    from ..tqs import ScoreSettings
    from ..tqs_responses import ResponseScorer

    settings = ScoreSettings(
        horizon=horizon,
        seeds=None if contexts is not None and seeds is None else seeds,
        mode="weight",
        contexts=contexts,
        exog=None,
        eps=1e-3,  # unused by the responses; the isolation probe's Gaussian size
        seed=seed,
        burn_in_calls=None,
        linearity=False,
        linearity_seeds=0,
        sites=None,
        batch=batch,
        method="auto",
        target=target,
        progress=progress,
        input_shapes=input_shapes,
        rollout=problem.rollout,
        path="auto",
    )
    scorer = ResponseScorer(settings, residual_probes(problem, quantizer))
    return scorer.responses(problem.model_proto)


@dataclass(frozen=True)
class CrossGroupModel:
    """Predicted rollout error with group interactions.

    Attributes
    ----------
    errors2 : ErrorTable
        Each option's error taken alone: C's diagonal plus the activation term (what the plain knapsack
        would minimise: the independent model with the residual probe).
    responses : ResidualResponses
        The measured responses (C).
    """

    errors2: ErrorTable
    responses: ResidualResponses

    @classmethod
    def measure(
        cls,
        problem,
        gains: Mapping[int, float],
        *,
        horizon: int = 96,
        seeds: int = 8,
        contexts: np.ndarray | None = None,
        quantizer: Callable = rtn,
        progress=None,
        input_shapes=None,
    ) -> CrossGroupModel:
        """Residual responses from TQS's starting windows (`seeds` data-free contexts, or `contexts`) and the
        activation term from the TQS `gains` (`gains_of`), as `compile(error_model="cross")` builds them."""
        activation2 = problem.error_table(gains, contexts, seeds, quantizer, weight_term=False)
        responses = residual_responses(
            problem,
            horizon=horizon,
            seeds=seeds,
            contexts=contexts,
            quantizer=quantizer,
            progress=progress,
            input_shapes=input_shapes,
        )
        return cls.build(problem, responses, activation2)

    @classmethod
    def build(cls, problem, responses: ResidualResponses, activation2: ErrorTable) -> CrossGroupModel:
        own = responses.own_error2()
        table = {
            g.name: {
                p: (0.0 if p == "fp32" else own.get(g.name, {}).get(p, math.inf))
                + activation2.get(g.name, {}).get(p, 0.0)
                for p in g.options
            }
            for g in problem.groups
        }
        return cls(table, responses)

    def pair_matrix(self, keys: list[tuple[str, str]]) -> np.ndarray:
        """C restricted to `keys` (fp32 and unmeasured options are zero rows), diagonal zeroed."""
        index = self.responses.index()
        rows = np.array([index.get(k, -1) for k in keys])
        have = rows >= 0
        out = np.zeros((len(keys), len(keys)))
        sub = self.responses.coupling[np.ix_(rows[have], rows[have])]
        out[np.ix_(np.where(have)[0], np.where(have)[0])] = sub
        np.fill_diagonal(out, 0.0)
        return out

    def group_shares(self, problem, precisions: Mapping[int, str]) -> dict[str, float]:
        """Each group's part of e^2 under a site plan: its own term plus half of every pair term it is in
        (negative where its residual cancels others'); the parts add up to e^2."""
        keys = [(g.name, precisions.get(g.sites[0], "fp32")) for g in problem.groups]
        pairs = self.pair_matrix(keys).sum(axis=1)
        return {g: self.errors2[g][p] + float(pairs[i]) for i, (g, p) in enumerate(keys)}

    def predicted_error(self, problem, precisions: Mapping[int, str]) -> float:
        """sqrt(e^2) of a site plan."""
        return math.sqrt(max(sum(self.group_shares(problem, precisions).values()), 0.0))


def solve_cross(problem, model: CrossGroupModel, budget, table=None) -> PlanSolution:
    """Least predicted error with group interactions under `budget` (`solver_pairwise.solve_pairwise`)."""
    return problem.solve(model.errors2, budget, table, pairs=model.pair_matrix)
