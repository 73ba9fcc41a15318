"""tvm_tqs: trajectory-sensitivity-driven mixed-precision quantization of time-series forecasters on TVM."""

from .artifact import CompiledModel
from .compiler import compile
from .errors import MissingShapeError, ModelLoadError, RolloutSpecError, TQSError, UnsupportedOpsError
from .frontend import load
from .graph import FusedOp, inspect
from .plan import Plan, SitePlan
from .rollout import RolloutSpec
from .solver import Budget, InfeasibleBudgetError
from .tqs import TQSReport, score

__version__ = "0.1.0"

__all__ = [
    "Budget",
    "CompiledModel",
    "FusedOp",
    "InfeasibleBudgetError",
    "MissingShapeError",
    "ModelLoadError",
    "Plan",
    "RolloutSpec",
    "RolloutSpecError",
    "SitePlan",
    "TQSError",
    "TQSReport",
    "UnsupportedOpsError",
    "compile",
    "inspect",
    "load",
    "score",
]
