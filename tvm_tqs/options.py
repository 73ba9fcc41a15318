"""`compile()`'s options as one frozen, validated object: bad combinations fail on construction, by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import TQSError
from .precision import INT4_GROUP, PRECISION_ORDER, PRECISIONS
from .quantizers import QUANTIZERS, rtn
from .solver import SOLVER_METHODS, Budget
from .tqs import MAX_HORIZON, MAX_SEEDS

Progress = Callable[[int, int, str], None]
ERROR_MODELS = ("cross", "independent")  # docs/error_model.md


@dataclass(frozen=True)
class CompileOptions:
    """Everything `tvm_tqs.compile` takes besides the model (see its docstring for each option)."""

    target: str = "arm_cpu"
    budget: Budget | str | None = None
    plan: Mapping[int, str] | None = None
    uniform: str | None = None
    input_shapes: Mapping | None = None
    batch: int = 1
    rollout: Any = None
    horizon: int = 96
    seeds: int = 8
    contexts: np.ndarray | None = None
    tqs_report: Any = None
    runner: Any = None
    quantizer: Callable | str = rtn
    calibration: np.ndarray | None = None
    group_size: int = INT4_GROUP
    solver: str = "auto"
    error_model: str = "cross"
    max_rounds: int = 3
    latency_cache: Any = None
    progress: Progress | None = None

    def __post_init__(self):
        if self.plan is not None and self.uniform is not None:
            raise TQSError("compile() takes either plan= or uniform=, not both")
        if self.plan is not None and not isinstance(self.plan, Mapping):
            raise TQSError(f"plan must be a mapping {{site: precision}}, not {type(self.plan).__name__}")
        if self.uniform is not None and self.uniform not in PRECISIONS:
            raise TQSError(
                f"uniform precision must be one of {', '.join(PRECISION_ORDER)}, got {self.uniform!r}"
            )
        if self.plan is None and self.uniform is None and self.budget is None:
            raise TQSError("compile() needs a budget (or a forced plan= / uniform= precision)")
        if self.budget is not None and not isinstance(self.budget, (Budget, str)):
            raise TQSError(
                f"budget must be a Budget or a string like 'size=25%', got {type(self.budget).__name__}"
            )
        if isinstance(self.quantizer, str) and self.quantizer not in QUANTIZERS:
            raise TQSError(
                f"quantizer must be one of {', '.join(QUANTIZERS)} or a callable, got {self.quantizer!r}"
            )
        if not isinstance(self.quantizer, str) and not callable(self.quantizer):
            raise TQSError(f"quantizer must be a name or a callable, got {type(self.quantizer).__name__}")
        if self.calibration is not None and self.quantizer not in ("bitsplit", "modcap"):
            raise TQSError(
                "calibration= windows are for quantizer='bitsplit' or 'modcap' (their activations); "
                "other quantizers read none"
            )
        if self.quantizer == "modcap" and self.calibration is None:
            # measured: joint corrections fitted on synthetic contexts raised rollout error 3-4x (dlinear)
            raise TQSError(
                "quantizer='modcap' needs calibration= windows ([N, lookback, channels]); without real data "
                "use quantizer='bitsplit'"
            )
        if self.solver not in SOLVER_METHODS:
            raise TQSError(f"solver must be one of {', '.join(SOLVER_METHODS)}, got {self.solver!r}")
        if self.error_model not in ERROR_MODELS:
            raise TQSError(f"error_model must be one of {', '.join(ERROR_MODELS)}, got {self.error_model!r}")
        for name in ("batch", "horizon", "seeds", "max_rounds", "group_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise TQSError(f"compile() option {name} must be a positive integer, got {value!r}")
        for name, most in (("horizon", MAX_HORIZON), ("seeds", MAX_SEEDS)):
            if getattr(self, name) > most:
                raise TQSError(f"compile() option {name} must be <= {most}, got {getattr(self, name)}")
        if self.tqs_report is not None and getattr(self.tqs_report, "mode", "weight") != "weight":
            raise TQSError(
                f"tqs_report must be a weight-mode report (tvm_tqs.score(mode='weight')), got mode {self.tqs_report.mode!r}"
            )

    @property
    def forced(self) -> bool:
        """A plan given outright (plan= or uniform=): no TQS, no solver."""
        return self.plan is not None or self.uniform is not None
