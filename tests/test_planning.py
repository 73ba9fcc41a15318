"""The planner as a public object: `PlanningProblem` (and the benchmarks' thin `Planner` over it) plans exactly
what `compile()` plans; the precision registry and compile's validated options."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import tvm_tqs
from tvm_tqs.examples import example_model
from tvm_tqs.options import CompileOptions
from tvm_tqs.planning import PlanningProblem, gains_of
from tvm_tqs.precision import PRECISION_ORDER, PRECISIONS, precision

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "benchmarks" / "zoo" / "models"
MODELS = [example_model(), ZOO / "etth1_tcn.onnx", ZOO / "etth1_dlinear.onnx"]


@pytest.mark.parametrize("path", MODELS, ids=lambda p: Path(p).stem)
def test_problem_plans_what_compile_plans(path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from plan_eval import Planner
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    report = tvm_tqs.score(str(path), horizon=12, seeds=2, mode="weight", linearity=False)
    budget = "size=40%"
    compiled = tvm_tqs.compile(
        str(path), target="x86", budget=budget, tqs_report=report, error_model="independent"
    )

    problem = PlanningProblem.from_model(str(path), "x86")
    errors2 = problem.error_table(gains_of(report))
    solution = problem.solve(errors2, budget)
    assert {
        s: p for s, p in compiled.plan.precisions.items() if s in problem.grouped_sites
    } == solution.precisions
    assert problem.totals(solution.precisions) == compiled.plan.totals
    assert problem.predicted_error(errors2, solution.precisions) == compiled.plan.predicted_error
    assert solution.method == compiled.plan.method and solution.optimal == compiled.plan.optimal
    assert any(p != "fp32" for p in solution.precisions.values())  # the budget forces real choices

    # The benchmarks' group-keyed view is the same plan.
    planner = Planner(path)
    size = problem.budget(budget).size_bytes
    group_plan = planner.solve(planner.errors2(gains_of(report)), size)
    assert planner.site_plan(group_plan) == solution.precisions
    assert planner.size(group_plan) == compiled.plan.totals["size_bytes"]


def test_precision_registry_is_the_one_vocabulary():
    from tvm_tqs.passes.quantize import PRECISIONS as PASS_PRECISIONS
    from tvm_tqs.targets.registry import PRECISIONS as TARGET_PRECISIONS

    assert PRECISION_ORDER == ("fp32", "fp16", "int8", "int4") == PASS_PRECISIONS == TARGET_PRECISIONS
    # storage: 64 channels x 96 reduction elements
    assert precision("fp32").storage_bytes(64 * 96, 64) == 64 * 96 * 4
    assert precision("fp16").storage_bytes(64 * 96, 64) == 64 * 96 * 2
    assert precision("int8").storage_bytes(64 * 96, 64) == 64 * 96 + 64 * 4
    assert precision("int4").storage_bytes(64 * 96, 64) == 64 * 96 / 2 + 64 * 3 * 4  # 3 groups of 32
    assert precision("int4").storage_bytes(64 * 96, 64, group_size=64) == 64 * 96 / 2 + 64 * 2 * 4
    assert PRECISIONS["int8"].bops(10) == 10 * 8 * 8 and PRECISIONS["fp16"].bops(10) == 10 * 16 * 32
    with pytest.raises(tvm_tqs.TQSError, match="precision 'int3' is not one of fp32, fp16, int8, int4"):
        precision("int3")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget": "size=50%", "max_rounds": 0}, "max_rounds must be a positive integer, got 0"),
        ({"plan": {2: "int8"}, "uniform": "int8"}, "either plan= or uniform=, not both"),
        ({"uniform": "int2"}, "uniform precision must be one of"),
        ({}, "needs a budget"),
        ({"budget": "size=50%", "solver": "annealing"}, "solver must be one of auto, exact, greedy"),
        ({"budget": 3.5}, "budget must be a Budget or a string"),
        ({"uniform": "int8", "batch": 0}, "batch must be a positive integer"),
    ],
)
def test_compile_options_refuse_bad_combinations_on_construction(kwargs, message):
    with pytest.raises(tvm_tqs.TQSError, match=message):
        CompileOptions(**kwargs)
    with pytest.raises(tvm_tqs.TQSError, match=message):  # compile() checks before reading the model
        tvm_tqs.compile("/nonexistent/model.onnx", target="x86", **kwargs)


def test_data_free_activations_are_deterministic_and_need_only_the_contract():
    from tvm_tqs.contexts import SyntheticContexts
    from tvm_tqs.planning import activations

    spec = PlanningProblem.from_model(example_model(), "x86").rollout
    a, b = activations.activation_capture(spec), activations.activation_capture(spec)
    np.testing.assert_array_equal(a.windows, b.windows)
    # The start windows are the synthetic family's and nothing else: no data reaches the default path.
    np.testing.assert_array_equal(
        a.windows, SyntheticContexts().make(spec, activations.GRAM_CONTEXTS, seed=0)
    )
    assert a.calls == activations.GRAM_BURN_IN + activations.GRAM_CALLS and a.skip == activations.GRAM_BURN_IN
    assert a.source.startswith("data-free") and a.exog is None
    cal = activations.activation_capture(spec, a.windows[:5])
    assert (cal.calls, cal.skip, cal.source) == (1, 0, "calibration (5 windows)")


def test_data_free_activations_follow_the_models_own_rollout():
    """Rows captured at call j of a Capture are the anchors' inputs on the window the fp32 model's own
    free-running rollout reaches after j calls (`contexts.burn_in`), call after call."""
    from tvm_tqs.contexts import SyntheticContexts, burn_in
    from tvm_tqs.planning.activations import Capture, anchor_rows

    problem = PlanningProblem.from_model(example_model(), "x86", batch=3)
    spec = problem.rollout
    ctx = SyntheticContexts().make(spec, 3, seed=4)
    rows = anchor_rows(problem, Capture(ctx, calls=3, skip=1))
    traj = tvm_tqs.compile(example_model(), target="x86", uniform="fp32", batch=3).rollout(
        ctx, 2 * spec.stride
    )
    moved = [anchor_rows(problem, burn_in(spec, ctx, traj[:, : j * spec.stride])) for j in (1, 2)]
    for site, got in rows.items():
        want = np.concatenate([m[site] for m in moved])
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    # ... and differ from the synthetic windows' own rows: the trajectory moved them.
    first = anchor_rows(problem, ctx)
    assert not any(np.allclose(rows[s][: len(first[s])], first[s]) for s in rows)
