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
costs one rollout call per row instead of one per B rows. Its rows are independent calls, so they run side
by side on `workers()` threads, each with its own VM on the same built module (the kernels are
single-threaded and the VM releases the GIL): the same bits as one after the other.
"""

from __future__ import annotations

import copy
import os
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .errors import TQSError
from .frontend.load import graph_inputs

MAX_BATCH = 128  # rows per compiled-rollout execution (larger batches only add memory on a 2-core host)
PROBE_BATCH = 3  # the isolation probe's batch: row 1 perturbed, rows 0 and 2 watched
# Multiply-adds of one probe run at the scoring batch above which the probe gets a batch-3 twin: its fuse
# and build (seconds) then cost less than the probe runs it replaces (etth1_patchtst6: 1.6e9 per run).
TWIN_MIN_MACS = 5e8
MAX_WORKERS = 8  # threads running rollout calls side by side (each holds a VM and, in weight mode, a delta)
WORKERS_ENV = "TVM_TQS_WORKERS"


def workers() -> int:
    """Rollout calls run side by side: one per core this process may use (``$TVM_TQS_WORKERS`` overrides)."""
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env:
        try:
            return max(1, min(int(env), MAX_WORKERS))
        except ValueError:
            raise TQSError(f"{WORKERS_ENV} must be an integer, got {env!r}") from None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def clone_rollout(rollout):
    """Another handle on the same built rollout with a VM of its own (a VM runs one call at a time)."""
    from tvm import relax

    from .rollout import ROLLOUT_FUNC

    twin = copy.copy(rollout)
    twin.vm = relax.VirtualMachine(rollout.executable, rollout.device)
    twin._fn = twin.vm[ROLLOUT_FUNC]
    return twin


class Handles:
    """What each concurrent job needs of its own (a rollout VM, a delta buffer), made on demand by
    ``make(i)`` for the i-th worker and reused by later jobs."""

    def __init__(self, make: Callable):
        self.make, self.free, self.made = make, queue.SimpleQueue(), 0

    def map(self, fn: Callable, jobs: Sequence) -> list:
        """``[fn(handle, job) for job in jobs]``, up to `workers()` at a time, results in job order."""
        n = min(workers(), len(jobs))
        while self.made < n:
            self.free.put(self.make(self.made))
            self.made += 1

        def one(job):
            handle = self.free.get()
            try:
                return fn(handle, job)
            finally:
                self.free.put(handle)

        if n <= 1:
            return [one(job) for job in jobs]
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, jobs))


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
        # A batch-3 twin stands in for the scoring module until the isolation probe has run on it
        # (`build_path`): () -> (the rows path at the scoring batch, or None and why not).
        self.deferred: Callable | None = None
        self.scoring_batch = self.batch  # rows per execution of the path that will score

    def run(self, contexts, scales, noise, fut, used: Sequence[int] | None = None) -> np.ndarray:
        return self.rollout(contexts, scales, noise, exog=fut)

    def clone(self) -> RowsPath:
        """The same path with a VM of its own, to run beside this one."""
        twin = copy.copy(self)
        twin.rollout = clone_rollout(self.rollout)
        return twin


class CallsPath:
    """Every row is its own call of a rollout compiled at the model's own batch (module docstring).

    In weight mode the module computes each site once on its perturbed constants (``PerturbSites(...,
    select=False)``): a row perturbs exactly the sites its scale row names, so each call gets a delta
    vector holding only their slots (zeros elsewhere: ``W + 0`` is ``W``), which halves the work of a
    module that also computes every site's reference and selects between the two. Rows run side by side
    (`Handles`: per worker a VM and a delta vector).
    """

    name = "calls"

    def __init__(self, perturbed, spec, horizon: int, method: str, target: str, rows: int):
        from .passes.perturb import perturb_plan_of
        from .rollout import compile_rollout

        self.plan = perturb_plan_of(perturbed)
        self.rollout = compile_rollout(perturbed, spec, horizon, method=method, target=target)
        self.model_batch = self.rollout.batch
        self.batch = rows  # rows per execution: the packing is the rows path's, run one call per row
        self.handles = Handles(self._handle)
        # Unperturbed rollouts by (context, future): every execution repeats its replicates' references,
        # and a row with no site perturbed depends on nothing else (same call, same bits).
        self._references: dict[tuple[bytes, bytes], np.ndarray] = {}

    def _handle(self, i: int):
        """Worker i's (rollout, delta vector and the tensor sharing its memory, or None in output mode)."""
        import tvm

        rollout = self.rollout if i == 0 else clone_rollout(self.rollout)
        if self.plan.mode != "weight":
            return rollout, None
        # Aligned, and wrapped once without a copy: a 20M-parameter model's delta is 80 MB per call.
        size = self.plan.dweight_size
        raw = np.zeros(size * 4 + 64, np.uint8)
        start = (-raw.ctypes.data) % 64
        buf = raw[start : start + size * 4].view(np.float32)
        return rollout, (buf, tvm.runtime.from_dlpack(buf))

    def run(self, contexts, scales, noise, fut, used: Sequence[int] | None = None) -> np.ndarray:
        """Rows `used` (default all) of the execution, each as one call; other rows of the result are 0."""
        rows = range(len(contexts)) if used is None else sorted(set(used))
        keys = {r: (contexts[r].tobytes(), b"" if fut is None else fut[r].tobytes()) for r in rows}
        todo, first = [], {}  # rows to run; the first unperturbed row per key (the others copy it)
        for r in rows:
            if np.any(scales[r]):
                todo.append(r)
            elif keys[r] not in self._references and keys[r] not in first:
                first[keys[r]] = r
                todo.append(r)

        def call(handle, r):
            return self._run_row(handle, contexts[r : r + 1], scales[r], noise, fut, r)

        perturbed = {}
        for r, y in zip(todo, self.handles.map(call, todo), strict=True):
            if np.any(scales[r]):
                perturbed[r] = y
            else:
                self._references[keys[r]] = y
        out = None
        for r in rows:
            y = perturbed[r] if r in perturbed else self._references[keys[r]]
            if out is None:
                out = np.zeros((len(contexts), *y.shape), y.dtype)
            out[r] = y
        return out

    def _run_row(self, handle, context, scale_row: np.ndarray, noise: np.ndarray, fut, r: int):
        """One row as one call at the model's batch (the row's context in every batch row, row 0 read)."""
        rollout, delta = handle
        b = self.model_batch
        ctx = np.repeat(context, b, axis=0)
        f = None if fut is None else np.repeat(fut[r : r + 1], b, axis=0)
        if self.plan.mode != "weight":
            return rollout(ctx, scale_row[None], noise[r : r + 1], exog=f)[0]
        buf, tensor = delta
        slots = [slot for k in np.flatnonzero(scale_row) for slot in self.plan.weights.get(int(k), ())]
        for slot in slots:
            buf[slot.offset : slot.offset + slot.size] = noise[slot.offset : slot.offset + slot.size]
        try:
            return rollout(ctx, scale_row[None], tensor, exog=f)[0]
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
        args = (proto, input_shapes, probe, spec, horizon, mode, method, target, sites, progress)
        if rows > PROBE_BATCH and rows * spec.calls(horizon) * sum(op.macs for op in ops) >= TWIN_MIN_MACS:
            # The probe's cost is its batch times the rollout's; the leak it looks for is in the graph, not
            # in the batch size, so a batch-3 twin over one call finds it at a fraction of the cost, from
            # the windows before burn-in and before the scoring module is fused and built: a model that
            # leaks goes to the calls path without it, and every path burns its own windows in.
            twin = _merged_twin(*args)
            if twin is not None:
                twin.scoring_batch = rows
                twin.deferred = lambda: _full_rows(rows, *args)
                return twin, ops, None, probe
        path, reason = _full_rows(rows, *args)
        if path is not None:
            return path, ops, None, probe
    if force == "rows":
        raise TQSError(f"the rows path cannot score this model: {reason}")
    path = calls_path(probe, spec, horizon, mode, method, target, sites, rows, progress)
    return path, ops, reason, probe


def _full_rows(rows, proto, input_shapes, probe, spec, horizon, mode, method, target, sites, progress):
    """(the rows path at `rows` rows, None) or (None, why the model does not re-bind to that batch)."""
    from .graph import fuse
    from .passes.perturb import PerturbSites, batch_layouts

    try:
        mod = fuse(proto, _batch_only(proto, input_shapes, rows), rollout=spec)
        layouts = batch_layouts(mod, rows, probe, 1)
    except (TQSError, ValueError) as err:
        first = str(err).splitlines()[0]
        return None, f"the model does not re-bind to batch {rows} ({first[:200]})"
    progress(0, 1, "compiling")
    return RowsPath(PerturbSites(layouts, mode, sites)(mod), spec, horizon, method, target), None


def _merged_twin(proto, input_shapes, probe, spec, horizon, mode, method, target, sites, progress):
    """The rows path at `PROBE_BATCH` rows over one model call where some perturbed site's batch shares
    its axis (the isolation probe's small twin of the scoring module), else None (also when it does not
    fuse)."""
    from .graph import fuse
    from .passes.perturb import PerturbSites, batch_layouts, perturb_plan_of

    try:
        mod = fuse(proto, _batch_only(proto, input_shapes, PROBE_BATCH), rollout=spec)
        perturbed = PerturbSites(batch_layouts(mod, PROBE_BATCH, probe, 1), mode, sites)(mod)
    except (TQSError, ValueError):
        return None
    if not perturb_plan_of(perturbed).merged:
        return None
    progress(0, 1, "compiling")
    # One model call: a leak shows in the other rows of the call that makes it (the rollout carries no
    # state between calls but the window), so the probe runs a quarter of a 4-call horizon.
    return RowsPath(perturbed, spec, min(horizon, spec.stride), method, target)


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
