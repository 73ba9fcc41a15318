"""Pairwise-corrected knapsack: feasible, never worse than the plain knapsack's plan under the full objective,
equal to the plain knapsack without pair terms, and it finds the cancellation a plain knapsack cannot see."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_solver import make_groups

from tvm_tqs.solver import Budget, Group, InfeasibleBudgetError, Option, solve, totals_of
from tvm_tqs.solver_pairwise import solve_pairwise


def _flat(groups, choice):
    offsets = np.cumsum([0] + [len(g.options) for g in groups])
    return np.array([offsets[i] + c for i, c in enumerate(choice)])


def full_error(groups, pair, choice) -> float:
    idx = _flat(groups, choice)
    return totals_of(groups, choice)["error"] + float(pair[np.ix_(idx, idx)].sum())


def random_pair(rng, groups):
    """Pair terms of responses that partly cancel or add: r_o . r_q for random response vectors."""
    n = sum(len(g.options) for g in groups)
    scale = np.sqrt(np.array([o.error for g in groups for o in g.options]))
    vecs = rng.normal(size=(n, 4)) * scale[:, None] / 2.0
    pair = vecs @ vecs.T
    offsets = np.cumsum([0] + [len(g.options) for g in groups])
    for a, b in itertools.pairwise(offsets):
        pair[a:b, a:b] = 0.0
    return pair


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 5), frac=st.floats(0.2, 0.9))
def test_pairwise_is_feasible_and_never_worse_than_the_plain_knapsack(seed, n, frac):
    rng = np.random.default_rng(seed)
    groups = make_groups(rng, n)
    pair = random_pair(rng, groups)
    full = totals_of(groups, tuple(0 for _ in groups))
    budget = Budget(size_bytes=full["size_bytes"] * frac)
    try:
        plain = solve(groups, budget, "exact")
    except InfeasibleBudgetError:
        with pytest.raises(InfeasibleBudgetError):
            solve_pairwise(groups, pair, budget)
        return
    sol = solve_pairwise(groups, pair, budget)
    assert sol.totals["size_bytes"] <= budget.size_bytes * (1 + 1e-9)
    assert sol.error == pytest.approx(full_error(groups, pair, sol.choice), rel=1e-9, abs=1e-15)
    assert sol.error <= full_error(groups, pair, plain.choice) + 1e-12
    assert not sol.optimal


def test_without_pair_terms_it_is_the_plain_knapsack():
    rng = np.random.default_rng(3)
    groups = make_groups(rng, 5)
    n = sum(len(g.options) for g in groups)
    budget = Budget(size_bytes=totals_of(groups, (0,) * 5)["size_bytes"] * 0.4)
    assert solve_pairwise(groups, np.zeros((n, n)), budget).choice == solve(groups, budget, "exact").choice


def test_it_takes_the_plan_whose_errors_cancel():
    # Two groups whose int4 residuals cancel through the model (responses r and -r) and a third that adds.
    def group(name, e8, e4):
        return Group(
            name,
            (
                Option("fp32", 0.0, size_bytes=32),
                Option("int8", e8, size_bytes=8),
                Option("int4", e4, size_bytes=4),
            ),
            1.0,
        )

    groups = [group("a", 0.01, 1.0), group("b", 0.01, 1.0), group("c", 0.01, 0.5)]
    pair = np.zeros((9, 9))
    pair[2, 5] = pair[5, 2] = -1.0  # a@int4 . b@int4 = -||r||^2: together they cancel exactly
    budget = Budget(size_bytes=4 + 4 + 32)
    plain = solve(groups, budget, "exact")
    assert [groups[i].options[c].precision for i, c in enumerate(plain.choice)] != ["int4", "int4", "fp32"]
    sol = solve_pairwise(groups, pair, budget)
    assert [groups[i].options[c].precision for i, c in enumerate(sol.choice)] == ["int4", "int4", "fp32"]
    assert sol.error == pytest.approx(0.0, abs=1e-12)
    best = min(
        full_error(groups, pair, c)
        for c in itertools.product(range(3), repeat=3)
        if totals_of(groups, c)["size_bytes"] <= budget.size_bytes
    )
    assert sol.error == pytest.approx(best, abs=1e-12)


def test_pair_matrix_shape_is_checked():
    groups = make_groups(np.random.default_rng(0), 2)
    with pytest.raises(ValueError, match="pair must be"):
        solve_pairwise(groups, np.zeros((2, 2)), Budget(size_bytes=1e9))
