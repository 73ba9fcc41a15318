"""The planner as a public object: the precision decision of one model on one target.

    problem = PlanningProblem.from_model("model.onnx", "arm_cpu")     # or PlanningProblem(module, target)
    errors2 = problem.error_table(gains_of(tvm_tqs.score(...)))        # e_g(p)^2 per weight group
    solution = problem.solve(errors2, "size=25%")                      # {site: precision}
    problem.totals(solution.precisions), problem.pareto(errors2)

`tvm_tqs.compile` is this plus quantize, build and the latency feedback loop.
"""

from .groups import WeightGroup, fixed_float_bytes, weight_groups
from .latency import site_latency_table
from .problem import ErrorTable, PlanningProblem, PlanSolution, gains_of
from .site_plans import site_plans

__all__ = [
    "ErrorTable",
    "PlanSolution",
    "PlanningProblem",
    "WeightGroup",
    "fixed_float_bytes",
    "gains_of",
    "site_latency_table",
    "site_plans",
    "weight_groups",
]
