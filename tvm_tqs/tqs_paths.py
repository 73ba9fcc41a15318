"""How TQS runs the rows of a scoring execution (docs/tqs.md, "Two paths").

A scoring execution is a set of rows: an unperturbed reference rollout per replicate and one perturbed
rollout per (replicate, eps, site). Two paths run them:

- **rows**: the model is compiled at a batch of B rows and every row is a batch row of ONE call of the
  compiled rollout. Needs a re-bindable (symbolic) batch, and sites whose results keep the batch rows
  apart (found by fusing at two batch sizes; merged axes are checked by an isolation probe).
- **calls**: the model is compiled at its own batch (1 for a dynamic batch, the baked one otherwise) and
  every row is its own call of the compiled rollout, each site's result perturbed whole. Works on any
  graph: fixed-batch exports, and graphs whose internals mix batch rows (sequence-first attention).

Both give the same divergence curves for a batch-1 model (the row IS the whole tensor); the calls path
costs one rollout call per row instead of one per B rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .errors import TQSError
from .frontend.load import graph_inputs

MAX_BATCH = 128  # rows per compiled-rollout execution (larger batches only add memory on a 2-core host)


def symbolic_batch(proto) -> bool:
    """True when some input has a symbolic leading (batch) dimension, so the batch can be re-bound."""
    return any((dims := i.type.tensor_type.shape.dim) and dims[0].dim_param for i in graph_inputs(proto))


def _batch_only(proto, input_shapes, batch: int) -> dict:
    """`input_shapes` with every symbolic batch dimension at `batch` (other dims as the user bound them)."""
    shapes = {k: v for k, v in dict(input_shapes or {}).items()}
    for inp in graph_inputs(proto):
        dims = inp.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            shapes[dims[0].dim_param] = batch
            if inp.name in shapes and not isinstance(shapes[inp.name], int):
                shapes[inp.name] = [batch, *list(shapes[inp.name])[1:]]
    return shapes


class RowsPath:
    """Every row is a batch row of one compiled-rollout call (see the module docstring)."""

    name = "rows"

    def __init__(self, perturbed, spec, horizon: int, method: str, target: str):
        from .passes.perturb import perturb_plan_of
        from .rollout import compile_rollout

        self.plan = perturb_plan_of(perturbed)
        self.rollout = compile_rollout(perturbed, spec, horizon, method=method, target=target)
        self.batch = self.plan.batch

    def run(self, contexts, scales, noise, fut, used: Sequence[int] | None = None) -> np.ndarray:
        return self.rollout(contexts, scales, noise, exog=fut)


class CallsPath:
    """Every row is its own call of a rollout compiled at the model's own batch (module docstring)."""

    name = "calls"

    def __init__(self, perturbed, spec, horizon: int, method: str, target: str, rows: int):
        from .passes.perturb import perturb_plan_of
        from .rollout import compile_rollout

        self.plan = perturb_plan_of(perturbed)
        self.rollout = compile_rollout(perturbed, spec, horizon, method=method, target=target)
        self.model_batch = self.rollout.batch
        self.batch = rows  # rows per execution: the packing is the rows path's, run one call per row

    def run(self, contexts, scales, noise, fut, used: Sequence[int] | None = None) -> np.ndarray:
        """Rows `used` (default all) of the execution, each as one call; other rows of the result are 0."""
        b = self.model_batch
        out = None
        weight_mode = self.plan.mode == "weight"
        for r in range(len(contexts)) if used is None else sorted(set(used)):
            ctx = np.repeat(contexts[r : r + 1], b, axis=0)
            f = None if fut is None else np.repeat(fut[r : r + 1], b, axis=0)
            row_noise = noise if weight_mode else noise[r : r + 1]
            y = self.rollout(ctx, scales[r : r + 1], row_noise, exog=f)[0]
            if out is None:
                out = np.zeros((len(contexts), *y.shape), y.dtype)
            out[r] = y
        return out


def build_path(
    proto,
    spec,
    input_shapes,
    *,
    horizon: int,
    mode: str,
    batch: int | None,
    method: str,
    target: str,
    sites: Sequence[int] | None,
    rows_hint: Callable,
    progress: Callable,
    force: str | None = None,
):
    """(path, fused ops, why the calls path was chosen or None, the batch-1 fused module): the rows path
    where the model allows it.

    Parameters
    ----------
    proto : onnx.ModelProto
        The model.
    spec : RolloutSpec
        Its rollout contract.
    input_shapes : mapping or None
        Static values for dynamic dimensions other than the batch.
    horizon, mode, method, target, sites
        As `tvm_tqs.score` takes them.
    batch : int or None
        Rows per execution; None sizes it from `rows_hint`, up to `MAX_BATCH`.
    rows_hint : callable(ops) -> int
        Rows the whole scoring needs, given the fused ops (known only once the model is fused here).
    progress : callable(done, total, what)
        Told when fusing and compiling start.
    force : {"rows", "calls"} or None
        Take this path; "rows" raises `TQSError` where the model cannot take it.
    """
    from .graph import fuse, fused_ops
    from .passes.perturb import PerturbSites, batch_layouts

    progress(0, 1, "fusing")
    dynamic = symbolic_batch(proto)
    probe = fuse(proto, _batch_only(proto, input_shapes, 1) if dynamic else input_shapes, rollout=spec)
    ops = fused_ops(probe)
    rows = int(batch) if batch else max(2, min(MAX_BATCH, rows_hint(ops)))
    if rows < 2:
        raise TQSError(f"batch must be >= 2 (a reference row and a perturbed row), got {batch}")
    reason = None
    if force == "calls":
        reason = "asked for (path='calls')"
    elif not dynamic:
        reason = "the model's batch is fixed in the graph"
    else:
        try:
            mod = fuse(proto, _batch_only(proto, input_shapes, rows), rollout=spec)
            layouts = batch_layouts(mod, rows, probe, 1)
        except (TQSError, ValueError) as err:
            first = str(err).splitlines()[0]
            reason = f"the model does not re-bind to batch {rows} ({first[:200]})"
        else:
            progress(0, 1, "compiling")
            perturbed = PerturbSites(layouts, mode, sites)(mod)
            return RowsPath(perturbed, spec, horizon, method, target), ops, None, probe
    if force == "rows":
        raise TQSError(f"the rows path cannot score this model: {reason}")
    path = calls_path(probe, spec, horizon, mode, method, target, sites, rows, progress)
    return path, ops, reason, probe


def calls_path(probe, spec, horizon, mode, method, target, sites, rows, progress) -> CallsPath:
    """The calls path for `probe`, each site's result (or weights) perturbed whole.

    Parameters
    ----------
    probe : tvm.IRModule
        The model fused at its own batch (the last item `build_path` returns).
    spec, horizon, mode, method, target, sites, progress
        As for `build_path`.
    rows : int
        Rows per execution (the packing is the rows path's; each row is run as its own call).
    """
    from .passes.perturb import PerturbSites, whole_tensor_layouts

    progress(0, 1, "compiling")
    perturbed = PerturbSites(whole_tensor_layouts(probe), mode, sites, batch=1)(probe)
    return CallsPath(perturbed, spec, horizon, method, target, rows)
