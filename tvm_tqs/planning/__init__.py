"""The planner as a public object: the precision decision of one model on one target.

    problem = PlanningProblem.from_model("model.onnx", "arm_cpu")     # or PlanningProblem(module, target)
    errors2 = problem.error_table(gains_of(tvm_tqs.score(...)))        # e_g(p)^2 per weight group
    solution = problem.solve(errors2, "size=25%")                      # {site: precision}
    problem.totals(solution.precisions), problem.pareto(errors2)

With group interactions (recurrences, residual streams) measured from the rollout's responses to each
group's real quantization residual:

    model = CrossGroupModel.build(problem, residual_responses(problem), activation2)
    solution = solve_cross(problem, model, "size=25%")

`tvm_tqs.compile` is this plus quantize, build and the latency feedback loop.
"""

from .cross_model import CrossGroupModel, residual_probes, residual_responses, solve_cross
from .groups import WeightGroup, fixed_float_bytes, weight_groups
from .latency import site_latency_table
from .problem import ErrorTable, PlanningProblem, PlanSolution, gains_of
from .signals import sqnr_table
from .site_plans import site_plans

__all__ = [
    "CrossGroupModel",
    "ErrorTable",
    "PlanSolution",
    "PlanningProblem",
    "WeightGroup",
    "fixed_float_bytes",
    "gains_of",
    "residual_probes",
    "residual_responses",
    "site_latency_table",
    "site_plans",
    "solve_cross",
    "sqnr_table",
    "weight_groups",
]
