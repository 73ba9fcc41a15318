"""tvm_tqs: trajectory-sensitivity-driven mixed-precision quantization of time-series forecasters on TVM."""

from .errors import MissingShapeError, ModelLoadError, RolloutSpecError, TQSError, UnsupportedOpsError
from .frontend import load
from .graph import FusedOp, inspect
from .rollout import RolloutSpec
from .tqs import TQSReport, score

__version__ = "0.1.0"

__all__ = [
    "FusedOp",
    "MissingShapeError",
    "ModelLoadError",
    "RolloutSpec",
    "RolloutSpecError",
    "TQSError",
    "TQSReport",
    "UnsupportedOpsError",
    "inspect",
    "load",
    "score",
]
