"""XGBoost latency model: predicts the latency of (site, precision, target) pairs that were not measured.

Features (`encode`, one row per `KernelFeatures`):

=====================  ==========================================================================
numeric                log1p of: MACs, input / weight / output / total / largest tensor elements,
                       MACs x bits, weight bytes at the precision, innermost output extent, and the
                       TIR work of the site (`jobs.tir_stats`: block iterations, reduction
                       iterations, loads, transcendental calls); counts of inputs, weights,
                       outputs, fused op kinds, blocks; largest rank; bits
precision              one-hot over fp32, fp16, int8, int4 (plus bits above)
target                 one-hot of the target family (x86, arm_cpu, cuda, opencl) and of the target
                       names seen in training
op kinds               multi-hot over the op kinds seen in training (``matmul``, ``add``, ``erf``, ...)
=====================  ==========================================================================

The model predicts log latency as a log-linear base law plus an XGBoost correction:
``log t = b . [1, log1p(MACs), log1p(elements), log1p(iters), log1p(loads), log1p(transcendentals)]
+ xgb(features)`` (the base law by ridge regression, the trees on its residuals). Trees alone cannot
extrapolate (a kernel twice as big as any measured would be predicted as the biggest measured);
the base law carries the scaling, the trees learn what it misses (op kinds, precision, layout).

Its error is reported by K-fold cross-validation on the training points (`ModelError`): each point is
predicted by a model that did not see it; the median absolute percentage error (MdAPE) is the
headline number. Identical feature rows (one kernel at many sites, or measured twice) are merged
first so that no point is "predicted" from its own copy. Fitting is deterministic for a given seed
(single-threaded exact tree method, no row or column subsampling).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from tvm_tqs.precision import precision
from tvm_tqs.targets.registry import PRECISIONS, registry

from .jobs import KernelFeatures, Measurement

__all__ = ["LatencyModel", "ModelError", "encode"]

_BITS = {name: precision(name).bits for name in PRECISIONS}
_FAMILIES = ("x86", "arm_cpu", "cuda", "opencl")
_NUMERIC = (
    "log_macs",
    "log_in",
    "log_w",
    "log_out",
    "log_total",
    "log_max",
    "log_macs_bits",
    "log_w_bytes",
    "log_inner",
    "log_iters",
    "log_reduce_iters",
    "log_loads",
    "log_transcendentals",
    "n_in",
    "n_w",
    "n_out",
    "n_kinds",
    "n_blocks",
    "max_rank",
    "bits",
)


def _elems(shapes) -> int:
    return int(sum(int(np.prod(s, dtype=np.int64)) for s in shapes))


def _numeric(f: KernelFeatures) -> list[float]:
    bits = _BITS.get(f.precision, 32)
    shapes = list(f.inputs) + list(f.weights) + list(f.outputs)
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes] or [0]
    inner = max((s[-1] for s in f.outputs if len(s)), default=1)
    w = _elems(f.weights)
    return [
        np.log1p(f.macs),
        np.log1p(_elems(f.inputs)),
        np.log1p(w),
        np.log1p(_elems(f.outputs)),
        np.log1p(sum(sizes)),
        np.log1p(max(sizes)),
        np.log1p(f.macs * bits),
        np.log1p(w * bits / 8),
        np.log1p(inner),
        np.log1p(f.iters),
        np.log1p(f.reduce_iters),
        np.log1p(f.loads),
        np.log1p(f.transcendentals),
        len(f.inputs),
        len(f.weights),
        len(f.outputs),
        len(f.kinds),
        f.blocks,
        max((len(s) for s in shapes), default=0),
        bits,
    ]


def _family(target: str) -> str:
    spec = registry().get(target)
    return spec.kind if spec is not None else target.split("/", 1)[0]


def encode(features: Sequence[KernelFeatures], kinds: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """Feature matrix (rows = kernels) over the given op-kind and target vocabularies."""
    rows = []
    for f in features:
        row = _numeric(f)
        row += [float(f.precision == p) for p in PRECISIONS]
        fam = _family(f.target)
        row += [float(fam == k) for k in _FAMILIES]
        row += [float(f.target == t) for t in targets]
        present = set(f.kinds)
        row += [float(k in present) for k in kinds]
        rows.append(row)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)


def feature_names(kinds: Sequence[str], targets: Sequence[str]) -> list[str]:
    return (
        list(_NUMERIC)
        + [f"prec={p}" for p in PRECISIONS]
        + [f"family={k}" for k in _FAMILIES]
        + [f"target={t}" for t in targets]
        + [f"kind={k}" for k in kinds]
    )


def _base_design(features: Sequence[KernelFeatures]) -> np.ndarray:
    rows = [
        [
            1.0,
            np.log1p(f.macs),
            np.log1p(_elems(f.inputs) + _elems(f.weights) + _elems(f.outputs)),
            np.log1p(f.iters),
            np.log1p(f.loads),
            np.log1p(f.transcendentals),
        ]
        for f in features
    ]
    return np.asarray(rows, dtype=np.float64).reshape(len(features), 6)


@dataclass(frozen=True)
class ModelError:
    """Cross-validated error of the latency model (absolute percentage errors of held-out points).

    `mdape` is the headline (median APE); `within_25` the fraction of points predicted within 25 %.
    """

    n: int
    folds: int
    mdape: float
    mape: float
    p90_ape: float
    within_25: float
    rmse_log: float

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"MdAPE {100 * self.mdape:.1f}% (mean {100 * self.mape:.1f}%, p90 {100 * self.p90_ape:.1f}%, "
            f"{100 * self.within_25:.0f}% within 25%) over {self.n} distinct kernels, {self.folds}-fold CV"
        )


def merge_duplicates(features: Sequence[KernelFeatures], latencies: Sequence[float]):
    """One point per distinct feature row (median latency): the same kernel seen twice is one point."""
    groups: dict[str, list] = defaultdict(list)
    first: dict[str, KernelFeatures] = {}
    for f, t in zip(features, latencies, strict=True):
        key = json.dumps(f.to_dict(), sort_keys=True)
        groups[key].append(float(t))
        first.setdefault(key, f)
    keys = list(groups)
    return [first[k] for k in keys], np.asarray([np.median(groups[k]) for k in keys], dtype=np.float64)


class LatencyModel:
    """Latency predictor fitted on measured kernels.

    Parameters
    ----------
    seed : int
        XGBoost seed and CV fold shuffling.
    n_estimators, max_depth, learning_rate : XGBoost settings (small trees: tens to thousands of points).
    folds : int
        K of the K-fold cross-validation (capped at the number of points).
    min_points_for_trees : int
        Below this many distinct points only the base law is fitted (trees would memorise).
    """

    def __init__(
        self,
        seed: int = 0,
        n_estimators: int = 200,
        max_depth: int = 3,
        learning_rate: float = 0.05,
        folds: int = 5,
        min_points_for_trees: int = 8,
    ):
        self.seed = seed
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.folds = folds
        self.min_points_for_trees = min_points_for_trees
        self.kinds: list[str] = []
        self.targets: list[str] = []
        self.precisions: list[str] = []
        self.error: ModelError | None = None
        self.n_train = 0
        self._base = None
        self._booster = None

    # -- fitting -------------------------------------------------------------------------------
    def fit(
        self, features: Sequence[KernelFeatures], latencies_ms: Sequence[float], cross_validate: bool = True
    ) -> LatencyModel:
        """Fit on measured points (latencies in ms, > 0); cross-validate first when asked and possible."""
        feats, lat = merge_duplicates(features, latencies_ms)
        if len(feats) == 0:
            raise ValueError("the latency model needs at least one measured kernel")
        if np.any(~np.isfinite(lat)) or np.any(lat <= 0):
            raise ValueError("latencies must be positive and finite")
        self.kinds = sorted({k for f in feats for k in f.kinds})
        self.targets = sorted({f.target for f in feats})
        self.precisions = sorted({f.precision for f in feats})
        self.n_train = len(feats)
        y = np.log(lat)
        if cross_validate and len(feats) >= 4:
            self.error = self._cross_validate(feats, y)
        self._base, self._booster = self._fit_arrays(feats, y)
        return self

    @classmethod
    def from_measurements(cls, measurements: Sequence[Measurement], **kwargs) -> LatencyModel:
        """Fit on the successful kernel measurements that carry features."""
        usable = [m for m in measurements if m.ok and m.features is not None]
        return cls(**kwargs).fit([m.features for m in usable], [m.median_ms for m in usable])

    def _fit_arrays(self, feats, y):
        design = _base_design(feats)
        # Small ridge: stable with few points or collinear columns (all MACs zero, say).
        reg = 1e-2 * np.eye(design.shape[1])
        reg[0, 0] = 0.0
        base = np.linalg.solve(design.T @ design + reg, design.T @ y)
        resid = y - design @ base
        if len(feats) < self.min_points_for_trees:
            return base, None
        import xgboost as xgb

        dtrain = xgb.DMatrix(encode(feats, self.kinds, self.targets), label=resid)
        params = {
            "objective": "reg:squarederror",
            "eta": self.learning_rate,
            "max_depth": self.max_depth,
            "min_child_weight": 1.0,
            "subsample": 1.0,
            "colsample_bytree": 1.0,
            "lambda": 1.0,
            "tree_method": "exact",
            "nthread": 1,
            "seed": self.seed,
            "verbosity": 0,
        }
        booster = xgb.train(params, dtrain, num_boost_round=self.n_estimators)
        return base, booster

    def _predict_log(self, feats, base, booster) -> np.ndarray:
        out = _base_design(feats) @ base
        if booster is not None:
            import xgboost as xgb

            out = out + booster.predict(xgb.DMatrix(encode(feats, self.kinds, self.targets)))
        return out

    def _cross_validate(self, feats, y) -> ModelError:
        n = len(feats)
        k = min(self.folds, n)
        order = np.random.default_rng(self.seed).permutation(n)
        pred = np.empty(n)
        for fold in range(k):
            test = order[fold::k]
            train = np.setdiff1d(order, test)
            sub = [feats[i] for i in train]
            base, booster = self._fit_arrays(sub, y[train])
            pred[test] = self._predict_log([feats[i] for i in test], base, booster)
        ape = np.abs(np.exp(pred - y) - 1.0)
        return ModelError(
            n=n,
            folds=k,
            mdape=float(np.median(ape)),
            mape=float(np.mean(ape)),
            p90_ape=float(np.percentile(ape, 90)),
            within_25=float(np.mean(ape <= 0.25)),
            rmse_log=float(np.sqrt(np.mean((pred - y) ** 2))),
        )

    # -- predicting ----------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self._base is not None

    def predict(self, features: Sequence[KernelFeatures]) -> np.ndarray:
        """Predicted latencies (ms) of the given kernels."""
        if not self.fitted:
            raise RuntimeError("LatencyModel.predict before fit")
        if len(features) == 0:
            return np.zeros(0)
        return np.exp(self._predict_log(list(features), self._base, self._booster))

    def covers(self, f: KernelFeatures) -> bool:
        """Whether the training data had this target and precision (else the prediction is a guess
        from other precisions/targets; tables flag such entries)."""
        return f.target in self.targets and f.precision in self.precisions

    def summary(self) -> dict:
        return {
            "n_train": self.n_train,
            "uses_trees": self._booster is not None,
            "targets": self.targets,
            "precisions": self.precisions,
            "error": self.error.to_dict() if self.error else None,
        }
