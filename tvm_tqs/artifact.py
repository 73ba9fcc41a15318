"""`CompiledModel`: what compile() returns: the plan, the built module, and how to export and run it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ExportError, TQSError
from .plan import Plan
from .rollout import RolloutSpec

REPORT = "report.json"
REPORT_HTML = "report.html"


@dataclass
class CompiledModel:
    """A planned, quantized and built model.

    Attributes
    ----------
    plan : Plan
        Per site: precision, TQS, gain, predicted error share, size, latency (see `tvm_tqs.plan`).
    target : TargetSpec
        What it was built for.
    rollout_spec : RolloutSpec or None
        The model's rollout contract (for `rollout`).
    executable : relax.VMExecutable
        The built module (`export` writes it for the target).
    quantize_report : dict
        The quantize pass's per-site report (kernel names, fallback reasons); ``plan.json`` holds it.
    tqs : TQSReport or None
        The weight-mode TQS report the plan was solved from (None for forced plans).
    latency : dict or None
        The latency table used (``LatencyTable.to_dict()``), when latency was part of the job.
    trace : tuple of dict
        One entry per solve-build(-measure) round: the plan, predicted and measured latency.
    pareto : dict or None
        The solver's Pareto fronts, ``{"size_bytes": [...], "latency_ms": [...]}`` (latency with a
        table): per non-dominated plan its whole-model resource, predicted error and precisions; and
        ``"uniform"``: the same for every uniform precision the target offers. None for forced plans.
    edges : tuple of (int, int)
        Data flow between the fused call sites, (producer, consumer).
    reliability : dict or None
        A reliability table (`tvm_tqs.reliability.ReliabilityTable.to_dict()`) to carry into the report.
    """

    plan: Plan
    target: object
    rollout_spec: RolloutSpec | None
    executable: object
    quantize_report: dict
    tqs: object = None
    latency: dict | None = None
    trace: tuple = ()
    pareto: dict | None = None
    edges: tuple = ()
    reliability: dict | None = None  # a ReliabilityTable.to_dict(), when one was attached
    source: str = ""
    inputs: tuple = ()  # (ONNX name, shape, dtype) of every model input, in call order
    outputs: tuple = ()  # ONNX names of the model's outputs, in order
    _vm: object = field(default=None, repr=False)
    _call: object = field(default=None, repr=False)

    # -- running (targets that run on this host) --------------------------------------------------
    def _machine(self):
        if not self.target.runnable_here:
            raise TQSError(
                f"target '{self.target.name}' does not run on this host; export() the artifact and run it "
                "on the device (or measure it through an RPC runner)"
            )
        if self._vm is None:
            import tvm
            from tvm import relax

            self._vm = relax.VirtualMachine(self.executable, tvm.cpu())
        return self._vm

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run `main` once on numpy inputs (converted to the model's dtypes); returns its outputs.

        The lean path (`runtime.LeanCall`): inputs are copied into buffers made on the first call, outputs
        are numpy views of the results; one call at a time per model."""
        call = self._call
        if call is None:
            call = self._lean_call()
        try:
            return call.run(*inputs)
        except (ValueError, TypeError, RuntimeError) as err:  # TVM's shape checks, numpy's conversions
            problem = self._input_problem(inputs)
            if problem is None:
                raise
            raise TQSError(problem) from err

    def _lean_call(self):
        """Make the model's `LeanCall` (first `run`), which then keeps its buffers and bound hot path."""
        from .runtime import LeanCall

        vm = self._machine()
        dtypes = [dtype for _, _, dtype in self.inputs] or None
        self._call = LeanCall(vm["main"], dtypes)
        return self._call

    def _input_problem(self, inputs) -> str | None:
        """Which input does not fit the model's signature, and how (checked only after a failed call, so the
        lean path pays nothing)."""
        if self.inputs and len(inputs) != len(self.inputs):
            return f"the model takes {len(self.inputs)} inputs ({[n for n, _, _ in self.inputs]}); got {len(inputs)}"
        for x, (name, shape, dtype) in zip(inputs, self.inputs, strict=False):
            try:
                array = np.asarray(x)
            except (ValueError, TypeError) as err:
                return f"input '{name}' is not an array: {err}"
            if list(array.shape) != list(shape):
                return f"input '{name}' must have shape {list(shape)} ({dtype}), got {list(array.shape)}"
            if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
                return f"input '{name}' must be real numbers convertible to {dtype}, got dtype {array.dtype}"
        return None

    def run_named(self, feeds: dict) -> dict:
        """Run `main` once on ``{input name: array}`` (ONNX names); returns ``{output name: array}``."""
        missing = [n for n, _, _ in self.inputs if n not in feeds]
        if missing:
            raise TQSError(f"run_named() is missing the inputs {missing}")
        outs = self.run(*(feeds[n] for n, _, _ in self.inputs))
        return dict(zip(self.outputs, outs, strict=False))

    def rollout(
        self,
        context: np.ndarray,
        horizon: int,
        exog: np.ndarray | None = None,
        aux: dict | None = None,
        aux_future: dict | None = None,
    ) -> np.ndarray:
        """Autoregressive rollout of `horizon` steps from `context` ``[batch, lookback, channels]`` (the
        canonical layout) following the model's rollout contract; returns ``[batch, horizon, targets]``.

        `aux` gives the initial auxiliary inputs (default: their data-free values) and `aux_future` the
        future of the supplied ones. A context with more rows than the model's (fixed) batch runs in
        chunks of that batch."""
        spec = self.rollout_spec
        if spec is None:
            raise TQSError("this model has no rollout contract (RolloutSpec); use run()")
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise TQSError(f"rollout() horizon must be a positive integer (time steps), got {horizon!r}")
        try:
            context = np.asarray(context)
        except (ValueError, TypeError) as err:
            raise TQSError(f"rollout() context must be an array [batch, lookback, channels]: {err}") from None
        if not np.issubdtype(context.dtype, np.number) or np.iscomplexobj(context):
            raise TQSError(f"rollout() context must be real numbers, got dtype {context.dtype}")
        spec.check_context(context)
        if len(context) == 0:
            raise TQSError("rollout() context holds no window (batch 0)")
        sigs = {n: (tuple(s), d) for n, s, d in self.inputs}
        window_dtype = sigs[spec.window_input][1]
        b = sigs[spec.window_input][0][0]
        rows = len(context)
        steps = spec.calls(horizon) * spec.stride
        aux = {**spec.default_aux(sigs, rows), **(aux or {})}
        aux_future = {**spec.default_future(sigs, rows, steps), **(aux_future or {})}
        out = []
        for start in range(0, rows, b):
            idx = np.arange(start, start + b) % rows if rows % b else np.arange(start, start + b)
            piece = spec.rollout(
                self.run_named,
                np.asarray(context)[idx],
                horizon,
                None if exog is None else np.asarray(exog)[idx],
                {k: np.asarray(v)[idx] for k, v in aux.items()},
                {k: np.asarray(v)[idx] for k, v in aux_future.items()},
                window_dtype,
            )
            out.append(piece[: min(b, rows - start)])
        return np.concatenate(out)

    # -- export and report ------------------------------------------------------------------------
    def report_data(self) -> dict:
        """Everything the reports show, as strict JSON (``report.json`` of an exported artifact)."""
        return {
            "source": self.source,
            "target": self.target.name,
            "plan": self.plan.to_dict(),
            "rollout": None if self.rollout_spec is None else self.rollout_spec.to_dict(),
            "tqs": None if self.tqs is None else json.loads(self.tqs.to_json()),
            "latency": self.latency,
            "trace": list(self.trace),
            "pareto": self.pareto,
            "graph": {"edges": [list(e) for e in self.edges]},
            "quantizer_activations": self.quantize_report.get("quantizer_activations"),
            "reliability": self.reliability,
        }

    def report(self, path: str | os.PathLike) -> Path:
        """Write the HTML report (one self-contained file, `tvm_tqs.report.html`) to `path`; returns it."""
        from .report.html import write_html

        return write_html(self.report_data(), path)

    def export(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``directory/`` = ``model.so`` (built for the target, cross-linked when needed),
        ``plan.json`` (quantize report + the plan), ``report.json`` (plan, TQS, latency, trace) and
        ``report.html`` (rendered from report.json); all or nothing (a temporary directory renamed into
        place). Raises `ExportError` (naming the path) when it cannot be written."""
        from .report.html import render
        from .targets.build import export

        meta = {**self.quantize_report, "solved_plan": self.plan.to_dict()}
        report = self.report_data()
        extra = {REPORT: report, REPORT_HTML: render(report)}
        try:
            return export(self.executable, directory, self.target, meta, overwrite=overwrite, extra=extra)
        except OSError as err:  # exists, not writable, read-only or full disk: nothing partial is left
            where = f" ('{err.filename}')" if err.filename else ""
            detail = f"{err.strerror}{where}" if err.strerror else str(err)
            raise ExportError(f"cannot write the artifact to '{directory}': {detail}") from None


def check_export_path(directory: str | os.PathLike, overwrite: bool = False) -> None:
    """Raise `ExportError` now if `export(directory, overwrite)` could not write there (the CLI calls it
    before minutes of work): an existing path without `overwrite`, a file or a directory that is not an
    artifact (`export` never replaces those), or an ancestor that is a file or is not writable."""
    path = Path(directory)
    if path.exists() and not overwrite:
        raise ExportError(f"'{directory}' exists (pass --overwrite / overwrite=True to replace it)")
    if path.exists() and not path.is_dir():
        raise ExportError(f"'{directory}' is a file, not an artifact directory: not replacing it")
    if path.is_dir() and not (path / "plan.json").is_file() and any(path.iterdir()):
        raise ExportError(
            f"'{directory}' is a non-empty directory that is not an artifact (no plan.json): not replacing it"
        )
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ExportError(f"cannot write '{directory}': '{parent}' is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write '{directory}': '{parent}' is not writable")
