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
PROBE_BATCH = 3  # the isolation probe's batch: row 1 perturbed, rows 0 and 2 watched
# Multiply-adds of one probe run at the scoring batch above which the probe gets a batch-3 twin: its fuse
# and build (seconds) then cost less than the probe runs it replaces (etth1_patchtst6: 1.6e9 per run).
TWIN_MIN_MACS = 5e8


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
        # () -> RowsPath at PROBE_BATCH for the isolation probe (merged sites only; see `build_path`)
        self.isolation = None

    def run(self, contexts, scales, noise, fut, used: Sequence[int] | None = None) -> np.ndarray:
        return self.rollout(contexts, scales, noise, exog=fut)


class CallsPath:
    """Every row is its own call of a rollout compiled at the model's own batch (module docstring).

    In weight mode the module computes each site once on its perturbed constants (``PerturbSites(...,
    select=False)``): a row perturbs exactly the sites its scale row names, so `run` hands each call a
    delta vector holding only their slots (zeros elsewhere: ``W + 0`` is ``W``), which halves the work of
    a module that also computes every site's reference and selects between the two.
    """

    name = "calls"

    def __init__(self, perturbed, spec, horizon: int, method: str, target: str, rows: int):
        from .passes.perturb import perturb_plan_of
        from .rollout import compile_rollout

        self.plan = perturb_plan_of(perturbed)
        self.rollout = compile_rollout(perturbed, spec, horizon, method=method, target=target)
        self.model_batch = self.rollout.batch
        self.batch = rows  # rows per execution: the packing is the rows path's, run one call per row
        self._delta = None  # weight mode: the per-call delta vector and the tensor that shares its memory
        # Unperturbed rollouts by (context, future): every execution repeats its replicates' references,
        # and a row with no site perturbed depends on nothing else (same call, same bits).
        self._references: dict[tuple[bytes, bytes], np.ndarray] = {}

    def run(self, contexts, scales, noise, fut, used: Sequence[int] | None = None) -> np.ndarray:
        """Rows `used` (default all) of the execution, each as one call; other rows of the result are 0."""
        b = self.model_batch
        out = None
        for r in range(len(contexts)) if used is None else sorted(set(used)):
            ctx = np.repeat(contexts[r : r + 1], b, axis=0)
            f = None if fut is None else np.repeat(fut[r : r + 1], b, axis=0)
            key = (contexts[r].tobytes(), b"" if fut is None else fut[r].tobytes())
            if not np.any(scales[r]) and key in self._references:
                y = self._references[key]
            elif self.plan.mode == "weight":
                y = self._run_weight_row(ctx, scales[r], noise, f)
            else:
                y = self.rollout(ctx, scales[r : r + 1], noise[r : r + 1], exog=f)[0]
            if not np.any(scales[r]):
                self._references[key] = y
            if out is None:
                out = np.zeros((len(contexts), *y.shape), y.dtype)
            out[r] = y
        return out

    def _run_weight_row(self, ctx, scale_row: np.ndarray, noise: np.ndarray, fut) -> np.ndarray:
        """One call with the delta slots of the sites `scale_row` selects copied from `noise`."""
        import tvm

        if self._delta is None:
            # Aligned, and wrapped once without a copy: a 20M-parameter model's delta is 80 MB per call.
            raw = np.zeros(noise.size * 4 + 64, np.uint8)
            start = (-raw.ctypes.data) % 64
            buf = raw[start : start + noise.size * 4].view(np.float32)
            self._delta = (buf, tvm.runtime.from_dlpack(buf))
        buf, tensor = self._delta
        slots = [slot for k in np.flatnonzero(scale_row) for slot in self.plan.weights.get(int(k), ())]
        for slot in slots:
            buf[slot.offset : slot.offset + slot.size] = noise[slot.offset : slot.offset + slot.size]
        try:
            return self.rollout(ctx, scale_row[None], tensor, exog=fut)[0]
        finally:
            for slot in slots:
                buf[slot.offset : slot.offset + slot.size] = 0.0


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
            path = RowsPath(perturbed, spec, horizon, method, target)
            run_macs = rows * spec.calls(horizon) * sum(op.macs for op in ops)
            if path.plan.merged and rows > PROBE_BATCH and run_macs >= TWIN_MIN_MACS:
                # The probe's cost is its batch times the rollout's; the leak it looks for is in the graph,
                # not in the batch size, so a batch-3 twin finds it at a fraction of the cost.
                path.isolation = lambda: _rows_twin(
                    proto, input_shapes, PROBE_BATCH, probe, spec, horizon, mode, method, target, sites
                )
            return path, ops, None, probe
    if force == "rows":
        raise TQSError(f"the rows path cannot score this model: {reason}")
    path = calls_path(probe, spec, horizon, mode, method, target, sites, rows, progress)
    return path, ops, reason, probe


def _rows_twin(proto, input_shapes, batch, probe, spec, horizon, mode, method, target, sites) -> RowsPath:
    """The rows path at `batch` rows: the isolation probe's small twin of the scoring module."""
    from .graph import fuse
    from .passes.perturb import PerturbSites, batch_layouts

    mod = fuse(proto, _batch_only(proto, input_shapes, batch), rollout=spec)
    perturbed = PerturbSites(batch_layouts(mod, batch, probe, 1), mode, sites)(mod)
    return RowsPath(perturbed, spec, horizon, method, target)


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
    perturbed = PerturbSites(whole_tensor_layouts(probe), mode, sites, batch=1, select=False)(probe)
    return CallsPath(perturbed, spec, horizon, method, target, rows)
