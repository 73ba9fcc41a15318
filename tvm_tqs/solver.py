"""Precision assignment under a budget: multiple-choice knapsack (exact MILP), greedy fallback, Pareto front.

Knows nothing of TVM. The caller turns the fused-op table into `Group`s (sites that share a weight must
take one precision, so they form one group) with one `Option` per allowed precision, each carrying a
predicted error and the resources it uses; `solve` picks one option per group minimising the summed error
subject to every resource limit in the `Budget`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import TQSError

RESOURCES = ("size_bytes", "bit_elements", "bops", "latency_ms")


class InfeasibleBudgetError(TQSError):
    """No assignment meets the budget; the message names the smallest feasible value of each limit."""


@dataclass(frozen=True)
class Budget:
    """Resource limits; any combination, None = unconstrained.

    Parameters
    ----------
    size_bytes : float, optional
        Total weight storage (integers + scales) of the planned sites.
    avg_bits : float, optional
        Element-weighted average weight bit-width over the planned sites.
    bops : float, optional
        Bit operations: sum over sites of MACs x weight bits x activation bits.
    latency_ms : float, optional
        Summed per-site latency predicted or measured on the target.
    """

    size_bytes: float | None = None
    avg_bits: float | None = None
    bops: float | None = None
    latency_ms: float | None = None

    def __post_init__(self):
        for name in ("size_bytes", "avg_bits", "bops", "latency_ms"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise TQSError(f"budget {name} must be a positive finite number, got {value!r}")
        if self.is_empty():
            raise TQSError("a Budget needs at least one of size_bytes, avg_bits, bops, latency_ms")

    def is_empty(self) -> bool:
        return all(getattr(self, n) is None for n in ("size_bytes", "avg_bits", "bops", "latency_ms"))


@dataclass(frozen=True)
class Option:
    """One precision for one group: its predicted error and the resources it uses."""

    precision: str
    error: float
    size_bytes: float = 0.0
    bit_elements: float = 0.0  # weight elements x bits, for the average-bits limit
    bops: float = 0.0
    latency_ms: float = 0.0

    def resource(self, name: str) -> float:
        return float(getattr(self, name))


@dataclass(frozen=True)
class Group:
    """Sites decided together (they share weights), with the options open to them."""

    name: str
    options: tuple[Option, ...]
    elements: float = 0.0  # weight elements, the denominator of avg_bits

    def __post_init__(self):
        if not self.options:
            raise TQSError(f"group '{self.name}' has no precision options")


@dataclass(frozen=True)
class Solution:
    """One option index per group, with totals."""

    choice: tuple[int, ...]
    error: float
    totals: dict = field(hash=False)
    method: str
    optimal: bool

    def precisions(self, groups: list[Group]) -> dict[str, str]:
        return {g.name: g.options[i].precision for g, i in zip(groups, self.choice, strict=True)}


SOLVER_METHODS = ("auto", "exact", "greedy")


def _limits(budget: Budget, groups: list[Group], fixed: dict[str, float] | None = None) -> dict[str, float]:
    """Per-resource limits for the groups: the budget minus what the parts outside the decision use."""
    fixed = fixed or {}
    limits = {}
    if budget.size_bytes is not None:
        limits["size_bytes"] = budget.size_bytes - fixed.get("size_bytes", 0.0)
    if budget.avg_bits is not None:
        limits["bit_elements"] = budget.avg_bits * sum(g.elements for g in groups)
    if budget.bops is not None:
        limits["bops"] = budget.bops - fixed.get("bops", 0.0)
    if budget.latency_ms is not None:
        limits["latency_ms"] = budget.latency_ms - fixed.get("latency_ms", 0.0)
    return limits


def totals_of(groups: list[Group], choice: tuple[int, ...]) -> dict[str, float]:
    opts = [g.options[i] for g, i in zip(groups, choice, strict=True)]
    totals = {r: float(sum(o.resource(r) for o in opts)) for r in RESOURCES}
    totals["error"] = float(sum(o.error for o in opts))
    elements = sum(g.elements for g in groups)
    totals["avg_bits"] = totals["bit_elements"] / elements if elements else 0.0
    return totals


def _tolerance(limit: float) -> float:
    return 1e-9 * max(1.0, abs(limit))


def _check_feasible(
    groups: list[Group], budget: Budget, limits: dict[str, float], fixed: dict[str, float] | None = None
) -> None:
    """Raise with the smallest feasible value of each violated limit taken alone, in whole-model terms
    (`fixed`, what lies outside the decision, added back)."""
    fixed = fixed or {}
    problems = []
    elements = sum(g.elements for g in groups)
    for name, limit in limits.items():
        smallest = sum(min(o.resource(name) for o in g.options) for g in groups)
        if smallest > limit + _tolerance(limit):
            if name == "bit_elements":
                problems.append(
                    f"avg_bits={budget.avg_bits:g} (smallest feasible: {smallest / elements:.4g})"
                )
            else:
                offset = fixed.get(name, 0.0)
                problems.append(f"{name}={limit + offset:.6g} (smallest feasible: {smallest + offset:.6g})")
    if problems:
        raise InfeasibleBudgetError("budget cannot be met: " + "; ".join(problems))


def solve_exact(groups: list[Group], budget: Budget, fixed: dict[str, float] | None = None) -> Solution:
    """Exact multiple-choice knapsack as a 0/1 MILP (HiGHS through scipy.optimize.milp)."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    limits = _limits(budget, groups, fixed)
    _check_feasible(groups, budget, limits, fixed)
    offsets = np.cumsum([0] + [len(g.options) for g in groups])
    n = int(offsets[-1])
    cost = np.array([o.error for g in groups for o in g.options], dtype=np.float64)
    one_each = lil_matrix((len(groups), n))
    for gi in range(len(groups)):
        one_each[gi, offsets[gi] : offsets[gi + 1]] = 1.0
    constraints = [LinearConstraint(one_each.tocsr(), 1.0, 1.0)]
    names = list(limits)
    if names:
        rows = np.array([[o.resource(r) for g in groups for o in g.options] for r in names], dtype=np.float64)
        upper = np.array([limits[r] + _tolerance(limits[r]) for r in names])
        constraints.append(LinearConstraint(rows, -np.inf, upper))
    result = milp(
        cost,
        constraints=constraints,
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
        options={"disp": False, "mip_rel_gap": 0.0},
    )
    if result.status != 0 or result.x is None:
        raise InfeasibleBudgetError(
            f"budget cannot be met by any combination of precisions ({', '.join(f'{k}={v:.6g}' for k, v in limits.items())}); "
            "each limit alone is feasible, so relax one of them"
        )
    x = np.rint(result.x).astype(int)
    choice = tuple(int(np.argmax(x[offsets[i] : offsets[i + 1]])) for i in range(len(groups)))
    return _solution(groups, choice, "exact", True)


def solve_greedy(groups: list[Group], budget: Budget, fixed: dict[str, float] | None = None) -> Solution:
    """Start every group at its lowest-error option; repeatedly take the downgrade with the smallest error
    increase per unit of (normalised) violated resource saved, until every limit holds."""
    limits = _limits(budget, groups, fixed)
    _check_feasible(groups, budget, limits, fixed)
    choice = [int(np.argmin([o.error for o in g.options])) for g in groups]
    while True:
        totals = totals_of(groups, tuple(choice))
        over = {r: totals[r] - lim for r, lim in limits.items() if totals[r] > lim + _tolerance(lim)}
        if not over:
            return _solution(groups, tuple(choice), "greedy", False)
        best = None
        for gi, g in enumerate(groups):
            cur = g.options[choice[gi]]
            for oi, o in enumerate(g.options):
                saved = sum((cur.resource(r) - o.resource(r)) / max(limits[r], 1e-12) for r in over)
                if oi == choice[gi] or saved <= 0:
                    continue
                # Moves must not worsen a limit that already holds past its bound.
                if any(
                    o.resource(r) > cur.resource(r)
                    and totals[r] - cur.resource(r) + o.resource(r) > limits[r]
                    for r in limits
                    if r not in over
                ):
                    continue
                rate = (o.error - cur.error) / saved
                if best is None or rate < best[0]:
                    best = (rate, gi, oi)
        if best is None:
            raise InfeasibleBudgetError(
                "greedy search found no move that meets the budget; use method='exact'"
            )
        choice[best[1]] = best[2]


def solve(
    groups: list[Group],
    budget: Budget,
    method: str = "auto",
    exact_limit: int = 20000,
    fixed: dict[str, float] | None = None,
) -> Solution:
    """Pick one option per group minimising total error under `budget`.

    Parameters
    ----------
    method : {"auto", "exact", "greedy"}
        "auto" is exact unless the problem has more than `exact_limit` binary variables.
    fixed : dict, optional
        Resources (size_bytes, bops, latency_ms) used by the parts of the model outside the decision;
        the budget covers them too, and errors report whole-model values.
    """
    if method not in SOLVER_METHODS:
        raise TQSError(f"solver method must be 'auto', 'exact' or 'greedy', got {method!r}")
    n = sum(len(g.options) for g in groups)
    if method == "greedy" or (method == "auto" and n > exact_limit):
        return solve_greedy(groups, budget, fixed)
    return solve_exact(groups, budget, fixed)


def _solution(groups: list[Group], choice: tuple[int, ...], method: str, optimal: bool) -> Solution:
    totals = totals_of(groups, choice)
    return Solution(choice, totals["error"], totals, method, optimal)


def pareto_front(
    groups: list[Group], resource: str = "size_bytes", points: int = 24, method: str = "auto"
) -> list[Solution]:
    """Error-vs-resource trade-off: solve at `points` budgets from the smallest to the largest useful
    value of `resource`, keep the non-dominated solutions (ascending resource)."""
    if resource not in ("size_bytes", "bops", "latency_ms", "avg_bits"):
        raise TQSError(f"pareto resource must be size_bytes, avg_bits, bops or latency_ms, got {resource!r}")
    key = "bit_elements" if resource == "avg_bits" else resource
    lo = sum(min(o.resource(key) for o in g.options) for g in groups)
    hi = sum(g.options[int(np.argmin([o.error for o in g.options]))].resource(key) for g in groups)
    elements = sum(g.elements for g in groups) or 1.0
    front: list[Solution] = []
    for value in np.linspace(lo, max(hi, lo), points):
        limit = value / elements if resource == "avg_bits" else value
        budget = Budget(**{resource: max(limit, 1e-12)})
        sol = solve(groups, budget, method)
        if not front or sol.error < front[-1].error - 1e-15:
            front.append(sol)
    return front


_SIZE_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_TIME_UNITS = {"ms": 1.0, "us": 1e-3, "s": 1e3}
_BUDGET_KEYS = {
    "size": "size_bytes",
    "avg-bits": "avg_bits",
    "avg_bits": "avg_bits",
    "bops": "bops",
    "latency": "latency_ms",
}


def _number(text: str, key: str, item: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise TQSError(f"budget '{item}': '{text}' is not a number for {key}") from None


def parse_budget(text: str, *, size_ref: float | None = None, bops_ref: float | None = None) -> Budget:
    """Parse the CLI budget form, e.g. ``"size=25%"``, ``"avg-bits=5"``, ``"latency=2ms,size=40kb"``.

    Parameters
    ----------
    text : str
        Comma-separated ``key=value``: ``size`` (bytes, with b/kb/mb/gb/kib/mib/gib, or % of `size_ref`),
        ``avg-bits``, ``bops`` (a count or % of `bops_ref`), ``latency`` (ms, us or s; a bare number is ms).
    size_ref, bops_ref : float, optional
        The all-fp32 totals that percentages refer to.
    """
    values: dict[str, float] = {}
    for item in [s.strip() for s in text.split(",") if s.strip()]:
        key, sep, raw = item.partition("=")
        key, raw = key.strip().lower(), raw.strip().lower()
        if not sep or key not in _BUDGET_KEYS:
            raise TQSError(f"budget '{item}' must be KEY=VALUE with KEY one of size, avg-bits, bops, latency")
        field_name = _BUDGET_KEYS[key]
        if field_name in values:
            raise TQSError(f"budget gives {key} twice")
        if raw.endswith("%"):
            ref = {"size_bytes": size_ref, "bops": bops_ref}.get(field_name)
            if ref is None:
                raise TQSError(f"budget '{item}': a percentage is only meaningful for size and bops")
            value = _number(raw[:-1], key, item) / 100.0 * ref
        elif field_name == "size_bytes":
            unit = next((u for u in sorted(_SIZE_UNITS, key=len, reverse=True) if raw.endswith(u)), "")
            value = _number(raw[: len(raw) - len(unit)] if unit else raw, key, item) * _SIZE_UNITS.get(
                unit, 1
            )
        elif field_name == "latency_ms":
            unit = next((u for u in ("ms", "us", "s") if raw.endswith(u)), "ms")
            value = (
                _number(raw[: len(raw) - len(unit)] if raw.endswith(unit) else raw, key, item)
                * _TIME_UNITS[unit]
            )
        else:
            value = _number(raw, key, item)
        values[field_name] = value
    if not values:
        raise TQSError("empty budget: give at least one of size=, avg-bits=, bops=, latency=")
    return Budget(**values)
