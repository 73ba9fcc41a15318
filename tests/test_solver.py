"""Budget solver: the exact MILP equals brute force, greedy is feasible, infeasibility names the minimum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_tqs.errors import TQSError
from tvm_tqs.solver import Budget, Group, InfeasibleBudgetError, Option, pareto_front, solve, totals_of

BITS = {"fp32": 32, "int8": 8, "int4": 4}


def make_groups(rng, n):
    groups = []
    for i in range(n):
        elements = float(rng.integers(10, 1000))
        macs = elements * rng.integers(1, 8)
        gain = rng.uniform(0.01, 10)
        options = tuple(
            Option(
                p,
                error=0.0 if p == "fp32" else gain * 4.0 ** (-b / 2 + 1) * rng.uniform(0.5, 1.5),
                size_bytes=elements * b / 8,
                bit_elements=elements * b,
                bops=macs * b * min(b, 8),
                latency_ms=macs * (b / 32) * 1e-3 + rng.uniform(0, 1e-3),
            )
            for p, b in BITS.items()
        )
        groups.append(Group(f"g{i}", options, elements))
    return groups


def brute_force(groups, budget):
    best = None
    for choice in itertools.product(*[range(len(g.options)) for g in groups]):
        t = totals_of(groups, choice)
        ok = all(
            [
                budget.size_bytes is None or t["size_bytes"] <= budget.size_bytes * (1 + 1e-9),
                budget.avg_bits is None or t["avg_bits"] <= budget.avg_bits * (1 + 1e-9),
                budget.bops is None or t["bops"] <= budget.bops * (1 + 1e-9),
                budget.latency_ms is None or t["latency_ms"] <= budget.latency_ms * (1 + 1e-9),
            ]
        )
        if ok and (best is None or t["error"] < best - 1e-12):
            best = t["error"]
    return best


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 6),
    frac=st.floats(0.15, 1.0),
    kind=st.sampled_from(["size", "bits", "bops", "latency", "size+latency"]),
)
def test_exact_equals_brute_force_and_greedy_is_feasible(seed, n, frac, kind):
    rng = np.random.default_rng(seed)
    groups = make_groups(rng, n)
    full = totals_of(groups, tuple(0 for _ in groups))  # all fp32
    budget = {
        "size": Budget(size_bytes=full["size_bytes"] * frac),
        "bits": Budget(avg_bits=32 * frac),
        "bops": Budget(bops=full["bops"] * frac),
        "latency": Budget(latency_ms=full["latency_ms"] * frac),
        "size+latency": Budget(
            size_bytes=full["size_bytes"] * frac, latency_ms=full["latency_ms"] * min(1, frac * 2)
        ),
    }[kind]
    expected = brute_force(groups, budget)
    if expected is None:
        with pytest.raises(InfeasibleBudgetError):
            solve(groups, budget, "exact")
        return
    exact = solve(groups, budget, "exact")
    assert exact.optimal and exact.error == pytest.approx(expected, rel=1e-9, abs=1e-12)
    greedy = solve(groups, budget, "greedy")
    assert greedy.error >= exact.error - 1e-12
    assert brute_force(groups, budget) is not None
    for sol in (exact, greedy):
        t = sol.totals
        assert budget.size_bytes is None or t["size_bytes"] <= budget.size_bytes * (1 + 1e-9)
        assert budget.latency_ms is None or t["latency_ms"] <= budget.latency_ms * (1 + 1e-9)


def test_infeasible_names_smallest_feasible_value():
    groups = make_groups(np.random.default_rng(0), 3)
    smallest = sum(g.elements * 4 / 8 for g in groups)
    with pytest.raises(InfeasibleBudgetError, match=rf"size_bytes=1 \(smallest feasible: {smallest:.6g}\)"):
        solve(groups, Budget(size_bytes=1.0))
    with pytest.raises(InfeasibleBudgetError, match=r"avg_bits=2 \(smallest feasible: 4\)"):
        solve(groups, Budget(avg_bits=2))


def test_budget_validation():
    with pytest.raises(TQSError, match="at least one of"):
        Budget()
    with pytest.raises(TQSError, match="size_bytes must be a positive finite number"):
        Budget(size_bytes=-1)


def test_pareto_front_is_monotone():
    groups = make_groups(np.random.default_rng(1), 8)
    front = pareto_front(groups, "size_bytes", points=12)
    sizes = [s.totals["size_bytes"] for s in front]
    errors = [s.error for s in front]
    assert sizes == sorted(sizes) and errors == sorted(errors, reverse=True)
    assert errors[-1] == pytest.approx(0.0)  # the largest budget affords fp32 everywhere


def test_large_problem_uses_greedy_automatically():
    groups = make_groups(np.random.default_rng(2), 50)
    full = totals_of(groups, tuple(0 for _ in groups))
    sol = solve(groups, Budget(size_bytes=full["size_bytes"] * 0.3), exact_limit=100)
    assert sol.method == "greedy" and sol.totals["size_bytes"] <= full["size_bytes"] * 0.3 * (1 + 1e-9)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("size=25%", Budget(size_bytes=250.0)),
        ("size=40kb", Budget(size_bytes=40_000.0)),
        ("size=2KiB", Budget(size_bytes=2048.0)),
        ("avg-bits=5", Budget(avg_bits=5.0)),
        ("latency=2ms", Budget(latency_ms=2.0)),
        ("latency=500us", Budget(latency_ms=0.5)),
        ("latency=0.25", Budget(latency_ms=0.25)),
        ("bops=50%, latency=1s", Budget(bops=5000.0, latency_ms=1000.0)),
    ],
)
def test_parse_budget(text, expected):
    from tvm_tqs.solver import parse_budget

    assert parse_budget(text, size_ref=1000.0, bops_ref=10_000.0) == expected


@pytest.mark.parametrize(
    "text, match",
    [
        ("speed=3", "KEY one of size, avg-bits, bops, latency"),
        ("size=lots", "'lots' is not a number for size"),
        ("avg-bits=50%", "percentage is only meaningful for size and bops"),
        ("size=1kb,size=2kb", "gives size twice"),
        ("", "empty budget"),
    ],
)
def test_parse_budget_errors(text, match):
    from tvm_tqs.solver import parse_budget

    with pytest.raises(TQSError, match=match):
        parse_budget(text, size_ref=1000.0, bops_ref=10_000.0)


def test_fixed_parts_count_against_the_budget_and_errors_speak_whole_model_terms():
    groups = make_groups(np.random.default_rng(3), 3)
    smallest = sum(g.elements * 4 / 8 for g in groups)
    fixed = {"size_bytes": 1000.0}
    sol = solve(groups, Budget(size_bytes=1000.0 + smallest), fixed=fixed)
    assert sol.totals["size_bytes"] <= smallest * (1 + 1e-9)
    with pytest.raises(
        InfeasibleBudgetError, match=rf"size_bytes=1001 \(smallest feasible: {1000 + smallest:.6g}\)"
    ):
        solve(groups, Budget(size_bytes=1001.0), fixed=fixed)
