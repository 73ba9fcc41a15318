"""The rollout contract: how a forecaster's predictions feed back into its input window.

An autoregressive rollout treats the forecaster as a discrete-time dynamical system on its input
window: ``window_{n+1} = shift(window_n, model(window_n))``. TQS, evaluation and the compiled rollout
all read the same `RolloutSpec`, so they agree on what one step of that system is.

Layout is fixed to ``[batch, time, channels]`` for the window and the forecast. One step:

1. run the model on the window ``[B, lookback, channels]`` -> forecast ``[B, horizon, len(target_channels)]``;
2. keep the first ``stride`` forecast rows;
3. build ``stride`` new window rows: target channels take the forecast, exogenous channels (all the
   others) are held at their last observed value (``exogenous="hold"``) or supplied by the caller
   (``exogenous="supplied"``);
4. drop the oldest ``stride`` rows of the window and append the new ones.

A model carries its contract as JSON in the ONNX metadata property ``tvm_tqs.rollout``; without it the
contract is inferred for the common single-input ``[B, L, C] -> [B, H, C]`` shape.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import RolloutSpecError

METADATA_KEY = "tvm_tqs.rollout"


@dataclass(frozen=True)
class RolloutSpec:
    """How one autoregressive rollout step runs (see the module docstring).

    Parameters
    ----------
    window_input : str
        Name of the model input that holds the history window ``[batch, lookback, channels]``.
    forecast_output : str
        Name of the model output that holds the forecast ``[batch, horizon, len(target_channels)]``.
    lookback : int
        Window length L.
    horizon : int
        Steps the model predicts per call.
    channels : int
        Channels in the window.
    target_channels : tuple of int
        Window channels the forecast predicts, in forecast-channel order.
    stride : int
        Forecast steps fed back per call (1 <= stride <= horizon).
    exogenous : {"hold", "supplied"}
        What non-target channels do over the rollout.
    channel_mean, channel_std : tuple of float
        Typical per-channel mean and standard deviation of the windows the model expects (in the model's
        input units). Data-free initial contexts are generated to match them.
    """

    window_input: str
    forecast_output: str
    lookback: int
    horizon: int
    channels: int
    target_channels: tuple[int, ...]
    stride: int
    exogenous: Literal["hold", "supplied"] = "hold"
    channel_mean: tuple[float, ...] | None = None
    channel_std: tuple[float, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "target_channels", tuple(int(c) for c in self.target_channels))
        for name in ("channel_mean", "channel_std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        self.validate()

    # -- invariants --------------------------------------------------------------------------------
    def validate(self) -> None:
        def bad(msg: str):
            raise RolloutSpecError(f"invalid rollout spec for input '{self.window_input}': {msg}")

        if self.lookback < 1 or self.horizon < 1 or self.channels < 1:
            bad(
                f"lookback, horizon and channels must be >= 1 (got {self.lookback}, {self.horizon}, {self.channels})"
            )
        if not 1 <= self.stride <= self.horizon:
            bad(f"stride must be in [1, horizon={self.horizon}] (got {self.stride})")
        if self.stride > self.lookback:
            bad(f"stride {self.stride} exceeds lookback {self.lookback}")
        if not self.target_channels:
            bad("target_channels is empty")
        if len(set(self.target_channels)) != len(self.target_channels):
            bad(f"target_channels has duplicates: {self.target_channels}")
        if any(not 0 <= c < self.channels for c in self.target_channels):
            bad(f"target_channels {self.target_channels} out of range for {self.channels} channels")
        if self.exogenous not in ("hold", "supplied"):
            bad(f"exogenous must be 'hold' or 'supplied' (got {self.exogenous!r})")
        for name in ("channel_mean", "channel_std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.channels:
                bad(f"{name} has {len(value)} entries for {self.channels} channels")
        if self.channel_std is not None and any(s <= 0 for s in self.channel_std):
            bad("channel_std entries must be > 0")

    # -- derived -----------------------------------------------------------------------------------
    @property
    def exogenous_channels(self) -> tuple[int, ...]:
        return tuple(c for c in range(self.channels) if c not in self.target_channels)

    @property
    def window_shape(self) -> tuple[int, int]:
        """Window shape without the batch dimension."""
        return (self.lookback, self.channels)

    def calls(self, steps: int) -> int:
        """Model calls needed to forecast `steps` time steps."""
        return math.ceil(steps / self.stride)

    # -- serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["target_channels"] = list(self.target_channels)
        for name in ("channel_mean", "channel_std"):
            if d[name] is not None:
                d[name] = list(d[name])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> RolloutSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise RolloutSpecError(
                f"rollout spec has unknown fields {sorted(unknown)}; known: {sorted(known)}"
            )
        try:
            return cls(**d)
        except TypeError as err:
            raise RolloutSpecError(f"rollout spec is incomplete: {err}") from None

    @classmethod
    def from_json(cls, text: str) -> RolloutSpec:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise RolloutSpecError(f"rollout spec is not valid JSON: {err}") from None
        return cls.from_dict(d)

    # -- numpy reference of one step and of a whole rollout -----------------------------------------
    def next_window(
        self, window: np.ndarray, forecast: np.ndarray, exog: np.ndarray | None = None
    ) -> np.ndarray:
        """Shift `stride` forecast rows into `window`.

        Parameters
        ----------
        window : [B, lookback, channels]
        forecast : [B, >= stride, len(target_channels)]
        exog : [B, stride, len(exogenous_channels)], required when exogenous == "supplied"
        """
        s = self.stride
        rows = np.repeat(window[:, -1:, :], s, axis=1)
        rows[:, :, list(self.target_channels)] = forecast[:, :s, :]
        if self.exogenous == "supplied" and self.exogenous_channels:
            if exog is None:
                raise RolloutSpecError("exogenous='supplied' needs future exogenous values for every step")
            rows[:, :, list(self.exogenous_channels)] = exog
        return np.concatenate([window[:, s:, :], rows], axis=1)

    def rollout(
        self,
        model: Callable[[np.ndarray], np.ndarray],
        context: np.ndarray,
        steps: int,
        exog: np.ndarray | None = None,
    ) -> np.ndarray:
        """Roll `model` out for `steps` time steps from `context`; returns ``[B, steps, len(target_channels)]``.

        `model` maps a window to the forecast output. `exog` (``[B, >= steps, n_exogenous]``) is the
        future of the exogenous channels when exogenous == "supplied".
        """
        self.check_context(context)
        window = np.asarray(context, dtype=np.float32)
        pieces = []
        for n in range(self.calls(steps)):
            forecast = np.asarray(model(window))
            pieces.append(forecast[:, : self.stride])
            step_exog = None if exog is None else exog[:, n * self.stride : (n + 1) * self.stride]
            window = self.next_window(window, forecast, step_exog)
        return np.concatenate(pieces, axis=1)[:, :steps]

    def check_context(self, context: np.ndarray) -> None:
        shape = tuple(np.shape(context))
        if len(shape) != 3 or shape[1:] != self.window_shape:
            raise RolloutSpecError(
                f"context for input '{self.window_input}' must have shape [batch, {self.lookback}, "
                f"{self.channels}] (batch, lookback, channels); got {list(shape)}"
            )

    # -- attaching to and reading from ONNX ----------------------------------------------------------
    def attach(self, model) -> None:
        """Store this contract in an `onnx.ModelProto`'s metadata (replacing an earlier one)."""
        props = [p for p in model.metadata_props if p.key != METADATA_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(props)
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, self.to_json()

    @classmethod
    def from_onnx(cls, model) -> RolloutSpec:
        """The contract stored in `model`'s metadata, or one inferred from its single input and output."""
        for prop in model.metadata_props:
            if prop.key == METADATA_KEY:
                return cls.from_json(prop.value)
        return infer_rollout_spec(model)


def _static_dims(value_info) -> list[int | str]:
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return dims


def infer_rollout_spec(model) -> RolloutSpec:
    """Default contract for a single-input ``[B, L, C] -> [B, H, C]`` forecaster: all channels fed back."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    outputs = list(model.graph.output)
    if len(inputs) != 1 or len(outputs) != 1:
        raise RolloutSpecError(
            f"cannot infer a rollout spec: the model has {len(inputs)} inputs and {len(outputs)} outputs; "
            f"inference needs exactly one of each. Attach one with RolloutSpec(...).attach(model) "
            f"(metadata key '{METADATA_KEY}')."
        )
    x, y = _static_dims(inputs[0]), _static_dims(outputs[0])
    if len(x) != 3 or len(y) != 3 or not all(isinstance(d, int) for d in x[1:] + y[1:]):
        raise RolloutSpecError(
            f"cannot infer a rollout spec: input '{inputs[0].name}' has shape {x} and output "
            f"'{outputs[0].name}' has shape {y}; inference needs static [batch, lookback, channels] -> "
            f"[batch, horizon, channels]. Attach a spec (metadata key '{METADATA_KEY}')."
        )
    if x[2] != y[2]:
        raise RolloutSpecError(
            f"cannot infer a rollout spec: input '{inputs[0].name}' has {x[2]} channels but output "
            f"'{outputs[0].name}' has {y[2]}, so which channels are predicted is ambiguous. Attach a spec "
            f"with target_channels (metadata key '{METADATA_KEY}')."
        )
    return RolloutSpec(
        window_input=inputs[0].name,
        forecast_output=outputs[0].name,
        lookback=x[1],
        horizon=y[1],
        channels=x[2],
        target_channels=tuple(range(x[2])),
        stride=min(y[1], x[1]),
    )


# ---------------------------------------------------------------------------------------------------
# The compiled rollout: the whole horizon inside one Relax function.
#
# TVM is imported inside the functions below: benchmarks/zoo/build.py loads this module on its own,
# without TVM, to read and write RolloutSpec.

ROLLOUT_FUNC = "rollout"
ROLLOUT_METHODS = ("auto", "unrolled", "recursive")
# With "auto", rollouts of at most this many model calls are unrolled; longer ones recurse. Unrolling
# costs a few bindings per call (the model itself is one function called each time), so the limit only
# keeps the Relax function short.
UNROLL_MAX_CALLS = 64


def _window_var(main, spec: RolloutSpec):
    if not main.params:
        raise RolloutSpecError("the model's main function takes no input")
    window = main.params[0]
    shape = tuple(int(d) for d in window.ty.shape.values)
    if len(shape) != 3 or shape[1:] != spec.window_shape:
        raise RolloutSpecError(
            f"the model's first input '{window.name}' has shape {list(shape)}, but the rollout spec expects "
            f"window input '{spec.window_input}' of shape [batch, {spec.lookback}, {spec.channels}]"
        )
    return window, shape[0]


def _forecast_type(main, spec: RolloutSpec, batch: int):
    import tvm
    from tvm import relax

    ty = main.ret_ty
    if isinstance(ty, relax.TupleType):
        raise RolloutSpecError(
            f"the model returns {len(ty.fields)} outputs; the compiled rollout needs the forecast "
            f"'{spec.forecast_output}' to be its only output"
        )
    shape = tuple(int(d) for d in ty.shape.values)
    want = len(spec.target_channels)
    if len(shape) != 3 or shape[0] != batch or shape[1] < spec.stride or shape[2] != want:
        raise RolloutSpecError(
            f"the model's output has shape {list(shape)}; the rollout spec expects forecast "
            f"'{spec.forecast_output}' of shape [{batch}, >= {spec.stride}, {want}]"
        )
    del tvm
    return ty, shape


def _shift(bb, spec: RolloutSpec, window, piece, exog_piece, batch: int):
    """Emit the next window: the oldest `stride` rows out, `stride` new rows built from `piece` in."""
    import numpy as np
    from tvm import relax
    from tvm.relax import op

    s, L, C = spec.stride, spec.lookback, spec.channels
    targets = list(spec.target_channels)
    if targets == list(range(C)):
        rows = piece  # every channel predicted, in window order
    else:
        sources = [piece]
        held = bb.emit(op.broadcast_to(op.strided_slice(window, [1], [L - 1], [L]), (batch, s, C)))
        sources.append(held)
        index = []
        exo = list(spec.exogenous_channels)
        for c in range(C):
            if c in targets:
                index.append(targets.index(c))
            elif exog_piece is not None:
                index.append(len(targets) + C + exo.index(c))
            else:
                index.append(len(targets) + c)  # hold the last observed value
        if exog_piece is not None:
            sources.append(exog_piece)
        source = bb.emit(op.concat(sources, axis=2))
        rows = bb.emit(op.take(source, relax.const(np.array(index, dtype=np.int64), "int64"), axis=2))
    if s == L:
        return rows
    kept = bb.emit(op.strided_slice(window, [1], [s], [L]))
    return bb.emit(op.concat([kept, rows], axis=1))


def rollout_module(mod, spec: RolloutSpec, steps: int, method: str = "auto"):
    """Add a ``rollout`` function to `mod` that runs the whole `steps`-step rollout in one call.

    ``rollout(window[B, L, C], *extra) -> [B, steps, len(target_channels)]`` (with exogenous "supplied":
    ``rollout(window, exog[B, calls * stride, n_exogenous], *extra)``) calls ``main(window, *extra)``
    ``calls(steps)`` times, feeding the first ``stride`` forecast rows back exactly as `RolloutSpec.rollout`
    does. ``extra`` are `main`'s inputs after the window (for example the perturbation inputs of
    `tvm_tqs.passes.perturb`), passed unchanged to every call.

    Parameters
    ----------
    mod : tvm.IRModule
        A module whose ``main`` takes the window first and returns the forecast (one tensor).
    spec : RolloutSpec
        The model's rollout contract.
    steps : int
        Time steps to forecast (>= 1).
    method : {"auto", "unrolled", "recursive"}
        "unrolled" writes one call of ``main`` per model call (straight-line code); "recursive" writes a
        function that makes one call and then calls itself (``if`` + self-call; Relax has no loop), so the
        function stays the same size for any horizon; "auto" unrolls up to `UNROLL_MAX_CALLS` calls.
    """
    import numpy as np
    from tvm import relax
    from tvm.relax import op

    if steps < 1:
        raise RolloutSpecError(f"steps must be >= 1, got {steps}")
    if method not in ROLLOUT_METHODS:
        raise RolloutSpecError(f"method must be one of {ROLLOUT_METHODS}, got {method!r}")
    n = spec.calls(steps)
    if method == "auto":
        method = "unrolled" if n <= UNROLL_MAX_CALLS else "recursive"
    main_gv = mod.get_global_var("main")
    main = mod["main"]
    window_param, batch = _window_var(main, spec)
    f_ty, f_shape = _forecast_type(main, spec, batch)
    s, total = spec.stride, n * spec.stride
    n_exo = len(spec.exogenous_channels)
    supplied = spec.exogenous == "supplied" and n_exo > 0

    bb = relax.BlockBuilder(mod)
    window = relax.Var("window", window_param.ty)
    extras = [relax.Var(p.name, p.ty) for p in main.params[1:]]
    exog = relax.Var("exog", relax.TensorType((batch, total, n_exo), "float32")) if supplied else None
    inputs = [window] + ([exog] if supplied else []) + extras
    out_ty = relax.TensorType((batch, total, f_shape[2]), str(f_ty.dtype))

    def first_rows(forecast):
        if f_shape[1] == s:
            return forecast
        return bb.emit(op.strided_slice(forecast, [1], [0], [s]))

    if method == "unrolled":
        with bb.function(ROLLOUT_FUNC, inputs, attrs={"num_input": len(inputs)}):
            with bb.dataflow():
                w, pieces = window, []
                for i in range(n):
                    piece = first_rows(bb.emit(relax.Call(main_gv, [w] + extras)))
                    pieces.append(piece)
                    if i < n - 1:
                        exog_i = (
                            bb.emit(op.strided_slice(exog, [1], [i * s], [(i + 1) * s])) if supplied else None
                        )
                        w = _shift(bb, spec, w, piece, exog_i, batch)
                out = bb.emit(op.concat(pieces, axis=1)) if n > 1 else pieces[0]
                if total != steps:
                    out = bb.emit(op.strided_slice(out, [1], [0], [steps]))
                out = bb.emit_output(out)
            bb.emit_func_output(out)
        return bb.get()

    # Recursive: step(i, window, acc, ...) = i < n ? body(i, window, acc, ...) : acc, where body makes call
    # i, writes its rows into acc and calls step(i + 1, ...). Relax has no loop construct.
    i_ty = relax.TensorType((), "int64")
    call_of_row = np.repeat(np.arange(n, dtype=np.int64), s)
    step_params = [relax.Var("i", i_ty), relax.Var("window", window_param.ty), relax.Var("acc", out_ty)]
    step_params += ([relax.Var("exog", exog.ty)] if supplied else []) + [
        relax.Var(p.name, p.ty) for p in extras
    ]
    placeholder = relax.Function(step_params, step_params[2], out_ty)
    step_gv = bb.add_func(placeholder, "rollout_step")

    body_params = [relax.Var(p.name, p.ty) for p in step_params]
    with bb.function("rollout_body", body_params, private=True):
        i, w, acc = body_params[:3]
        b_exog = body_params[3] if supplied else None
        b_extras = body_params[4:] if supplied else body_params[3:]
        with bb.dataflow():
            piece = first_rows(bb.emit(relax.Call(main_gv, [w] + b_extras)))
            exog_i = None
            if supplied:
                rows = bb.emit(
                    op.add(
                        op.multiply(i, relax.const(s, "int64")),
                        relax.const(np.arange(s, dtype=np.int64), "int64"),
                    )
                )
                exog_i = bb.emit(op.take(b_exog, rows, axis=1))
            w_next = _shift(bb, spec, w, piece, exog_i, batch)
            tiled = bb.emit(op.tile(piece, (1, n, 1)))
            here = bb.emit(op.reshape(op.equal(relax.const(call_of_row, "int64"), i), (1, total, 1)))
            acc_next = bb.emit(op.where(here, tiled, acc))
            i_next = bb.emit(op.add(i, relax.const(1, "int64")))
            rest = [b_exog] if supplied else []
            args = [i_next, w_next, acc_next] + rest + b_extras
            args = [bb.emit_output(a) for a in args]
        result = bb.emit(relax.Call(step_gv, args))
        bb.emit_func_output(result)
    body_gv = bb.get().get_global_var("rollout_body")

    cond = bb.normalize(op.less(step_params[0], relax.const(n, "int64")))
    then_var, else_var = relax.Var("r", out_ty), relax.Var("r", out_ty)
    then_seq = relax.SeqExpr(
        [relax.BindingBlock([relax.VarBinding(then_var, relax.Call(body_gv, list(step_params)))])], then_var
    )
    else_seq = relax.SeqExpr([relax.BindingBlock([relax.VarBinding(else_var, step_params[2])])], else_var)
    c_var = relax.Var("c", relax.TensorType((), "bool"))
    r_var = relax.Var("r", out_ty)
    step = relax.Function(
        step_params,
        relax.SeqExpr(
            [
                relax.BindingBlock(
                    [
                        relax.VarBinding(c_var, cond),
                        relax.VarBinding(r_var, relax.If(c_var, then_seq, else_seq)),
                    ]
                )
            ],
            r_var,
        ),
        out_ty,
    )
    bb.update_func(step_gv, step)

    with bb.function(ROLLOUT_FUNC, inputs, attrs={"num_input": len(inputs)}):
        acc0 = bb.emit(op.zeros((batch, total, f_shape[2]), str(f_ty.dtype)))
        start = relax.const(0, "int64")
        out = bb.emit(relax.Call(step_gv, [start, window, acc0] + ([exog] if supplied else []) + extras))
        if total != steps:
            out = bb.emit(op.strided_slice(out, [1], [0], [steps]))
        bb.emit_func_output(out)
    return bb.get()


class CompiledRollout:
    """A built rollout: ``run(context, *extra) -> [B, steps, len(target_channels)]`` on this host.

    Built by `compile_rollout`; `batch` rows run at once (the module is static-shape).
    """

    def __init__(self, executable, spec: RolloutSpec, steps: int, batch: int, method: str, extra: list):
        import tvm
        from tvm import relax

        self.spec, self.steps, self.batch, self.method = spec, steps, batch, method
        self.extra = extra  # [(name, shape, dtype)] of the inputs after the window (and exog)
        self.device = tvm.cpu()
        self.executable = executable
        self.vm = relax.VirtualMachine(executable, self.device)
        self._fn = self.vm[ROLLOUT_FUNC]

    def tensor(self, array):
        """Move a numpy array to the device once (inputs reused across runs)."""
        import numpy as np
        import tvm

        return tvm.runtime.tensor(np.ascontiguousarray(array), self.device)

    def __call__(self, context, *extra, exog=None):
        import numpy as np
        import tvm

        if not isinstance(context, tvm.runtime.Tensor):
            self.spec.check_context(context)
            if np.shape(context)[0] != self.batch:
                raise RolloutSpecError(
                    f"context for input '{self.spec.window_input}' has batch {np.shape(context)[0]}; this "
                    f"compiled rollout runs batch {self.batch}"
                )
            context = self.tensor(np.asarray(context, dtype=np.float32))
        args = [context]
        if self.spec.exogenous == "supplied" and self.spec.exogenous_channels:
            if exog is None:
                raise RolloutSpecError("exogenous='supplied' needs the future exogenous values (exog=...)")
            total = self.spec.calls(self.steps) * self.spec.stride
            exog = np.asarray(exog, dtype=np.float32)[:, :total]
            if exog.shape != (self.batch, total, len(self.spec.exogenous_channels)):
                raise RolloutSpecError(
                    f"exog must have shape [{self.batch}, >= {total}, {len(self.spec.exogenous_channels)}]; "
                    f"got {list(exog.shape)}"
                )
            args.append(self.tensor(exog))
        if len(extra) != len(self.extra):
            raise RolloutSpecError(
                f"this rollout takes {len(self.extra)} inputs after the window "
                f"({[name for name, _, _ in self.extra]}); got {len(extra)}"
            )
        args += [a if isinstance(a, tvm.runtime.Tensor) else self.tensor(a) for a in extra]
        return self._fn(*args).numpy()


def compile_rollout(
    mod,
    spec: RolloutSpec,
    steps: int,
    *,
    method: str = "auto",
    target: str = "x86",
    loop_order: bool = True,
) -> CompiledRollout:
    """Build `mod` (fused, optionally perturbed) with a one-function rollout of `steps` time steps.

    Parameters
    ----------
    mod : tvm.IRModule
        Fused module; ``main(window, *extra)`` returns the forecast.
    spec : RolloutSpec
        The model's rollout contract (`tvm_tqs.frontend.load.rollout_spec_of`).
    steps : int
        Time steps per rollout.
    method : {"auto", "unrolled", "recursive"}
        See `rollout_module`.
    target : str
        A registered host target (the rollout runs here).
    loop_order : bool
        Apply `tvm_tqs.passes.reduction_loop_order.ReductionLoopOrder` (vectorizable matmul loops, same
        results bit for bit) before building.
    """
    from tvm_tqs.passes.reduction_loop_order import ReductionLoopOrder
    from tvm_tqs.runtime import build

    n = spec.calls(steps)
    resolved = method if method != "auto" else ("unrolled" if n <= UNROLL_MAX_CALLS else "recursive")
    full = rollout_module(mod, spec, steps, resolved)
    if loop_order:
        full = ReductionLoopOrder()(full)
    main = mod["main"]
    _, batch = _window_var(main, spec)
    extra = [(p.name, tuple(int(d) for d in p.ty.shape.values), str(p.ty.dtype)) for p in main.params[1:]]
    return CompiledRollout(build(full, target), spec, steps, batch, resolved, extra)
