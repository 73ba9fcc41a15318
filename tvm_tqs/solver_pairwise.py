"""Multiple-choice knapsack with pairwise error terms between the options of different groups.

The error of a choice is ``sum_g error(g, i_g) + sum_{g != h} P[o(g, i_g), o(h, i_h)]`` (P symmetric, options
numbered group-major as in `solver.solve_exact`; blocks within one group are ignored). With P = 0 it is the
plain knapsack. Quadratic choice problems are NP-hard and HiGHS takes no quadratic objective, so this is a
local search: start from the exact knapsack on the option errors alone (and from the cheapest choice), then
take the best improving move that keeps every limit, changing one group or two groups at once (a pair move
trades resources between groups at a tight budget), until none improves. Not proven optimal; the
`Solution` says so.
"""

from __future__ import annotations

import numpy as np

from .solver import (
    RESOURCES,
    Budget,
    Group,
    Solution,
    _check_feasible,
    _limits,
    _solution,
    _tolerance,
    solve_exact,
)

MAX_MOVES = 10_000  # a guard only: every move strictly lowers the objective


def _objective(err: np.ndarray, pair: np.ndarray, idx: np.ndarray) -> float:
    return float(err[idx].sum() + pair[np.ix_(idx, idx)].sum())


def _descend(err, pair, res, limit, offsets, idx: np.ndarray) -> np.ndarray:
    """Steepest descent over one- and two-group moves from the feasible choice `idx` (option numbers)."""
    n_groups = len(offsets) - 1
    group_of = np.repeat(np.arange(n_groups), np.diff(offsets))
    for _ in range(MAX_MOVES):
        field = pair[:, idx].sum(axis=1)  # per option: its pair terms with the current choice
        cur = idx[group_of]  # the current option of each option's group
        # cost change of switching to option o (within-group blocks of `pair` are zero)
        single = err - err[cur] + 2.0 * (field - field[cur])
        used = res[:, idx].sum(axis=1)
        spare = limit - used  # [R]
        dres = res - res[:, cur]  # [R, N]
        ok1 = np.all(dres <= spare[:, None], axis=0)
        best, move = -1e-15 * max(1.0, abs(_objective(err, pair, idx))), None
        cand = np.where(ok1 & (single < best))[0]
        if len(cand):
            o = cand[np.argmin(single[cand])]
            best, move = single[o], (o,)
        # pairs (o in group g, q in group h, g < h)
        cross = pair - pair[:, cur] - pair[cur, :] + pair[np.ix_(cur, cur)]
        delta = single[:, None] + single[None, :] + 2.0 * cross
        same = group_of[:, None] >= group_of[None, :]
        fits = np.all(dres[:, :, None] + dres[:, None, :] <= spare[:, None, None], axis=0)
        delta = np.where(same | ~fits, np.inf, delta)
        o, q = np.unravel_index(np.argmin(delta), delta.shape)
        if delta[o, q] < best:
            move = (o, q)
        if move is None:
            return idx
        for o in move:
            idx = idx.copy()
            idx[group_of[o]] = o
    return idx


def solve_pairwise(
    groups: list[Group], pair: np.ndarray, budget: Budget, fixed: dict[str, float] | None = None
) -> Solution:
    """Least ``option errors + pairwise terms`` under `budget` (local search, see the module docstring).

    Parameters
    ----------
    groups : list of Group
        As for `solver.solve`; ``Option.error`` is each option's error taken alone.
    pair : ndarray [N, N]
        Pairwise terms between options (N = all options, group-major); symmetric.
    budget, fixed
        As for `solver.solve`.
    """
    limits = _limits(budget, groups, fixed)
    _check_feasible(groups, budget, limits, fixed)
    offsets = np.cumsum([0] + [len(g.options) for g in groups])
    n = int(offsets[-1])
    pair = np.array(pair, dtype=np.float64)
    if pair.shape != (n, n):
        raise ValueError(f"pair must be [{n}, {n}] for these groups, got {list(pair.shape)}")
    for a, b in zip(offsets[:-1], offsets[1:], strict=True):
        pair[a:b, a:b] = 0.0
    err = np.array([o.error for g in groups for o in g.options], dtype=np.float64)
    names = [r for r in RESOURCES if r in limits]
    res = np.array([[o.resource(r) for g in groups for o in g.options] for r in names]).reshape(len(names), n)
    limit = np.array([limits[r] + _tolerance(limits[r]) for r in names])
    starts = [np.array([offsets[i] + c for i, c in enumerate(solve_exact(groups, budget, fixed).choice)])]
    cheapest = np.array(
        [offsets[i] + int(np.argmin([o.resource(names[0]) for o in g.options])) for i, g in enumerate(groups)]
    ) if names else None  # fmt: skip
    if cheapest is not None and np.all(res[:, cheapest].sum(axis=1) <= limit):
        starts.append(cheapest)
    finals = [_descend(err, pair, res, limit, offsets, s) for s in starts]
    idx = min(finals, key=lambda i: _objective(err, pair, i))
    choice = tuple(int(o - offsets[g]) for g, o in enumerate(idx))
    sol = _solution(groups, choice, "pairwise local search", False)
    total = _objective(err, pair, idx)
    return Solution(sol.choice, total, sol.totals | {"error": total}, sol.method, False)
